"""Metrics to TensorBoard (tensorboardX: event files without TensorFlow) from process 0 only."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


class Writer:
  """Scalars, audio and images to ``<workdir>/tensorboard``; a no-op when ``enabled`` is False."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._w = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._w = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    if self._w is None:
      return
    for k, v in values.items():
      self._w.add_scalar(k, float(v), global_step=int(step))
    self._w.flush()

  def audio(self, step: int, tag: str, wav: np.ndarray, sample_rate: int) -> None:
    if self._w is not None:
      wav = np.clip(np.asarray(wav, np.float32), -1.0, 1.0)
      self._w.add_audio(tag, wav, global_step=int(step), sample_rate=sample_rate)

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """``image``: uint8 or float [H, W, 3] (or [H, W])."""
    if self._w is not None:
      img = np.asarray(image)
      self._w.add_image(tag, img, global_step=int(step),
                        dataformats="HWC" if img.ndim == 3 else "HW")

  def hparams(self, config) -> None:
    if self._w is not None:
      self._w.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=1, default=str)
                       + "\n```", global_step=0)

  def close(self) -> None:
    if self._w is not None:
      self._w.close()
