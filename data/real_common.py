"""What the ASIW and AVE builders share: class maps, video lookup, per-video conversion (released
files or raw videos -> one example), skip reports, shard checksums and the TFDS builder base.

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

import abc
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from asmp_data import avsgs_format as fmt
from asmp_jax import media
from asmp_jax import preprocess
from asmp_jax.graph import features as graph_features
from asmp_jax.graph import providers

SAMPLE_RATE = 11025
WORKERS_ENV = "ASMP_DATA_WORKERS"
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


# ----------------------------------------------------------------------------- small helpers


def first_existing(paths: Iterable[str]) -> str | None:
  for p in paths:
    if os.path.exists(p):
      return p
  return None


def find_with_extension(directory: str, stem: str, extensions: Sequence[str]) -> str | None:
  return first_existing(os.path.join(directory, stem + e) for e in extensions)


def resample_frames(frames: np.ndarray, fps: float, target_fps: float = FPS,
                    max_frames: int | None = None) -> np.ndarray:
  """Nearest-earlier frames at ``target_fps``: frame k of the output is the input frame shown at
  time ``k / target_fps``. uint8 [T, H, W, 3] -> [T', H, W, 3]."""
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  t = len(frames)
  n = int(np.floor(t * target_fps / fps + 1e-6))
  if max_frames is not None:
    n = min(n, max_frames)
  idx = np.minimum(np.floor(np.arange(max(n, 1)) * fps / target_fps + 1e-6).astype(np.int64),
                   t - 1)
  return np.asarray(frames)[idx]


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
      background_feature=s.background_feature)


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


def _map(fn, items: Sequence[Any], workers: int):
  """``map`` over spawned worker processes (safe with JAX imported), streamed in order."""
  if workers <= 1 or len(items) <= 1:
    yield from map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield from pool.imap(fn, items, chunksize=4)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()


def example_digest(ex: Mapping[str, Any], features: tfds.features.FeaturesDict) -> str:
  """sha256 of an example's contents as stored (arrays cast to the feature dtypes, keys sorted).

  TFDS serialises an example as a protobuf map whose entry order varies from run to run, so the
  shard files' own sha256 differ between identical builds; this digest does not.
  """
  h = hashlib.sha256()
  for key in sorted(ex):
    value = ex[key]
    h.update(key.encode())
    if isinstance(value, str):
      h.update(value.encode())
    else:
      arr = np.ascontiguousarray(value, dtype=features[key].np_dtype)
      h.update(str(arr.shape).encode())
      h.update(arr.tobytes())
  return h.hexdigest()


def split_digest(digests: Mapping[str, str]) -> str:
  """Order-independent digest of a split: sha256 of the sorted ``clip_id digest`` lines."""
  lines = "".join(f"{k} {digests[k]}\n" for k in sorted(digests))
  return hashlib.sha256(lines.encode()).hexdigest()


