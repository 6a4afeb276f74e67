"""Log filters that keep the training console to what a user needs (used by launch.py)."""

from __future__ import annotations

from absl import logging


class QuietLibraries:
  """Drops INFO/DEBUG records of Orbax, grain and TFDS (they log every file operation)."""

  def filter(self, record) -> bool:
    if record.levelno >= 30:  # WARNING and above always pass
      return True
    return not any(f"/{lib}/" in record.pathname
                   for lib in ("orbax", "grain", "tensorflow_datasets", "etils"))


class NoTpuHere:
  """Replaces JAX's warning that the TPU backend (libtpu installed, no TPU) failed to start by
  one line saying so."""

  def filter(self, record) -> bool:
    if str(record.msg).startswith("Unable to initialize backend") and "'tpu'" in (
        record.getMessage()):
      logging.info("libtpu is installed but there is no TPU here; using the other backends.")
      return False
    return True
