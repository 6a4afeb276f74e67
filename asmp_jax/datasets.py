"""Finding, building and reading the TFDS data sets named by ``config.data``."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import time
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from asmp_jax import schema

# config.data.name -> module holding the TFDS builder class `Builder`.
BUILDERS = {
    "synthetic": "asmp_data.synthetic.synthetic_dataset_builder",
    "asiw": "asmp_data.asiw.asiw_dataset_builder",
    "ave": "asmp_data.ave.ave_dataset_builder",
}


def data_dir(config_data) -> str:
  """TFDS data_dir: ``config.data.data_dir``, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return (config_data.data_dir or os.environ.get("TFDS_DATA_DIR")
          or os.path.expanduser("~/tensorflow_datasets"))


def get_builder(config_data) -> tfds.core.DatasetBuilder:
  """The TFDS builder of ``config.data.name`` with ``config.data.builder_config``."""
  name = config_data.name
  if name not in BUILDERS:
    raise ValueError(f"config.data.name={name!r} is not one of {sorted(BUILDERS)}")
  try:
    module = importlib.import_module(BUILDERS[name])
  except ModuleNotFoundError as e:
    raise ValueError(f"the {name!r} data set builder is not available ({e})") from e
  kwargs: dict[str, Any] = {"data_dir": data_dir(config_data), "file_format": "array_record"}
  if config_data.builder_config:
    kwargs["config"] = config_data.builder_config
  return module.Builder(**kwargs)


def keep_shuffle_in_memory() -> bool:
  """Lets TFDS shuffle a split of any size in memory when TensorFlow is not installed.

  TFDS shuffles each split while writing it; past ``tfds.core.shuffle.MAX_MEM_BUFFER_SIZE``
  (1 GB of serialized examples, about 990 synthetic clips) it spills to temporary files through
  ``tf.io.gfile``, which needs TensorFlow (not a dependency of this project). Raising the limit
  keeps the whole split in memory instead; the written order is the same either way (both sort
  by the hashed key). Returns whether the limit was raised.
  """
  if importlib.util.find_spec("tensorflow") is not None:
    return False
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  shuffle.MAX_MEM_BUFFER_SIZE = max(shuffle.MAX_MEM_BUFFER_SIZE, 1 << 62)
  return True


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str = "") -> None:
  """Builds the data set if it is not there yet (the synthetic set is generated on first use)."""
  if builder.is_prepared():
    return
  if keep_shuffle_in_memory():
    logging.info("TensorFlow is not installed: TFDS keeps each split in memory while shuffling "
                 "it (about 1 MB per 10 s clip); install tensorflow-cpu to let it spill "
                 "splits over 1 GB to disk instead.")
  logging.info("Preparing %s/%s in %s (first use; later runs reuse it).", builder.name,
               builder.builder_config.name if builder.builder_config else "", builder.data_dir)
  # TFDS prints its own banners (sizes it does not know: "Unknown size") and, in a log file,
  # progress bars as escape codes; this function logs the build itself.
  # pylint: disable-next=protected-access
  builder._log_download_bytes = builder._log_download_done = lambda: None
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()
  t0 = time.time()
  dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(download_config=dl_config, file_format="array_record")
  logging.info("Prepared %s in %.0f s.", builder.data_dir, time.time() - t0)


def metadata(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """The data set's metadata (class names, feature extractor, feature size...)."""
  return dict(builder.info.metadata or {})


def data_source(builder: tfds.core.DatasetBuilder, split: str):
  """Random-access source of one split, with a clear error when the split is empty."""
  if split not in builder.info.splits:
    raise ValueError(f"{builder.name}: no split {split!r}; available: {list(builder.info.splits)}")
  source = builder.as_data_source(split)
  if len(source) == 0:
    raise ValueError(f"{builder.name}: split {split!r} is empty")
  return source


def direction_labels(source, config_model) -> np.ndarray:
  """Every valid auditory-source window label of a split (for the majority vote)."""
  key = schema.direction_key(config_model.num_direction_classes)
  labels = np.concatenate([np.asarray(source[i][key]).reshape(-1) for i in range(len(source))])
  return labels[labels >= 0]


def build_report(builder: tfds.core.DatasetBuilder) -> str:
  """Examples per split, and (real data sets) skipped videos by kind and shard checksums."""
  meta = metadata(builder)
  skips, listed = meta.get("skip_counts", {}), meta.get("num_listed", {})
  paper = meta.get("paper_split_sizes", {})
  lines = [f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''} in "
           f"{builder.data_dir}"]
  for split in builder.info.splits.keys():
    line = f"  {split}: {builder.info.splits[split].num_examples} examples"
    if split in listed:
      line += f" of {listed[split]} listed videos (paper: {paper.get(split, '?')})"
    if split in skips:
      kinds = ", ".join(f"{k} {v}" for k, v in sorted(skips[split].items())) or "none"
      line += f"; skipped: {kinds}"
    lines.append(line)
  for split, digest in sorted(meta.get("content_sha256", {}).items()):
    lines.append(f"  content sha256 {digest}  {split}")
  for name, digest in sorted(meta.get("checksums", {}).items()):
    lines.append(f"  file sha256 {digest}  {name}")
  return "\n".join(lines)


def main(argv) -> None:
  """Builds the data set of ``--config`` (TFDS's own ``tfds build`` needs TensorFlow).

    python -m asmp_jax.datasets --config=configs/asiw.py --manual_dir=DIR [--workers=8]
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  config = f.config
  if f.workers:
    os.environ["ASMP_DATA_WORKERS"] = str(f.workers)
  builder = get_builder(config.data)
  prepare(builder, f.manual_dir or config.data.manual_dir)
  print(build_report(get_builder(config.data)))


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).")
  flags.DEFINE_string("manual_dir", "",
                      "Where the downloaded files are (else config.data.manual_dir).")
  flags.DEFINE_integer("workers", 0,
                       "Worker processes for real data sets (0: the builder's default).")
  flags.mark_flags_as_required(["config"])
  app.run(main)