def format_report(meta: Mapping[str, Any]) -> str:
  """Human-readable build report from a built data set's metadata."""
  meta = dict(meta)  # TFDS's lazy metadata dict only loads through keys()/[]
  lines = []
  counts, skips = meta.get("num_examples", {}), meta.get("skip_counts", {})
  listed, paper = meta.get("num_listed", {}), meta.get("paper_split_sizes", {})
  for split in SPLITS:
    if split not in counts:
      continue
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(skips.get(split, {}).items())) or "none"
    lines.append(f"{split}: {counts[split]} examples from {listed.get(split, '?')} listed videos "
                 f"(paper: {paper.get(split, '?')}); skipped: {kinds}")
  for split, digest in sorted(meta.get("content_sha256", {}).items()):
    lines.append(f"content sha256 {digest}  {split}")
  for name, digest in sorted(meta.get("checksums", {}).items()):
    lines.append(f"file sha256 {digest}  {name}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- the builder base


@dataclasses.dataclass
class RealConfig(tfds.core.BuilderConfig):
  """Which files to read and how to preprocess them (see the module docstring).

  Attributes:
    source: "released" (the authors' preprocessed files) or "raw" (downloaded videos + detection
      files).
    graph: "released" (the released Chamfer graph and displacements where present, our own
      preprocessing elsewhere) or "own" (always our own preprocessing; needs frames).
    feature_extractor / feature_dim: node features ("precomputed" region features of this size,
      or "hog_color" computed from the pixels; raw source only).
    background_feature: background-node feature ("zeros" or "mean"; see preprocess).
    released_thresholds: no-motion thresholds for the released displacements.
    released_rbf_mode: edge weights from the released distances ("paper", "public",
      "public_code"; see avsgs_format.released_edge_weights).
    max_videos: use at most this many listed videos per split (0 = all).
    workers: worker processes (0 = $ASMP_DATA_WORKERS if set, else 1 for released files and all
      CPUs for raw videos).
  """
  source: str = "released"
  graph: str = "released"
  feature_extractor: str = graph_features.PRECOMPUTED
  feature_dim: int = 2048
  background_feature: str = "zeros"
  released_thresholds: tuple[float, float, float] = fmt.PUBLIC_CODE_THRESHOLDS
  released_rbf_mode: str = "paper"
  max_videos: int = 0
  workers: int = 0

  def settings(self) -> Settings:
    return Settings(feature_extractor=self.feature_extractor, feature_dim=self.feature_dim,
                    graph=self.graph, background_feature=self.background_feature,
                    released_thresholds=tuple(self.released_thresholds),
                    released_rbf_mode=self.released_rbf_mode)


DEFAULT_CONFIGS = (
    RealConfig(name="released", description="The authors' preprocessed files (region features, "
               "Chamfer distances, displacements)."),
    RealConfig(name="raw", source="raw", description="Downloaded videos + per-video detection "
               "files, through our own preprocessing."),
)


class RealBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the ASIW and AVE builders; subclasses give the class map and the video lists."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = list(DEFAULT_CONFIGS)
  DEFAULT_CONFIG_NAME = "released"
  CLASS_MAP: str = ""  # path of the class-map TSV
  PAPER_SPLIT_SIZES: dict[str, int] = {}
  DATA_ROOT_NAMES: tuple[str, ...] = ()  # sub-folders of the manual dir that may hold the data

  @abc.abstractmethod
  def list_videos(self, manual_dir: str) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """``{split: [(video id, annotated class names), ...]}`` (names empty when unknown)."""

  def class_map(self) -> ClassMap:
    return load_class_map(self.CLASS_MAP)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    nw, ns = NUM_WINDOWS, NUM_WINDOWS * SAMPLE_RATE
    n, a = preprocess.MAX_NODES, preprocess.MAX_AUDITORY
    fdim = graph_features.feature_dim(cfg.feature_extractor, cfg.feature_dim)
    t = tfds.features.Tensor
    features = tfds.features.FeaturesDict({
        "clip_id": tfds.features.Text(),
        "audio": t(shape=(ns,), dtype=np.int16),
        "node_features": t(shape=(nw, n, fdim), dtype=np.float16),
        "node_mask": t(shape=(nw, n), dtype=np.bool_),
        "node_type": t(shape=(nw, n), dtype=np.int8),
        "adjacency": t(shape=(nw, n, n), dtype=np.float16),
        "window_valid": t(shape=(nw,), dtype=np.bool_),
        "source_class": t(shape=(a,), dtype=np.int32),
        "source_present": t(shape=(nw, a), dtype=np.bool_),
        "displacement": t(shape=(nw, a, 3), dtype=np.float32),
        "dir10": t(shape=(nw, a), dtype=np.int32),
        "dir28": t(shape=(nw, a), dtype=np.int32),
        "gt_window_displacement": t(shape=(nw, a, 3), dtype=np.float32),
    })
    meta = tfds.core.MetadataDict(
        auditory_classes=self.class_map().names, feature_extractor=cfg.feature_extractor,
        feature_dim=fdim, sample_rate=SAMPLE_RATE, window_samples=SAMPLE_RATE, num_windows=nw,
        source=cfg.source, graph=cfg.graph, background_feature=cfg.background_feature,
        released_thresholds=list(cfg.released_thresholds),
        paper_split_sizes=dict(self.PAPER_SPLIT_SIZES),
        class_map=os.path.basename(self.CLASS_MAP))
    return tfds.core.DatasetInfo(builder=self, features=features, metadata=meta,
                                 description=(self.__doc__ or "").split("\n\n")[0])

  # -- locating files

  def manual_dir_of(self, dl_manager) -> str:
    manual = getattr(dl_manager, "_manual_dir", None)
    manual = os.fspath(manual) if manual else ""
    if not manual or not os.path.isdir(manual):
      raise ManualDirError(
          f"{self.name}: manual directory {manual or '(none given)'!r} does not exist; pass "
          f"--manual_dir / config.data.manual_dir.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return manual

  def data_root(self, manual_dir: str) -> str:
    """Folder holding Extracted_Frames/ (released source) or the video folder (raw source)."""
    if self.builder_config.source == "released":
      for root in [manual_dir] + [os.path.join(manual_dir, n) for n in self.DATA_ROOT_NAMES]:
        if os.path.isdir(os.path.join(root, "Extracted_Frames")):
          return root
      missing = "an Extracted_Frames/ folder here or in " + (", ".join(self.DATA_ROOT_NAMES))
    else:
      if any(os.path.isdir(os.path.join(manual_dir, d)) for d in self.raw_video_dirs()):
        return manual_dir
      missing = "a video folder (" + ", ".join(d + "/" for d in self.raw_video_dirs()) + ")"
    raise ManualDirError(
        f"{manual_dir}: no {missing}; expected the {self.builder_config.source!r} layout.\n"
        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

  def raw_video_dirs(self) -> tuple[str, ...]:
    return ("videos",) + self.DATA_ROOT_NAMES

  def video_files(self, root: str, manual_dir: str, vid: str, split: str) -> dict[str, str]:
    """Resolved per-video paths (missing ones left out)."""
    if self.builder_config.source == "released":
      subs = {"train": ["train", "val", "test"], "validation": ["val", "test", "train"],
              "test": ["test", "val", "train"]}[split]
      frames_dir = first_existing(os.path.join(root, "Extracted_Frames", s, vid) for s in subs)
      sub = os.path.basename(os.path.dirname(frames_dir)) if frames_dir else subs[0]
      files = {
          "audio": find_with_extension(os.path.join(root, "Extracted_Audio", sub), vid,
                                       AUDIO_EXTENSIONS)
                   or os.path.join(root, "Extracted_Audio", sub, vid + ".aac"),
          "labels_csv": os.path.join(root, "Extracted_Frames", sub, vid, fmt.LABELS_CSV),
          "image_info": os.path.join(root, "Extracted_Frames", sub, vid, fmt.IMAGE_INFO_JSON),
          "features_h5": os.path.join(root, "Extracted_Frames", sub, vid, fmt.REGION_FEATURES_H5),
          "chamfer": os.path.join(root, "Rectified_Frames", sub, vid, fmt.CHAMFER_PICKLE),
          "displacement": os.path.join(root, "Rectified_Frames", sub, vid,
                                       fmt.DISPLACEMENT_PICKLE),
      }
      if frames_dir:
        files["frames_dir"] = frames_dir
      return files
    files = {}
    video = first_existing(
        os.path.join(root, d, vid + e) for d in self.raw_video_dirs() for e in VIDEO_EXTENSIONS)
    if video:
      files["video"] = video
    audio = find_with_extension(os.path.join(root, "audio"), vid, AUDIO_EXTENSIONS)
    if audio:
      files["audio"] = audio
    det = first_existing([os.path.join(root, "detections", vid + ".h5"),
                          os.path.join(root, "detections", vid + ".hdf5"),
                          os.path.join(root, "detections", vid + ".npz"),
                          os.path.join(root, "detections", vid)])
    if det:
      files["detections"] = det
    for key in ("depth", "flow"):
      p = find_with_extension(os.path.join(root, key), vid, (".npy", ".npz"))
      if p:
        files[key] = p
    return files

  def detector_classes(self, root: str, manual_dir: str) -> dict[int, int]:
    cmap = self.class_map()
    vocab = first_existing([os.path.join(root, "detector_classes.txt"),
                            os.path.join(manual_dir, "detector_classes.txt")])
    if vocab:
      return cmap.by_vocabulary(read_vocabulary(vocab))
    return cmap.by_detector_id()

  # -- TFDS hooks

  def _split_generators(self, dl_manager):
    manual = self.manual_dir_of(dl_manager)
    root = self.data_root(manual)
    videos = self.list_videos(manual)
    return {split: self._generate_examples(root, manual, split, videos[split])
            for split in SPLITS}

  def tasks(self, root: str, manual: str, split: str,
            videos: Sequence[tuple[str, tuple[str, ...]]]) -> list[VideoTask]:
    cfg, cmap = self.builder_config, self.class_map()
    det_to_class = self.detector_classes(root, manual)
    if cfg.source == "raw" and not det_to_class:
      raise ManualDirError(
          f"{manual}: cannot map detector classes to {self.name} classes; put the detector's "
          "vocabulary (one class name per line, line i = class id i) in detector_classes.txt")
    settings = cfg.settings()
    out, seen = [], set()
    for vid, names in videos[:cfg.max_videos or None]:
      if vid in seen:
        continue
      seen.add(vid)
      allowed = None
      default = None
      if names:
        allowed = tuple(sorted({cmap.index(n) for n in names if cmap.index(n) is not None}))
        default = allowed[0] if allowed else None
      out.append(VideoTask(vid, cfg.source,
                           tuple(sorted(self.video_files(root, manual, vid, split).items())),
                           tuple(sorted(det_to_class.items())), allowed, default,
                           len(cmap.names), settings))
    return out

  def _generate_examples(self, root: str, manual: str, split: str,
                         videos: Sequence[tuple[str, tuple[str, ...]]]):
    cfg = self.builder_config
    tasks = self.tasks(root, manual, split, videos)
    if not tasks:
      raise ManualDirError(f"{manual}: the split list of {split!r} names no video")
    workers = (cfg.workers or int(os.environ.get(WORKERS_ENV, "0") or 0)
               or (1 if cfg.source == "released" else os.cpu_count() or 1))
    skipped, digests = [], {}
    for clip_id, ex, skip in _map(process_video, tasks, workers):
      if skip is not None:
        logging.warning("Skipping %s video %s (%s): %s", split, clip_id, skip["kind"],
                        skip["reason"])
        skipped.append(skip)
        continue
      digests[clip_id] = example_digest(ex, self.info.features)
      yield clip_id, ex
    meta = self.info.metadata
    meta["skipped"] = {**meta.get("skipped", {}), split: skipped}
    counts: dict[str, int] = {}
    for s in skipped:
      counts[s["kind"]] = counts.get(s["kind"], 0) + 1
    meta["skip_counts"] = {**meta.get("skip_counts", {}), split: counts}
    kept = len(digests)
    meta["num_examples"] = {**meta.get("num_examples", {}), split: kept}
    meta["content_sha256"] = {**meta.get("content_sha256", {}), split: split_digest(digests)}
    meta["example_sha256"] = {**meta.get("example_sha256", {}), split: digests}
    meta["num_listed"] = {**meta.get("num_listed", {}), split: len(tasks)}
    if kept == 0:
      raise ValueError(f"{self.name}: no usable video in split {split!r} ({len(tasks)} listed; "
                       f"skipped by kind: {counts}); first reasons: "
                       f"{[s['reason'] for s in skipped[:3]]}")
    logging.info("%s %s: %d examples, %d skipped %s", self.name, split, kept, len(skipped), counts)

  def _download_and_prepare(self, dl_manager, download_config=None):
    super()._download_and_prepare(dl_manager, download_config)
    # The shards are written: record their checksums with the rest of the metadata (file digests
    # check the shards' integrity; content_sha256 compares builds, see example_digest).
    shards = sorted(p for p in os.listdir(self.data_dir) if ".array_record-" in p
                    or ".tfrecord-" in p)
    self.info.metadata["checksums"] = {
        p: sha256_file(os.path.join(self.data_dir, p)) for p in shards}
    logging.info("%s build report:\n%s", self.name, format_report(self.info.metadata))
