"""Audio front end: STFT/iSTFT, log-frequency warp, mixing and separation masks (JAX).

Conventions follow the public code shared by Sound of Pixels, Co-Separation, AVSGS and ASMP
(docs/design.md, "Audio"):

  * 11025 Hz mono waveforms; training crops of ``CROP = 65535`` samples (about 5.94 s).
  * STFT with a periodic Hann window of ``WIN = N_FFT = 1022`` samples and ``HOP = 256``, centred
    (``N_FFT // 2`` samples of padding on each side, as librosa's ``center=True``), no 1/N scaling
    on the forward transform. A crop of 65535 samples gives ``1 + 65535 // 256 = 256`` frames, so a
    complex spectrogram is ``[..., N_FREQ=512, N_FRAMES=256]`` (frequency rows, time columns).
  * The U-Net sees the magnitude resampled onto a 256-row log-frequency grid (``log_freq_warp``),
    then ``log``. Its masks live on that grid and are mapped back with ``log_freq_unwarp``.

Every function is pure ``jax.numpy``: it works under ``jit``/``vmap``/``grad`` and is batched over
any leading dimensions. Sizes that fix array shapes (``n_fft``, ``hop``, ``length``, row counts)
are Python ints and must be static under ``jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SAMPLE_RATE", "N_FFT", "HOP", "WIN", "CROP", "N_FREQ", "N_FRAMES", "WARP_SIZE",
    "hann_window", "num_frames", "stft", "istft", "magnitude", "log_magnitude",
    "warp_grid", "log_freq_warp", "log_freq_unwarp",
    "random_gains", "mix",
    "ideal_binary_mask", "ideal_ratio_mask", "apply_mask", "masks_to_waveforms",
    "mixture_features", "spectrogram_features",
]

SAMPLE_RATE = 11025  # Hz
N_FFT = 1022  # FFT size and window length (samples)
HOP = 256  # samples between frames
WIN = 1022  # window length (samples); equal to N_FFT here
CROP = 65535  # training crop (samples): 1 + CROP // HOP = 256 frames
N_FREQ = N_FFT // 2 + 1  # 512 one-sided frequency bins
N_FRAMES = 1 + CROP // HOP  # 256 frames per training crop
WARP_SIZE = 256  # rows of the log-frequency grid the U-Net sees

# The public code's warp: y' = (BASE**((y + 1) / 2) - (BASE + 1) / 2) / ((BASE - 1) / 2).
_WARP_BASE = 21.0


# ------------------------------------------------------------------------------------------
# STFT / iSTFT.
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _hann_np(win_length: int) -> np.ndarray:
  n = np.arange(win_length, dtype=np.float64)
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)


def hann_window(win_length: int = WIN, dtype=jnp.float32) -> jax.Array:
  """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / N)``, n = 0..N-1.

  The same as scipy's ``get_window('hann')``.
  """
  return jnp.asarray(_hann_np(win_length), dtype=dtype)


def num_frames(length: int, hop: int = HOP) -> int:
  """Frames a centred STFT gives for ``length`` samples: ``1 + length // hop``."""
  return 1 + length // hop


def _window_padded(n_fft: int, win_length: int) -> np.ndarray:
  """The window centred in ``n_fft`` samples (float64 numpy), as librosa pads it."""
  if win_length > n_fft:
    raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
  left = (n_fft - win_length) // 2
  return np.pad(_hann_np(win_length), (left, n_fft - win_length - left))


