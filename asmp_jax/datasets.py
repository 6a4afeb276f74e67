"""Finding, building and reading the TFDS data sets named by ``config.data``."""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import tensorflow_datasets as tfds

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


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str = "") -> None:
  """Builds the data set if it is not there yet (the synthetic set is generated on first use)."""
  if builder.is_prepared():
    return
  logging.info("Preparing %s/%s in %s (first use; later runs reuse it).", builder.name,
               builder.builder_config.name if builder.builder_config else "", builder.data_dir)
  dl_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(download_config=dl_config, file_format="array_record")


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
