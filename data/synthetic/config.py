"""Configuration of the synthetic data generator.

Scene units are arbitrary lengths (think metres); times are seconds; angles radians; image
coordinates pixels. The defaults produce the embedded default data set (10 s clips, 8 fps,
128x128 px, 11025 Hz mono); every field is validated when the config is built, and a bad value
raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from asmp_data.synthetic import classes, geometry


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """All knobs of the generator, with their defaults.

  Timing and image:
    duration_s: clip length in seconds; ``duration_s * fps`` must be a whole number of windows.
    fps: video frame rate (frames per second).
    window_frames: frames per motion window (the paper's l = 8; one 1 s window at 8 fps).
    sample_rate: audio sample rate in Hz.
    width, height: frame size in pixels (even, for H.264 yuv420p).
    crf: x264 constant rate factor of the mp4 (lower = better; 0 = lossless).

  Camera (a pinhole at the world origin, looking along +Z; X right, Y down):
    focal_px: focal length in pixels when the camera does not zoom.
    camera_motion_prob: probability that a clip's camera pans (yaw) and zooms.
    max_pan_rad: largest pan angle away from straight ahead.
    max_zoom: largest relative focal-length change (focal = focal_px * exp(+-max_zoom)).

  Scene:
    sounding_classes: names of the sounding classes that may appear (default all of them).
    prob_two_sources: probability of 2 sounding objects (else 1).
    max_context: at most this many silent context objects per clip (uniform in 0..max_context).
    companion_prob: probability that a context object is a companion placed beside/overlapping a
      sounding object and moving with it (else a free-standing distractor).
    depth_range: (near, far) camera depth Z of object centres, scene units.
    size_range: (min, max) object half-size in scene units.
    wall_depth: world Z of the textured back wall.
    floor_height: world Y of the textured floor plane (Y points down, so > 0 is below the camera).
    still_prob: probability that a sounding object is still during a window.
    lateral_speed_range: (min, max) angular speed (rad/s) of sideways/vertical motion, i.e. the
      image speed divided by the focal length.
    depth_speed_range: (min, max) speed of motion toward/away from the camera, units/s.
    motion_persistence: probability that a window keeps the previous window's velocity (an object
      goes on moving the way it was, bouncing off the scene's bounds), so that its heading in one
      frame foretells the next windows' motion. 0 (the default) draws every window afresh.
    motion_kind_weights: relative probabilities of a sounding object's moving kinds
      (``geometry.MOTION_KINDS[1:]``: lateral, vertical, depth, lateral+depth, vertical+depth,
      lateral+vertical, lateral+vertical+depth) in a window that is not still. The default moves
      along one or two axes; all weight on the last kind moves every moving window along all three,
      so that its 10-class octant (the signs of all three components) is set by the motion and not
      by the estimation noise of an axis it does not move along. Silent distractors keep the
      default.
    view_margin_px: object centres stay this far inside the frame (before camera motion).

  Sound:
    speed_of_sound: c in units/s; slowed down from 343 m/s so that the Doppler shift of the object
      speeds used is audible (a ratio c/(c - v) of up to ~1.08, i.e. ~1.3 semitones).
    reference_distance: r_ref, the distance at which a source is received at its own level
      (gain = r_ref / r).
    source_level_db_range: (min, max) level of a source at r_ref, dB relative to unit RMS.
    background_level_db: level of the background bed relative to unit RMS.
    peak_level: the mixture is scaled so its peak is this value (the stems get the same scale).
    silence_rms: a sounding stem is re-drawn when fewer than ``min_active_fraction`` of its
      windows reach this RMS (before peak normalisation).
    min_active_fraction: see ``silence_rms``.
    max_redraws: how many times a silent source is re-drawn before the generator gives up.

  Simulated detector:
    det_box_jitter: standard deviation of box-corner noise, as a fraction of box width/height.
    det_miss_prob: probability that a visible object is not detected in a frame.
    det_false_positives: mean number (Poisson) of false positives per frame.
    det_feature_dim: size of the simulated detector feature.
    det_feature_noise: standard deviation of the noise added to the class prototype feature.
  """

  # Timing and image.
  duration_s: float = 10.0
  fps: int = 8
  window_frames: int = 8
  sample_rate: int = 11025
  width: int = 128
  height: int = 128
  crf: int = 18
  # Camera.
  focal_px: float = 128.0
  camera_motion_prob: float = 0.5
  max_pan_rad: float = 0.15
  max_zoom: float = 0.15
  # Scene.
  sounding_classes: tuple[str, ...] = classes.SOUNDING_NAMES
  prob_two_sources: float = 0.5
  max_context: int = 3
  companion_prob: float = 0.6
  depth_range: tuple[float, float] = (2.0, 8.0)
  size_range: tuple[float, float] = (0.3, 0.55)
  wall_depth: float = 12.0
  floor_height: float = 1.3
  still_prob: float = 0.2
  lateral_speed_range: tuple[float, float] = (0.12, 0.3)
  depth_speed_range: tuple[float, float] = (1.0, 3.0)
  motion_persistence: float = 0.0
  motion_kind_weights: tuple[float, ...] = geometry.DEFAULT_KIND_WEIGHTS
  view_margin_px: float = 14.0
  # Sound.
  speed_of_sound: float = 40.0
  reference_distance: float = 4.0
  source_level_db_range: tuple[float, float] = (-6.0, 0.0)
  background_level_db: float = -22.0
  peak_level: float = 0.9
  silence_rms: float = 0.02
  min_active_fraction: float = 0.8
  max_redraws: int = 8
  # Simulated detector.
  det_box_jitter: float = 0.05
  det_miss_prob: float = 0.1
  det_false_positives: float = 0.3
  det_feature_dim: int = 16
  det_feature_noise: float = 0.3

  def __post_init__(self):
    object.__setattr__(self, "sounding_classes", tuple(self.sounding_classes))
    object.__setattr__(self, "depth_range", tuple(self.depth_range))
    object.__setattr__(self, "size_range", tuple(self.size_range))
    object.__setattr__(self, "lateral_speed_range", tuple(self.lateral_speed_range))
    object.__setattr__(self, "depth_speed_range", tuple(self.depth_speed_range))
    try:
      object.__setattr__(self, "motion_kind_weights",
                         tuple(float(x) for x in self.motion_kind_weights))
    except (TypeError, ValueError):
      _fail("motion_kind_weights", self.motion_kind_weights, "a sequence of numbers")
    object.__setattr__(self, "source_level_db_range", tuple(self.source_level_db_range))
    _validate(self)

  # -------------------------------------------------------------------------- derived sizes
  @property
  def num_frames(self) -> int:
    """T, frames per clip."""
    return int(round(self.duration_s * self.fps))

  @property
  def num_windows(self) -> int:
    """W, motion windows per clip."""
    return self.num_frames // self.window_frames

  @property
  def window_s(self) -> float:
    """Length of one window in seconds."""
    return self.window_frames / self.fps

  @property
  def num_samples(self) -> int:
    """Audio samples per clip."""
    return int(round(self.duration_s * self.sample_rate))

  @property
  def cx(self) -> float:
    """Principal point x (pixel centres are at integer + 0.5)."""
    return self.width / 2.0

  @property
  def cy(self) -> float:
    """Principal point y."""
    return self.height / 2.0

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict of all fields (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
    """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"GeneratorConfig: unknown field(s) {unknown}")
    return cls(**d)