def stft(
    wav: jax.Array,
    n_fft: int = N_FFT,
    hop: int = HOP,
    win_length: int = WIN,
    pad_mode: str = "reflect",
) -> jax.Array:
  """Centred short-time Fourier transform.

  ``X[..., f, t] = sum_n w[n] x_pad[t * hop + n] exp(-2 pi i f n / n_fft)`` with ``x_pad`` the
  input padded by ``n_fft // 2`` samples on both sides; no normalisation (librosa convention).

  Padding defaults to ``"reflect"`` (mirror without repeating the edge sample, numpy's
  ``reflect``): it is what the public code got from librosa (< 0.10) and what ``torch.stft``
  does, and unlike zero padding it does not put an artificial onset at every crop boundary.
  ``"constant"`` (zeros) is available. Either way ``istft`` inverts exactly.

  Args:
    wav: real ``[..., L]`` waveform (float32 or float64), ``L > n_fft // 2`` for reflect padding.
    n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins.
    hop: hop size in samples.
    win_length: Hann window length (centred inside ``n_fft`` when shorter).
    pad_mode: "reflect" or "constant".

  Returns:
    complex ``[..., n_fft // 2 + 1, 1 + L // hop]`` (complex64 for float32 input).
  """
  wav = jnp.asarray(wav)
  if not jnp.issubdtype(wav.dtype, jnp.floating):
    wav = wav.astype(jnp.float32)
  length = wav.shape[-1]
  pad = n_fft // 2
  if pad_mode == "reflect" and length <= pad:
    raise ValueError(f"stft: reflect padding needs more than n_fft // 2 = {pad} samples, "
                     f"got {length}")
  if pad_mode not in ("reflect", "constant"):
    raise ValueError(f"stft: pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
  widths = [(0, 0)] * (wav.ndim - 1) + [(pad, pad)]
  padded = jnp.pad(wav, widths, mode=pad_mode)
  n_frames = num_frames(length, hop)
  index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]  # [T, n_fft], static
  frames = padded[..., index]  # [..., T, n_fft]
  window = jnp.asarray(_window_padded(n_fft, win_length), dtype=wav.dtype)
  spec = jnp.fft.rfft(frames * window, n=n_fft, axis=-1)  # [..., T, F]
  return jnp.swapaxes(spec, -1, -2)  # [..., F, T]


@functools.lru_cache(maxsize=None)
def _istft_norm(n_fft: int, hop: int, win_length: int, n_frames: int) -> np.ndarray:
  """Sum over frames of the squared window at each padded sample, [hop * (T - 1) + n_fft]."""
  w2 = _window_padded(n_fft, win_length) ** 2
  n_blocks = -(-n_fft // hop)
  blocks = np.pad(w2, (0, n_blocks * hop - n_fft)).reshape(n_blocks, hop)
  total = np.zeros((n_frames + n_blocks - 1, hop))
  for k in range(n_blocks):  # overlap-add of the n_blocks hop-sized pieces of the window
    total[k:k + n_frames] += blocks[k]
  return total.reshape(-1)[: hop * (n_frames - 1) + n_fft]


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
  """Overlap-adds ``[..., T, n]`` frames spaced by ``hop`` into ``[..., hop * (T - 1) + n]``.

  Each frame is cut into ``ceil(n / hop)`` hop-sized blocks; block ``k`` of frame ``t`` lands on
  output block ``t + k``. Summing ``ceil(n / hop)`` shifted copies avoids a scatter.
  """
  n_frames, n = frames.shape[-2], frames.shape[-1]
  n_blocks = -(-n // hop)
  lead = frames.shape[:-2]
  frames = jnp.pad(frames, [(0, 0)] * len(lead) + [(0, 0), (0, n_blocks * hop - n)])
  blocks = frames.reshape(*lead, n_frames, n_blocks, hop)
  out = jnp.zeros((*lead, n_frames + n_blocks - 1, hop), frames.dtype)
  for k in range(n_blocks):
    out = out.at[..., k:k + n_frames, :].add(blocks[..., k, :])
  return out.reshape(*lead, -1)[..., : hop * (n_frames - 1) + n]


def istft(
    spec: jax.Array,
    length: int,
    n_fft: int = N_FFT,
    hop: int = HOP,
    win_length: int = WIN,
) -> jax.Array:
  """Inverse of :func:`stft` by weighted overlap-add.

  Each frame is inverse-FFT'd, multiplied by the window again, overlap-added and divided by the
  overlap-added squared window (the least-squares inverse of Griffin & Lim). Because every
  original sample lies under at least one frame with a non-zero window (the centring guarantees
  it at both ends), ``istft(stft(x), len(x)) == x`` everywhere up to rounding, whatever the padding
  mode. For a spectrogram that is not the STFT of any signal (e.g. a masked mixture) it returns
  the signal whose STFT is closest in the least-squares sense.

  Args:
    spec: complex ``[..., n_fft // 2 + 1, T]``.
    length: number of output samples (static); zero-filled beyond what the frames cover.
    n_fft, hop, win_length: as given to :func:`stft`.

  Returns:
    real ``[..., length]`` (float32 for complex64 input).
  """
  spec = jnp.asarray(spec)
  if spec.shape[-2] != n_fft // 2 + 1:
    raise ValueError(f"istft: expected {n_fft // 2 + 1} frequency rows for n_fft={n_fft}, "
                     f"got spec {spec.shape}")
  n_frames = spec.shape[-1]
  real_dtype = jnp.real(spec).dtype
  frames = jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=n_fft, axis=-1)  # [..., T, n_fft]
  window = jnp.asarray(_window_padded(n_fft, win_length), dtype=real_dtype)
  signal = _overlap_add(frames.astype(real_dtype) * window, hop)
  norm = _istft_norm(n_fft, hop, win_length, n_frames)
  tiny = np.finfo(np.float32).tiny
  signal = signal / jnp.asarray(np.where(norm > tiny, norm, 1.0), dtype=real_dtype)
  start = n_fft // 2
  signal = signal[..., start:start + length]
  short = length - signal.shape[-1]
  if short > 0:
    signal = jnp.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, short)])
  return signal


