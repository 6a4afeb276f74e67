"""The synthetic TFDS builder: a broken clip is skipped and reported, an empty split is an error."""
import dataclasses
import glob
import importlib.util
import os

import pytest
import tensorflow_datasets as tfds

from asmp_data.synthetic import generator
from asmp_jax import config_lib, datasets
from asmp_data.synthetic import synthetic_dataset_builder as sdb


def _make_clips(root, counts):
  generator.generate_splits(root, counts, seed=5, num_workers=1)


def _build(data_dir, manual_dir):
  builder = sdb.Builder(data_dir=str(data_dir), config="tiny", file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
      file_format="array_record")
  return builder


@pytest.mark.slow
def test_broken_clips_are_skipped_and_reported(tmp_path, caplog):
  caplog.set_level("INFO")
  clips = tmp_path / "clips"
  _make_clips(clips, {"train": 4, "val": 2, "test": 2})
  train = sorted(f for f in os.listdir(clips / "train") if f.endswith(".mp4"))
  # A truncated video and a clip whose audio file is missing.
  truncated = clips / "train" / train[0]
  truncated.write_bytes(truncated.read_bytes()[:2000])
  os.remove(clips / "train" / train[1].replace(".mp4", ".wav"))
  builder = _build(tmp_path / "tfds", clips)
  assert builder.info.splits["train"].num_examples == 2
  assert builder.info.splits["validation"].num_examples == 2
  # Preprocessing reports its progress per split, skipped clips counted.
  assert "preprocessing train: 4/4 clips (" in caplog.text
  assert "preprocessing validation: 2/2 clips (" in caplog.text
  skipped = builder.info.metadata["skipped"]["train"]
  reasons = {s["clip_id"]: s["reason"] for s in skipped}
  assert set(reasons) == {train[0][:-4], train[1][:-4]}
  assert "MediaError" in reasons[train[0][:-4]] and train[0] in reasons[train[0][:-4]]
  assert "MediaError" in reasons[train[1][:-4]]
  ex = builder.as_data_source("train")[0]
  assert ex["node_features"].shape[-1] == builder.info.metadata["feature_dim"]


def test_empty_split_is_an_error(tmp_path):
  clips = tmp_path / "clips"
  _make_clips(clips, {"train": 1, "val": 1, "test": 1})
  for f in os.listdir(clips / "test"):
    if f.endswith(".mp4"):
      (clips / "test" / f).write_bytes(b"not a video")
  with pytest.raises(ValueError, match="every clip of split 'test' failed"):
    _build(tmp_path / "tfds", clips)


@pytest.mark.parametrize("name,factor", [("large", 4), ("xlarge", 8)])
def test_larger_configs_share_the_default_validation_and_test_clips(name, factor):
  # Test-split results of models trained on "large", "xlarge" and "default" compare pair by
  # pair only if the configs generate the same validation and test clips: same seed, generator
  # and preprocessing, and the same clip counts outside the training split (the training
  # clips of the smaller builds are then the first ones of the larger).
  configs = {c.name: c for c in sdb.BUILDER_CONFIGS}
  default, larger = configs["default"], configs[name]
  assert larger.num_train == factor * default.num_train
  for field in ("num_val", "num_test", "seed", "generator_overrides", "detections", "flow",
                "feature_extractor"):
    assert getattr(larger, field) == getattr(default, field), field


def test_persistent_config_changes_only_the_motion_persistence():
  configs = {c.name: c for c in sdb.BUILDER_CONFIGS}
  default, persistent = configs["default"], configs["persistent"]
  for field in ("num_train", "num_val", "num_test", "seed", "detections", "flow",
                "feature_extractor"):
    assert getattr(persistent, field) == getattr(default, field), field
  gen = sdb._generator_config(persistent)  # pylint: disable=protected-access
  base = sdb._generator_config(default)  # pylint: disable=protected-access
  assert (gen.motion_persistence, base.motion_persistence) == (0.8, 0.0)
  assert dataclasses.replace(gen, motion_persistence=0.0) == base


def test_octant_config_changes_only_the_motion_kinds():
  configs = {c.name: c for c in sdb.BUILDER_CONFIGS}
  default, octant = configs["default"], configs["octant"]
  for field in ("num_train", "num_val", "num_test", "seed", "detections", "flow",
                "feature_extractor"):
    assert getattr(octant, field) == getattr(default, field), field
  gen = sdb._generator_config(octant)  # pylint: disable=protected-access
  base = sdb._generator_config(default)  # pylint: disable=protected-access
  assert gen.motion_kind_weights == (0,) * 6 + (1,)
  assert dataclasses.replace(gen, motion_kind_weights=base.motion_kind_weights) == base
  for name, times in (("octant_large", 4), ("octant_xlarge", 8)):
    large = configs[name]
    assert large.num_train == times * octant.num_train
    assert dataclasses.replace(large, name="octant", description=octant.description,
                               num_train=octant.num_train) == octant


@pytest.mark.slow
def test_split_over_the_shuffle_buffer_builds_without_tensorflow(tiny_data_dir, tmp_path,
                                                                 monkeypatch):
  # TFDS spills a split over its shuffle buffer (1 GB, ~990 synthetic clips) to disk through
  # tf.io.gfile, which needs TensorFlow. `datasets.prepare` keeps the split in memory instead;
  # a tiny buffer stands in for a large split here.
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed: TFDS can spill to disk")
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
  clips = glob.glob(os.path.join(tiny_data_dir, "downloads", "asmp_synthetic_clips", "tiny-*"))
  assert clips

  def tiny_builder(data_dir):
    cfg = config_lib.base_config()
    cfg.data.builder_config = "tiny"
    cfg.data.data_dir = str(data_dir)
    return datasets.get_builder(cfg.data)

  datasets.prepare(tiny_builder(tmp_path), manual_dir=sorted(clips)[-1])
  assert shuffle.MAX_MEM_BUFFER_SIZE > 1000
  # Same records in the same order as the build that shuffled within the default buffer.
  for split in ("train", "validation", "test"):
    new = datasets.data_source(tiny_builder(tmp_path), split)
    ref = datasets.data_source(tiny_builder(tiny_data_dir), split)
    assert [new[i]["clip_id"] for i in range(len(new))] == \
        [ref[i]["clip_id"] for i in range(len(ref))]



