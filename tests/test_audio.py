"""Numerical tests for asmp_jax.audio (STFT, warp, masks, mixing)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from asmp_jax import audio

SR = audio.SAMPLE_RATE


def _signal(length, seed=0, dtype=np.float32):
  """Coloured noise plus two tones, in about [-1, 1]."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / SR
  noise = np.convolve(rng.standard_normal(length), np.ones(4) / 4, mode="same")
  x = 0.3 * noise + 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t + 1.0)
  return x.astype(dtype)


# --------------------------------------------------------------------------------- STFT


def test_constants_and_standard_crop_shape():
  assert (audio.N_FFT, audio.HOP, audio.WIN, audio.CROP) == (1022, 256, 1022, 65535)
  assert (audio.N_FREQ, audio.N_FRAMES, audio.WARP_SIZE) == (512, 256, 256)
  spec = audio.stft(_signal(audio.CROP))
  assert spec.shape == (512, 256) and spec.dtype == jnp.complex64
  feats = audio.spectrogram_features(_signal(audio.CROP))
  assert feats["mag"].shape == (512, 256)
  assert feats["warped_log_mag"].shape == (256, 256)
  np.testing.assert_allclose(feats["warped_log_mag"], np.log(feats["warped_mag"] + 1e-10),
                             rtol=1e-6)


def test_periodic_hann_matches_scipy():
  np.testing.assert_allclose(audio.hann_window(1022, jnp.float32),
                             scipy.signal.get_window("hann", 1022), atol=1e-7)


@pytest.mark.parametrize("length", [65535, 5000, 4097])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_perfect_reconstruction_float32(length, pad_mode):
  x = _signal(length)
  y = np.asarray(audio.istft(audio.stft(x, pad_mode=pad_mode), length))
  assert y.shape == x.shape and y.dtype == np.float32
  inner = slice(audio.N_FFT, length - audio.N_FFT)
  np.testing.assert_allclose(y[inner], x[inner], atol=1e-5)  # away from the edges
  np.testing.assert_allclose(y, x, atol=1e-5)  # and over the whole signal


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_perfect_reconstruction_float64(pad_mode):
  with jax.enable_x64(True):
    x = _signal(65535, dtype=np.float64)
    spec = audio.stft(x, pad_mode=pad_mode)
    assert spec.dtype == jnp.complex128
    y = np.asarray(audio.istft(spec, x.shape[0]))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[audio.N_FFT:-audio.N_FFT], x[audio.N_FFT:-audio.N_FFT], atol=1e-10)
    np.testing.assert_allclose(y, x, atol=1e-10)