def magnitude(spec: jax.Array) -> jax.Array:
  """``|spec|``, real ``[..., F, T]``."""
  return jnp.abs(spec)


def log_magnitude(mag: jax.Array, eps: float = 1e-10) -> jax.Array:
  """``log(mag + eps)`` (natural log), the U-Net input of the public code."""
  return jnp.log(mag + eps)


# ------------------------------------------------------------------------------------------
# Log-frequency warp.
# ------------------------------------------------------------------------------------------


def warp_grid(out_rows: int = WARP_SIZE, in_rows: int = N_FREQ,
              inverse: bool = False) -> np.ndarray:
  """Fractional input rows sampled by the log-frequency warp (or its inverse).

  Rows are addressed with normalised coordinates in [-1, 1] where -1 is row 0 and +1 the last row
  (``align_corners=True``). Output row ``i`` has ``y = linspace(-1, 1, out_rows)[i]`` and samples
  the input at

    forward (``inverse=False``):  y' = (21 ** ((y + 1) / 2) - 11) / 10
    inverse (``inverse=True``):   y' = log(10 y + 11) / log(21) * 2 - 1

  which are inverses of each other and fix both ends (-1 -> -1, 1 -> 1).

  Returns:
    float64 numpy ``[out_rows]``, increasing from 0 to ``in_rows - 1``.
  """
  if out_rows < 2 or in_rows < 2:
    raise ValueError(f"warp_grid: need at least 2 rows, got out_rows={out_rows}, in_rows={in_rows}")
  y = np.linspace(-1.0, 1.0, out_rows)
  half = (_WARP_BASE - 1.0) / 2.0  # 10
  mid = (_WARP_BASE + 1.0) / 2.0  # 11
  if inverse:
    y_in = np.log(half * y + mid) / np.log(_WARP_BASE) * 2.0 - 1.0
  else:
    y_in = (np.power(_WARP_BASE, (y + 1.0) / 2.0) - mid) / half
  rows = (y_in + 1.0) / 2.0 * (in_rows - 1)
  return np.clip(rows, 0.0, in_rows - 1)


def _sample_rows(x: jax.Array, rows: np.ndarray) -> jax.Array:
  """Linear interpolation of ``x[..., R, T]`` at fractional rows -> ``[..., len(rows), T]``."""
  n_in = x.shape[-2]
  lo = np.clip(np.floor(rows).astype(np.int32), 0, n_in - 2)
  frac = jnp.asarray(rows - lo, dtype=x.dtype)[:, None]
  return x[..., lo, :] * (1 - frac) + x[..., lo + 1, :] * frac


def log_freq_warp(x: jax.Array, out_rows: int = WARP_SIZE) -> jax.Array:
  """Resamples linear-frequency rows onto the log-frequency grid.

  Equivalent to the public code's ``grid_sample`` with the warp grid (bilinear, align_corners)
  when the time axis is left alone: columns are untouched, rows are interpolated linearly.
  Low frequencies are stretched (about 3.3 output rows per input row at the bottom of a
  512 -> 256 warp) and high ones compressed (about 6.5 input rows per output row at the top,
  sampled without anti-aliasing, as in the public code).

  Args:
    x: real ``[..., R, T]`` (R = 512 for the standard spectrogram).
    out_rows: rows of the warped image.

  Returns:
    ``[..., out_rows, T]``, same dtype.
  """
  return _sample_rows(x, warp_grid(out_rows, x.shape[-2]))


