"""Tests of the synthetic audio-visual data generator (asmp_data.synthetic)."""

from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from asmp_data.synthetic import classes
from asmp_data.synthetic import files
from asmp_data.synthetic import generator
from asmp_data.synthetic import geometry
from asmp_data.synthetic import propagation
from asmp_data.synthetic import render
from asmp_data.synthetic import sound
from asmp_data.synthetic import soundscape
from asmp_data.synthetic.config import GeneratorConfig

SHORT = GeneratorConfig(duration_s=2.0)  # 16 frames, 2 windows: fast determinism checks
MOVING = GeneratorConfig(camera_motion_prob=1.0, prob_two_sources=1.0)


@pytest.fixture(scope="module")
def moving_clip():
  """A default-geometry clip (10 s, 80 frames) with a panning/zooming camera and 2 sources."""
  return generator.generate_clip(11, MOVING)


@pytest.fixture(scope="module")
def written_clip(tmp_path_factory):
  """A default clip written to disk, with its file paths."""
  clip = generator.generate_clip(5)
  paths = generator.write_clip(clip, tmp_path_factory.mktemp("clip"))
  return clip, paths


def _projected_centres(clip):
  """(u, v) ``[T, O]`` of the object centres from the sidecar positions and camera."""
  pos = clip.arrays["position"].astype(np.float64)
  f = np.asarray(clip.sidecar["camera"]["focal_px"])[:, None]
  cx, cy = clip.sidecar["camera"]["cx"], clip.sidecar["camera"]["cy"]
  return f * pos[..., 0] / pos[..., 2] + cx, f * pos[..., 1] / pos[..., 2] + cy


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("field,value", [
    ("fps", 0), ("width", 127), ("duration_s", 1.3), ("prob_two_sources", 1.5),
    ("depth_range", (5.0, 2.0)), ("speed_of_sound", 3.0), ("sounding_classes", ("violin", "tuba")),
    ("det_miss_prob", -0.1), ("peak_level", 1.2), ("wall_depth", 5.0), ("max_context", 2.5),
    ("crf", 60), ("size_range", (0.0, 0.5)), ("camera_motion_prob", float("nan")),
    ("motion_persistence", 1.5), ("motion_kind_weights", (1.0, 1.0)),
    ("motion_kind_weights", (0.0,) * 7), ("motion_kind_weights", (-1.0,) + (1.0,) * 6),
    ("motion_kind_weights", 3),
])
def test_bad_config_values_are_rejected_by_name(field, value):
  with pytest.raises(ValueError, match=field):
    GeneratorConfig(**{field: value})


def test_bad_seed_and_split_arguments(tmp_path):
  with pytest.raises(ValueError, match="seed"):
    generator.generate_clip(-1, SHORT)
  with pytest.raises(ValueError, match="split"):
    generator.generate_split(tmp_path, "bad/name", 1, 0, SHORT)
  with pytest.raises(ValueError, match="num_workers"):
    generator.generate_split(tmp_path, "train", 1, 0, SHORT, num_workers=0)


def test_class_list():
  assert len(classes.SOUNDING_CLASSES) >= 8 and len(classes.CONTEXT_CLASSES) >= 3
  assert classes.CLASS_NAMES[:len(classes.SOUNDING_NAMES)] == classes.SOUNDING_NAMES
  looks = {(c.shape, c.color, c.pattern) for c in classes.SOUNDING_CLASSES}
  assert len(looks) == len(classes.SOUNDING_CLASSES)  # distinct appearance per class
  assert len({c.timbre for c in classes.SOUNDING_CLASSES}) == len(classes.SOUNDING_CLASSES)
  assert all(c.timbre in sound.TIMBRES for c in classes.SOUNDING_CLASSES)
  assert all(c.shape in render.SHAPES for c in classes.ALL_CLASSES)
  assert classes.class_id("person") == len(classes.SOUNDING_CLASSES)
  with pytest.raises(ValueError, match="tuba"):
    classes.class_id("tuba")


# ------------------------------------------------------------------------------ determinism
def test_same_seed_identical_different_seed_differs():
  a, b, c = (generator.generate_clip(s, SHORT) for s in (3, 3, 4))
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.audio, b.audio)
  assert a.arrays.keys() == b.arrays.keys()
  for k in a.arrays:
    np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
  assert json.dumps(a.sidecar) == json.dumps(b.sidecar)
  assert not np.array_equal(a.frames, c.frames)
  assert not np.array_equal(a.audio, c.audio)


