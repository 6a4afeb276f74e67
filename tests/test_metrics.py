"""BSS Eval v3 in JAX against mir_eval (float64), plus the direction-accuracy functions."""

import jax
import jax.numpy as jnp
import mir_eval.separation
import numpy as np
import pytest
import scipy.signal

from asmp_jax import metrics

# mir_eval 0.8 deprecates its separation module: every call warns.
pytestmark = pytest.mark.filterwarnings("ignore:mir_eval.separation:FutureWarning")

N_SAMPLES = 4000  # padded to 4096 by the numpy wrapper: all 2-source cases share one program
SR = 11025


def _noise(seed: int, n_src: int = 2) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((n_src, N_SAMPLES))


def _harmonic(f0: float, rng: np.random.Generator, n_harmonics: int = 6) -> np.ndarray:
  """A decaying harmonic tone, [N_SAMPLES]."""
  t = np.arange(N_SAMPLES) / SR
  phases = rng.uniform(0, 2 * np.pi, n_harmonics)
  k = np.arange(1, n_harmonics + 1)[:, None]
  partials = 0.7 ** k * np.sin(2 * np.pi * f0 * k * t + phases[:, None])
  return partials.sum(0) * np.exp(-2.0 * t)


def _mix(ref: np.ndarray, matrix, noise: float, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.asarray(matrix) @ ref + noise * rng.standard_normal(ref.shape)


def _assert_matches_mir_eval(ref, est, atol_db, compute_permutation=True):
  expected = mir_eval.separation.bss_eval_sources(ref, est, compute_permutation)
  got = metrics.bss_eval_sources(ref, est, compute_permutation)
  for name, e, g in zip(("sdr", "sir", "sar"), expected[:3], got[:3]):
    assert g.dtype == np.float64 and g.shape == e.shape, name
    np.testing.assert_allclose(g, e, rtol=0, atol=atol_db, err_msg=name)
  np.testing.assert_array_equal(got[3], expected[3])
  assert got[3].dtype == np.int64
  return got


def _pair_scores(ref, est_k, j):
  """mir_eval's own decomposition of one (estimate, reference j) pair: (sdr, sir, sar)."""
  parts = mir_eval.separation._bss_decomp_mtifilt(ref, est_k, j, 512)
  return np.array(mir_eval.separation._bss_source_crit(*parts))


def test_white_noise_matches_mir_eval():
  ref = _noise(0)
  est = _mix(ref, [[1.0, 0.3], [0.2, 1.0]], 0.1, seed=1)
  sdr, _, _, _ = _assert_matches_mir_eval(ref, est, atol_db=1e-6)
  assert np.all(sdr > 5)


def test_harmonic_sources_match_mir_eval():
  rng = np.random.default_rng(2)
  ref = np.stack([_harmonic(220.0, rng), _harmonic(330.0, rng)])
  # Interference plus a tonal artefact that is not in the references' span.
  est = _mix(ref, [[1.0, 0.2], [0.1, 1.0]], 0.0, seed=0)
  est += 0.01 * np.stack([_harmonic(507.0, rng), _harmonic(97.0, rng)])
  _assert_matches_mir_eval(ref, est, atol_db=1e-2)


def test_filtered_and_delayed_copies_match_mir_eval():
  """Estimates = 32-tap filtered, 7-sample delayed references (+ leak, noise): high SDR."""
  rng = np.random.default_rng(3)
  ref = _noise(4)
  taps = rng.standard_normal((2, 32)) * np.exp(-np.arange(32) / 6)
  filtered = np.stack([scipy.signal.lfilter(h, [1.0], np.pad(r, (7, 0))[:N_SAMPLES])
                       for h, r in zip(taps, ref)])
  est = filtered + 0.05 * ref[::-1] + 1e-3 * rng.standard_normal(ref.shape)
  sdr, sir, sar, _ = _assert_matches_mir_eval(ref, est, atol_db=1e-6)
  assert np.all(sdr > 20) and np.all(sir > 20) and np.all(sar > 25)


def test_swapped_sources_permutation_is_found():
  ref = _noise(5)
  est = _mix(ref, [[0.2, 1.0], [1.0, 0.3]], 0.1, seed=6)  # estimate 0 is source 1
  sdr, sir, sar, perm = _assert_matches_mir_eval(ref, est, atol_db=1e-6)
  np.testing.assert_array_equal(perm, [1, 0])
  # Same scores as with the estimates given in the right order.
  ordered = metrics.bss_eval_sources(ref, est[::-1])
  np.testing.assert_array_equal(ordered[3], [0, 1])
  np.testing.assert_allclose(np.stack([sdr, sir, sar]), np.stack(ordered[:3]), atol=1e-9)


def test_compute_permutation_false_matches_mir_eval():
  ref = _noise(5)
  est = _mix(ref, [[0.2, 1.0], [1.0, 0.3]], 0.1, seed=6)
  sdr, _, _, perm = _assert_matches_mir_eval(ref, est, atol_db=1e-6, compute_permutation=False)
  np.testing.assert_array_equal(perm, [0, 1])
  assert np.all(sdr < 0)  # wrong pairing scored as asked


def test_three_sources_match_mir_eval():
  ref = _noise(7, n_src=3)
  est = _mix(ref, [[0.1, 0.2, 1.0], [1.0, 0.1, 0.3], [0.2, 1.0, 0.1]], 0.2, seed=8)
  _, _, _, perm = _assert_matches_mir_eval(ref, est, atol_db=1e-6)
  np.testing.assert_array_equal(perm, [1, 2, 0])


def test_single_source_1d_input():
  ref = _noise(9)[0]
  est = ref + 0.1 * _noise(10)[0]
  sdr, sir, sar, perm = _assert_matches_mir_eval(ref, est, atol_db=1e-6)
  assert sdr.shape == (1,) and sir[0] == np.inf and perm.tolist() == [0]


def test_batched_equals_per_example_and_silent_sources_are_nan():
  """One batch: a normal example, a silent estimate, a silent reference."""
  ref = np.stack([_noise(11), _noise(12), _noise(13)])
  est = np.stack([_mix(r, [[1.0, 0.3], [0.4, 1.0]], 0.2, seed=20 + i) for i, r in enumerate(ref)])
  est[1, 1] = 0.0
  ref[2, 0] = 0.0
  ref = np.pad(ref, ((0, 0), (0, 0), (0, 96)))  # 4096 samples: the wrapper's bucket length
  est = np.pad(est, ((0, 0), (0, 0), (0, 96)))
  with jax.enable_x64(True):
    out = metrics.bss_eval_sources_batched(jnp.asarray(ref), jnp.asarray(est))
    sdr, sir, sar, perm = (np.asarray(x) for x in out)
  assert sdr.shape == (3, 2) and perm.shape == (3, 2) and sdr.dtype == np.float64

  # Example 0 is unaffected by its neighbours and equals the single-example call / mir_eval.
  single = metrics.bss_eval_sources(ref[0], est[0])
  np.testing.assert_allclose(np.stack([sdr[0], sir[0], sar[0]]), np.stack(single[:3]),
                             rtol=0, atol=1e-9)
  np.testing.assert_array_equal(perm[0], single[3])
  _assert_matches_mir_eval(ref[0], est[0], atol_db=1e-6)

  valid = metrics.source_validity(ref, est, perm)
  np.testing.assert_array_equal(valid, ~np.isnan(sdr))
  np.testing.assert_array_equal(valid, [[True, True], [True, False], [False, True]])
  for metric in (sdr, sir, sar):
    np.testing.assert_array_equal(np.isnan(metric), ~valid)

  # Silent estimate 1: the remaining pair is mir_eval's decomposition with both references.
  k = perm[1, 0]
  assert k == 0  # the silent estimate cannot be matched to a valid pair
  np.testing.assert_allclose([sdr[1, 0], sir[1, 0], sar[1, 0]], _pair_scores(ref[1], est[1, k], 0),
                             atol=1e-6)
  # Silent reference 0: it drops out of the interference subspace.
  k = perm[2, 1]
  np.testing.assert_allclose([sdr[2, 1], sir[2, 1], sar[2, 1]],
                             _pair_scores(ref[2, 1:], est[2, k], 0), atol=1e-6)

  # The numpy wrapper gives the same NaNs instead of mir_eval's ValueError.
  with pytest.raises(ValueError):
    mir_eval.separation.bss_eval_sources(ref[2], est[2])
  wrapped = metrics.bss_eval_sources(ref[2], est[2])
  np.testing.assert_allclose(wrapped[0], sdr[2], atol=1e-9)


def test_non_finite_sample_is_treated_as_silent():
  ref = _noise(16)
  est = _mix(ref, [[1.0, 0.3], [0.2, 1.0]], 0.1, seed=17)
  silent = est.copy()
  silent[0] = 0.0
  est[0, 123] = np.nan
  got = metrics.bss_eval_sources(ref, est)
  expected = metrics.bss_eval_sources(ref, silent)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g, e)
  assert np.isnan(got[0][0]) and np.isfinite(got[0][1])
  np.testing.assert_array_equal(metrics.source_validity(ref, est, got[3]), [False, True])