@pytest.mark.parametrize("pad_mode, boundary", [("reflect", "even"), ("constant", "zeros")])
def test_matches_scipy_stft(pad_mode, boundary):
  """Mapping to scipy.signal.stft:

  * window: periodic Hann (scipy's get_window('hann') default), nperseg = nfft = 1022,
    noverlap = 1022 - 256;
  * centring: scipy's ``boundary`` extends by nperseg // 2 = 511 samples on each side, the same
    amount as our n_fft // 2; 'even' is numpy's reflect (edge not repeated), 'zeros' is constant;
    ``padded=False`` so no extra zeros are appended at the end;
  * scaling: scipy's 'spectrum' scaling divides by sum(window); ours is unscaled, so
    ours = scipy * sum(window).
  """
  with jax.enable_x64(True):
    x = _signal(6000, seed=3, dtype=np.float64)
    ours = np.asarray(audio.stft(x, pad_mode=pad_mode))
    window = scipy.signal.get_window("hann", 1022)
    _, _, ref = scipy.signal.stft(
        x, nperseg=1022, noverlap=1022 - 256, nfft=1022, window=window, boundary=boundary,
        padded=False, detrend=False, return_onesided=True, scaling="spectrum")
    ref = ref * window.sum()
    assert ours.shape == ref.shape == (512, 1 + 6000 // 256)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    big = np.abs(ref) > 1e-3 * np.abs(ref).max()
    np.testing.assert_allclose(ours[big], ref[big], rtol=1e-6)
  ours32 = np.asarray(audio.stft(x.astype(np.float32), pad_mode=pad_mode))
  np.testing.assert_allclose(ours32, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_stft_rejects_too_short_input_for_reflect():
  with pytest.raises(ValueError, match="reflect"):
    audio.stft(np.zeros(300, np.float32))
  assert audio.stft(np.zeros(300, np.float32), pad_mode="constant").shape == (512, 2)


# --------------------------------------------------------------------------------- warp


def test_warp_grid_formula_and_ends():
  rows = audio.warp_grid(256, 512)
  y = np.linspace(-1, 1, 256)
  np.testing.assert_allclose(rows, ((21 ** ((y + 1) / 2) - 11) / 10 + 1) / 2 * 511, atol=1e-9)
  assert rows[0] == 0.0 and rows[-1] == pytest.approx(511.0)
  inv = audio.warp_grid(512, 256, inverse=True)
  assert inv[0] == 0.0 and inv[-1] == pytest.approx(255.0)
  # The two coordinate maps are inverses: forward(inverse(y')) == y'.
  y_lin = np.linspace(-1, 1, 512)
  y_warp = inv / 255 * 2 - 1
  np.testing.assert_allclose((21 ** ((y_warp + 1) / 2) - 11) / 10, y_lin, atol=1e-12)


def test_warp_is_identity_on_constants_and_keeps_time_axis():
  x = jnp.full((3, 512, 7), 2.5)
  w = audio.log_freq_warp(x)
  assert w.shape == (3, 256, 7)
  np.testing.assert_allclose(w, 2.5, rtol=1e-6)
  # Linear functions of the row index are reproduced exactly (linear interpolation).
  ramp = jnp.broadcast_to(jnp.arange(512.0)[:, None], (512, 5)) * jnp.arange(1.0, 6.0)
  np.testing.assert_allclose(audio.log_freq_warp(ramp),
                             audio.warp_grid()[:, None] * np.arange(1.0, 6.0), rtol=1e-5)


@pytest.mark.parametrize("f_bin", [12, 40, 150, 300])
def test_warp_puts_a_tone_at_the_predicted_row(f_bin):
  freq = f_bin * SR / audio.N_FFT  # exactly on bin f_bin
  t = np.arange(16384) / SR
  mag = audio.magnitude(audio.stft(np.sin(2 * np.pi * freq * t).astype(np.float32)))
  assert int(np.argmax(np.asarray(mag).mean(axis=-1))) == f_bin
  warped = np.asarray(audio.log_freq_warp(mag)).mean(axis=-1)
  # Invert the public-code map by hand: input coordinate y' -> output coordinate y.
  y_in = f_bin / 511 * 2 - 1
  y_out = np.log(10 * y_in + 11) / np.log(21) * 2 - 1
  predicted = (y_out + 1) / 2 * 255
  # The warped peak is at the output row whose sample point is nearest the tone's bin; rows are
  # denser than bins at low frequency and sparser above bin ~150, hence a one-row tolerance.
  assert abs(int(np.argmax(warped)) - predicted) <= 1.0, (np.argmax(warped), predicted)


def _second_difference_max(x):
  return np.abs(np.diff(x, 2, axis=0)).max()


def test_unwarp_warp_round_trip_on_smooth_envelope():
  """unwarp(warp(X)) ~ X when X is smooth along frequency.

  Linear interpolation of samples spaced h apart errs by at most h^2/8 * max|X''|; the coarsest
  spacing is the warp's at the top (about 6.4 input rows per output row). Allow a factor 2 for
  the second interpolation and the curvature of the coordinate map.
  """
  with jax.enable_x64(True):
    f = np.arange(512.0)[:, None]
    # [512, 4]
    env = np.exp(-f / 150.0) + 0.3 * np.cos(2 * np.pi * f / 400.0 + np.arange(4.0)) + 0.5
    back = np.asarray(audio.log_freq_unwarp(audio.log_freq_warp(jnp.asarray(env))))
    assert back.shape == (512, 4)
    h = np.diff(audio.warp_grid()).max()
    bound = 2 * h**2 / 8 * _second_difference_max(env)
    err = np.abs(back - env).max()
    assert err < bound and err < 1e-3 * np.abs(env).max(), (err, bound)
    # A line one bin wide at high frequency falls between the warp's samples: not recoverable.
    line = np.zeros((512, 1))
    line[450] = 1.0
    assert np.abs(np.asarray(audio.log_freq_unwarp(audio.log_freq_warp(jnp.asarray(line))))
                  - line).max() > 0.3


def test_warp_unwarp_round_trip_on_smooth_image():
  """warp(unwarp(Y)) ~ Y for Y smooth on the warped grid; the unwarp is coarsest at the bottom."""
  with jax.enable_x64(True):
    r = np.arange(256.0)[:, None]
    img = np.sin(2 * np.pi * r / 256) + 0.2 * np.cos(2 * np.pi * r / 100 + np.arange(3.0))
    back = np.asarray(audio.log_freq_warp(audio.log_freq_unwarp(jnp.asarray(img))))
    h = np.diff(audio.warp_grid(512, 256, inverse=True)).max()
    bound = 2 * (1 + h**2) / 8 * _second_difference_max(img)
    err = np.abs(back - img).max()
    assert err < bound and err < 2e-3, (err, bound)
  # A realistic mask: smooth in frequency, in [0, 1].
  mask = jax.nn.sigmoid(jnp.sin(jnp.arange(256.0) / 20.0)[:, None] * 3 + jnp.zeros((1, 256)))
  np.testing.assert_allclose(audio.log_freq_warp(audio.log_freq_unwarp(mask)), mask, atol=5e-3)


# --------------------------------------------------------------------------------- mixing


def test_random_gains_and_mix():
  g = audio.random_gains(jax.random.key(0), (1000, 2))
  assert g.shape == (1000, 2) and float(g.min()) >= 0.5 and float(g.max()) < 1.5
  assert abs(float(g.mean()) - 1.0) < 0.05
  sources = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2, 100)), jnp.float32)
  gains = jnp.asarray([[1.0, 0.5], [2.0, 0.0], [0.5, 0.5]])
  want = (sources * gains[..., None]).sum(axis=1)
  np.testing.assert_allclose(audio.mix(sources, gains), want, rtol=1e-6)
  np.testing.assert_allclose(audio.mix(sources, gains, normalise=True), want / 2, rtol=1e-6)
  np.testing.assert_allclose(audio.mix(sources), sources.sum(axis=1), rtol=1e-6)