def test_files_are_byte_identical_across_runs_and_worker_counts(tmp_path):
  cfg = GeneratorConfig(duration_s=1.0)
  one = generator.generate_split(tmp_path / "a", "val", 2, seed=7, cfg=cfg, num_workers=1)
  two = generator.generate_split(tmp_path / "b", "val", 2, seed=7, cfg=cfg, num_workers=2)
  assert [r["sha256"] for r in one] == [r["sha256"] for r in two]
  for rec in one:
    for rel, digest in rec["sha256"].items():
      assert files.sha256(str(tmp_path / "b" / rel)) == digest
  other = generator.generate_split(tmp_path / "c", "val", 1, seed=8, cfg=cfg)
  assert other[0]["sha256"] != one[0]["sha256"]
  assert len({r["seed"] for r in one}) == 2


def test_a_rerun_keeps_whole_clips_and_regenerates_the_rest(tmp_path, monkeypatch):
  """A killed build's rerun (or a larger build over a smaller one's clips) redoes only what is
  missing or was made with another seed or config, and ends with the same bytes."""
  cfg = GeneratorConfig(duration_s=1.0)
  first = generator.generate_split(tmp_path, "val", 3, seed=7, cfg=cfg)
  split_dir = tmp_path / "val"
  os.remove(split_dir / "val_00001.npz")  # a clip a killed build left without its last file
  # A clip from another seed under the same name: regenerated, not kept.
  generator.generate_split(tmp_path / "other", "val", 3, seed=8, cfg=cfg)
  for ext in generator.EXTENSIONS:
    os.replace(tmp_path / "other" / "val" / f"val_00002.{ext}", split_dir / f"val_00002.{ext}")
  made = []
  real = generator.generate_clip
  monkeypatch.setattr(generator, "generate_clip",
                      lambda seed, *a, **k: made.append(k["clip_id"]) or real(seed, *a, **k))
  again = generator.generate_split(tmp_path, "val", 4, seed=7, cfg=cfg)
  assert sorted(made) == ["val_00001", "val_00002", "val_00003"]
  assert [r["sha256"] for r in again[:3]] == [r["sha256"] for r in first]
  assert [r["sounding"] for r in again[:3]] == [r["sounding"] for r in first]
  # Another generator config: nothing on disk is reused.
  made.clear()
  generator.generate_split(tmp_path, "val", 2, seed=7, cfg=GeneratorConfig(duration_s=2.0))
  assert sorted(made) == ["val_00000", "val_00001"]


def test_a_clip_from_before_a_new_config_field_is_kept_when_the_field_is_at_its_default(
    tmp_path, monkeypatch):
  """A sidecar written before ``motion_persistence`` existed lacks it; at its default (0) the
  clip is the same, so a rebuild keeps it; at another value it is made again."""
  cfg = GeneratorConfig(duration_s=1.0)
  generator.generate_split(tmp_path, "val", 1, seed=7, cfg=cfg)
  sidecar_path = tmp_path / "val" / "val_00000.json"
  sidecar = json.loads(sidecar_path.read_text())
  del sidecar["generator_config"]["motion_persistence"]
  sidecar_path.write_text(json.dumps(sidecar))
  made = []
  real = generator.generate_clip
  monkeypatch.setattr(generator, "generate_clip",
                      lambda seed, *a, **k: made.append(k["clip_id"]) or real(seed, *a, **k))
  generator.generate_split(tmp_path, "val", 1, seed=7, cfg=cfg)
  assert not made
  generator.generate_split(tmp_path, "val", 1, seed=7,
                           cfg=dataclasses.replace(cfg, motion_persistence=0.5))
  assert made == ["val_00000"]


def _trajectories(persistence, n=200, **kw):
  limits = geometry.MotionLimits(depth=(2.0, 8.0), max_tan_x=0.4, max_tan_y=0.4, max_y=1.0)
  out = []
  for seed in range(n):
    rng = np.random.default_rng(seed)
    kwargs = {} if persistence is None else {"persistence": persistence}
    traj, kinds = geometry.sample_trajectory(
        rng, np.array([0.0, 0.0, 5.0]), 10, 1.0, 0.1, limits, kw.get("still_prob", 0.2),
        (0.12, 0.3), (1.0, 3.0), **kwargs)
    out.append((traj.velocities, kinds, rng.random()))
  return out