def test_float32_without_x64_is_close_on_noise():
  ref = _noise(14)
  est = _mix(ref, [[1.0, 0.3], [0.2, 1.0]], 0.1, seed=15)
  expected = mir_eval.separation.bss_eval_sources(ref, est)
  with jax.enable_x64(False):
    out = metrics.bss_eval_sources_batched(ref[None].astype(np.float32),
                                           est[None].astype(np.float32))
    with pytest.raises(ValueError, match="x64"):
      metrics.bss_eval_sources_batched(ref[None], est[None], dtype=np.float64)
  assert out[0].dtype == jnp.float32
  for e, g in zip(expected[:3], out[:3]):
    np.testing.assert_allclose(np.asarray(g[0]), e, atol=2e-2)


def test_invalid_inputs_raise():
  ref = _noise(0)
  with pytest.raises(ValueError, match="same shape"):
    metrics.bss_eval_sources(ref, ref[:, :100])
  with pytest.raises(ValueError, match="same shape"):
    metrics.bss_eval_sources(ref[None], ref[None])
  empty = metrics.bss_eval_sources(np.zeros((0, 0)), np.zeros((0, 0)))
  assert all(x.size == 0 for x in empty)


def test_direction_accuracy():
  pred = np.array([[0, 1, 2], [3, 3, 9]])
  label = np.array([[0, 2, 2], [3, 4, 5]])
  assert metrics.direction_accuracy(pred, label) == pytest.approx(3 / 6)
  valid = np.array([[True, True, True], [True, False, False]])
  assert metrics.direction_accuracy(pred, label, valid) == pytest.approx(3 / 4)
  assert np.isnan(metrics.direction_accuracy(pred, label, np.zeros_like(valid)))
  with pytest.raises(ValueError):
    metrics.direction_accuracy(pred, label[:, :2])


