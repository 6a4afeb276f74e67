"""Evaluation metrics: BSS Eval v3 separation scores (here) and direction accuracies
(`asmp_jax.direction_stats`, importable from here too).

BSS Eval v3 (Vincent, Gribonval & Fevotte 2006; ``mir_eval.separation.bss_eval_sources``)
---------------------------------------------------------------------------------------
For an estimate ``e`` and references ``x_1..x_n`` (all zero-padded by ``L - 1 = 511`` samples), let
``P_j e`` be the least-squares projection of ``e`` onto the span of the ``L = 512`` delayed copies
``x_j(t - a), a = 0..L-1`` of reference ``j`` (a 512-tap distortion filter), and ``P e`` the
projection onto the delayed copies of *all* references. mir_eval decomposes
``e = s_target + e_interf + e_artif`` with ``s_target = P_j e``, ``e_interf = P e - P_j e`` and
``e_artif = e - P e`` and reports, in dB::

  SDR = 10 log10(|s_target|^2 / |e_interf + e_artif|^2)
  SIR = 10 log10(|s_target|^2 / |e_interf|^2)
  SAR = 10 log10(|s_target + e_interf|^2 / |e_artif|^2)

Because the projections are orthogonal and nested, only three energies per (estimate, reference)
pair are needed, and they follow from the normal equations alone: with the Gram matrix ``G`` of
the delayed references (auto/cross-correlations at lags ``-(L-1)..L-1``, computed with FFTs as
mir_eval does) and ``d = [<x_i(. - a), e>]``, ``|P e|^2 = d^T G^{-1} d``; then
``|e_interf|^2 = |P e|^2 - |P_j e|^2`` and ``|e_artif|^2 = |e|^2 - |P e|^2``. No filtered signal is
formed. ``G`` is block-Toeplitz (its blocks depend only on the delay difference), so instead of
factoring the ``nL x nL`` matrix (mir_eval: one LU solve of it per (estimate, reference) pair) we
run the multichannel Levinson (Whittle) recursion over the 512 delays, ``O(L^2 n^3)``: once with
all references (every estimate is a right-hand side of the same recursion) and once per reference
on its own ``L x L`` Toeplitz block, which covers all ``n^2`` pairs the permutation search needs.
The recursion orthogonalises the delays one at a time (backward prediction errors), so ``d^T G^{-1}
d`` comes out as a sum of non-negative terms, like ``|C^{-1} d|^2`` with a Cholesky factor ``C``.
Signals are scaled to unit energy first (the ratios are scale-invariant), so ``G``'s diagonal is 1.

Permutation (as mir_eval): with ``sir[k, j]`` the SIR of estimate ``k`` against reference ``j``,
all permutations ``p`` of ``range(n)`` in ``itertools.permutations`` (lexicographic) order are
scored by ``mean_j sir[p[j], j]`` and the first maximum wins (``np.argmax``). Outputs are indexed
by reference: ``sdr[j]`` scores estimate ``perm[j]`` against reference ``j``.

Numerical conditioning. ``G`` is a Gram matrix, hence positive semi-definite; it is (nearly)
singular when delayed references are (nearly) linearly dependent: identical or mutually
delayed/filtered references, clips shorter than the filter, tones, strongly low-passed signals.
mir_eval solves with LU and falls back to ``lstsq`` only on an exactly singular matrix. A Levinson
recursion is not stable on a singular matrix, so we add a diagonal load of ``1e-13`` (float64;
relative to the unit diagonal) to ``G`` - a ridge at the scale of ``lstsq``'s default rank
cut-off ``eps * max(shape)`` ~ 2.3e-13 - which keeps the block-Toeplitz structure. Directions with
eigenvalue well above the load are unaffected (relative change ~ load / eigenvalue); directions at
or below it, which are numerically not in the span, are suppressed. Measured against mir_eval
(float64): white noise ~1e-13 dB; harmonic sounds, tones and delayed/filtered references ~1e-9 to
1e-7 dB; strongly low-passed noise ~2e-7 dB on SDR/SIR and 1e-3 dB on a SAR of 95 dB. On singular
cases (identical references, clips shorter than 512 samples) SDR and SIR still agree to 1e-9 dB
while scores that are infinite in exact arithmetic come out > 100 dB (mir_eval: > 200 dB); any
score above ~100 dB is round-off in every implementation and should be read as "perfect".
Residual energies that round below zero are clamped to zero and give ``+inf`` dB, as mir_eval's
``_safe_db`` does for an exactly-zero denominator.

Silent sources. mir_eval raises ``ValueError`` if any reference or estimate is all zeros. Here
such a source yields NaN in ``sdr``, ``sir`` and ``sar`` at every reference index ``j`` for which
reference ``j`` or its matched estimate ``perm[j]`` is all zeros; see :func:`source_validity`
(equivalently ``valid = ~np.isnan(sdr)``; do not use ``np.isfinite``, ``+inf`` is a legitimate
score). Every defined score equals mir_eval's decomposition of that (estimate, reference) pair
with the silent references left out of the interference subspace (they span nothing), so it is
mir_eval's own number when only estimates are silent; other examples of a batch are unaffected.
The permutation search maximises the mean SIR over the defined pairs of each permutation. A signal
containing a NaN or inf sample is treated exactly like a silent one.

Precision. Reported numbers must be float64: :func:`bss_eval_sources` always computes in
float64 (it enables x64 for the call with ``jax.enable_x64``). :func:`bss_eval_sources_batched`
uses float64 when x64 is enabled and float32 otherwise (or when asked). float32 agrees with mir_eval
to ~1e-4 dB on broadband (noise-like) signals at moderate scores, but on tonal or low-passed
signals the prediction errors fall below float32 resolution and SIR/SAR can be off by dBs or come
out ``+inf``; use float32 only for rough monitoring (e.g. on accelerators without float64).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

from asmp_jax.direction_stats import (  # noqa: F401  (public names of this module)
    clustered_mean_se, direction_accuracy, majority_vote_accuracy)

FILTER_LENGTH = 512
"""Length of BSS Eval v3's time-invariant distortion filters (taps), as in mir_eval."""