def log_freq_unwarp(x: jax.Array, out_rows: int = N_FREQ) -> jax.Array:
  """Maps a log-frequency image (e.g. a U-Net mask) back to linear frequency rows.

  Samples the warped rows linearly at ``warp_grid(out_rows, R, inverse=True)``.

  Error bound: the two maps are exact inverses of each other as coordinate maps, but each
  resampling step is a linear interpolation on a grid that is coarser in part of the range.
  ``unwarp(warp(X))`` loses detail of ``X`` at high frequencies, where the warp keeps only one
  row in about 6.5, so it reproduces ``X`` only where ``X`` varies slowly along frequency there
  (a smooth spectral envelope comes back within a few percent; a single-bin line at high
  frequency does not). Likewise ``warp(unwarp(Y))`` reproduces ``Y`` up to the error of linear
  interpolation, worst at the lowest rows, where the unwarp keeps one warped row in about 3.3.
  Both errors are second order in the grid step for twice-differentiable images.

  Args:
    x: real ``[..., R, T]`` (R = 256 for the standard warped image).
    out_rows: linear-frequency rows to produce (512 for the standard spectrogram).

  Returns:
    ``[..., out_rows, T]``, same dtype.
  """
  return _sample_rows(x, warp_grid(out_rows, x.shape[-2], inverse=True))


# ------------------------------------------------------------------------------------------
# Mixing.
# ------------------------------------------------------------------------------------------


def random_gains(
    rng: jax.Array, shape: tuple[int, ...], low: float = 0.5, high: float = 1.5, dtype=jnp.float32
) -> jax.Array:
  """Uniform per-source gains in ``[low, high)`` (the public code's 0.5-1.5 augmentation)."""
  return jax.random.uniform(rng, shape, dtype=dtype, minval=low, maxval=high)


def mix(sources: jax.Array, gains: jax.Array | None = None, normalise: bool = False) -> jax.Array:
  """Mixes sources by summation.

  Args:
    sources: real ``[..., N, L]`` waveforms.
    gains: optional ``[..., N]`` per-source gains applied before summing.
    normalise: divide the sum by N (the public code does; the paper writes a plain sum).

  Returns:
    ``[..., L]``. The gained sources themselves are ``sources * gains[..., None]``.
  """
  sources = jnp.asarray(sources)
  if gains is not None:
    sources = sources * jnp.asarray(gains, dtype=sources.dtype)[..., None]
  mixture = jnp.sum(sources, axis=-2)
  if normalise:
    mixture = mixture / sources.shape[-2]
  return mixture


# ------------------------------------------------------------------------------------------
# Masks.
# ------------------------------------------------------------------------------------------


def ideal_binary_mask(mags: jax.Array) -> jax.Array:
  """One-hot of the loudest source at each time-frequency bin.

  Args:
    mags: real ``[..., N, F, T]`` source magnitudes.

  Returns:
    ``[..., N, F, T]`` of 0/1 in ``mags.dtype``; exactly one 1 per bin (ties go to the lowest
    source index), so the masks sum to exactly 1 over N.
  """
  mags = jnp.asarray(mags)
  winner = jnp.argmax(mags, axis=-3)  # first maximum on ties
  return jax.nn.one_hot(winner, mags.shape[-3], axis=-3, dtype=mags.dtype)


def ideal_ratio_mask(
    mags: jax.Array, mix_mag: jax.Array, clip_max: float = 5.0, eps: float = 1e-10
) -> jax.Array:
  """``|S_i| / (|X| + eps)`` clipped to ``[0, clip_max]``: the public code's regression target.

  Args:
    mags: ``[..., N, F, T]`` source magnitudes.
    mix_mag: ``[..., F, T]`` mixture magnitude.
    clip_max: upper clamp (sources can exceed the mixture where they cancel).
    eps: added to the mixture magnitude, as in the public code (``mag_mix + 1e-10``).

  Returns:
    ``[..., N, F, T]``.
  """
  mags = jnp.asarray(mags)
  ratio = mags / (jnp.asarray(mix_mag, dtype=mags.dtype)[..., None, :, :] + eps)
  return jnp.clip(ratio, 0.0, clip_max)


