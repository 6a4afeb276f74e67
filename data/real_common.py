"""What the ASIW and AVE builders share: class maps, file lookup functions and the per-video
conversion (released files or raw videos -> one example). The TFDS builder base is in
:mod:`asmp_data.real_builder`.

Two sources, chosen by the builder config:

* ``released``: the preprocessed files the AVSGS/ASMP authors distribute (format and provenance in
  :mod:`asmp_data.avsgs_format`). Where a video's ``Chamfer_Info.pickle`` is present its graph and
  the released displacements are used (they are what the paper used); otherwise the video goes
  through our own preprocessing (``asmp_jax.preprocess``) from its released detections and
  frames, with flat pseudo-depth and OpenCV DIS flow.
* ``raw``: videos the user downloaded (ids from the split lists) plus one detection file per video
  (providers' HDF5/npz layout, or the released JSON + HDF5 pair), optional depth/flow files, through
  our own preprocessing (flat depth / OpenCV flow where those files are absent).

Every example has the feature dict of the synthetic builder, so model and input pipeline are
shared. A video that cannot be used is skipped and reported (kind + reason) in the data set's
metadata; a split with no example is an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from asmp_data import avsgs_format as fmt
from asmp_jax import media
from asmp_jax import preprocess
from asmp_jax.graph import features as graph_features
from asmp_jax.graph import providers

SAMPLE_RATE = 11025
FPS = 8.0  # l = 8 frames per 1 s window
NUM_WINDOWS = 10  # 10 s videos
SPLITS = ("train", "validation", "test")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTENSIONS = (".aac", ".wav", ".flac", ".m4a", ".mp3", ".ogg")

# Skip kinds (the report counts them per split).
MISSING_AUDIO = "missing_audio"
MISSING_FILE = "missing_file"
MALFORMED_FILE = "malformed_file"
UNREADABLE_FILE = "unreadable_file"
NO_AUDITORY_OBJECT = "no_auditory_object"


class ManualDirError(ValueError):
  """The manual directory, a split list or a class map is missing or malformed."""


class Skip(Exception):
  """One video cannot become an example; ``kind`` is one of the skip kinds above."""

  def __init__(self, kind: str, reason: str):
    super().__init__(reason)
    self.kind = kind


# ----------------------------------------------------------------------------- class maps


@dataclasses.dataclass(frozen=True)
class ClassEntry:
  """One row of a class-map file (``data/<set>/classes.tsv``)."""
  index: int
  name: str
  used: bool
  detector_names: tuple[str, ...]
  detector_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ClassMap:
  """The auditory classes in consistency-classifier order (background excluded) and the auditory
  objects (detector classes) of each."""
  entries: tuple[ClassEntry, ...]

  @property
  def names(self) -> list[str]:
    return [e.name for e in self.entries]

  def index(self, name: str) -> int | None:
    for i, e in enumerate(self.entries):
      if e.name == name:
        return i
    return None

  def by_detector_id(self) -> dict[int, int]:
    """Detector class id -> class index, from the ids listed in the class map."""
    return {d: i for i, e in enumerate(self.entries) for d in e.detector_ids}

  def by_vocabulary(self, vocab: Sequence[str]) -> dict[int, int]:
    """Detector class id -> class index through a detector vocabulary (line i = class i; a line
    may hold comma-separated synonyms, as bottom-up-attention's ``objects_vocab.txt``)."""
    names = {n.lower(): i for i, e in enumerate(self.entries) for n in e.detector_names}
    out = {}
    for d, line in enumerate(vocab):
      for syn in line.split(","):
        if syn.strip().lower() in names:
          out[d] = names[syn.strip().lower()]
          break
    return out


def load_class_map(path: str) -> ClassMap:
  """Reads a class-map TSV: ``index, name, used, detector_names ('/'-separated),
  detector_ids ('/'-separated, may be empty)``; ``#`` lines are comments; used rows only."""
  if not os.path.isfile(path):
    raise ManualDirError(f"{path}: class map not found")
  entries = []
  with open(path, encoding="utf-8") as f:
    lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
  header, rows = lines[0].split("\t"), lines[1:]
  want = ["index", "name", "used", "detector_names", "detector_ids"]
  if header != want:
    raise ManualDirError(f"{path}: header {header}; expected the tab-separated columns {want}")
  for n, line in enumerate(rows, start=2):
    cols = line.split("\t")
    if len(cols) != len(want):
      raise ManualDirError(f"{path}: data line {n} has {len(cols)} columns, expected {len(want)}")
    try:
      ids = tuple(int(v) for v in cols[4].split("/") if v.strip())
      entries.append(ClassEntry(int(cols[0]), cols[1], cols[2].strip() == "1",
                                tuple(v.strip() for v in cols[3].split("/") if v.strip()), ids))
    except ValueError as e:
      raise ManualDirError(f"{path}: data line {n}: {e}") from e
  used = tuple(sorted((e for e in entries if e.used), key=lambda e: e.index))
  if not used:
    raise ManualDirError(f"{path}: no class is marked used")
  return ClassMap(used)


def read_vocabulary(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [l.strip() for l in f]


# ----------------------------------------------------------------------------- small functions


def first_existing(paths: Iterable[str]) -> str | None:
  for p in paths:
    if os.path.exists(p):
      return p
  return None


def find_with_extension(directory: str, stem: str, extensions: Sequence[str]) -> str | None:
  return first_existing(os.path.join(directory, stem + e) for e in extensions)


def resample_index(num_frames: int, fps: float, target_fps: float = FPS,
                   max_frames: int | None = None) -> np.ndarray:
  """int64 [T']: the input frame shown at each time ``k / target_fps`` (nearest earlier)."""
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  n = int(np.floor(num_frames * target_fps / fps + 1e-6))
  if max_frames is not None:
    n = min(n, max_frames)
  return np.minimum(np.floor(np.arange(max(n, 1)) * fps / target_fps + 1e-6).astype(np.int64),
                    num_frames - 1)


def resample_frames(frames: np.ndarray, fps: float, target_fps: float = FPS,
                    max_frames: int | None = None) -> np.ndarray:
  """Nearest-earlier frames at ``target_fps``: frame k of the output is the input frame shown at
  time ``k / target_fps``. uint8 [T, H, W, 3] -> [T', H, W, 3]."""
  return np.asarray(frames)[resample_index(len(frames), fps, target_fps, max_frames)]


def read_frame_images(directory: str, max_frames: int) -> np.ndarray | None:
  """``%04d.png`` frames of a released video folder -> uint8 [T, H, W, 3] RGB (None if none)."""
  import cv2  # pylint: disable=g-import-not-at-top
  names = sorted((f for f in os.listdir(directory)
                  if f.lower().endswith((".png", ".jpg")) and os.path.splitext(f)[0].isdigit()),
                 key=lambda f: int(os.path.splitext(f)[0]))[:max_frames]
  if not names:
    return None
  frames = []
  for name in names:
    img = cv2.imread(os.path.join(directory, name), cv2.IMREAD_COLOR)
    if img is None:
      raise Skip(UNREADABLE_FILE, f"{os.path.join(directory, name)}: unreadable image")
    if frames and img.shape != frames[0].shape:
      raise Skip(MALFORMED_FILE, f"{os.path.join(directory, name)}: size {img.shape[:2]} differs "
                 f"from the first frame's {frames[0].shape[:2]}")
    frames.append(img[..., ::-1])
  return np.stack(frames)


def remap_labels(labels: np.ndarray, det_to_class: Mapping[int, int],
                 allowed: Sequence[int] | None) -> np.ndarray:
  """Detector class ids -> auditory class index, -1 for everything else (context candidates)."""
  lut = {d: c for d, c in det_to_class.items() if allowed is None or c in allowed}
  return np.array([lut.get(int(l), -1) for l in labels], np.int32)


# ----------------------------------------------------------------------------- per-video work


@dataclasses.dataclass(frozen=True)
class Settings:
  """Per-build settings handed to the workers (picklable)."""
  num_windows: int = NUM_WINDOWS
  feature_extractor: str = graph_features.PRECOMPUTED
  feature_dim: int = 2048
  crop_encoder_weights: str = ""  # resnet18_crops: the ResNet-18 state_dict file
  graph: str = "released"  # released (where present, else own) | own
  background_feature: str = "zeros"
  released_thresholds: tuple[float, float, float] = fmt.PUBLIC_CODE_THRESHOLDS
  released_rbf_mode: str = "paper"
  no_motion_thresholds: tuple[float, float, float] = (0.02, 0.02, 0.1)
  rbf_percentile: float = 25.0
  iou_threshold: float = 0.1
  min_context_score: float = 0.4

  @property
  def num_samples(self) -> int:
    return self.num_windows * SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class VideoTask:
  """Everything one worker needs for one video.

  Attributes:
    clip_id: the YouTube id.
    source: "released" or "raw".
    files: resolved paths (keys: audio, labels_csv, image_info, features_h5, chamfer,
      displacement, frames_dir, video, detections, depth, flow); absent keys = not available.
    det_to_class: (detector class id, class index) pairs from the class map / vocabulary.
    allowed: class indices the video may hold (AVE: its annotated events); None = any.
    default_class: class of the CSV's auditory objects when the CSV's own class column is not in
      our class order (AVE); None = use the CSV's column (ASIW).
    num_classes: number of auditory classes (background excluded).
    settings: the build settings.
  """
  clip_id: str
  source: str
  files: tuple[tuple[str, str], ...]
  det_to_class: tuple[tuple[int, int], ...]
  allowed: tuple[int, ...] | None
  default_class: int | None
  num_classes: int
  settings: Settings


def _load_audio(path: str | None, clip_id: str) -> np.ndarray:
  if path is None or not os.path.exists(path):
    raise Skip(MISSING_AUDIO, f"{path or clip_id}: audio file not found")
  try:
    wav, _ = media.load_audio(path, target_sr=SAMPLE_RATE)
  except media.MediaError as e:
    kind = MISSING_AUDIO if "no audio stream" in str(e).lower() else UNREADABLE_FILE
    raise Skip(kind, str(e)) from e
  if media.is_silent(wav):
    logging.warning("video %s: the audio is silent; kept", clip_id)
  return wav


def _csv_classes(rows: np.ndarray, task: VideoTask, path: str) -> dict[int, int]:
  """Detector class -> auditory class index of the video's auditory objects (CSV rows)."""
  out = {}
  dmap = dict(task.det_to_class)
  for aud, det in rows[:, :2]:
    if task.default_class is None:
      if not 0 <= aud < task.num_classes:
        raise Skip(MALFORMED_FILE, f"{path}: auditory class {aud} outside [0, "
                   f"{task.num_classes})")
      k = int(aud)
    else:
      k = dmap.get(int(det), task.default_class)
    if task.allowed is None or k in task.allowed:
      out.setdefault(int(det), k)
  return out


def _preprocess_config(s: Settings) -> preprocess.PreprocessConfig:
  return preprocess.PreprocessConfig(
      window_frames=int(FPS), num_windows=s.num_windows, feature_extractor=s.feature_extractor,
      iou_threshold=s.iou_threshold, min_context_score=s.min_context_score,
      rbf_percentile=s.rbf_percentile, no_motion_thresholds=s.no_motion_thresholds,
      background_feature=s.background_feature, crop_encoder_weights=s.crop_encoder_weights)


def _own_example(frames, audio, dets, depth_path, flow_path, task: VideoTask):
  """Our own preprocessing (providers + asmp_jax.graph) of one video."""
  s = task.settings
  if s.feature_extractor == graph_features.PRECOMPUTED:
    if dets.feature is None:
      raise Skip(MALFORMED_FILE, f"{task.clip_id}: detections without region features "
                 "(feature_extractor 'precomputed')")
    if dets.feature.shape[1] != s.feature_dim:
      raise Skip(MALFORMED_FILE, f"{task.clip_id}: region features of size "
                 f"{dets.feature.shape[1]}, the data set expects {s.feature_dim}")
  prov = providers.PrecomputedFiles("", depth_path, flow_path)
  try:
    depth, flow = prov.depth(frames), prov.flow(frames)
  except providers.ProviderError as e:
    raise Skip(MALFORMED_FILE, str(e)) from e
  ex = preprocess.preprocess_clip(frames, audio, dets, depth, flow,
                                  np.arange(task.num_classes), _preprocess_config(s),
                                  clip_id=task.clip_id, num_samples=s.num_samples)
  if (ex["source_class"] < 0).all():
    raise Skip(NO_AUDITORY_OBJECT, f"{task.clip_id}: no auditory object detected")
  return ex


def _released_example(task: VideoTask, files: dict[str, str]) -> dict[str, np.ndarray]:
  s = task.settings
  audio = _load_audio(files.get("audio"), task.clip_id)
  rows = fmt.read_labels_csv(files.get("labels_csv", f"{task.clip_id}/{fmt.LABELS_CSV}"))
  det_class = _csv_classes(rows, task, files["labels_csv"])
  if not det_class:
    raise Skip(NO_AUDITORY_OBJECT, f"{files['labels_csv']}: no auditory object of the used "
               "classes")
  chamfer = files.get("chamfer")
  if s.graph == "released" and chamfer and os.path.exists(chamfer):
    info = fmt.read_chamfer_info(chamfer)
    _, feats = fmt.read_region_features(files["features_h5"])
    _check_feature_dim(feats.shape[-1], files["features_h5"], s)
    disp_path = files.get("displacement")
    disp = (fmt.read_displacements(disp_path, s.num_windows)
            if disp_path and os.path.exists(disp_path) else None)
    n_valid = int(np.ceil(audio.size / SAMPLE_RATE - 1e-3))
    try:
      ex = fmt.released_graph_example(
          info, feats, det_class, disp, n_valid,
          fmt.ReleasedGraphConfig(s.num_windows, tuple(s.released_thresholds), s.rbf_percentile,
                                  s.released_rbf_mode, s.background_feature), chamfer)
    except ValueError as e:
      if isinstance(e, fmt.FormatError):
        raise
      raise Skip(NO_AUDITORY_OBJECT, f"{chamfer}: {e}") from e
    ex["audio"] = _int16_audio(audio, s.num_samples)
    return ex
  # Own preprocessing from the released detections and frames.
  frames_dir = files.get("frames_dir")
  frames = read_frame_images(frames_dir, int(s.num_windows * FPS)) if frames_dir else None
  if frames is None:
    raise Skip(MISSING_FILE, f"{chamfer or task.clip_id}: no {fmt.CHAMFER_PICKLE} and no "
               f"%04d.png frames in {frames_dir} to rebuild the graph from")
  info = fmt.read_image_info(files["image_info"])
  boxes, feats = fmt.read_region_features(files["features_h5"])
  rel = fmt.released_detections(info, boxes, feats, files["image_info"])
  dets = rel.dets
  dets.label = remap_labels(dets.label, det_class, None)
  return _own_example(frames, audio, dets, None, None, task)


def _check_feature_dim(dim: int, path: str, s: Settings) -> None:
  if s.feature_extractor == graph_features.PRECOMPUTED and dim != s.feature_dim:
    raise Skip(MALFORMED_FILE, f"{path}: region features of size {dim}, the data set expects "
               f"{s.feature_dim}")


def _raw_example(task: VideoTask, files: dict[str, str]) -> dict[str, np.ndarray]:
  s = task.settings
  video = files.get("video")
  if not video:
    raise Skip(MISSING_FILE, f"{task.clip_id}: no video file ({'/'.join(VIDEO_EXTENSIONS)})")
  audio = _load_audio(files.get("audio", video), task.clip_id)
  try:
    frames, fps = media.read_video(video)
  except media.MediaError as e:
    raise Skip(UNREADABLE_FILE, str(e)) from e
  frames = resample_frames(frames, fps, FPS, int(s.num_windows * FPS))
  det_path = files.get("detections")
  if not det_path:
    raise Skip(MISSING_FILE, f"{task.clip_id}: no detection file (detections/<id>.h5|.npz or "
               f"detections/<id>/{fmt.IMAGE_INFO_JSON} + {fmt.REGION_FEATURES_H5})")
  if os.path.isdir(det_path):
    info = fmt.read_image_info(os.path.join(det_path, fmt.IMAGE_INFO_JSON))
    boxes, feats = fmt.read_region_features(os.path.join(det_path, fmt.REGION_FEATURES_H5))
    dets = fmt.released_detections(info, boxes, feats, det_path).dets
  else:
    dets = providers.load_detections(det_path)
  dets.label = remap_labels(dets.label, dict(task.det_to_class), task.allowed)
  return _own_example(frames, audio, dets, files.get("depth"), files.get("flow"), task)


def _int16_audio(audio: np.ndarray, num_samples: int) -> np.ndarray:
  a = np.pad(audio[:num_samples], (0, max(0, num_samples - audio.size)))
  return np.round(np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)


def process_video(task: VideoTask) -> tuple[str, dict | None, dict | None]:
  """Worker: one video -> (clip_id, example or None, skip record or None)."""
  files = dict(task.files)
  try:
    if task.source == "released":
      ex = _released_example(task, files)
    else:
      ex = _raw_example(task, files)
  except Skip as e:
    return task.clip_id, None, {"clip_id": task.clip_id, "kind": e.kind, "reason": str(e)}
  except fmt.FormatError as e:
    kind = MISSING_FILE if "file not found" in str(e) else MALFORMED_FILE
    return task.clip_id, None, {"clip_id": task.clip_id, "kind": kind, "reason": str(e)}
  except providers.ProviderError as e:
    kind = MISSING_FILE if "not found" in str(e) else MALFORMED_FILE
    return task.clip_id, None, {"clip_id": task.clip_id, "kind": kind, "reason": str(e)}
  except (preprocess.PreprocessError, media.MediaError, OSError) as e:
    return task.clip_id, None, {"clip_id": task.clip_id, "kind": UNREADABLE_FILE,
                                "reason": f"{type(e).__name__}: {e}"}
  ex["gt_window_displacement"] = np.full(ex["displacement"].shape, np.nan, np.float32)
  ex["clip_id"] = task.clip_id
  return task.clip_id, ex, None