def _fail(field: str, value: Any, expected: str) -> None:
  raise ValueError(f"GeneratorConfig.{field}={value!r}: expected {expected}")


def _check_range(cfg: GeneratorConfig, field: str, lo: float, hi: float | None = None,
                 lo_open: bool = False) -> None:
  """Checks that the pair ``field`` is (a, b) with lo <= a <= b (<= hi)."""
  value = getattr(cfg, field)
  if len(value) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in value):
    _fail(field, value, "a pair of finite numbers (min, max)")
  a, b = value
  if a > b or a < lo or (lo_open and a <= lo) or (hi is not None and b > hi):
    bound = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
    _fail(field, value, f"min <= max, both {bound}")


def _validate(cfg: GeneratorConfig) -> None:
  """Raises ValueError naming the first bad field."""
  def number(field, lo=None, hi=None, lo_open=False, integer=False):
    v = getattr(cfg, field)
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or not math.isfinite(v):
      _fail(field, v, "an integer" if integer else "a finite number")
    if lo is not None and (v < lo or (lo_open and v <= lo)):
      _fail(field, v, f"a value {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
      _fail(field, v, f"a value <= {hi}")

  number("duration_s", 0, lo_open=True)
  number("fps", 1, integer=True)
  number("window_frames", 1, integer=True)
  number("sample_rate", 1000, integer=True)
  for f in ("width", "height"):
    number(f, 16, integer=True)
    if getattr(cfg, f) % 2:
      _fail(f, getattr(cfg, f), "an even number of pixels (H.264 yuv420p)")
  t = cfg.duration_s * cfg.fps
  if abs(t - round(t)) > 1e-9 or round(t) % cfg.window_frames or round(t) == 0:
    _fail("duration_s", cfg.duration_s,
          f"a whole number of {cfg.window_frames}-frame windows at {cfg.fps} fps")
  if abs(cfg.duration_s * cfg.sample_rate - round(cfg.duration_s * cfg.sample_rate)) > 1e-6:
    _fail("duration_s", cfg.duration_s, "a whole number of audio samples")
  number("crf", 0, 51, integer=True)
  number("focal_px", 1, lo_open=True)
  number("camera_motion_prob", 0, 1)
  number("max_pan_rad", 0, 0.5)
  number("max_zoom", 0, 0.5)
  if not cfg.sounding_classes:
    _fail("sounding_classes", cfg.sounding_classes, "at least one sounding class")
  for name in cfg.sounding_classes:
    if name not in classes.SOUNDING_NAMES:
      _fail("sounding_classes", cfg.sounding_classes,
            f"names from {list(classes.SOUNDING_NAMES)} (unknown: {name!r})")
  if len(set(cfg.sounding_classes)) != len(cfg.sounding_classes):
    _fail("sounding_classes", cfg.sounding_classes, "distinct names")
  number("prob_two_sources", 0, 1)
  if cfg.prob_two_sources > 0 and len(cfg.sounding_classes) < 2:
    _fail("prob_two_sources", cfg.prob_two_sources,
          "0 when only one sounding class is allowed (two sources have distinct classes)")
  number("max_context", 0, 20, integer=True)
  number("companion_prob", 0, 1)
  _check_range(cfg, "depth_range", 0.5, lo_open=False)
  _check_range(cfg, "size_range", 0.0, lo_open=True)
  number("wall_depth", 0, lo_open=True)
  if cfg.wall_depth <= cfg.depth_range[1] + 2 * cfg.size_range[1]:
    _fail("wall_depth", cfg.wall_depth, "a wall behind the farthest object (> depth_range[1] + "
          "2 * size_range[1])")
  number("floor_height", 0, lo_open=True)
  if cfg.floor_height <= cfg.size_range[1]:
    _fail("floor_height", cfg.floor_height, "a floor below the largest object (> size_range[1])")
  number("still_prob", 0, 1)
  _check_range(cfg, "lateral_speed_range", 0.0)
  _check_range(cfg, "depth_speed_range", 0.0)
  number("motion_persistence", 0, 1)
  weights = cfg.motion_kind_weights
  if (len(weights) != len(geometry.MOTION_KINDS) - 1 or not all(math.isfinite(x) and x >= 0
                                                               for x in weights)
      or sum(weights) <= 0):
    _fail("motion_kind_weights", weights,
          f"{len(geometry.MOTION_KINDS) - 1} non-negative weights, not all 0, for "
          f"{geometry.MOTION_KINDS[1:]}")
  number("view_margin_px", 0, min(cfg.width, cfg.height) / 2, lo_open=False)
  number("speed_of_sound", 0, lo_open=True)
  max_speed = (cfg.depth_speed_range[1] + 2 * cfg.lateral_speed_range[1] * cfg.depth_range[1])
  if cfg.speed_of_sound <= 2 * max_speed:
    _fail("speed_of_sound", cfg.speed_of_sound,
          f"a speed well above the fastest object (> 2 * {max_speed:.3g} units/s)")
  number("reference_distance", 0, lo_open=True)
  _check_range(cfg, "source_level_db_range", -60.0, 20.0)
  number("background_level_db", -120, 20)
  number("peak_level", 0, 1, lo_open=True)
  number("silence_rms", 0)
  number("min_active_fraction", 0, 1)
  number("max_redraws", 0, integer=True)
  number("det_box_jitter", 0, 1)
  number("det_miss_prob", 0, 1)
  number("det_false_positives", 0, 50)
  number("det_feature_dim", 1, integer=True)
  number("det_feature_noise", 0)
