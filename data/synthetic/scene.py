"""Random scene layout: which objects, how they look, how they and the camera move.

All randomness comes from keyed streams of one clip seed (:func:`stream`), so a part of the scene
can be re-drawn (e.g. a silent source's timbre) without changing anything else.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from asmp_data.synthetic import classes
from asmp_data.synthetic import geometry
from asmp_data.synthetic import render
from asmp_data.synthetic.config import GeneratorConfig

# Keys of the random streams derived from a clip seed.
KEY_LAYOUT, KEY_CAMERA, KEY_STYLE, KEY_OBJECT, KEY_SOUND, KEY_BED, KEY_DETECTOR = range(7)

# Size multipliers of the context classes relative to ``size_range`` (a person is taller than an
# instrument).
_CONTEXT_SCALE = {"person": 1.45, "table": 1.3, "plant": 1.0, "lamp": 0.9}


def stream(seed: int, *key: int) -> np.random.Generator:
  """An independent random generator for part ``key`` of the clip with seed ``seed``."""
  return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(key)))


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One object of a clip.

  Attributes:
    track: index of the object in the clip (the O axis of the sidecar arrays).
    object_class: its :class:`classes.ObjectClass`.
    appearance: its :class:`render.Appearance`.
    trajectory: world-space :class:`geometry.Trajectory` of its centre.
    motion: motion kind per window (``geometry.MOTION_KINDS``).
    companion_of: track of the sounding object it accompanies, or None.
    stem: row of its received sound in ``stems`` (sounding objects), else None.
  """

  track: int
  object_class: classes.ObjectClass
  appearance: render.Appearance
  trajectory: geometry.Trajectory
  motion: tuple[str, ...]
  companion_of: int | None
  stem: int | None


@dataclasses.dataclass(frozen=True)
class Scene:
  """Everything visual about a clip: camera path, objects (sounding first), background style."""

  camera: geometry.CameraPath
  objects: tuple[SceneObject, ...]
  style: render.BackgroundStyle


def motion_limits(cfg: GeneratorConfig, half_height: float) -> geometry.MotionLimits:
  """Bounds keeping an object's centre ``view_margin_px`` inside the frame and above the floor.

  When the camera may pan, the horizontal bound shrinks by ``max_pan_rad`` so the object stays in
  view of the panned camera too.
  """
  pan = cfg.max_pan_rad if cfg.camera_motion_prob > 0 else 0.0
  half_x = math.atan(max(cfg.width / 2 - cfg.view_margin_px, 1.0) / cfg.focal_px)
  max_tan_x = math.tan(max(half_x - pan, 0.02))
  max_tan_y = max(cfg.height / 2 - cfg.view_margin_px, 1.0) / cfg.focal_px
  return geometry.MotionLimits(
      depth=(cfg.depth_range[0], cfg.depth_range[1]), max_tan_x=max_tan_x, max_tan_y=max_tan_y,
      max_y=cfg.floor_height - half_height)


def _appearance(rng: np.random.Generator, cls: classes.ObjectClass, size: float,
                ) -> render.Appearance:
  """A randomised shade and size of the class's look."""
  color = np.clip(np.asarray(cls.color) * rng.uniform(0.85, 1.1) + rng.normal(0, 0.03, 3), 0, 1)
  amp = 0.6 if cls.name == "bee" else float(rng.uniform(0.12, 0.25))
  return render.Appearance(
      shape=cls.shape, color=tuple(float(c) for c in color),
      half_extent=(float(size * cls.aspect[0]), float(size * cls.aspect[1])),
      pattern=cls.pattern, pattern_freq=float(rng.uniform(1.5, 3.0)), pattern_amp=amp)


def _start_position(rng: np.random.Generator, limits: geometry.MotionLimits,
                    side: float | None) -> np.ndarray:
  """A random start inside ``limits`` (on the left if side < 0, right if side > 0)."""
  near, far = limits.depth
  z = rng.uniform(near + 0.15 * (far - near), far - 0.15 * (far - near))
  tx = rng.uniform(0.15, 0.8) * limits.max_tan_x
  tx = tx * (np.sign(side) if side else rng.choice([-1.0, 1.0]))
  y = min(rng.uniform(-0.6, 0.6) * limits.max_tan_y * z, limits.max_y - 0.05)
  return np.array([tx * z, y, z])