def apply_mask(mask: jax.Array, mix_spec: jax.Array) -> jax.Array:
  """Scales the mixture's magnitude by a real mask and keeps the mixture's phase.

  Args:
    mask: real, broadcastable against ``mix_spec`` (e.g. ``[..., F, T]``, or ``[..., N, F, T]``
      with ``mix_spec[..., None, :, :]``).
    mix_spec: complex ``[..., F, T]``.

  Returns:
    complex, the broadcast shape: ``mask * |X| * exp(i angle(X)) = mask * X``.
  """
  mix_spec = jnp.asarray(mix_spec)
  return jnp.asarray(mask, dtype=jnp.real(mix_spec).dtype) * mix_spec


def masks_to_waveforms(
    masks: jax.Array, mix_spec: jax.Array, length: int, n_fft: int = N_FFT, hop: int = HOP,
    win_length: int = WIN,
) -> jax.Array:
  """Separated waveforms from linear-frequency masks and the mixture STFT.

  Args:
    masks: real ``[..., N, F, T]`` on the linear frequency axis (unwarp U-Net masks first).
    mix_spec: complex ``[..., F, T]``.
    length: output samples (static).

  Returns:
    real ``[..., N, length]``: ``istft(masks[i] * X)``.
  """
  spec = apply_mask(masks, jnp.asarray(mix_spec)[..., None, :, :])
  return istft(spec, length, n_fft=n_fft, hop=hop, win_length=win_length)


def mixture_features(wav: jax.Array, normalise_mix: bool = False, num_videos: int | None = None,
                     eps: float = 1e-10) -> dict[str, jax.Array]:
  """The model's audio front end: a mixture of ``U`` videos' waveforms -> its inputs and targets.

  The mixture's spectrum is the sum of the videos' spectra (their waveforms summed, by the
  STFT's linearity), divided by the number of videos when ``normalise_mix`` (the public code's
  mixture ``sum / N``). Training, evaluation and inference all build the U-Net input here.

  Args:
    wav: ``[..., U, L]`` waveforms (``U = 1`` for a recording to separate).
    normalise_mix: divide the mixture by the number of videos.
    num_videos: that number, when it is not ``U`` (a single recording separated by a model
      trained on mixtures of ``num_videos``); default ``U``.
    eps: added before the log.

  Returns:
    dict with ``spec`` (complex ``[..., U, 512, T]``, each video's), ``mix_spec`` (complex
    ``[..., 512, T]``, normalised as above), ``mix_log_mag`` (``[..., 256, T]``,
    ``log(warp(|mix_spec|) + eps)``, the U-Net input) and ``video_mag_warped``
    (``[..., U, 256, T]``, ``warp(|spec|)``, the mask targets).
  """
  wav = jnp.asarray(wav).astype(jnp.float32)
  spec = stft(wav)
  mix_spec = spec.sum(axis=-3)
  if normalise_mix:
    mix_spec = mix_spec / (num_videos or wav.shape[-2])
  return {"spec": spec, "mix_spec": mix_spec,
          "mix_log_mag": log_magnitude(log_freq_warp(magnitude(mix_spec)), eps),
          "video_mag_warped": log_freq_warp(magnitude(spec))}


def spectrogram_features(wav: jax.Array, eps: float = 1e-10) -> dict[str, jax.Array]:
  """Model inputs for a waveform crop, following the public code.

  The magnitude is warped first and the log taken after (``log(warp(|X|) + eps)``).

  Args:
    wav: ``[..., L]``; a ``CROP``-sample crop gives the standard sizes below.

  Returns:
    dict with ``spec`` (complex ``[..., 512, T]``), ``mag`` (``[..., 512, T]``),
    ``warped_mag`` (``[..., 256, T]``) and ``warped_log_mag`` (``[..., 256, T]``), T = 256 for CROP.
  """
  spec = stft(wav)
  mag = magnitude(spec)
  warped = log_freq_warp(mag)
  return {"spec": spec, "mag": mag, "warped_mag": warped,
          "warped_log_mag": log_magnitude(warped, eps)}