def test_motion_persistence_repeats_the_previous_window_and_zero_draws_nothing_extra():
  # 0 consumes the same random numbers as before the option existed: same trajectories and the
  # generator left in the same state.
  for (v0, k0, r0), (v1, k1, r1) in zip(_trajectories(None), _trajectories(0.0)):
    np.testing.assert_array_equal(v0, v1)
    assert (k0, r0) == (k1, r1)

  def kept(trajs):
    """Fraction of windows w > 0 after a moving one that go on with its motion (a component may
    bounce off a bound, i.e. flip sign, or stop there)."""
    same = moving = 0
    for v, _, _ in trajs:
      for w in range(1, len(v)):
        if np.any(v[w - 1] != 0):
          moving += 1
          same += np.any(v[w] != 0) and np.all((np.abs(v[w]) == np.abs(v[w - 1])) | (v[w] == 0))
    return same / moving

  assert kept(_trajectories(0.0)) < 0.02
  assert 0.7 < kept(_trajectories(0.8)) < 0.9
  # Always kept: window w is window w-1's motion, except that a component about to leave the
  # bounds bounces (flips sign) or stops.
  for v, kinds, _ in _trajectories(1.0, still_prob=0.0):
    for w in range(1, len(v)):
      assert np.all((v[w] == v[w - 1]) | (v[w] == -v[w - 1]) | (v[w] == 0)), (w, v)
  with pytest.raises(ValueError, match="persistence"):
    _trajectories(1.2, n=1)


def test_the_seventh_motion_kind_at_weight_zero_draws_what_six_kinds_drew():
  # DEFAULT_KIND_WEIGHTS appends "lateral+vertical+depth" with weight 0 to the six kinds that
  # every build before it was made with; the trajectories (and so every default clip) stay the
  # same only if numpy's weighted choice draws the same index, and leaves the generator in the same
  # state, with a trailing zero weight.
  six = np.asarray(geometry.DEFAULT_KIND_WEIGHTS[:-1]) / sum(geometry.DEFAULT_KIND_WEIGHTS)
  assert geometry.DEFAULT_KIND_WEIGHTS[-1] == 0
  assert geometry.MOTION_KINDS[-1] == "lateral+vertical+depth"
  a, b = np.random.default_rng(0), np.random.default_rng(0)
  draws_six = [a.choice(6, p=six) for _ in range(2000)]
  draws_seven = [b.choice(7, p=np.append(six, 0.0)) for _ in range(2000)]
  assert draws_six == draws_seven and a.random() == b.random()
  assert len(set(draws_six)) == 6


def test_all_weight_on_the_three_axis_kind_moves_every_moving_window_along_three_axes():
  limits = geometry.MotionLimits(depth=(2.0, 8.0), max_tan_x=0.4, max_tan_y=0.4, max_y=1.0)
  counts = {"still": 0, "lateral+vertical+depth": 0, "other": 0}
  for seed in range(100):
    traj, kinds = geometry.sample_trajectory(
        np.random.default_rng(seed), np.array([0.0, 0.0, 5.0]), 10, 1.0, 0.1, limits, 0.2,
        (0.12, 0.3), (1.0, 3.0), kind_weights=(0, 0, 0, 0, 0, 0, 1))
    for v, kind in zip(traj.velocities, kinds):
      assert kind == "+".join(n for n, x in zip(("lateral", "vertical", "depth"), v) if x != 0) \
          or (kind == "still" and not np.any(v))
      counts[kind if kind in counts else "other"] += 1
  moving = counts["lateral+vertical+depth"] + counts["other"]
  # still_prob (0.2), plus the windows whose every reversal of the three components leaves these
  # narrow bounds; a component is reversed first, and dropped only if that fails too.
  assert 0.15 < counts["still"] / 1000 < 0.4
  assert counts["other"] < 0.1 * moving
  # Through the generator config, for the sounding objects of a clip.
  cfg = GeneratorConfig(duration_s=4.0, motion_kind_weights=(0, 0, 0, 0, 0, 0, 1))
  clip = generator.generate_clip(11, cfg)
  kinds = [o["motion"] for o in clip.sidecar["objects"] if o["sounding"]]
  assert kinds and all(k in ("still", "lateral+vertical+depth") or k.count("+") == 1
                       for ks in kinds for k in ks)
  assert any(k == "lateral+vertical+depth" for ks in kinds for k in ks)


