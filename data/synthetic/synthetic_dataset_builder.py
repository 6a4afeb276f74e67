"""TFDS builder of the synthetic audio-visual set: generated clips -> preprocessed ArrayRecord.

  tfds build data/synthetic --config=tiny --file_format=array_record   # or let launch.py do it

``_split_generators`` generates the clips (mp4 + wav + ground-truth sidecar, see docs/synthetic.md)
unless a directory of clips made by ``python -m asmp_data.synthetic.generate`` is given as the
manual dir. ``_generate_examples`` then runs the full preprocessing of asmp_jax.preprocess on each
clip as a user's video would go through it: the mp4 is decoded, node features are computed from the
decoded pixels, and only boxes, depth and flow come from the sidecar (the "synthetic oracle"
provider, detections noisy by default). A clip that fails (unreadable video, no audio...) is
skipped and listed in the data set's metadata (``skipped``) instead of stopping the build; a split
that ends up empty is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from asmp_data.synthetic import workers
from asmp_jax import media
from asmp_jax import preprocess
from asmp_jax import safe_io
from asmp_jax import schema
from asmp_jax import scene_pipeline
from asmp_jax.graph import features as graph_features
from asmp_jax.graph import providers

SPLITS = {"train": "train", "validation": "val", "test": "test"}


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Sizes of the splits, generator overrides and preprocessing settings."""
  num_train: int = 400
  num_val: int = 40
  num_test: int = 80
  seed: int = 0
  generator_overrides: tuple[tuple[str, Any], ...] = ()
  detections: str = "noisy"  # noisy | exact
  flow: str = "sidecar"  # sidecar | opencv
  feature_extractor: str = graph_features.HOG_COLOR
  workers: int = 2
  keep_clips: str = "test"  # which generated clips stay once the records are written: KEEP_CLIPS


BUILDER_CONFIGS = [
    SyntheticConfig(name="default", description="The embedded default: 400/40/80 clips."),
    # Same seed as the default, so its validation and test clips (and its first 400 training
    # clips) are the default's: results on the test split compare pair by pair.
    SyntheticConfig(name="large", description="4x the default's training clips: 1600/40/80.",
                    num_train=1600),
    # Its first 1600 training clips are "large"'s: linking large's clip directory in first
    # (docs/synthetic.md) leaves only the other 1600 to generate.
    SyntheticConfig(name="xlarge", description="8x the default's training clips: 3200/40/80.",
                    num_train=3200),
    # Objects keep their motion from one window to the next with probability 0.8 (bouncing off
    # the scene's bounds), so the heading marker of the crop's first frame, which the direction
    # head sees through the slot embedding, foretells the sideways motion of later windows as
    # well; in "default" every window's motion is drawn afresh (docs/RESULTS.md, "Direction
    # accuracy: what a mono microphone can know").
    SyntheticConfig(name="persistent",
                    description="The default's sizes, motion kept between windows (p = 0.8).",
                    generator_overrides=(("motion_persistence", 0.8),)),
    # Every moving window of a sounding object moves along all three axes at once. In "default"
    # a window moves along one or two, so its 10-class label (the octant: the signs of all three
    # components) takes the sign of the estimation noise on the others and no predictor can know
    # it (docs/RESULTS.md, "Direction labels set by the motion"); here every moving window's
    # octant is its motion's.
    SyntheticConfig(name="octant",
                    description="The default's sizes, every moving window along all three axes.",
                    generator_overrides=(("motion_kind_weights", (0, 0, 0, 0, 0, 0, 1)),)),
    # 4x octant's training clips; same seed, so its validation and test clips (and its first 400
    # training clips) are octant's.
    SyntheticConfig(name="octant_large",
                    description="octant's motion, 4x its training clips: 1600/40/80.",
                    num_train=1600,
                    generator_overrides=(("motion_kind_weights", (0, 0, 0, 0, 0, 0, 1)),)),
    # 8x octant's training clips, for configs/synthetic_benchmark.py; its first 1600 training
    # clips are octant_large's (link that build's clip directory in first: docs/synthetic.md).
    SyntheticConfig(name="octant_xlarge",
                    description="octant's motion, 8x its training clips: 3200/40/80.",
                    num_train=3200,
                    generator_overrides=(("motion_kind_weights", (0, 0, 0, 0, 0, 0, 1)),)),
    # Keeps all its 16 clips (53 MB): the tests separate them and build from them again.
    SyntheticConfig(name="tiny", description="8/4/4 clips, for tests and CI.", num_train=8,
                    num_val=4, num_test=4, keep_clips="all"),
]

# keep_clips (or $ASMP_KEEP_CLIPS, which overrides it) -> the clip folders removed once the
# records are written. The test clips (mp4 with sound, wav, sidecar) are what one separates to
# try a trained model; the training ones are only needed to link into a larger config's build.
KEEP_CLIPS = {"all": (), "test": ("train", "val"), "none": ("train", "val", "test")}
KEEP_CLIPS_ENV = "ASMP_KEEP_CLIPS"


