"""The TFDS builder base of the ASIW and AVE data sets: configs, splits, worker pool, skip report
and checksums. The per-video conversion lives in :mod:`asmp_data.real_common`.

Checksums: the build records, per split, the sha256 of every example's contents
(:func:`example_digest`) and of the sorted list of those (``content_sha256``), plus the sha256 of
each ArrayRecord shard file (``checksums``). Two identical builds give the same content digests but
not the same file digests: TFDS serialises an example as a protobuf map whose entry order varies
between runs (observed here: same bytes, different order), so compare builds by content digest
and use the file digests to check that a copy of the shards is intact.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import logging
import multiprocessing
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from asmp_data import avsgs_format as fmt
from asmp_data.real_common import (  # pylint: disable=g-importing-member
    ClassMap, ManualDirError, NUM_WINDOWS, SAMPLE_RATE, SPLITS, Settings, VideoTask,
    first_existing, find_with_extension, load_class_map, process_video, read_vocabulary,
    AUDIO_EXTENSIONS, VIDEO_EXTENSIONS)
from asmp_jax import files as file_records
from asmp_jax import schema
from asmp_jax.graph import features as graph_features

WORKERS_ENV = "ASMP_DATA_WORKERS"
CROP_WEIGHTS_ENV = "ASMP_CROP_ENCODER_WEIGHTS"
# raw_learned: the learned providers' weights (asmp_jax.preprocess_videos' --*_weights).
VISION_WEIGHTS_ENV = {"detector": "ASMP_DETECTOR_WEIGHTS", "depth": "ASMP_DEPTH_WEIGHTS",
                      "flow": "ASMP_FLOW_WEIGHTS"}


def _map(fn, items: Sequence[Any], workers: int):
  """``map`` over spawned worker processes (safe with JAX imported), streamed in order."""
  if workers <= 1 or len(items) <= 1:
    yield from map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield from pool.imap(fn, items, chunksize=4)


sha256_file = file_records.sha256_file


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


@dataclasses.dataclass
class RealConfig(tfds.core.BuilderConfig):
  """Which files to read and how to preprocess them (see the module docstring).

  Attributes:
    source: "released" (the authors' preprocessed files) or "raw" (downloaded videos + detection
      files).
    graph: "released" (the released Chamfer graph and displacements where present, our own
      preprocessing elsewhere) or "own" (always our own preprocessing; needs frames).
    feature_extractor / feature_dim: node features ("precomputed" region features of this size,
      or "hog_color" / "resnet18_crops" computed from the pixels; raw source only).
    crop_encoder_weights: "resnet18_crops" only: the torchvision resnet18 state_dict file
      ("" = $ASMP_CROP_ENCODER_WEIGHTS).
    background_feature: background-node feature ("zeros" or "mean"; see preprocess).
    released_thresholds: no-motion thresholds for the released displacements.
    released_rbf_mode: edge weights from the released distances ("paper", "public",
      "public_code"; see avsgs_format.released_edge_weights).
    learned_vision: raw source only: before the build, run the learned providers over the listed
      videos (python -m asmp_jax.preprocess_videos, resumable) and write their detections/,
      depth/, flow/ files and detector_classes.txt into the manual directory, where the build
      reads them.
    detector_weights / depth_weights / flow_weights: learned_vision's weight files ("" =
      $ASMP_DETECTOR_WEIGHTS / $ASMP_DEPTH_WEIGHTS / $ASMP_FLOW_WEIGHTS; at least one needed).
    detector_score_threshold: learned_vision's detector score threshold.
    max_videos: use at most this many listed videos per split (0 = all).
    workers: worker processes (0 = $ASMP_DATA_WORKERS if set, else 1 for released files and all
      CPUs for raw videos).
  """
  source: str = "released"
  graph: str = "released"
  feature_extractor: str = graph_features.PRECOMPUTED
  feature_dim: int = 2048
  crop_encoder_weights: str = ""
  background_feature: str = "zeros"
  released_thresholds: tuple[float, float, float] = fmt.PUBLIC_CODE_THRESHOLDS
  released_rbf_mode: str = "paper"
  learned_vision: bool = False
  detector_weights: str = ""
  depth_weights: str = ""
  flow_weights: str = ""
  detector_score_threshold: float = 0.5
  max_videos: int = 0
  workers: int = 0

  def settings(self) -> Settings:
    return Settings(feature_extractor=self.feature_extractor, feature_dim=self.feature_dim,
                    crop_encoder_weights=(self.crop_encoder_weights
                                          or os.environ.get(CROP_WEIGHTS_ENV, "")),
                    graph=self.graph, background_feature=self.background_feature,
                    released_thresholds=tuple(self.released_thresholds),
                    released_rbf_mode=self.released_rbf_mode)

  def vision_weights(self) -> dict[str, str | None]:
    """learned_vision's weight paths by provider (None where neither config nor env gives one)."""
    given = {"detector": self.detector_weights, "depth": self.depth_weights,
             "flow": self.flow_weights}
    return {k: (v or os.environ.get(VISION_WEIGHTS_ENV[k], "")) or None for k, v in given.items()}


