"""What a separation returns (:class:`SeparationResult`) and where it streams its output (:class:`Sink`)."""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from asmp_jax import media
from asmp_jax.scene_pipeline import SceneGraphs


@dataclasses.dataclass
class SeparationResult:
  """What :meth:`Separator.separate` returns.

  Attributes:
    sample_rate: Hz, the input's.
    mixture: float32 [L], the input mixture (downmixed), at ``sample_rate`` (with a sink, only
      its first samples: the sink received all of it).
    sources: float32 [M, L], the separated waveforms (like ``mixture``, only the first samples
      with a sink): the valid auditory slots, then the
      background (last row). Their sum is the model's view of the mixture (band-limited to the
      model's 5.5 kHz) when the masks are complementary.
    source_names: M names ("source 0", ..., "background").
    slots: int [M] model slot of each row.
    class_names: the consistency classifier's K class names (the data set's auditory classes,
      then "background").
    class_probabilities: float32 [M, K], averaged over crops.
    direction_names: the D direction class names (asmp_jax.graph.motion.direction_names).
    direction_probabilities: float32 [M - 1, W, D] per auditory source and 1 s window (NaN rows
      where no crop covers the window).
    detected_source: int [M - 1] index into ``graphs.source_ids`` of the detected object each
      source slot was matched to (-1: none; see docs/inference.md).
    graphs: the scene graphs used.
    window_seconds: length of a window (1 s).
    providers_used: what produced detections/depth/flow ("file", "motion proposals"...).
    warnings: the fallback warnings that were logged.
    num_samples: the whole mixture's length at ``sample_rate`` (-1: ``mixture``'s length).
  """
  sample_rate: int
  mixture: np.ndarray
  sources: np.ndarray
  source_names: list[str]
  slots: np.ndarray
  class_names: list[str]
  class_probabilities: np.ndarray
  direction_names: list[str]
  direction_probabilities: np.ndarray
  detected_source: np.ndarray
  graphs: SceneGraphs
  window_seconds: float = 1.0
  providers_used: dict[str, str] = dataclasses.field(default_factory=dict)
  warnings: list[str] = dataclasses.field(default_factory=list)
  num_samples: int = -1

  def __post_init__(self):
    if self.num_samples < 0:
      self.num_samples = int(self.mixture.shape[0])

  @property
  def num_sources(self) -> int:
    """Number of auditory sources (rows of ``sources`` before the background)."""
    return len(self.source_names) - 1

  def directions(self) -> list[list[dict[str, Any]]]:
    """Per auditory source, per window: ``{"window", "start_s", "class", "name", "probability"}``
    (windows no crop covered are left out)."""
    out = []
    for m in range(self.num_sources):
      rows = []
      for w, p in enumerate(self.direction_probabilities[m]):
        if not np.all(np.isfinite(p)):
          continue
        k = int(np.argmax(p))
        rows.append({"window": w, "start_s": w * self.window_seconds, "class": k,
                     "name": self.direction_names[k], "probability": float(p[k])})
      out.append(rows)
    return out

  def predicted_classes(self) -> list[dict[str, Any]]:
    """Per output row, the most probable sound class ``{"class", "name", "probability"}``."""
    k = self.class_probabilities.argmax(-1)
    return [{"class": int(c), "name": self.class_names[c],
             "probability": float(self.class_probabilities[m, c])} for m, c in enumerate(k)]


class Sink(Protocol):
  """Where :meth:`Separator.separate` streams its output (e.g. wav files being written)."""

  def open(self, names: list[str], sample_rate: int) -> None:
    """Called once before any block, with the names of the source rows."""

  def write(self, mixture: np.ndarray, sources: np.ndarray) -> None:
    """The next samples: the mixture ``float32 [n]`` and the sources ``float32 [M, n]``."""


class Collect:
  """Keeps the first ``limit`` samples of the mixture and of the sources."""

  def __init__(self, limit: int):
    self.limit, self.held = int(limit), 0
    self._mix: list[np.ndarray] = []
    self._src: list[np.ndarray] = []

  def write(self, mixture: np.ndarray, sources: np.ndarray) -> None:
    n = min(mixture.shape[0], self.limit - self.held)
    if n > 0:
      self._mix.append(mixture[:n])
      self._src.append(sources[:, :n])
      self.held += n

  def mixture(self) -> np.ndarray:
    return np.concatenate(self._mix)

  def sources(self) -> np.ndarray:
    return np.concatenate(self._src, -1)


def take(pending: collections.deque, n: int) -> np.ndarray:
  """The first ``n`` samples of the queued blocks (removed from the queue)."""
  out, need = [], n
  while need > 0 and pending:
    block = pending.popleft()
    if block.shape[0] > need:
      pending.appendleft(block[need:])
      block = block[:need]
    out.append(block)
    need -= block.shape[0]
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


class WavFiles:
  """A :class:`Sink` writing every source row to its own audio file in ``directory`` as the
  samples come (``file_name(row name)``; :class:`asmp_jax.media.WavWriter`)."""

  def __init__(self, directory: str, file_name: Callable[[str], str],
               subtype: str | None = "PCM_16"):
    self.directory, self.file_name, self.subtype = directory, file_name, subtype
    self.files: dict[str, str] = {}
    self._writers: list[media.WavWriter] = []

  def open(self, names: list[str], sample_rate: int) -> None:
    for name in names:
      self.files[name] = self.file_name(name)
      self._writers.append(media.WavWriter(os.path.join(self.directory, self.files[name]),
                                           sample_rate, self.subtype))

  def write(self, mixture: np.ndarray, sources: np.ndarray) -> None:
    del mixture  # not written
    for writer, wav in zip(self._writers, sources):
      writer.write(wav)

  def close(self) -> None:
    for writer in self._writers:
      writer.close()