# ----------------------------------------------------------------------- generated clips removed

def _fake_clips(root, counts):
  for sub, n in counts.items():
    (root / sub).mkdir(parents=True)
    for i in range(n):
      for ext in ("json", "mp4", "wav", "npz"):
        (root / sub / f"{sub}_{i:05d}.{ext}").write_bytes(b"x" * 1000)
    (root / sub / ".complete").write_text("ok\n")


@pytest.mark.parametrize("keep,left", [("all", ["test", "train", "val"]), ("test", ["test"]),
                                       ("none", None)])
def test_remove_clips_keeps_what_keep_clips_names(tmp_path, keep, left):
  root = tmp_path / "tiny-1.1.0"
  _fake_clips(root, {"train": 3, "val": 2, "test": 2})
  line = sdb.remove_clips(str(root), keep)
  if left is None:
    assert not root.exists()
  else:
    assert sorted(os.listdir(root)) == left
  if keep == "test":
    assert line == (f"Removed 5 generated clips (0.00 GB, train/val) from {root} now that the "
                    "records are written (keep_clips='test'; ASMP_KEEP_CLIPS=all keeps them).")
  if keep == "all":
    assert line is None


def test_keep_clips_from_the_environment_and_refused_values(monkeypatch):
  tiny = {c.name: c for c in sdb.BUILDER_CONFIGS}["tiny"]
  default = {c.name: c for c in sdb.BUILDER_CONFIGS}["default"]
  monkeypatch.delenv(sdb.KEEP_CLIPS_ENV, raising=False)
  assert (sdb.keep_clips(default), sdb.keep_clips(tiny)) == ("test", "all")
  monkeypatch.setenv(sdb.KEEP_CLIPS_ENV, "none")
  assert sdb.keep_clips(tiny) == "none"
  monkeypatch.setenv(sdb.KEEP_CLIPS_ENV, "some")
  with pytest.raises(ValueError, match=r"\$ASMP_KEEP_CLIPS='some': expected one of all, test, "
                                       "none"):
    sdb.keep_clips(default)


def test_a_build_removes_its_training_clips_but_never_a_manual_dirs(tmp_path, monkeypatch):
  monkeypatch.delenv(sdb.KEEP_CLIPS_ENV, raising=False)
  cfg = dataclasses.replace({c.name: c for c in sdb.BUILDER_CONFIGS}["tiny"], name="tiny_clean",
                            num_train=1, num_val=1, num_test=1, workers=1, keep_clips="test",
                            generator_overrides=(("duration_s", 2.0),))
  builder = sdb.Builder(data_dir=str(tmp_path / "tfds"), config=cfg, file_format="array_record")
  builder.download_and_prepare(file_format="array_record")
  clips = tmp_path / "tfds" / "downloads" / "asmp_synthetic_clips" / f"tiny_clean-{builder.VERSION}"
  assert sorted(os.listdir(clips)) == ["test"]
  assert sorted(os.listdir(clips / "test")) == [".complete"] + [
      f"test_00000.{e}" for e in ("json", "mp4", "npz", "wav")]
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
      "train": 1, "validation": 1, "test": 1}
  # The same config given the clips as a manual dir: they are the user's and stay.
  manual = tmp_path / "manual"
  generator.generate_splits(manual, {"train": 1, "val": 1, "test": 1}, seed=5,
                            cfg=sdb._generator_config(cfg))  # pylint: disable=protected-access
  before = sorted(os.listdir(manual / "train"))
  monkeypatch.setenv(sdb.KEEP_CLIPS_ENV, "none")
  other = sdb.Builder(data_dir=str(tmp_path / "tfds2"), config=cfg, file_format="array_record")
  other.download_and_prepare(file_format="array_record",
                             download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert sorted(os.listdir(manual / "train")) == before


def test_sigterm_stops_the_build_in_one_line(tmp_path):
  """`python -m asmp_jax.datasets` (what launch.py runs first) stopped while generating: one
  line, status 143, no worker tracebacks; the clips written so far stay for the rerun."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen([sys.executable, "-m", "asmp_jax.datasets",
                           "--config=configs/synthetic_tiny.py",
                           f"--config.data.data_dir={tmp_path}"], cwd=REPO, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if "train: 1/8 clips" in line:
      break
  proc.send_signal(signal.SIGTERM)
  err = "".join(seen) + proc.stderr.read()  # EOF once the workers are gone too
  assert proc.wait(timeout=60) == 128 + signal.SIGTERM, err[-3000:]
  assert "Traceback" not in err and "leaked" not in err, err[-3000:]
  stops = [l for l in err.splitlines() if "Stopped by SIGTERM" in l]
  assert len(stops) == 1 and stops[0].endswith(
      "while building asmp_synthetic/tiny; the clips generated so far are kept and the same "
      "command resumes from them"), stops
  train = tmp_path / "downloads" / "asmp_synthetic_clips" / "tiny-1.1.0" / "train"
  assert any(f.endswith(".json") for f in os.listdir(train))