def sample_scene(seed: int, cfg: GeneratorConfig) -> Scene:
  """Draws the layout, appearances and motions of one clip.

  Sounding objects (1, or 2 with ``prob_two_sources``, of distinct classes) come first, then
  ``0..max_context`` context objects: companions (person/table beside or under a sounding object,
  moving with it, overlapping its box) or free distractors (mostly still).
  """
  layout = stream(seed, KEY_LAYOUT)
  num_sounding = 2 if layout.random() < cfg.prob_two_sources else 1
  sounding = [classes.get_class(n) for n in
              layout.choice(np.array(cfg.sounding_classes), num_sounding, replace=False)]
  num_context = int(layout.integers(0, cfg.max_context + 1))
  context = []
  for _ in range(num_context):
    companion = layout.random() < cfg.companion_prob
    names = classes.COMPANION_NAMES if companion else classes.CONTEXT_NAMES
    parent = int(layout.integers(0, num_sounding)) if companion else None
    context.append((classes.get_class(str(layout.choice(np.array(names)))), parent))
  sides = [None] if num_sounding == 1 else list(layout.permutation([-1.0, 1.0]))

  camera = geometry.sample_camera(
      stream(seed, KEY_CAMERA), cfg.num_frames, cfg.fps, cfg.focal_px,
      stream(seed, KEY_CAMERA, 1).random() < cfg.camera_motion_prob, cfg.max_pan_rad,
      cfg.max_zoom)
  ramp_s = min(1.0 / cfg.fps, cfg.window_s)
  objects: list[SceneObject] = []
  for i, cls in enumerate(sounding):
    rng = stream(seed, KEY_OBJECT, i)
    app = _appearance(rng, cls, rng.uniform(*cfg.size_range))
    limits = motion_limits(cfg, app.half_extent[1])
    traj, kinds = geometry.sample_trajectory(
        rng, _start_position(rng, limits, sides[i]), cfg.num_windows, cfg.window_s, ramp_s,
        limits, cfg.still_prob, cfg.lateral_speed_range, cfg.depth_speed_range,
        kind_weights=cfg.motion_kind_weights, persistence=cfg.motion_persistence)
    objects.append(SceneObject(i, cls, app, traj, tuple(kinds), None, i))
  for j, (cls, parent) in enumerate(context):
    track = num_sounding + j
    rng = stream(seed, KEY_OBJECT, track)
    app = _appearance(rng, cls, rng.uniform(*cfg.size_range) * _CONTEXT_SCALE[cls.name])
    if parent is not None:
      host = objects[parent]
      hx, hy = host.appearance.half_extent
      sx, sy = app.half_extent
      if cls.name == "table":  # under the object, a little behind
        offset = [rng.uniform(-0.3, 0.3) * hx, rng.uniform(0.5, 0.9) * (hy + sy), 0.0]
      else:  # beside it, overlapping, a little behind
        offset = [rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.75) * (hx + sx),
                  rng.uniform(-0.3, 0.1) * (hy + sy), 0.0]
      offset[2] = rng.uniform(0.1, 0.4)
      traj = host.trajectory.shifted(np.asarray(offset))
      objects.append(SceneObject(track, cls, app, traj, host.motion, parent, None))
    else:
      limits = motion_limits(cfg, app.half_extent[1])
      slow = (cfg.lateral_speed_range[0] * 0.5, cfg.lateral_speed_range[1] * 0.5)
      depth_slow = (cfg.depth_speed_range[0] * 0.5, cfg.depth_speed_range[1] * 0.5)
      traj, kinds = geometry.sample_trajectory(
          rng, _start_position(rng, limits, None), cfg.num_windows, cfg.window_s, ramp_s, limits,
          max(cfg.still_prob, 0.7), slow, depth_slow, persistence=cfg.motion_persistence)
      objects.append(SceneObject(track, cls, app, traj, tuple(kinds), None, None))
  style = render.sample_background_style(stream(seed, KEY_STYLE))
  return Scene(camera, tuple(objects), style)