def test_derived_seeds_depend_on_seed_split_and_index():
  seeds = {generator.derive_clip_seed(s, sp, i)
           for s in (0, 1) for sp in ("train", "test") for i in (0, 1)}
  assert len(seeds) == 8
  assert generator.derive_clip_seed(0, "train", 5) == generator.derive_clip_seed(0, "train", 5)


# ------------------------------------------------------------------------------ sound physics
def _instantaneous_frequency(y, sr):
  phase = np.unwrap(np.angle(scipy.signal.hilbert(y)))
  return np.diff(phase) * sr / (2 * np.pi)


@pytest.mark.parametrize("speed", [2.5, -2.5])
def test_doppler_ratio_and_attenuation_of_a_pure_tone(speed):
  """A 440 Hz tone approaching (speed > 0) / receding along the line of sight."""
  sr, c, f0, r0, r_ref = 11025, 40.0, 440.0, 6.0, 4.0
  t = np.arange(2 * sr) / sr

  def position(tt):
    return np.stack([np.zeros_like(tt), np.zeros_like(tt), r0 - speed * tt], axis=-1)

  y, tau, dist = propagation.propagate(lambda tt: np.sin(2 * np.pi * f0 * tt), position, t, c,
                                       r_ref)
  np.testing.assert_allclose(tau + dist / c, t, atol=1e-9)  # retarded-time equation holds
  inner = slice(1000, -1000)
  ratio = np.median(_instantaneous_frequency(y, sr)[inner]) / f0
  assert ratio == pytest.approx(c / (c - speed), rel=1e-3)
  assert (ratio > 1.0) == (speed > 0)  # approaching -> higher pitch
  env = np.abs(scipy.signal.hilbert(y))
  np.testing.assert_allclose(env[inner], (r_ref / dist)[inner], rtol=0.01)
  early, late = env[1000:3000].mean(), env[-3000:-1000].mean()
  assert (late > early) == (speed > 0)  # approaching -> louder


def test_trajectory_toward_then_away_rises_then_falls_in_pitch():
  """The clip's own trajectory model driving the propagation: 1 s toward, 1 s away."""
  sr, c, f0 = 11025, 40.0, 600.0
  traj = geometry.Trajectory(start=np.array([0.3, 0.0, 6.0]),
                             velocities=np.array([[0.0, 0.0, -3.0], [0.0, 0.0, 3.0]]),
                             window_s=1.0, ramp_s=0.125)
  t = np.arange(2 * sr) / sr
  y, _, _ = propagation.propagate(lambda tt: np.sin(2 * np.pi * f0 * tt), traj.position, t, c,
                                  4.0)
  freq = _instantaneous_frequency(y, sr)
  toward = np.median(freq[int(0.3 * sr):int(0.8 * sr)]) / f0
  away = np.median(freq[int(1.4 * sr):int(1.9 * sr)]) / f0
  # Radial speed is 3 * Z / r (the source is slightly off-axis).
  assert 1.06 < toward < c / (c - 3.0) + 1e-3
  assert c / (c + 3.0) - 1e-3 < away < 0.95


def test_timbres_are_band_limited_distinct_and_not_silent():
  sr, f_max = 22050.0, 4630.0
  t = np.arange(int(2 * sr)) / sr - 0.1
  centroids = {}
  for name in sound.TIMBRES:
    x, params = sound.synthesize(name, np.random.default_rng(0), t, sr, f_max)
    y, _ = sound.synthesize(name, np.random.default_rng(1), t, sr, f_max)
    assert np.all(np.isfinite(x)) and params["timbre"] == name
    assert np.sqrt(np.mean(x ** 2)) > 0.1, name
    assert not np.allclose(x, y), name  # instances are randomised
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    assert spec[freqs > 1.2 * f_max].sum() < 0.02 * spec.sum(), name
    centroids[name] = float((spec * freqs).sum() / spec.sum())
  assert len({round(v, -1) for v in centroids.values()}) == len(centroids)


