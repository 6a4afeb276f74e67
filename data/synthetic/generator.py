"""Generates synthetic clips in memory, writes them to disk, and builds whole splits.

``generate_clip(seed, cfg)`` returns a :class:`Clip` (frames, mixture, sidecar dict and arrays);
``write_clip(clip, out_dir)`` writes ``<id>.mp4``, ``<id>.wav``, ``<id>.json`` and ``<id>.npz``;
``generate_split(out_dir, split, num_clips, seed, cfg, num_workers)`` does that for a split in
parallel with per-clip seeds derived from ``(seed, split, index)``. The sidecar format is
documented in ``docs/synthetic.md`` and is a contract with the preprocessing code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from asmp_jax import files as file_records
from asmp_data.synthetic import classes
from asmp_data.synthetic import detections as detections_lib
from asmp_data.synthetic import files
from asmp_data.synthetic import geometry
from asmp_data.synthetic import render
from asmp_data.synthetic import scene as scene_lib
from asmp_data.synthetic import soundscape
from asmp_data.synthetic import workers
from asmp_data.synthetic.config import GeneratorConfig

FORMAT_VERSION = 1
EXTENSIONS = ("mp4", "wav", "json", "npz")
# Lateral image speed (pixels/s) at which the heading marker is fully drawn.
MARKER_FULL_SPEED_PX = 6.0
# Order of the arrays in the .npz (the contract; ``segmentation`` is an extra).
ARRAY_KEYS = ("depth", "flow", "boxes", "visible", "position", "world_position",
              "window_displacement", "stems", "det_frame", "det_box", "det_class", "det_score",
              "det_track", "det_feature", "segmentation")


@dataclasses.dataclass(frozen=True)
class Clip:
  """One generated clip, in memory.

  Attributes:
    clip_id: file stem of the clip's files.
    frames: uint8 ``[T, H, W, 3]`` RGB frames.
    audio: float32 ``[N]`` mono mixture at ``cfg.sample_rate``.
    sidecar: the JSON sidecar (see docs/synthetic.md).
    arrays: the .npz arrays, keyed as in :data:`ARRAY_KEYS`.
    config: the generator config.
  """

  clip_id: str
  frames: np.ndarray
  audio: np.ndarray
  sidecar: dict[str, Any]
  arrays: dict[str, np.ndarray]
  config: GeneratorConfig


def derive_clip_seed(seed: int, split: str, index: int) -> int:
  """Seed of clip ``index`` of ``split``: a 63-bit hash of (seed, split, index) via SeedSequence."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed={seed!r}: expected a non-negative integer")
  if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
    raise ValueError(f"index={index!r}: expected a non-negative integer")
  ss = np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])
  return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def heading_cue(trajectory: geometry.Trajectory, times: np.ndarray, pan: np.ndarray,
                focal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Image-plane direction and marker strength of an object's own lateral motion.

  The object's velocity is rotated into the camera frame (the camera's own rotation is left out,
  so the cue shows how the object moves, not how the camera turns); its (X, Y) part gives the
  direction ``atan2(vy, vx)`` and, as image speed ``f |(vx, vy)| / Z`` in pixels/s, the marker
  strength ``min(1, speed / MARKER_FULL_SPEED_PX)``. Motion straight toward/away from the camera
  shows no marker.

  Returns:
    (heading ``[T]`` radians, marker ``[T]`` in [0, 1]).
  """
  p = geometry.world_to_camera(trajectory.position(times), pan)
  v = geometry.world_to_camera(trajectory.velocity(times), pan)
  speed_px = focal * np.hypot(v[:, 0], v[:, 1]) / p[:, 2]
  return np.arctan2(v[:, 1], v[:, 0]), np.clip(speed_px / MARKER_FULL_SPEED_PX, 0.0, 1.0)


def window_displacement(world: np.ndarray, camera: geometry.CameraPath, cfg: GeneratorConfig,
                        ) -> np.ndarray:
  """Camera-motion-free displacement of each object over each window.

  Args:
    world: ``[T, O, 3]`` world positions of the object centres.
    camera: the camera path.
    cfg: config (window length, image size, principal point).

  Returns:
    float32 ``[W, O, 3]``: for window w (frames ``l w .. l w + l - 1``) the centre's position in
    the last frame minus that in the first, both seen by the camera of the first frame, as
    ``(u / width, v / height, Z)``.
  """
  first = np.arange(cfg.num_windows) * cfg.window_frames
  last = first + cfg.window_frames - 1
  pan, focal = camera.pan[first][:, None], camera.focal[first][:, None]

  def pseudo3d(p):
    cam = geometry.world_to_camera(p, pan)
    uv = geometry.project(cam, focal, cfg.cx, cfg.cy)
    return np.stack([uv[..., 0] / cfg.width, uv[..., 1] / cfg.height, cam[..., 2]], axis=-1)

  return (pseudo3d(world[last]) - pseudo3d(world[first])).astype(np.float32)


def _obj_json(obj: scene_lib.SceneObject, sound_params: dict[str, Any] | None) -> dict[str, Any]:
  app = obj.appearance
  return {
      "track": obj.track,
      "class_name": obj.object_class.name,
      "class_id": classes.class_id(obj.object_class.name),
      "sounding": obj.object_class.sounding,
      "stem": obj.stem,
      "companion_of": obj.companion_of,
      "shape": app.shape,
      "color": [round(c, 4) for c in app.color],
      "half_extent": [round(e, 4) for e in app.half_extent],
      "pattern": app.pattern,
      "pattern_freq": round(app.pattern_freq, 4),
      "pattern_amp": round(app.pattern_amp, 4),
      "motion": list(obj.motion),
      "velocity": np.round(obj.trajectory.velocities, 4).tolist(),
      "sound": sound_params,
  }


def generate_clip(seed: int, cfg: GeneratorConfig | None = None, *, clip_id: str | None = None,
                  split: str = "") -> Clip:
  """Generates one clip entirely in memory.

  Args:
    seed: non-negative clip seed; equal seeds (and configs) give identical clips.
    cfg: generator config (default :class:`GeneratorConfig`).
    clip_id: file stem recorded in the sidecar (default ``"clip_<seed>"``).
    split: split name recorded in the sidecar.

  Returns:
    A :class:`Clip`.
  """
  cfg = GeneratorConfig() if cfg is None else cfg
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed={seed!r}: expected a non-negative integer")
  seed = int(seed)
  clip_id = f"clip_{seed}" if clip_id is None else clip_id
  scene = scene_lib.sample_scene(seed, cfg)
  camera = scene.camera
  times = np.arange(cfg.num_frames) / cfg.fps
  world = np.stack([o.trajectory.position(times) for o in scene.objects], axis=1)  # [T, O, 3]
  cam = geometry.world_to_camera(world, camera.pan[:, None])
  tracks = []
  for o in scene.objects:
    heading, marker = heading_cue(o.trajectory, times, camera.pan, camera.focal)
    tracks.append(render.ObjectTrack(o.appearance, cam[:, o.track], heading, marker))
  frame = render.render(camera, tracks, cfg.width, cfg.height, cfg.wall_depth, cfg.floor_height,
                        scene.style)
  audio = soundscape.render_soundscape(seed, scene, cfg)
  class_ids = np.array([classes.class_id(o.object_class.name) for o in scene.objects])
  dets = detections_lib.simulate(
      scene_lib.stream(seed, scene_lib.KEY_DETECTOR), frame.boxes, frame.visible, class_ids,
      cfg.width, cfg.height, cfg.det_box_jitter, cfg.det_miss_prob, cfg.det_false_positives,
      cfg.det_feature_dim, cfg.det_feature_noise)
  arrays = {
      "depth": frame.depth,
      "flow": frame.flow,
      "boxes": frame.boxes,
      "visible": frame.visible,
      "position": cam.astype(np.float32),
      "world_position": world.astype(np.float32),
      "window_displacement": window_displacement(world, camera, cfg),
      "stems": audio.stems,
      **dets,
      "segmentation": frame.segmentation,
  }
  assert tuple(arrays) == ARRAY_KEYS
  style = scene.style
  sidecar = {
      "format_version": FORMAT_VERSION,
      "clip_id": clip_id,
      "split": split,
      "seed": seed,
      "fps": cfg.fps,
      "num_frames": cfg.num_frames,
      "window_frames": cfg.window_frames,
      "num_windows": cfg.num_windows,
      "width": cfg.width,
      "height": cfg.height,
      "sample_rate": cfg.sample_rate,
      "num_samples": cfg.num_samples,
      "speed_of_sound": cfg.speed_of_sound,
      "reference_distance": cfg.reference_distance,
      "camera": {
          "moving": camera.moving,
          "focal_px": np.round(camera.focal, 6).tolist(),
          "pan_rad": np.round(camera.pan, 8).tolist(),
          "cx": cfg.cx,
          "cy": cfg.cy,
      },
      "objects": [_obj_json(o, audio.sources[o.stem] if o.stem is not None else None)
                  for o in scene.objects],
      "background_sound": audio.background,
      "background_visual": {
          "wall_depth": cfg.wall_depth, "floor_height": cfg.floor_height,
          "wall_color": [round(c, 4) for c in style.wall_color],
          "floor_colors": [[round(c, 4) for c in fc] for fc in style.floor_colors],
          "brick_size": [round(s, 4) for s in style.brick_size],
          "tile_size": round(style.tile_size, 4),
      },
      "mix_scale": audio.scale,
      "classes": {"sounding": list(classes.SOUNDING_NAMES),
                  "context": list(classes.CONTEXT_NAMES)},
      "generator_config": cfg.to_dict(),
  }
  return Clip(clip_id, frame.frames, audio.wav, sidecar, arrays, cfg)


def write_clip(clip: Clip, out_dir: str | os.PathLike[str]) -> dict[str, str]:
  """Writes ``<id>.mp4`` (H.264 video with the mixture as a FLAC sound track), ``<id>.wav``
  (PCM_16 mixture), ``<id>.json`` and ``<id>.npz``.

  Every file is written atomically and deterministically (same clip -> same bytes). The mp4's
  sound track holds the wav's samples exactly (FLAC is lossless), so the clip plays with sound and
  separating the mp4 alone separates the mixture the data set holds.

  Args:
    clip: the clip.
    out_dir: existing or new directory.

  Returns:
    extension -> path of each file written.
  """
  from asmp_jax import media  # the project's media I/O (PyAV/soundfile)

  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f"{clip.clip_id}.{ext}") for ext in EXTENSIONS}
  sr = clip.config.sample_rate
  media.write_wav(paths["wav"], clip.audio, sr, subtype="PCM_16")
  pcm, _ = media.load_audio(paths["wav"], target_sr=None)  # the 16-bit samples, as float
  media.write_video(paths["mp4"], clip.frames, clip.config.fps, codec="libx264",
                    crf=clip.config.crf, audio=(pcm, sr), audio_codec="flac")
  files.write_json(paths["json"], clip.sidecar)
  files.write_npz(paths["npz"], clip.arrays)
  return paths


def _existing_sidecar(paths: Mapping[str, str], clip_seed: int,
                      cfg: GeneratorConfig) -> dict[str, Any] | None:
  """The sidecar of a clip already on disk (``paths``: extension -> file) with this seed and
  config, or None.

  Every file is written atomically, so a clip whose four files exist is whole; a clip a killed
  build left with fewer files, or one made with another seed or generator config, is None
  (and is generated again, overwriting what is there).
  """
  if not all(os.path.isfile(p) for p in paths.values()):
    return None
  sidecar = file_records.read_json_object(paths["json"])
  if sidecar is None or sidecar.get("seed") != clip_seed:
    return None
  saved_cfg = sidecar.get("generator_config")
  if not isinstance(saved_cfg, dict):
    return None
  # A field added to GeneratorConfig after the clip was written is missing from its sidecar; its
  # default keeps the earlier behaviour (e.g. motion_persistence=0 draws no extra random number),
  # so the clip is the one this config makes when the field is at its default.
  defaults = json.loads(json.dumps(GeneratorConfig().to_dict()))
  saved_cfg = {**{k: v for k, v in defaults.items() if k not in saved_cfg}, **saved_cfg}
  if saved_cfg != json.loads(json.dumps(cfg.to_dict())):
    return None
  return sidecar


def _make_and_write(task: tuple[str, str, int, int, GeneratorConfig]) -> dict[str, Any]:
  """Worker: generates clip ``index`` of a split, writes it, returns its file record.

  A clip already on disk with the same seed and generator config (a killed build's, or one
  linked in from a build with the same seed) is kept as it is: generation is deterministic, so
  it is the clip this call would write.
  """
  out_dir, split, seed, index, cfg = task
  clip_seed = derive_clip_seed(seed, split, index)
  clip_id = f"{split}_{index:05d}"
  paths = {ext: os.path.join(out_dir, f"{clip_id}.{ext}") for ext in EXTENSIONS}
  sidecar = _existing_sidecar(paths, clip_seed, cfg)
  if sidecar is None:
    clip = generate_clip(clip_seed, cfg, clip_id=clip_id, split=split)
    paths = write_clip(clip, out_dir)
    sidecar = clip.sidecar
  objects = sidecar["objects"]
  return {
      "split": split,
      "index": index,
      "clip_id": clip_id,
      "seed": clip_seed,
      "sounding": [o["class_name"] for o in objects if o["sounding"]],
      "num_objects": len(objects),
      "camera_moving": sidecar["camera"]["moving"],
      "sha256": {f"{split}/{os.path.basename(p)}": files.sha256(p) for p in paths.values()},
  }


class ProgressReport:
  """A ``progress`` callback for :func:`generate_splits` that reports how far generation is.

  Calls ``emit(message)`` about every 5 % of a split and at its end with
  ``"<split>: <done>/<total> clips (<rate> clips/s overall, about <t> left)"``; the rate counts
  every clip this reporter has seen, the time left is the split's remaining clips at that rate.
  """

  def __init__(self, emit: Callable[[str], None] = print,
               clock: Callable[[], float] = time.perf_counter):
    self.emit, self.clock = emit, clock
    self.start = clock()
    self.done = 0
    self.last: dict[str, int] = {}

  def __call__(self, split: str, done: int, total: int) -> None:
    self.done += 1
    step = max(total // 20, 1)
    if done < total and done // step == self.last.get(split, -1):
      return
    self.last[split] = done // step
    rate = self.done / max(self.clock() - self.start, 1e-9)
    left_s = (total - done) / rate
    left = ("" if done == total else f", about {left_s:.0f} s left" if left_s < 60
            else f", about {left_s / 60:.0f} min left")
    self.emit(f"{split}: {done}/{total} clips ({rate:.2f} clips/s overall{left})")


def generate_splits(out_dir: str | os.PathLike[str], counts: Mapping[str, int], seed: int,
                    cfg: GeneratorConfig | None = None, num_workers: int = 1,
                    progress: Callable[[str, int, int], None] | None = None,
                    ) -> dict[str, list[dict[str, Any]]]:
  """Generates several splits with one pool of worker processes.

  Workers are spawned (not forked), so a script that calls this with ``num_workers > 1`` needs
  the usual ``if __name__ == "__main__":`` guard.

  Args:
    out_dir: root directory of the data set; split ``s`` goes to ``out_dir/s/``.
    counts: split name -> number of clips (>= 0), generated in this order.
    seed: data-set seed; clip i of split s gets ``derive_clip_seed(seed, s, i)``.
    cfg: generator config.
    num_workers: processes (1 = in this process).
    progress: called as ``progress(split, done, total)`` after each clip.

  Returns:
    split -> per-clip records (index, clip_id, seed, sounding classes, whether the camera moves,
    and the sha256 of each file keyed by ``<split>/<file name>``), in index order.
  """
  cfg = GeneratorConfig() if cfg is None else cfg
  for split, num_clips in counts.items():
    if not split or not split.replace("_", "").replace("-", "").isalnum():
      raise ValueError(f"split={split!r}: expected a non-empty name of letters, digits, '_', '-'")
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 0:
      raise ValueError(f"num_clips={num_clips!r} for split {split!r}: expected a non-negative "
                       "integer")
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
    raise ValueError(f"num_workers={num_workers!r}: expected a positive integer")
  derive_clip_seed(seed, "", 0)  # validates the seed
  tasks = []
  for split, num_clips in counts.items():
    split_dir = os.path.join(os.fspath(out_dir), split)
    os.makedirs(split_dir, exist_ok=True)
    tasks += [(split_dir, split, int(seed), i, cfg) for i in range(num_clips)]
  records: dict[str, list[dict[str, Any]]] = {split: [] for split in counts}

  def collect(record):
    split = record["split"]
    records[split].append(record)
    if progress:
      progress(split, len(records[split]), counts[split])

  for record in workers.imap(_make_and_write, tasks, min(num_workers, len(tasks)),
                             ordered=False):
    collect(record)
  return {split: sorted(r, key=lambda x: x["index"]) for split, r in records.items()}


def generate_split(out_dir: str | os.PathLike[str], split: str, num_clips: int, seed: int,
                   cfg: GeneratorConfig | None = None, num_workers: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
  """Generates ``num_clips`` clips into ``out_dir/split/`` (see :func:`generate_splits`).

  Args:
    out_dir: root directory of the data set.
    split: split name ("train", "val", "test", ...); also the clip-id prefix.
    num_clips: number of clips (>= 0).
    seed: data-set seed; clip i gets ``derive_clip_seed(seed, split, i)``.
    cfg: generator config.
    num_workers: processes (1 = in this process).
    progress: called as ``progress(done, num_clips)`` after each clip.

  Returns:
    Per-clip records in index order.
  """
  callback = (lambda _, done, total: progress(done, total)) if progress else None
  return generate_splits(out_dir, {split: num_clips}, seed, cfg, num_workers, callback)[split]