def test_majority_vote_accuracy():
  train = np.array([1, 1, 2, 2, 2, 7])  # majority class 2
  test = np.array([2, 2, 1, 0])
  assert metrics.majority_vote_accuracy(train, test) == pytest.approx(0.5)
  assert metrics.majority_vote_accuracy(train, test, np.array([1, 1, 1, 0], bool)) == (
      pytest.approx(2 / 3))
  # Ties go to the smallest class; masked training labels are ignored.
  assert metrics.majority_vote_accuracy([3, 1], [1, 3]) == pytest.approx(0.5)
  train_valid = np.array([0, 0, 0, 0, 0, 1], bool)
  assert metrics.majority_vote_accuracy(train, [7, 7, 2], train_valid=train_valid) == (
      pytest.approx(2 / 3))
  with pytest.raises(ValueError):
    metrics.majority_vote_accuracy([], [1])


def test_clustered_mean_se():
  rng = np.random.default_rng(0)
  v = (rng.random(50) < 0.4).astype(float)
  # One item per cluster: the ordinary standard error of the mean.
  mean, se = metrics.clustered_mean_se(v, np.arange(50))
  assert mean == pytest.approx(v.mean())
  assert se == pytest.approx(v.std(ddof=1) / np.sqrt(50))
  # Every answer counted twice within its cluster (as a window is, once per covering crop):
  # the mean and its error stay, where the binomial error of 100 answers would shrink by √2.
  mean2, se2 = metrics.clustered_mean_se(np.repeat(v, 2), np.repeat(np.arange(50), 2))
  assert (mean2, se2) == pytest.approx((mean, se))
  # Uneven clusters, against the sandwich formula written out.
  c = rng.integers(0, 7, size=50)
  _, se3 = metrics.clustered_mean_se(v, c)
  groups = np.unique(c)
  totals = np.array([np.sum(v[c == g] - v.mean()) for g in groups])
  assert se3 == pytest.approx(np.sqrt(len(groups) / (len(groups) - 1) * np.sum(totals ** 2)) / 50)
  # Whole clusters right or wrong: far larger than the error of independent answers.
  lumpy = np.repeat(v[:10], 5)
  assert metrics.clustered_mean_se(lumpy, np.repeat(np.arange(10), 5))[1] > 2 * (
      metrics.clustered_mean_se(lumpy, np.arange(50))[1])
  assert np.isnan(metrics.clustered_mean_se(v, np.zeros(50))[1])  # one cluster
  assert all(np.isnan(metrics.clustered_mean_se([], [])))
  with pytest.raises(ValueError, match="differ in size"):
    metrics.clustered_mean_se(v, np.arange(49))


def test_direction_statistics_live_in_their_own_module_and_stay_importable_from_metrics():
  from asmp_jax import direction_stats  # pylint: disable=g-import-not-at-top
  for name in ("direction_accuracy", "majority_vote_accuracy", "clustered_mean_se"):
    assert getattr(metrics, name) is getattr(direction_stats, name)