def test_silent_source_is_redrawn_then_rejected():
  # With this strict threshold the clock of clip seed 1 is too sparse on its first draw.
  cfg = dataclasses.replace(SHORT, silence_rms=0.25, min_active_fraction=1.0, max_redraws=20)
  clip = generator.generate_clip(1, cfg)
  stems = clip.arrays["stems"] / clip.sidecar["mix_scale"]  # undo the peak normalisation
  sounding = [o for o in clip.sidecar["objects"] if o["sounding"]]
  assert max(o["sound"]["redraws"] for o in sounding) >= 1
  for obj in sounding:
    assert np.all(soundscape.window_rms(stems[obj["stem"]], cfg.num_windows) >= 0.25)
  again = generator.generate_clip(1, cfg)  # the re-draw is deterministic
  np.testing.assert_array_equal(again.arrays["stems"], clip.arrays["stems"])
  with pytest.raises(soundscape.SilentSourceError, match="silent"):
    generator.generate_clip(2, dataclasses.replace(SHORT, silence_rms=100.0, max_redraws=1))


# ------------------------------------------------------------------------------ geometry
def test_depth_at_object_centre_equals_position_z(moving_clip):
  clip = moving_clip
  u, v = _projected_centres(clip)
  seg, depth, z = clip.arrays["segmentation"], clip.arrays["depth"], clip.arrays["position"][..., 2]
  checked = 0
  for t, o in zip(*np.nonzero(clip.arrays["visible"])):
    i, j = int(np.floor(v[t, o])), int(np.floor(u[t, o]))
    if 0 <= i < clip.config.height and 0 <= j < clip.config.width and seg[t, i, j] == o:
      assert depth[t, i, j] == pytest.approx(z[t, o], rel=1e-6)
      checked += 1
  assert checked > 80


def test_flow_at_object_centre_equals_projected_centre_displacement(moving_clip):
  """Flow is affine inside an object, so its bilinear interpolation at the centre is exact."""
  clip = moving_clip
  u, v = _projected_centres(clip)
  seg, flow = clip.arrays["segmentation"], clip.arrays["flow"]
  errors = []
  for t in range(clip.config.num_frames - 1):
    for o in range(u.shape[1]):
      x, y = u[t, o] - 0.5, v[t, o] - 0.5  # pixel-index coordinates of the centre
      j, i = int(np.floor(x)), int(np.floor(y))
      if not (0 <= i < clip.config.height - 1 and 0 <= j < clip.config.width - 1):
        continue
      if np.any(seg[t, i:i + 2, j:j + 2] != o):
        continue
      a, b = x - j, y - i
      w = np.array([[(1 - a) * (1 - b), a * (1 - b)], [(1 - a) * b, a * b]])
      f = np.einsum("ij,ijc->c", w, flow[t, i:i + 2, j:j + 2].astype(np.float64))
      errors.append(np.abs(f - [u[t + 1, o] - u[t, o], v[t + 1, o] - v[t, o]]).max())
  assert len(errors) > 80
  assert max(errors) < 2e-3


