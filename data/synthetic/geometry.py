"""Camera and trajectory geometry of the synthetic scenes (pure numpy, float64).

Frames of reference:
  * World: the camera centre (and the microphone) sits at the origin for the whole clip; X right,
    Y down, Z forward when the camera looks straight ahead. The wall and floor are fixed here.
  * Camera: the world rotated by the camera's yaw ("pan") about Y; a pinhole with focal length
    ``f`` pixels and principal point ``(cx, cy)`` projects camera point (X, Y, Z) to
    ``u = f X / Z + cx``, ``v = f Y / Z + cy``. Pixel (row i, column j) has its centre at
    ``(u, v) = (j + 0.5, i + 0.5)``; the frame spans ``[0, W] x [0, H]``.

Object trajectories are piecewise constant-velocity motions, one velocity per window, joined by a
smooth (C1) velocity ramp that lies entirely between the last frame of a window and the first frame
of the next one, so the motion inside a window (frames ``l*w .. l*w + l-1``) is exactly ``v_w`` and
still windows are exactly still. Positions are closed-form in time, so the same trajectory is
evaluated at frame times (rendering) and at audio sample times (Doppler).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def world_to_camera(p_world: np.ndarray, pan: np.ndarray | float) -> np.ndarray:
  """Rotates world points into the camera frame of a camera yawed by ``pan``.

  Args:
    p_world: ``[..., 3]`` world points.
    pan: yaw in radians (positive turns the camera toward +X), broadcastable to ``p_world[..., 0]``.

  Returns:
    ``[..., 3]`` camera-frame points ``R_y(pan)^T p``.
  """
  p_world = np.asarray(p_world, dtype=np.float64)
  c, s = np.cos(pan), np.sin(pan)
  x, y, z = p_world[..., 0], p_world[..., 1], p_world[..., 2]
  return np.stack([c * x - s * z, y, s * x + c * z], axis=-1)


def camera_to_world(p_cam: np.ndarray, pan: np.ndarray | float) -> np.ndarray:
  """Inverse of :func:`world_to_camera` (``R_y(pan) p``)."""
  p_cam = np.asarray(p_cam, dtype=np.float64)
  c, s = np.cos(pan), np.sin(pan)
  x, y, z = p_cam[..., 0], p_cam[..., 1], p_cam[..., 2]
  return np.stack([c * x + s * z, y, -s * x + c * z], axis=-1)


def project(p_cam: np.ndarray, focal: np.ndarray | float, cx: float, cy: float) -> np.ndarray:
  """Pinhole projection of camera-frame points.

  Args:
    p_cam: ``[..., 3]`` points with Z > 0.
    focal: focal length in pixels, broadcastable to ``p_cam[..., 0]``.
    cx, cy: principal point in pixels.

  Returns:
    ``[..., 2]`` pixel coordinates (u, v).
  """
  p_cam = np.asarray(p_cam, dtype=np.float64)
  z = p_cam[..., 2]
  return np.stack([focal * p_cam[..., 0] / z + cx, focal * p_cam[..., 1] / z + cy], axis=-1)


@dataclasses.dataclass(frozen=True)
class CameraPath:
  """Per-frame camera parameters.

  Attributes:
    pan: ``[T]`` yaw in radians.
    focal: ``[T]`` focal length in pixels.
    moving: whether the camera pans/zooms at all.
  """

  pan: np.ndarray
  focal: np.ndarray
  moving: bool


def static_camera(num_frames: int, focal_px: float) -> CameraPath:
  """A camera that looks straight ahead with a constant focal length."""
  return CameraPath(np.zeros(num_frames), np.full(num_frames, float(focal_px)), False)


def sample_camera(rng: np.random.Generator, num_frames: int, fps: float, focal_px: float,
                  moving: bool, max_pan: float, max_zoom: float) -> CameraPath:
  """Draws a smooth pan (sinusoidal yaw) and zoom (sinusoidal log-focal) path.

  Args:
    rng: random generator.
    num_frames: T.
    fps: frame rate (frames/s).
    focal_px: focal length without zoom (pixels).
    moving: if False, returns :func:`static_camera`.
    max_pan: bound on |pan| (radians).
    max_zoom: bound on |log(focal / focal_px)|.

  Returns:
    A :class:`CameraPath`; |pan| <= max_pan and focal in focal_px * exp([-max_zoom, max_zoom]).
  """
  if not moving or (max_pan == 0 and max_zoom == 0):
    return static_camera(num_frames, focal_px)
  t = np.arange(num_frames) / fps
  pan_amp = rng.uniform(0.4, 1.0) * max_pan
  pan_period = rng.uniform(8.0, 20.0)
  pan_phase = rng.uniform(0, 2 * np.pi)
  pan = pan_amp * np.sin(2 * np.pi * t / pan_period + pan_phase)
  zoom_amp = rng.uniform(0.3, 1.0) * max_zoom if rng.random() < 0.6 else 0.0
  zoom_period = rng.uniform(6.0, 16.0)
  zoom_phase = rng.uniform(0, 2 * np.pi)
  focal = focal_px * np.exp(zoom_amp * np.sin(2 * np.pi * t / zoom_period + zoom_phase))
  return CameraPath(pan, focal, True)


def _ramp_integral(x: np.ndarray) -> np.ndarray:
  """Integral from 0 to x of the smoothstep 3s^2 - 2s^3 clipped to [0, 1] (0 for x <= 0)."""
  xc = np.clip(x, 0.0, 1.0)
  return np.where(x >= 1.0, x - 0.5, xc ** 3 - 0.5 * xc ** 4)


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """A C1 piecewise constant-velocity 3D trajectory in world coordinates.

  Window ``w`` spans ``[w L, (w+1) L)`` seconds. The velocity is ``v_w`` on
  ``[w L, (w+1) L - ramp]`` and moves from ``v_w`` to ``v_{w+1}`` along a smoothstep over the
  last ``ramp`` seconds of the window. Before 0 and after the end the motion continues linearly.

  Attributes:
    start: ``[3]`` world position at t = 0.
    velocities: ``[W, 3]`` world velocity of each window (units/s).
    window_s: L, window length in seconds.
    ramp_s: length of the velocity ramp (0 < ramp <= L).
  """

  start: np.ndarray
  velocities: np.ndarray
  window_s: float
  ramp_s: float

  def _knots(self) -> np.ndarray:
    """``[W, 3]`` positions at the segment starts ``b_w = w L - ramp``."""
    v = np.asarray(self.velocities, dtype=np.float64)
    v_prev = np.concatenate([v[:1], v[:-1]], axis=0)
    # Each segment (b_w to b_{w+1}) advances v_prev L + (v - v_prev)(L - ramp / 2).
    step = v_prev * self.window_s + (v - v_prev) * (self.window_s - 0.5 * self.ramp_s)
    p0 = np.asarray(self.start, dtype=np.float64) - v[0] * self.ramp_s
    return p0 + np.concatenate([np.zeros((1, 3)), np.cumsum(step[:-1], axis=0)], axis=0)

  def position(self, t: np.ndarray | float) -> np.ndarray:
    """World position ``[..., 3]`` at times ``t`` (seconds, any shape, any real value)."""
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(self.velocities, dtype=np.float64)
    num_windows = v.shape[0]
    v_prev = np.concatenate([v[:1], v[:-1]], axis=0)
    knots = self._knots()
    w = np.clip(np.floor((t + self.ramp_s) / self.window_s), 0, num_windows - 1).astype(np.int64)
    dt = t - (w * self.window_s - self.ramp_s)
    ramp = self.ramp_s * _ramp_integral(dt / self.ramp_s)
    return knots[w] + v_prev[w] * dt[..., None] + (v[w] - v_prev[w]) * ramp[..., None]

  def velocity(self, t: np.ndarray | float) -> np.ndarray:
    """World velocity ``[..., 3]`` at times ``t`` (units/s)."""
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(self.velocities, dtype=np.float64)
    v_prev = np.concatenate([v[:1], v[:-1]], axis=0)
    w = np.clip(np.floor((t + self.ramp_s) / self.window_s), 0, v.shape[0] - 1).astype(np.int64)
    x = np.clip((t - (w * self.window_s - self.ramp_s)) / self.ramp_s, 0.0, 1.0)
    s = x * x * (3.0 - 2.0 * x)
    return v_prev[w] + (v[w] - v_prev[w]) * s[..., None]

  def shifted(self, offset: np.ndarray) -> "Trajectory":
    """The same motion displaced by a constant world ``offset [3]``."""
    return dataclasses.replace(self, start=np.asarray(self.start, np.float64) + offset)


@dataclasses.dataclass(frozen=True)
class MotionLimits:
  """Bounds that keep an object in front of the camera and (mostly) in view.

  Attributes:
    depth: (near, far) bounds of the centre's Z.
    max_tan_x: bound on |X / Z| of the centre.
    max_tan_y: bound on |Y / Z| of the centre.
    max_y: bound on Y (keeps the object above the floor).
  """

  depth: tuple[float, float]
  max_tan_x: float
  max_tan_y: float
  max_y: float

  def inside(self, p: np.ndarray) -> np.ndarray:
    """``[...]`` bool, whether world points ``p [..., 3]`` satisfy the bounds."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return ((z >= self.depth[0]) & (z <= self.depth[1]) & (np.abs(x) <= self.max_tan_x * z)
            & (np.abs(y) <= self.max_tan_y * z) & (y <= self.max_y))