def keep_clips(cfg: SyntheticConfig) -> str:
  """The clips to keep after a build: $ASMP_KEEP_CLIPS if set, else ``cfg.keep_clips``."""
  value = os.environ.get(KEEP_CLIPS_ENV) or cfg.keep_clips
  if value not in KEEP_CLIPS:
    source = f"${KEEP_CLIPS_ENV}" if os.environ.get(KEEP_CLIPS_ENV) else "keep_clips"
    raise ValueError(f"{source}={value!r}: expected one of {', '.join(KEEP_CLIPS)} (which "
                     "generated clips stay once the records are written)")
  return value


def remove_clips(clips_dir: str, keep: str) -> str | None:
  """Removes the clip folders that ``keep`` does not keep; returns a line saying what went (None
  when nothing did)."""
  gone = [os.path.join(clips_dir, sub) for sub in KEEP_CLIPS[keep]
          if os.path.isdir(os.path.join(clips_dir, sub))]
  if not gone:
    return None
  count = size = 0
  for folder in gone:
    for entry in os.scandir(folder):
      count += entry.name.endswith(".json")
      size += entry.stat().st_size if entry.is_file(follow_symlinks=False) else 0
    shutil.rmtree(folder)
  if keep == "none" and not os.listdir(clips_dir):
    os.rmdir(clips_dir)
  subs = "/".join(os.path.basename(f) for f in gone)
  return (f"Removed {count} generated clips ({size / 1e9:.2f} GB, {subs}) from {clips_dir} now "
          f"that the records are written (keep_clips={keep!r}; {KEEP_CLIPS_ENV}=all keeps them).")


def _generator_config(cfg: SyntheticConfig):
  from asmp_data.synthetic import config as gen_config  # pylint: disable=g-import-not-at-top
  return gen_config.GeneratorConfig(**dict(cfg.generator_overrides))


def _preprocess_one(json_path: str, detections: str, flow: str, extractor: str,
                    num_windows: int, window_frames: int, num_samples: int,
                    auditory_ids: tuple[int, ...]) -> tuple[str, dict | None, str | None]:
  """Worker: one clip -> (clip_id, example or None, error message or None)."""
  clip_id = os.path.splitext(os.path.basename(json_path))[0]
  base = os.path.splitext(json_path)[0]
  try:
    frames, _ = media.read_video(base + ".mp4")
    wav, _ = media.load_audio(base + ".wav", target_sr=11025)
    if media.is_silent(wav):
      logging.warning("clip %s: the audio is silent; kept (its sources are silent too)", clip_id)
    prov = providers.SyntheticOracle(json_path, detections=detections, flow=flow)
    cfg = preprocess.PreprocessConfig(window_frames=window_frames, num_windows=num_windows,
                                      feature_extractor=extractor)
    ex = scene_pipeline.clip_example(frames, wav, prov, auditory_ids, cfg, clip_id=clip_id,
                                     num_samples=num_samples)
    # Ground truth of the generator, kept for measuring the preprocessing (never a model input).
    gt = safe_io.load_npz(base + ".npz", keys=("window_displacement",))
    ex["gt_window_displacement"] = _gt_source_displacement(json_path, gt, ex, auditory_ids,
                                                           num_windows)
    ex["clip_id"] = clip_id
    return clip_id, ex, None
  except (media.MediaError, providers.ProviderError, preprocess.PreprocessError, OSError,
          ValueError, KeyError) as e:
    return clip_id, None, f"{type(e).__name__}: {e}"


def _gt_source_displacement(json_path, gt, ex, auditory_ids, num_windows) -> np.ndarray:
  """[W, A, 3] ground-truth displacement of each selected source (NaN where unknown)."""
  with open(json_path) as f:
    meta = json.load(f)
  out = np.full((num_windows, preprocess.MAX_AUDITORY, 3), np.nan, np.float32)
  disp = np.asarray(gt["window_displacement"], np.float32)
  for a, k in enumerate(ex["source_class"]):
    if k < 0:
      continue
    class_id = int(auditory_ids[k])
    objs = [i for i, o in enumerate(meta["objects"]) if o["class_id"] == class_id]
    if len(objs) == 1:  # ambiguous when two objects share the class
      out[:disp.shape[0], a] = disp[:, objs[0]]
  return out