def test_warping_next_frame_by_flow_reproduces_object_interiors(moving_clip):
  clip = moving_clip
  frames = clip.frames.astype(np.float32)
  seg, flow = clip.arrays["segmentation"], clip.arrays["flow"]
  h, w = seg.shape[1:]
  gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
  warped_err, static_err = [], []
  for t in range(clip.config.num_frames - 1):
    if t % clip.config.window_frames == clip.config.window_frames - 1:
      continue  # the heading marker may turn between windows
    warped = cv2.remap(frames[t + 1], gx + flow[t, ..., 0], gy + flow[t, ..., 1], cv2.INTER_LINEAR)
    for o in range(clip.arrays["visible"].shape[1]):
      mask = cv2.erode((seg[t] == o).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
      moving = np.abs(flow[t][mask]).max(initial=0.0) > 0.5
      if mask.sum() >= 20 and moving:
        warped_err.append(np.abs(warped - frames[t])[mask].mean())
        static_err.append(np.abs(frames[t + 1] - frames[t])[mask].mean())
  assert len(warped_err) > 20
  assert np.median(warped_err) < 2.5  # grey levels out of 255
  assert np.median(warped_err) < 0.3 * np.median(static_err)


def test_background_depth_and_flow_agree_with_camera_motion(moving_clip):
  """A wall/floor point seen at pixel x in frame t is the same world point as the one seen at
  x + flow in frame t+1 (back-projected with each frame's depth and camera)."""
  clip = moving_clip
  cam = clip.sidecar["camera"]
  f, pan = np.asarray(cam["focal_px"]), np.asarray(cam["pan_rad"])
  assert cam["moving"] and np.ptp(pan) > 0.01
  seg, depth, flow = clip.arrays["segmentation"], clip.arrays["depth"], clip.arrays["flow"]
  h, w = seg.shape[1:]
  gx, gy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)

  def world(t, u, v, z):
    p = np.stack([(u - cam["cx"]) * z / f[t], (v - cam["cy"]) * z / f[t], z], axis=-1)
    return geometry.camera_to_world(p, pan[t])

  errs = []
  for t in range(0, clip.config.num_frames - 1, 7):
    bg = cv2.erode((seg[t] == -1).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    un, vn = gx + flow[t, ..., 0], gy + flow[t, ..., 1]
    zn = cv2.remap(depth[t + 1], (un - 0.5).astype(np.float32), (vn - 0.5).astype(np.float32),
                   cv2.INTER_LINEAR)
    bg &= (un > 1) & (un < w - 1) & (vn > 1) & (vn < h - 1)
    bg &= np.abs(depth[t] - depth[t].max()) < 100  # skip the floor-wall seam
    p0 = world(t, gx[bg], gy[bg], depth[t][bg].astype(np.float64))
    p1 = world(t + 1, un[bg], vn[bg], zn[bg].astype(np.float64))
    errs.append(np.median(np.linalg.norm(p1 - p0, axis=-1) / np.linalg.norm(p0, axis=-1)))
  assert np.abs(flow[..., 0][seg == -1]).mean() > 0.1  # the camera motion moves the background
  assert max(errs) < 1e-3


def test_window_displacement_is_camera_motion_free_projection_difference(moving_clip):
  clip = moving_clip
  cfg, cam = clip.config, clip.sidecar["camera"]
  f, pan = np.asarray(cam["focal_px"]), np.asarray(cam["pan_rad"])
  world = clip.arrays["world_position"].astype(np.float64)
  disp = clip.arrays["window_displacement"]
  assert disp.shape == (10, world.shape[1], 3)
  for w in range(cfg.num_windows):
    a, b = 8 * w, 8 * w + 7
    pa = geometry.world_to_camera(world[a], pan[a])
    pb = geometry.world_to_camera(world[b], pan[a])  # the FIRST frame's camera
    ua, ub = geometry.project(pa, f[a], cfg.cx, cfg.cy), geometry.project(pb, f[a], cfg.cx, cfg.cy)
    expected = np.concatenate([(ub - ua) / [cfg.width, cfg.height], (pb - pa)[:, 2:]], axis=1)
    np.testing.assert_allclose(disp[w], expected, atol=1e-5)
    for o, obj in enumerate(clip.sidecar["objects"]):
      if obj["motion"][w] == "still":
        np.testing.assert_allclose(disp[w, o], 0.0, atol=1e-6)


def test_heading_marker_sits_on_the_side_of_lateral_motion():
  app = render.Appearance("circle", (0.2, 0.3, 0.9), (0.5, 0.5))
  cam = geometry.static_camera(2, 128.0)
  style = render.sample_background_style(np.random.default_rng(0))
  pos = np.array([[0.0, 0.0, 4.0], [0.0, 0.0, 4.0]])
  out = []
  for heading, marker in ((0.0, 1.0), (np.pi, 1.0), (0.0, 0.0)):
    obj = render.ObjectTrack(app, pos, np.full(2, heading), np.full(2, marker))
    out.append(render.render(cam, [obj], 64, 64, 12.0, 1.3, style).frames[0].astype(int))
  k = 128.0 * 0.5 / 4.0  # 16 px per normalised unit
  right, left = (32, int(32 + 0.62 * k)), (32, int(32 - 0.62 * k))
  assert out[0][right].min() > 240 and out[0][left].min() < 200  # white dot on the right
  assert out[1][left].min() > 240 and out[1][right].min() < 200
  assert out[2][right].min() < 200 and out[2][left].min() < 200  # no lateral motion, no dot


# ------------------------------------------------------------------------------ files
def test_written_files_match_the_contract(written_clip):
  clip, paths = written_clip
  from asmp_jax import media
  wav, sr = sf.read(paths["wav"], dtype="float32")
  info = sf.info(paths["wav"])
  assert (sr, wav.ndim, wav.shape[0], info.subtype) == (11025, 1, 110250, "PCM_16")
  stems = np.load(paths["npz"])["stems"]
  assert np.max(np.abs(wav)) <= 0.9
  assert np.max(np.abs(stems.sum(0) - wav)) <= 1.0 / 32768 + 1e-6
  frames, fps = media.read_video(paths["mp4"])
  assert frames.shape == (80, 128, 128, 3) and fps == pytest.approx(8.0)
  assert np.abs(frames.astype(np.float32) - clip.frames).mean() < 4.0  # H.264 at crf 18

  sidecar = json.load(open(paths["json"]))
  for key, value in {"format_version": 1, "fps": 8, "num_frames": 80, "window_frames": 8,
                     "width": 128, "height": 128, "sample_rate": 11025,
                     "num_samples": 110250}.items():
    assert sidecar[key] == value, key
  assert len(sidecar["camera"]["focal_px"]) == len(sidecar["camera"]["pan_rad"]) == 80
  assert sidecar["classes"]["sounding"] == list(classes.SOUNDING_NAMES)
  z = np.load(paths["npz"])
  num_obj = len(sidecar["objects"])
  num_stems = sum(o["sounding"] for o in sidecar["objects"]) + 1
  expect = {"depth": ((80, 128, 128), np.float32), "flow": ((80, 128, 128, 2), np.float32),
            "boxes": ((80, num_obj, 4), np.float32), "visible": ((80, num_obj), np.bool_),
            "position": ((80, num_obj, 3), np.float32),
            "world_position": ((80, num_obj, 3), np.float32),
            "window_displacement": ((10, num_obj, 3), np.float32),
            "stems": ((num_stems, 110250), np.float32)}
  for key, (shape, dtype) in expect.items():
    assert z[key].shape == shape and z[key].dtype == dtype, key
  d = z["det_frame"].shape[0]
  for key, dtype in (("det_frame", np.int32), ("det_class", np.int32), ("det_track", np.int32),
                     ("det_score", np.float32)):
    assert z[key].shape == (d,) and z[key].dtype == dtype, key
  assert z["det_box"].shape == (d, 4) and z["det_feature"].shape == (d, 16)
  np.testing.assert_array_equal(z["flow"][-1], 0.0)
  for obj in sidecar["objects"]:
    assert obj["class_name"] == classes.CLASS_NAMES[obj["class_id"]]
    assert (obj["stem"] is not None) == obj["sounding"]


def test_the_mp4_carries_the_wav_exactly_and_the_same_pictures(written_clip, tmp_path):
  """The mp4's FLAC sound track is the wav's samples (so separating the mp4 alone separates the
  data set's mixture), and its pictures decode as those of a video-only encoding (the records,
  made from the pictures and the wav, are unchanged)."""
  clip, paths = written_clip
  from asmp_jax import media  # pylint: disable=g-import-not-at-top
  info = media.probe(paths["mp4"])
  assert info["has_audio"] and info["audio_sample_rate"] == 11025 and info["audio_channels"] == 1
  from_mp4, _ = media.load_audio(paths["mp4"], target_sr=None)
  from_wav, _ = media.load_audio(paths["wav"], target_sr=None)
  np.testing.assert_array_equal(from_mp4, from_wav)
  silent = str(tmp_path / "silent.mp4")
  media.write_video(silent, clip.frames, clip.config.fps, codec="libx264", crf=clip.config.crf)
  np.testing.assert_array_equal(media.read_video(paths["mp4"])[0], media.read_video(silent)[0])


def test_simulated_detections_follow_the_ground_truth(moving_clip):
  a = moving_clip.arrays
  assert np.all(np.diff(a["det_frame"]) >= 0)
  true = a["det_track"] >= 0
  gt = a["boxes"][a["det_frame"][true], a["det_track"][true]]
  det = a["det_box"][true]
  inter = (np.clip(np.minimum(gt[:, 2:], det[:, 2:]) - np.maximum(gt[:, :2], det[:, :2]), 0, None)
           .prod(1))
  area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  iou = inter / (area(gt) + area(det) - inter)
  assert np.median(iou) > 0.7
  assert np.all(a["visible"][a["det_frame"][true], a["det_track"][true]])
  ids = [classes.class_id(o["class_name"]) for o in moving_clip.sidecar["objects"]]
  np.testing.assert_array_equal(a["det_class"][true], np.asarray(ids)[a["det_track"][true]])
  assert a["det_score"][true].mean() > a["det_score"][~true].mean() + 0.2
  recall = true.sum() / a["visible"].sum()
  assert 0.8 < recall < 0.97  # default miss probability 0.1


def test_cli_writes_manifest(tmp_path):
  from asmp_data.synthetic import generate
  cfg = GeneratorConfig(duration_s=1.0)
  manifest = generate.build(str(tmp_path), {"train": 2, "val": 1}, 0, cfg, workers=1)
  on_disk = json.load(open(tmp_path / "manifest.json"))
  assert on_disk == json.loads(json.dumps(manifest))
  assert on_disk["counts"] == {"train": 2, "val": 1}
  assert GeneratorConfig.from_dict(on_disk["config"]) == cfg
  for split, records in on_disk["splits"].items():
    for rec in records:
      assert len(rec["sha256"]) == 4
      for rel, digest in rec["sha256"].items():
        assert files.sha256(os.path.join(tmp_path, rel)) == digest


def test_progress_report_every_5_percent_and_at_the_end():
  now = [0.0]
  lines = []
  report = generator.ProgressReport(lines.append, clock=lambda: now[0])
  for done in range(1, 41):
    now[0] = 10.0 * done  # 10 s per clip
    report("train", done, 40)  # 5 % of 40 clips: the first clip, then a line every 2 clips
  now[0] = 410.0
  report("val", 1, 1)
  assert len(lines) == 1 + 20 + 1
  assert lines[0] == "train: 1/40 clips (0.10 clips/s overall, about 6 min left)"
  assert lines[1] == "train: 2/40 clips (0.10 clips/s overall, about 6 min left)"
  assert lines[-3] == "train: 38/40 clips (0.10 clips/s overall, about 20 s left)"
  assert lines[-2] == "train: 40/40 clips (0.10 clips/s overall)"
  assert lines[-1] == "val: 1/1 clips (0.10 clips/s overall)"


# ------------------------------------------------------------------------------ stopping a build
_GENERATE = ["-m", "asmp_data.synthetic.generate", "--num_train=60", "--num_val=0",
             "--num_test=0", "--workers=2", '--config={"duration_s": 2.0}']


def _start_generation(out_dir):
  """Starts the generate CLI with 2 workers; returns it once the first clip is reported."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen([sys.executable, *_GENERATE, f"--out_dir={out_dir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  first = proc.stdout.readline()
  assert first.startswith("train: "), first + proc.stderr.read()
  return proc


def test_sigterm_stops_generation_in_one_line_keeping_whole_clips(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  proc = _start_generation(tmp_path)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)  # returns once every holder of the pipes (workers) exits
  assert proc.returncode == 128 + signal.SIGTERM
  assert "Traceback" not in err and "leaked" not in err, err
  stops = [l for l in err.splitlines() if "Stopped by SIGTERM" in l]
  assert len(stops) == 1 and stops[0].endswith(
      f"while generating clips into {tmp_path}; whole clips are kept and the same command resumes "
      "from them")
  whole = {f[:-5] for f in os.listdir(tmp_path / "train") if f.endswith(".json")}
  assert 1 <= len(whole) < 60
  assert not (tmp_path / "manifest.json").exists()


def test_workers_of_a_killed_build_exit_quietly(tmp_path):
  """SIGKILL to the parent: its workers find it gone and exit without a traceback each."""
  import signal  # pylint: disable=g-import-not-at-top
  proc = _start_generation(tmp_path)
  proc.send_signal(signal.SIGKILL)
  _, err = proc.communicate(timeout=120)  # the workers hold the pipes until they exit
  assert proc.returncode == -signal.SIGKILL
  assert "Traceback" not in err and "BrokenPipeError" not in err, err