# Motion kinds a window can have; the sidecar records one per window and object.
MOTION_KINDS = ("still", "lateral", "vertical", "depth", "lateral+depth", "vertical+depth",
                "lateral+vertical", "lateral+vertical+depth")
# Relative probabilities of the moving kinds (MOTION_KINDS[1:]) unless a caller gives others. The
# last kind, added after the others, has weight 0 here: numpy's weighted choice then draws exactly
# what it drew over the first six kinds alone, so trajectories made before it existed are unchanged.
DEFAULT_KIND_WEIGHTS = (0.3, 0.12, 0.28, 0.15, 0.1, 0.05, 0.0)


def sample_trajectory(rng: np.random.Generator, start: np.ndarray, num_windows: int,
                      window_s: float, ramp_s: float, limits: MotionLimits, still_prob: float,
                      lateral_speed: tuple[float, float], depth_speed: tuple[float, float],
                      kind_weights: tuple[float, ...] = DEFAULT_KIND_WEIGHTS,
                      persistence: float = 0.0) -> tuple[Trajectory, list[str]]:
  """Draws one velocity per window, keeping the object inside ``limits``.

  With probability ``persistence`` a window after the first keeps the previous window's velocity
  (the object goes on moving as it was); otherwise it is still with probability ``still_prob``,
  or else a kind from ``MOTION_KINDS[1:]`` is drawn with ``kind_weights``, each moving axis gets a
  random sign and a speed (lateral/vertical: angular speed times the current depth; depth:
  units/s). A component
  whose motion would leave the bounds by the end of the window is reversed, and dropped if that
  leaves the bounds too.

  Args:
    rng: random generator.
    start: ``[3]`` world position at t = 0 (inside ``limits``).
    num_windows: W.
    window_s: window length in seconds.
    ramp_s: velocity ramp length (seconds, <= one frame interval keeps windows pure).
    limits: the bounds.
    still_prob: probability of a still window.
    lateral_speed: (min, max) angular speed in rad/s.
    depth_speed: (min, max) depth speed in units/s.
    kind_weights: relative probabilities of the moving kinds ``MOTION_KINDS[1:]``.
    persistence: probability that window w > 0 repeats window w - 1's velocity (subject to the same
      bounds check, so a kept motion that would leave the bounds bounces back). 0 draws no extra
      random number, so the trajectories are those drawn before this option existed.

  Returns:
    (trajectory, kinds): the :class:`Trajectory` and the motion kind of each window (a component
    that had to be dropped is removed from the kind; "still" if none is left).
  """
  start = np.asarray(start, dtype=np.float64)
  weights = np.asarray(kind_weights, dtype=np.float64)
  if weights.shape != (len(MOTION_KINDS) - 1,) or np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"kind_weights={kind_weights!r}: expected {len(MOTION_KINDS) - 1} "
                     f"non-negative weights for {MOTION_KINDS[1:]}")
  if not 0 < ramp_s <= window_s:
    raise ValueError(f"ramp_s={ramp_s!r}: expected 0 < ramp_s <= window_s={window_s}")
  if not 0 <= persistence <= 1:
    raise ValueError(f"persistence={persistence!r}: expected a probability in [0, 1]")
  weights = weights / weights.sum()
  velocities = np.zeros((num_windows, 3))
  kinds = []

  def end_of_window(w: int, v: np.ndarray) -> np.ndarray:
    """Exact position at the end of window w's constant-velocity part if v_w = v."""
    trial = velocities[: w + 1].copy()
    trial[w] = v
    return Trajectory(start, trial, window_s, ramp_s).position((w + 1) * window_s - ramp_s)

  for w in range(num_windows):
    depth_now = Trajectory(start, velocities[: max(w, 1)], window_s, ramp_s).position(
        w * window_s)[2]
    v = np.zeros(3)
    if w > 0 and persistence > 0 and rng.random() < persistence:
      v = velocities[w - 1].copy()
    elif rng.random() >= still_prob:
      kind = MOTION_KINDS[1 + rng.choice(len(weights), p=weights)]
      axes = [{"lateral": 0, "vertical": 1, "depth": 2}[k] for k in kind.split("+")]
      for axis in axes:
        sign = rng.choice([-1.0, 1.0])
        if axis == 2:
          v[axis] = sign * rng.uniform(*depth_speed)
        else:
          v[axis] = sign * rng.uniform(*lateral_speed) * depth_now
    for axis in range(3):
      if v[axis] == 0:
        continue
      for candidate in (v[axis], -v[axis], 0.0):
        trial = v.copy()
        trial[axis] = candidate
        if limits.inside(end_of_window(w, trial)):
          v = trial
          break
    if not limits.inside(end_of_window(w, v)):
      v = np.zeros(3)
    names = [n for n, axis in (("lateral", 0), ("vertical", 1), ("depth", 2)) if v[axis] != 0]
    kinds.append("+".join(names) if names else "still")
    velocities[w] = v
  return Trajectory(start, velocities, window_s, ramp_s), kinds