MAX_PERMUTATION_SOURCES = 8
"""Largest number of sources for which all permutations are enumerated (8! = 40320)."""

_LENGTH_BUCKET = 1024
"""The numpy wrapper zero-pads signals to a multiple of this many samples (scores are invariant
to trailing zeros) so that clips of similar length share one compiled program."""

_DIAGONAL_LOAD = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 1e-5}
"""Added to the unit diagonal of the Gram matrix (ridge), about lstsq's default rank cut-off
``eps * 1024`` in float64; see the module docstring."""

Array = jax.Array


def fft_length(n_samples: int, filter_length: int = FILTER_LENGTH) -> int:
  """FFT size for the correlations: the smallest fast (5-smooth) length >= n + L - 1.

  Any size >= ``n_samples + filter_length - 1`` gives the exact linear correlations at lags
  ``|k| < filter_length``; mir_eval uses the next power of two, we use a fast composite length
  (e.g. 67500 instead of 131072 for 65280 samples), which changes only round-off.
  """
  return int(scipy.fft.next_fast_len(n_samples + filter_length - 1, real=True))


def _resolve_dtype(dtype: Any) -> np.dtype:
  """float64 when x64 is enabled, else float32; rejects float64 without x64."""
  if dtype is None:
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)
  dtype = np.dtype(dtype)
  if dtype not in _DIAGONAL_LOAD:
    raise ValueError(f"dtype must be float32 or float64, got {dtype}.")
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError(
        "dtype=float64 needs 64-bit JAX: wrap the call in `with jax.enable_x64(True):` "
        "(or use asmp_jax.metrics.bss_eval_sources, which does it for you).")
  return dtype


def _unit_energy(x: Array) -> tuple[Array, Array]:
  """Scales each signal of ``x [..., T]`` to unit energy; returns it and ``active [...]``.

  All-zero signals, and signals with a non-finite sample (set to zero), are inactive. The
  max-abs prescale avoids overflow of ``x**2`` in float32.
  """
  finite = jnp.all(jnp.isfinite(x), axis=-1, keepdims=True)
  x = jnp.where(finite, x, 0)
  peak = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
  active = peak[..., 0] > 0
  x = x / jnp.where(peak > 0, peak, 1)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.where(norm > 0, norm, 1), active


