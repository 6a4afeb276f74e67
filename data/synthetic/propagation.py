"""Sound propagation from a moving point source to the microphone at the camera centre.

A source at world position ``p(tau)`` emits ``s(tau)``; the microphone at the origin receives at
time ``t`` what was emitted at the retarded time ``tau(t)`` that solves

    t = tau + r(tau) / c,        r(tau) = |p(tau)|,

scaled by the distance attenuation ``r_ref / r(tau)``:

    y(t) = (r_ref / r(tau(t))) * s(tau(t)).

Differentiating, ``dtau/dt = 1 / (1 + r'(tau) / c)``: a source approaching at radial speed v
(``r' = -v``) is heard at ``c / (c - v)`` times its emitted frequency (Doppler) and gets louder.
``tau(t)`` is found per sample by the fixed-point iteration ``tau <- t - r(tau) / c``, a
contraction while ``|r'| < c`` (its error shrinks by ``|r'|/c`` each step).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PositionFn = Callable[[np.ndarray], np.ndarray]


def retarded_time(t: np.ndarray, position: PositionFn, speed_of_sound: float,
                  tol: float = 1e-10, max_iter: int = 50) -> np.ndarray:
  """Emission times ``tau [N]`` of the sound heard at times ``t [N]``.

  Args:
    t: ``[N]`` reception times (s).
    position: maps ``[N]`` times to ``[N, 3]`` source positions (microphone at the origin).
    speed_of_sound: c (units/s), larger than the source's radial speed.
    tol: stop when no sample moves by more than this (s).
    max_iter: iteration cap.

  Returns:
    float64 ``[N]`` with ``tau + |position(tau)| / c == t`` to within ``tol``.

  Raises:
    RuntimeError: if the iteration does not converge (source at least as fast as sound).
  """
  t = np.asarray(t, dtype=np.float64)
  tau = t - np.linalg.norm(position(t), axis=-1) / speed_of_sound
  for _ in range(max_iter):
    new = t - np.linalg.norm(position(tau), axis=-1) / speed_of_sound
    step = float(np.max(np.abs(new - tau))) if tau.size else 0.0
    tau = new
    if step <= tol:
      return tau
  raise RuntimeError(f"retarded_time: no convergence after {max_iter} iterations (last step "
                     f"{step:.3g} s); is the source slower than speed_of_sound={speed_of_sound}?")


def interp_cubic(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
  """Cubic (Catmull-Rom) interpolation of ``x [M]`` at fractional sample positions ``pos [N]``.

  Positions outside ``[1, M - 3]`` are clamped to the signal's edge samples; callers pad the
  signal so that does not happen.
  """
  i = np.floor(pos).astype(np.int64)
  f = pos - i
  m = x.shape[0]
  idx = np.clip(i[None, :] + np.arange(-1, 3)[:, None], 0, m - 1)
  p0, p1, p2, p3 = x[idx]
  f2, f3 = f * f, f * f * f
  return 0.5 * ((2.0 * p1) + (-p0 + p2) * f + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * f2
                + (-p0 + 3.0 * p1 - 3.0 * p2 + p3) * f3)


def receive(dry: np.ndarray, dry_t0: float, dry_sr: float, tau: np.ndarray,
            distance: np.ndarray, reference_distance: float) -> np.ndarray:
  """The signal heard at the microphone.

  Args:
    dry: ``[M]`` source signal sampled at ``dry_t0 + m / dry_sr`` (s); it should be band-limited
      well below ``dry_sr / 2`` and cover every ``tau`` with two samples to spare.
    dry_t0: time of ``dry[0]`` (s).
    dry_sr: sampling rate of ``dry`` (Hz).
    tau: ``[N]`` emission times of the output samples (from :func:`retarded_time`).
    distance: ``[N]`` source distance ``r(tau)`` at those emission times.
    reference_distance: r_ref, where the gain is 1.

  Returns:
    float64 ``[N]``: ``(r_ref / r(tau)) * s(tau)``.

  Raises:
    ValueError: if ``tau`` leaves the span covered by ``dry``.
  """
  pos = (tau - dry_t0) * dry_sr
  if pos.size and (pos.min() < 1.0 or pos.max() > dry.shape[0] - 3):
    raise ValueError(f"receive: emission times [{tau.min():.4f}, {tau.max():.4f}] s fall outside "
                     f"the dry signal's span starting at {dry_t0:.4f} s ({dry.shape[0]} samples "
                     f"at {dry_sr} Hz)")
  return (reference_distance / distance) * interp_cubic(dry, pos)


def propagate(synth: Callable[[np.ndarray], np.ndarray], position: PositionFn, t: np.ndarray,
              speed_of_sound: float, reference_distance: float, oversample: int = 2,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Synthesises a dry signal over the emission times needed and propagates it.

  Args:
    synth: maps a uniform ``[M]`` time grid (s) at ``oversample`` times the output rate to the
      dry signal ``[M]`` on it.
    position: source trajectory, ``[N]`` times -> ``[N, 3]`` world positions.
    t: ``[N]`` uniformly spaced output sample times (s).
    speed_of_sound: c (units/s).
    reference_distance: r_ref.
    oversample: dry-signal rate as a multiple of the output rate.

  Returns:
    (received ``[N]``, tau ``[N]``, distance ``[N]``).
  """
  t = np.asarray(t, dtype=np.float64)
  out_sr = 1.0 / (t[1] - t[0])
  tau = retarded_time(t, position, speed_of_sound)
  distance = np.linalg.norm(position(tau), axis=-1)
  dry_sr = out_sr * oversample
  start = np.floor((tau.min() - 4.0 / dry_sr) * dry_sr) / dry_sr
  m = int(np.ceil((tau.max() - start) * dry_sr)) + 5
  dry = synth(start + np.arange(m) / dry_sr)
  return receive(dry, start, dry_sr, tau, distance, reference_distance), tau, distance