class Builder(tfds.core.GeneratorBasedBuilder):
  """Preprocessed synthetic clips: per-window scene graphs, motion labels and audio."""

  name = "asmp_synthetic"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Rectification keeps the identity when it fits the tracks as well."}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: a directory made by `python -m asmp_data.synthetic.generate --out_dir=DIR` "
      "(with train/, val/, test/). Without it the clips are generated automatically.")

  def _sizes(self):
    gcfg = _generator_config(self.builder_config)
    return gcfg, gcfg.num_windows, gcfg.num_samples

  def _info(self) -> tfds.core.DatasetInfo:
    from asmp_data.synthetic import classes  # pylint: disable=g-import-not-at-top
    _, nw, ns = self._sizes()
    fdim = graph_features.feature_dim(self.builder_config.feature_extractor)
    features = schema.features(nw, ns, fdim)
    meta = tfds.core.MetadataDict(
        auditory_classes=[c.name for c in classes.SOUNDING_CLASSES],
        context_classes=[c.name for c in classes.CONTEXT_CLASSES],
        feature_extractor=self.builder_config.feature_extractor, feature_dim=fdim,
        sample_rate=11025, window_samples=11025, num_windows=nw,
        detections=self.builder_config.detections, flow=self.builder_config.flow)
    return tfds.core.DatasetInfo(builder=self, features=features, metadata=meta,
                                 homepage="https://github.com/asmp-jax",
                                 description=__doc__.split("\n\n")[0])

  def download_and_prepare(self, *args, **kwargs):
    """TFDS's build; SIGTERM stops it in one line (clips written so far are kept, and the same
    command resumes from them); the generated clips that ``keep_clips`` does not keep are removed
    once the records are written (never a manual dir's)."""
    keep = keep_clips(self.builder_config)
    self._generated_clips_dir = None
    with workers.stop_on_sigterm(
        f"building {self.name}/{self.builder_config.name}",
        "the clips generated so far are kept and the same command resumes from them"):
      super().download_and_prepare(*args, **kwargs)
    if self._generated_clips_dir:
      line = remove_clips(self._generated_clips_dir, keep)
      if line:
        logging.info("%s", line)

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    manual = getattr(dl_manager, "_manual_dir", None)
    if manual and os.path.exists(os.path.join(manual, "train")):
      clips_dir = manual
    else:
      clips_dir = os.path.join(dl_manager.download_dir, "asmp_synthetic_clips",
                               f"{cfg.name}-{self.VERSION}")
      self._generate_clips(clips_dir)
      self._generated_clips_dir = clips_dir
    return {split: self._generate_examples(os.path.join(clips_dir, sub), split)
            for split, sub in SPLITS.items()}

  def _generate_clips(self, clips_dir: str) -> None:
    from asmp_data.synthetic import generator  # pylint: disable=g-import-not-at-top
    cfg = self.builder_config
    gcfg = _generator_config(cfg)
    report = generator.ProgressReport(logging.info)  # about every 5 % of a split
    for split, sub, n in (("train", "train", cfg.num_train), ("validation", "val", cfg.num_val),
                          ("test", "test", cfg.num_test)):
      done = os.path.join(clips_dir, sub, ".complete")
      if os.path.exists(done):
        continue
      logging.info("Generating %d synthetic %s clips in %s", n, split, clips_dir)
      generator.generate_splits(clips_dir, {sub: n}, cfg.seed, gcfg, num_workers=cfg.workers,
                                progress=report)
      with open(done, "w") as f:
        f.write("ok\n")

  def _generate_examples(self, split_dir: str, split: str):
    from asmp_data.synthetic import classes, generator  # pylint: disable=g-import-not-at-top
    cfg = self.builder_config
    gcfg, nw, ns = self._sizes()
    if not os.path.isdir(split_dir):
      raise FileNotFoundError(f"{split_dir}: no clips for split {split!r}")
    jsons = sorted(os.path.join(split_dir, f) for f in os.listdir(split_dir)
                   if f.endswith(".json"))
    if not jsons:
      raise ValueError(f"{split_dir}: no clips (*.json sidecars) for split {split!r}")
    auditory_ids = tuple(classes.class_id(c.name) for c in classes.SOUNDING_CLASSES)
    work = functools.partial(_preprocess_one, detections=cfg.detections, flow=cfg.flow,
                             extractor=cfg.feature_extractor, num_windows=nw,
                             window_frames=gcfg.window_frames, num_samples=ns,
                             auditory_ids=auditory_ids)
    skipped, kept = [], 0
    progress = generator.ProgressReport(logging.info)  # about every 5 % of the split
    for done, (clip_id, ex, err) in enumerate(workers.imap(work, jsons, cfg.workers,
                                                           chunksize=2), 1):
      progress(f"preprocessing {split}", done, len(jsons))
      if err is not None:
        logging.warning("Skipping synthetic clip %s: %s", clip_id, err)
        skipped.append({"clip_id": clip_id, "reason": err})
        continue
      kept += 1
      yield clip_id, ex
    report = dict(self.info.metadata.get("skipped", {}))
    report[split] = skipped
    self.info.metadata["skipped"] = report
    if kept == 0:
      raise ValueError(f"{split_dir}: every clip of split {split!r} failed preprocessing: "
                       f"{skipped[:3]}")
    logging.info("split %s: %d examples, %d skipped", split, kept, len(skipped))