def _normal_equations(ref: Array, est: Array, filter_length: int,
                      n_fft: int) -> tuple[Array, Array]:
  """Correlations of the delayed references with each other and with the estimates.

  Args:
    ref: [B, n, T] references.
    est: [B, m, T] estimates.
    filter_length: L, number of delays 0..L-1.
    n_fft: FFT size >= T + L - 1 (linear, not circular, correlations).

  Returns:
    toeplitz: [B, 2L-1, n, n], ``toeplitz[b, s + L - 1, i, j] = sum_t x_j[t + s] x_i[t]`` =
      ``<x_i(. - a), x_j(. - c)>`` for ``a - c = s``: the blocks of the Gram matrix.
    cross: [B, L, n, m], ``cross[b, a, i, k] = <x_i(. - a), e_k>``.
  """
  n = ref.shape[1]
  length = filter_length
  spec = jnp.fft.rfft(jnp.concatenate([ref, est], axis=1), n=n_fft, axis=-1)  # [B, n+m, F]
  # corr[b, i, s, k] = sum_t sig_s[t + k] x_i[t]  (circular, exact for |k| < L).
  corr = jnp.fft.irfft(spec[:, None, :, :] * jnp.conj(spec[:, :n, None, :]), n=n_fft, axis=-1)
  lags = jnp.concatenate([corr[..., n_fft - (length - 1):], corr[..., :length]], axis=-1)
  lags = jnp.moveaxis(lags, -1, 1)  # [B, 2L-1, n, n+m]
  return lags[..., :n], lags[:, length - 1:, :, n:]


def _small_cholesky(p: Array) -> tuple[list[list[Array]], list[Array]]:
  """Cholesky factor of small SPD matrices ``p [..., k, k]``, unrolled over the static k.

  A non-positive pivot (only possible through round-off) drops that direction, as a
  pseudo-inverse would.

  Returns:
    factor: ``factor[i][j]`` = entry (i, j) of the lower factor, arrays of shape ``[...]``.
    inv_diag: ``1 / factor[j][j]``, or 0 for dropped pivots.
  """
  k = p.shape[-1]
  factor = [[None] * k for _ in range(k)]
  inv_diag = [None] * k
  for j in range(k):
    pivot = p[..., j, j] - sum((factor[j][c] ** 2 for c in range(j)), jnp.zeros_like(p[..., 0, 0]))
    keep = pivot > 0
    root = jnp.sqrt(jnp.where(keep, pivot, 1))
    factor[j][j] = jnp.where(keep, root, 0)
    inv_diag[j] = jnp.where(keep, 1 / root, 0)
    for i in range(j + 1, k):
      dot = sum((factor[i][c] * factor[j][c] for c in range(j)), jnp.zeros_like(p[..., 0, 0]))
      factor[i][j] = (p[..., i, j] - dot) * inv_diag[j]
  return factor, inv_diag


def _forward_substitute(factor: list[list[Array]], inv_diag: list[Array], rhs: Array) -> Array:
  """Solves ``C w = rhs`` for the lower factor C of :func:`_small_cholesky`; rhs [..., k, r]."""
  rows = []
  for j in range(len(inv_diag)):
    acc = rhs[..., j, :]
    for c in range(j):
      acc = acc - factor[j][c][..., None] * rows[c]
    rows.append(acc * inv_diag[j][..., None])
  return jnp.stack(rows, axis=-2)


def _spd_solve(p: Array, rhs: Array) -> Array:
  """``p^+ rhs`` for small SPD ``p [..., k, k]`` and ``rhs [..., k, r]`` (dropped pivots -> 0)."""
  factor, inv_diag = _small_cholesky(p)
  w = _forward_substitute(factor, inv_diag, rhs)
  k = len(inv_diag)
  rows = [None] * k
  for j in reversed(range(k)):
    acc = w[..., j, :]
    for c in range(j + 1, k):
      acc = acc - factor[c][j][..., None] * rows[c]
    rows[j] = acc * inv_diag[j][..., None]
  return jnp.stack(rows, axis=-2)