DEFAULT_CONFIGS = (
    RealConfig(name="released", description="The authors' preprocessed files (region features, "
               "Chamfer distances, displacements)."),
    RealConfig(name="raw", source="raw", description="Downloaded videos + per-video detection "
               "files, through our own preprocessing."),
    RealConfig(name="raw_resnet18_crops", source="raw", graph="own",
               feature_extractor=graph_features.RESNET18_CROPS,
               feature_dim=graph_features.RESNET18_CROPS_DIM,
               description="As 'raw', node features from a ResNet-18 on each object's crop "
               "(Co-Separation's; weights: $ASMP_CROP_ENCODER_WEIGHTS)."),
    RealConfig(name="raw_learned", source="raw", graph="own", learned_vision=True,
               description="As 'raw', with the detection, depth and flow files written first by "
               "the learned providers (python -m asmp_jax.preprocess_videos; weights: "
               "$ASMP_DETECTOR_WEIGHTS, $ASMP_DEPTH_WEIGHTS, $ASMP_FLOW_WEIGHTS)."),
)


class RealBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the ASIW and AVE builders; subclasses give the class map and the video lists."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = list(DEFAULT_CONFIGS)
  DEFAULT_CONFIG_NAME = "released"
  CLASS_MAP: str = ""  # path of the class-map TSV
  LABEL_MAP: str = "none"  # COCO -> class names map of asmp_jax.vision.labels (raw_learned)
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
    fdim = graph_features.feature_dim(cfg.feature_extractor, cfg.feature_dim)
    features = schema.features(nw, ns, fdim)
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
    if self.builder_config.feature_extractor == graph_features.RESNET18_CROPS:
      from asmp_jax.vision import crops  # pylint: disable=g-import-not-at-top  (torch: optional)
      crops.encoder(self.builder_config.settings().crop_encoder_weights)  # refuses a bad file now
    videos = self.list_videos(manual)
    if self.builder_config.learned_vision:
      self.run_learned_vision(root, manual, videos)
    return {split: self._generate_examples(root, manual, split, videos[split])
            for split in SPLITS}

  def run_learned_vision(self, root: str, manual: str,
                         videos: Mapping[str, Sequence[tuple[str, tuple[str, ...]]]]) -> None:
    """learned_vision: the providers' files of every listed video, written into ``root``
    (resumable: videos already done are skipped)."""
    cfg = self.builder_config
    weights = cfg.vision_weights()
    if not any(weights.values()):
      raise ManualDirError(
          f"{self.name}/{cfg.name}: no weights for the learned providers; set "
          f"{', '.join(VISION_WEIGHTS_ENV.values())} (docs/inference.md, 'Your own video with "
          "learned vision')")
    paths = []
    for split in SPLITS:
      for vid, _ in videos[split][:cfg.max_videos or None]:
        video = self.video_files(root, manual, vid, split).get("video")
        if video and video not in paths:
          paths.append(video)
    if not paths:
      raise ManualDirError(f"{manual}: no listed video found under "
                           f"{', '.join(d + '/' for d in self.raw_video_dirs())}")
    from asmp_jax import preprocess_videos  # pylint: disable=g-import-not-at-top  (torch)
    preprocess_videos.run(paths, root, detector_weights=weights["detector"],
                          depth_weights=weights["depth"], flow_weights=weights["flow"],
                          detector_score_threshold=cfg.detector_score_threshold,
                          label_map=self.LABEL_MAP, num_windows=NUM_WINDOWS)

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