# --------------------------------------------------------------------------------- masks


def test_ideal_binary_mask_sums_to_one_and_picks_louder():
  rng = np.random.default_rng(0)
  mags = rng.random((2, 3, 8, 5)).astype(np.float32)  # [batch, N, F, T]
  mags[:, 1, 0, 0] = 10.0  # source 1 clearly louder here
  mags[:, :, 1, 1] = 0.25  # a three-way tie here
  ibm = np.asarray(audio.ideal_binary_mask(mags))
  assert ibm.shape == mags.shape and set(np.unique(ibm)) <= {0.0, 1.0}
  np.testing.assert_array_equal(ibm.sum(axis=1), 1.0)
  np.testing.assert_array_equal(ibm.argmax(axis=1), mags.argmax(axis=1))
  assert (ibm[:, 1, 0, 0] == 1).all()
  assert (ibm[:, 0, 1, 1] == 1).all()  # ties go to the lowest index


def test_complementary_binary_masks_sum_back_to_the_mixture():
  length = 12000
  rng = np.random.default_rng(1)
  t = np.arange(length) / SR
  # A low source (smoothed noise + 300 Hz) and a bright one (differenced noise + 2500 Hz).
  s1 = (np.convolve(rng.standard_normal(length), np.ones(16) / 16, mode="same")
        + 0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
  s2 = (0.3 * np.diff(rng.standard_normal(length + 1))
        + 0.3 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
  mixture = audio.mix(jnp.stack([s1, s2]))
  mix_spec = audio.stft(mixture)
  mags = audio.magnitude(audio.stft(jnp.stack([s1, s2])))
  ibm = audio.ideal_binary_mask(mags)
  assert 0.05 < float(ibm[0].mean()) < 0.95  # both sources win some bins
  est = audio.masks_to_waveforms(ibm, mix_spec, length)
  assert est.shape == (2, length)
  np.testing.assert_allclose(est.sum(axis=0), mixture, atol=1e-5)
  # Each binary-mask estimate is close to its source (high SNR for these distinct spectra).
  for i, s in enumerate((s1, s2)):
    snr = 10 * np.log10(np.sum(s**2) / np.sum((np.asarray(est[i]) - s) ** 2))
    assert snr > 10.0, (i, snr)


def test_ratio_masks_reconstruct_sources_with_equal_phase():
  rng = np.random.default_rng(0)
  # Time-frequency domain: S_i = A_i exp(i phi) with a common phase, X = S_1 + S_2 + S_3.
  amps = rng.random((3, 512, 16))
  amps[2] = 0.0  # a silent source gets a zero mask
  phase = np.exp(1j * rng.uniform(-np.pi, np.pi, (512, 16)))
  sources = amps * phase
  mix_spec = sources.sum(axis=0)
  with jax.enable_x64(True):
    irm = audio.ideal_ratio_mask(jnp.abs(sources), jnp.abs(mix_spec))
    np.testing.assert_allclose(np.asarray(irm).sum(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(audio.apply_mask(irm, mix_spec[None]), sources, atol=1e-9)
    # Waveform domain: s2 = 0.25 s1 has exactly s1's phase at every bin.
    length = 8000
    s1 = _signal(length, seed=5, dtype=np.float64)
    srcs = jnp.stack([s1, 0.25 * s1])
    mixture = audio.mix(srcs)
    mix_spec = audio.stft(mixture)
    irm = audio.ideal_ratio_mask(audio.magnitude(audio.stft(srcs)), audio.magnitude(mix_spec))
    np.testing.assert_allclose(irm, np.broadcast_to([[[0.8]], [[0.2]]], irm.shape), atol=1e-6)
    est = audio.masks_to_waveforms(irm, mix_spec, length)
    np.testing.assert_allclose(est, srcs, atol=1e-8)


def test_ratio_mask_clips():
  mags = jnp.asarray([[[10.0, 0.0]], [[1.0, 0.0]]])  # [N=2, F=1, T=2]
  mix_mag = jnp.asarray([[1.0, 0.0]])
  irm = np.asarray(audio.ideal_ratio_mask(mags, mix_mag, clip_max=5.0))
  np.testing.assert_allclose(irm[:, 0, 0], [5.0, 1.0])
  np.testing.assert_array_equal(irm[:, 0, 1], [0.0, 0.0])


def test_apply_mask_keeps_mixture_phase():
  rng = np.random.default_rng(1)
  mix_spec = (rng.standard_normal((512, 6))
              + 1j * rng.standard_normal((512, 6))).astype(np.complex64)
  mask = rng.random((512, 6)).astype(np.float32) + 0.1
  out = np.asarray(audio.apply_mask(mask, mix_spec))
  assert out.dtype == np.complex64
  np.testing.assert_allclose(np.abs(out), mask * np.abs(mix_spec), rtol=1e-5)
  np.testing.assert_allclose(np.angle(out), np.angle(mix_spec), atol=1e-5)


# --------------------------------------------------------------------------------- jit/vmap


def test_jit_and_vmap_match_unbatched_calls():
  length = 6000
  batch = np.stack([_signal(length, seed=s) for s in range(3)])  # [3, L]
  feats_jit = jax.jit(audio.spectrogram_features)(batch)
  feats_vmap = jax.vmap(audio.spectrogram_features)(batch)
  for i in range(3):
    single = audio.spectrogram_features(batch[i])
    for key in ("spec", "mag", "warped_log_mag"):
      np.testing.assert_allclose(feats_jit[key][i], single[key], rtol=1e-5, atol=1e-4)
      np.testing.assert_allclose(feats_vmap[key][i], single[key], rtol=1e-5, atol=1e-4)
  spec = feats_jit["spec"]
  masks = jnp.stack([audio.ideal_binary_mask(jnp.stack([feats_jit["mag"][i],
                                                        feats_jit["mag"][(i + 1) % 3]]))
                     for i in range(3)])  # [3, 2, F, T]
  to_wav = jax.jit(functools.partial(audio.masks_to_waveforms, length=length))
  batched = to_wav(masks, spec)
  vmapped = jax.vmap(to_wav)(masks, spec)
  assert batched.shape == (3, 2, length)
  for i in range(3):
    single = audio.masks_to_waveforms(masks[i], spec[i], length)
    np.testing.assert_allclose(batched[i], single, atol=1e-5)
    np.testing.assert_allclose(vmapped[i], single, atol=1e-5)
  unwarp = jax.jit(audio.log_freq_unwarp)(feats_jit["warped_log_mag"])
  assert unwarp.shape == (3, 512, spec.shape[-1])


def test_gradients_flow_through_the_front_end():
  x = jnp.asarray(_signal(3000))

  def loss(wav):
    return jnp.mean(audio.spectrogram_features(wav)["warped_log_mag"])

  g = jax.grad(loss)(x)
  assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


# --------------------------------------------------------------------------------- front end


def test_mixture_features_mix_the_videos_and_normalise_by_their_count():
  length = 8 * audio.HOP - 1
  wav = np.stack([np.stack([_signal(length, seed=2 * b + u) for u in range(2)])
                  for b in range(3)])                                       # [B=3, U=2, L]
  feats = jax.jit(audio.mixture_features, static_argnums=(1, 2))
  plain, norm = feats(wav, False, None), feats(wav, True, None)
  assert plain["spec"].shape == (3, 2, audio.N_FREQ, 8)
  assert plain["mix_log_mag"].shape == (3, audio.WARP_SIZE, 8)
  assert plain["video_mag_warped"].shape == (3, 2, audio.WARP_SIZE, 8)
  # The mixture is the summed waveform's spectrum (linearity), its U-Net input the usual one.
  summed = audio.spectrogram_features(wav.sum(1))
  np.testing.assert_allclose(plain["mix_log_mag"], summed["warped_log_mag"], atol=2e-3)
  np.testing.assert_allclose(plain["video_mag_warped"],
                             audio.spectrogram_features(wav)["warped_mag"], rtol=1e-6, atol=1e-6)
  # normalise_mix divides the mixture (not the videos) by U, or by the count it is given.
  np.testing.assert_allclose(norm["mix_spec"], plain["mix_spec"] / 2, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(norm["video_mag_warped"], plain["video_mag_warped"])
  one = feats(wav[:, :1], True, 2)
  np.testing.assert_allclose(one["mix_spec"], plain["spec"][:, 0] / 2, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(feats(wav[:, :1], False, None)["mix_spec"], plain["spec"][:, 0])