def _levinson_energy(toeplitz: Array, cross: Array) -> Array:
  """``d^T G^{-1} d`` for a symmetric positive semi-definite block-Toeplitz ``G``.

  ``G`` has ``L x L`` blocks ``G[a, c] = T_{a-c}`` of size ``k x k`` (delays a, c; channels
  inside a block), with ``T_{-s} = T_s^T``. This is Whittle's multichannel Levinson recursion
  read as a Gram-Schmidt over delays: the order-m backward prediction errors ``g_m`` (of the
  delay-m signals given delays 0..m-1) are mutually orthogonal and span the same space as the
  first m+1 delays, so the energy is ``sum_m <g_m, e>^T Pb_m^{-1} <g_m, e>``, a sum of
  non-negative terms, in ``O(L^2 k^3)`` instead of Cholesky's ``O(L^3 k^3)``. ``G`` should be
  positive definite (the caller adds a small diagonal load); the recursion is not stable on a
  singular ``G``.

  Args:
    toeplitz: [..., 2L-1, k, k], ``toeplitz[..., s + L - 1, :, :] = T_s``.
    cross: [..., L, k, r], ``cross[..., a, i, :] = <x_i(. - a), e>`` for r right-hand sides.

  Returns:
    [..., r] energies of the projections.
  """
  length, k, r = cross.shape[-3:]
  batch = cross.shape[:-3]
  # Predictors as k x (L k) matrices acting on the stacked delays [u_0; u_1; ...; u_{L-1}], so
  # that every update below is a small batched matmul.
  first = jnp.zeros(batch + (k, length * k), cross.dtype).at[..., :, :k].set(
      jnp.eye(k, dtype=cross.dtype))
  cross = cross.reshape(batch + (length * k, r))
  zero_lag = toeplitz[..., length - 1, :, :]

  def step(carry, order):
    # Forward (alpha) and backward (beta) predictors of order m = `order` on delays 0..m
    # (alpha's delay-0 block and beta's delay-m block are I); pf, pb their error covariances.
    alpha, beta, pf, pb, energy = carry
    factor, inv_diag = _small_cholesky(pb)
    white = _forward_substitute(factor, inv_diag, beta @ cross)  # Pb^{-1/2} <g_m, e>
    energy = energy + jnp.sum(white * white, axis=-2)
    # delta = <f_m, u_{m+1}> = sum_a alpha_a T_{a-m-1}.
    lags = jax.lax.dynamic_slice_in_dim(toeplitz, length - 2 - order, length, axis=-3)
    delta = alpha @ lags.reshape(batch + (length * k, k))
    gain_f = jnp.swapaxes(_spd_solve(pb, jnp.swapaxes(delta, -1, -2)), -1, -2)
    gain_b = jnp.swapaxes(_spd_solve(pf, delta), -1, -2)
    shifted = jnp.concatenate([jnp.zeros_like(beta[..., :k]), beta[..., :-k]], axis=-1)
    new_alpha = alpha - gain_f @ shifted
    new_beta = shifted - gain_b @ alpha
    pf = pf - gain_f @ jnp.swapaxes(delta, -1, -2)
    pb = pb - gain_b @ delta
    return (new_alpha, new_beta, pf, pb, energy), None

  energy = jnp.zeros(batch + (r,), cross.dtype)
  init = (first, first, zero_lag, zero_lag, energy)
  (_, _, _, _, energy), _ = jax.lax.scan(step, init, jnp.arange(length))
  return energy


def _projection_energies(ref: Array, est: Array, filter_length: int,
                         load: float) -> tuple[Array, Array]:
  """Energies of the projections of unit-energy estimates on the delayed references.

  Args:
    ref, est: [B, n, T] unit-energy (or all-zero) signals.
    filter_length: L.
    load: diagonal load added to the Gram matrix.

  Returns:
    own: [B, m, n], ``|P_j e_k|^2`` at ``[b, k, j]``.
    full: [B, m], ``|P e_k|^2`` (all references).
  """
  n = ref.shape[1]
  toeplitz, cross = _normal_equations(ref, est, filter_length,
                                      fft_length(ref.shape[-1], filter_length))
  toeplitz = toeplitz.at[:, filter_length - 1].add(load * jnp.eye(n, dtype=toeplitz.dtype))
  full = _levinson_energy(toeplitz, cross)
  if n == 1:  # P_j = P: zero interference exactly, SIR = +inf as in mir_eval.
    return full[..., None], full
  # One scalar Toeplitz system per reference: batch over j.
  diag = jnp.moveaxis(toeplitz[..., np.arange(n), np.arange(n)], -1, 1)[..., None, None]
  own = _levinson_energy(diag, jnp.moveaxis(cross, 2, 1)[..., None, :])  # [B, n, m]
  return jnp.swapaxes(own, -1, -2), full


