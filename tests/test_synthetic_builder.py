"""The synthetic TFDS builder: a broken clip is skipped and reported, an empty split is an error."""
import os

import pytest
import tensorflow_datasets as tfds

from asmp_data.synthetic import generator
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
def test_broken_clips_are_skipped_and_reported(tmp_path):
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