def _ratio_db(num: Array, den: Array) -> Array:
  """``10 log10(num / den)`` with ``den <= 0`` read as an exact zero (``+inf``)."""
  den = jnp.maximum(den, 0)
  safe = jnp.where(den > 0, den, 1)
  return jnp.where(den > 0, 10 * jnp.log10(num / safe), jnp.inf)


def _criteria(own: Array, full: Array, energy: Array) -> tuple[Array, Array, Array]:
  """SDR/SIR/SAR in dB for every (estimate k, reference j) pair, each [B, m, n]."""
  energy = energy[..., None]
  full = full[..., None]
  sdr = _ratio_db(own, energy - own)
  sir = _ratio_db(own, full - own)
  sar = _ratio_db(full, energy - full)
  return sdr, sir, jnp.broadcast_to(sar, own.shape)


def _best_permutation(sir: Array, pair_valid: Array) -> Array:
  """mir_eval's permutation choice, [B, n] int: ``perm[j]`` is the estimate for reference j.

  Permutations in ``itertools.permutations`` order, score = mean over references of the SIR of
  the valid pairs, first maximum wins.
  """
  n = sir.shape[-1]
  perms = np.array(list(itertools.permutations(range(n))), dtype=np.int32)  # [P, n]
  refs = np.arange(n)
  scores = sir[:, perms, refs]  # [B, P, n]
  valid = pair_valid[:, perms, refs]
  count = jnp.sum(valid, axis=-1)
  total = jnp.sum(jnp.where(valid, scores, 0), axis=-1)
  mean = jnp.where(count > 0, total / jnp.maximum(count, 1), -jnp.inf)
  return jnp.asarray(perms)[jnp.argmax(mean, axis=-1)]


@functools.partial(
    jax.jit, static_argnames=("compute_permutation", "filter_length", "dtype"))
def bss_eval_sources_batched(
    reference: Array,
    estimated: Array,
    compute_permutation: bool = True,
    *,
    filter_length: int = FILTER_LENGTH,
    dtype: Any = None,
) -> tuple[Array, Array, Array, Array]:
  """BSS Eval v3 (mir_eval's ``bss_eval_sources``) for a batch, as one jitted JAX program.

  Args:
    reference: [B, n_src, n_samples] true sources (any real dtype; cast to ``dtype``).
    estimated: [B, n_src, n_samples] estimated sources.
    compute_permutation: if True, pick the estimate order maximising the mean SIR (mir_eval's
      rule and tie-breaking); if False, estimate j is scored against reference j. Static.
    filter_length: distortion filter taps (512 in BSS Eval v3). Static.
    dtype: computation dtype, ``None`` (float64 if x64 is enabled, else float32), float32, or
      float64 (requires x64, else ValueError). Static.

  Returns:
    sdr, sir, sar: [B, n_src] in dB (``dtype``), indexed by reference; NaN where the reference
      or its matched estimate is all zeros (see :func:`source_validity`), ``+inf`` where the
      relevant residual is zero to working precision.
    perm: [B, n_src] int, ``perm[b, j]`` = index of the estimate matched to reference j
      (``arange(n_src)`` when ``compute_permutation`` is False).

  Runs on any JAX device. The numerical method, conditioning safeguards and the float32
  behaviour are described in this module's docstring. A signal with a NaN/inf sample is
  treated like a silent one.
  """
  dtype = _resolve_dtype(dtype)
  reference = jnp.asarray(reference, dtype)
  estimated = jnp.asarray(estimated, dtype)
  if reference.ndim != 3 or reference.shape != estimated.shape:
    raise ValueError(
        "reference and estimated must both be [batch, n_src, n_samples] with equal shapes, got "
        f"{reference.shape} and {estimated.shape}.")
  batch, n, _ = reference.shape
  if compute_permutation and n > MAX_PERMUTATION_SOURCES:
    raise ValueError(
        f"compute_permutation enumerates all {n}! permutations; at most "
        f"{MAX_PERMUTATION_SOURCES} sources are supported, got {n}.")
  ref, ref_active = _unit_energy(reference)
  est, est_active = _unit_energy(estimated)
  own, full = _projection_energies(ref, est, filter_length, _DIAGONAL_LOAD[dtype])
  sdr, sir, sar = _criteria(own, full, jnp.sum(est * est, axis=-1))
  pair_valid = est_active[:, :, None] & ref_active[:, None, :]  # [B, m, n]
  if compute_permutation:
    perm = _best_permutation(sir, pair_valid)
  else:
    perm = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))

  def matched(pairs: Array) -> Array:  # [B, m, n] -> [B, n], entry (perm[j], j)
    return jnp.take_along_axis(pairs, perm[:, None, :], axis=1)[:, 0]

  valid = matched(pair_valid)
  sdr, sir, sar = (jnp.where(valid, matched(x), jnp.nan) for x in (sdr, sir, sar))
  return sdr, sir, sar, perm


def source_validity(reference: Any, estimated: Any, perm: Any | None = None) -> np.ndarray:
  """Which scores of :func:`bss_eval_sources` (or its batched form) are defined.

  Args:
    reference, estimated: [..., n_src, n_samples] (1-D: one source).
    perm: [..., n_src] matched estimate per reference as returned by the metric; default
      identity (``compute_permutation=False``).

  Returns:
    bool [..., n_src]: True where reference j and estimate ``perm[j]`` both have a non-zero
    sample and no NaN/inf. Equals ``~np.isnan(sdr)``.
  """
  ref = np.asarray(reference)
  est = np.asarray(estimated)
  if ref.ndim == 1:
    ref, est = ref[None], est[None]
  if ref.shape != est.shape:
    raise ValueError(f"reference shape {ref.shape} != estimated shape {est.shape}.")
  ref_active = np.any(ref != 0, axis=-1) & np.all(np.isfinite(ref), axis=-1)
  est_active = np.any(est != 0, axis=-1) & np.all(np.isfinite(est), axis=-1)
  if perm is None:
    perm = np.broadcast_to(np.arange(ref.shape[-2]), ref_active.shape)
  matched = np.take_along_axis(est_active, np.asarray(perm, np.int64), axis=-1)
  return ref_active & matched


def bss_eval_sources(
    reference: Any,
    estimated: Any,
    compute_permutation: bool = True,
    *,
    filter_length: int = FILTER_LENGTH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """BSS Eval v3 source metrics, a drop-in for ``mir_eval.separation.bss_eval_sources``.

  Computed in float64 (x64 is enabled only for this call) on JAX's default device.

  Args:
    reference: [n_src, n_samples] true sources, or [n_samples] for one source.
    estimated: same shape as ``reference``.
    compute_permutation: as mir_eval: choose the estimate order with the best mean SIR.
    filter_length: distortion filter taps (512 = BSS Eval v3).

  Returns:
    ``(sdr, sir, sar, perm)``: float64 [n_src] in dB indexed by reference, and int64 [n_src] with
    ``perm[j]`` the estimate matched to reference j. Unlike mir_eval, an all-zero reference or
    estimate raises nothing: the affected entries are NaN (see :func:`source_validity`). Empty
    inputs give four empty arrays, as in mir_eval.

  Raises:
    ValueError: if the shapes differ or are not 1-D/2-D.
  """
  ref = np.asarray(reference, dtype=np.float64)
  est = np.asarray(estimated, dtype=np.float64)
  if ref.ndim == 1:
    ref = ref[None]
  if est.ndim == 1:
    est = est[None]
  if ref.ndim != 2 or ref.shape != est.shape:
    raise ValueError(
        "reference and estimated must have the same shape [n_src, n_samples] (or [n_samples]), "
        f"got {np.shape(reference)} and {np.shape(estimated)}; use bss_eval_sources_batched "
        "for batches.")
  if ref.size == 0:
    empty = np.array([])
    return empty, empty.copy(), empty.copy(), empty.copy()
  n_samples = ref.shape[1]
  padded = -(-n_samples // _LENGTH_BUCKET) * _LENGTH_BUCKET
  pad = ((0, 0), (0, padded - n_samples))
  with jax.enable_x64(True):
    out = bss_eval_sources_batched(
        np.pad(ref, pad)[None], np.pad(est, pad)[None], compute_permutation,
        filter_length=filter_length, dtype=np.float64)
    sdr, sir, sar, perm = (np.asarray(o[0]) for o in out)
  return sdr, sir, sar, perm.astype(np.int64)
