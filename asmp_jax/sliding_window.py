"""Sliding-window separation of audio longer than one crop, shared by inference and evaluation.

The audio is cut into crops of ``crop`` samples every ``hop`` samples (the last crop flush with
the end; audio shorter than one crop is one zero-padded crop). Crops go through a jitted
separation function in batches of a fixed size (the last batch padded by repeating its last
crop, so there is one compilation), and the per-crop outputs are overlap-averaged: every sample
is the mean over the crops that cover it.

Crops arrive in start order, so once the crops starting before ``s`` are added, every sample
before ``s`` is final: :class:`OverlapAverage` hands such samples out and forgets them, which is
what lets a caller stream audio of any length through a fixed amount of memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np


def crop_starts(num_samples: int, crop: int, hop: int) -> np.ndarray:
  """Start samples of the sliding windows covering ``num_samples`` (the last one flush right)."""
  if num_samples <= crop:
    return np.zeros((1,), np.int64)
  starts = list(range(0, num_samples - crop + 1, hop))
  if starts[-1] != num_samples - crop:
    starts.append(num_samples - crop)
  return np.asarray(starts, np.int64)


def padded_crop(wav: np.ndarray, start: int, crop: int) -> np.ndarray:
  """``wav[..., start:start + crop]``, zero-padded at the end to ``crop`` samples."""
  piece = wav[..., start:start + crop]
  pad = crop - piece.shape[-1]
  return np.pad(piece, [(0, 0)] * (piece.ndim - 1) + [(0, pad)]) if pad else piece


class OverlapAverage:
  """Running overlap-average of crops ``[..., C]`` added in start order into ``[..., length]``.

  Only the samples not yet handed out by :meth:`pop` are held. Sums and counts have ``dtype``;
  every sample is ``sum / max(count, 1)``, the crops added in order, whatever the popping.
  """

  def __init__(self, shape: tuple[int, ...], length: int, dtype=np.float32):
    self.shape, self.length, self.dtype = tuple(shape), int(length), dtype
    self.done = 0  # samples before this one have been handed out
    self._sum = np.zeros(self.shape + (0,), dtype)
    self._count = np.zeros((0,), dtype)

  def add(self, crop: np.ndarray, start: int) -> None:
    """Adds one crop whose first sample is sample ``start`` (its tail past the end is cut)."""
    start = int(start)
    if start < self.done:
      raise ValueError(f"crop at {start} overlaps samples already handed out (< {self.done})")
    n = min(crop.shape[-1], self.length - start)
    end = start + n - self.done
    if end > self._count.shape[0]:
      grow = end - self._count.shape[0]
      self._sum = np.concatenate([self._sum, np.zeros(self.shape + (grow,), self.dtype)], -1)
      self._count = np.concatenate([self._count, np.zeros((grow,), self.dtype)])
    lo = start - self.done
    self._sum[..., lo:end] += crop[..., :n]
    self._count[lo:end] += 1

  def pop(self, upto: int) -> np.ndarray:
    """The averaged samples ``done..upto-1`` (``[..., upto - done]``), forgotten afterwards."""
    n = min(int(upto), self.length) - self.done
    if n <= 0:
      return np.zeros(self.shape + (0,), self.dtype)
    held = self._count.shape[0]
    if n > held:  # samples no crop covered: zeros
      self._sum = np.concatenate([self._sum, np.zeros(self.shape + (n - held,), self.dtype)], -1)
      self._count = np.concatenate([self._count, np.zeros((n - held,), self.dtype)])
    out = self._sum[..., :n] / np.maximum(self._count[:n], 1)
    self._sum, self._count = self._sum[..., n:].copy(), self._count[n:].copy()
    self.done += n
    return out


def overlap_average(crops: np.ndarray, starts: np.ndarray, length: int,
                    dtype=np.float64) -> np.ndarray:
  """Averages crops ``[K, ..., C]`` placed at ``starts`` into ``[..., length]``."""
  acc = OverlapAverage(crops.shape[1:-1], length, dtype)
  for crop, start in zip(crops, starts):
    acc.add(crop, start)
  return acc.pop(length)


def batches(starts: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """``(starts of one batch, padded to batch_size by repeating its last, number of real ones)``."""
  for i in range(0, len(starts), batch_size):
    chunk = np.asarray(starts[i:i + batch_size])
    real = len(chunk)
    yield np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real)]), real


def slide(fn: Callable[[dict[str, Any]], dict[str, Any]], starts: np.ndarray, batch_size: int,
          make_batch: Callable[[np.ndarray], dict[str, np.ndarray]], progress: str | None = None
          ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]]:
  """Runs ``fn`` on fixed-size batches of crops; yields ``(starts, batch, outputs)`` of the real
  crops of each batch, in start order.

  Args:
    fn: jitted ``batch -> outputs`` (arrays with a leading batch axis).
    starts: crop starts in increasing order (:func:`crop_starts`).
    batch_size: crops per call (the last batch is padded: one compiled shape).
    make_batch: ``padded starts [batch_size] -> batch`` (the crops and their conditioning).
    progress: a name to log progress under (about every tenth of the batches), or None.
  """
  n_batches = -(-len(starts) // batch_size)
  t0 = time.time()
  for bi, (chunk, real) in enumerate(batches(starts, batch_size)):
    batch = make_batch(chunk)
    out = jax.device_get(fn(batch))
    yield (chunk[:real], {k: np.asarray(v)[:real] for k, v in batch.items()},
           {k: v[:real] for k, v in out.items()})
    if progress and (bi + 1) % max(1, n_batches // 10) == 0:
      el = time.time() - t0
      logging.info("%s: batch %d/%d (%.0f s elapsed, ~%.0f s left)", progress, bi + 1, n_batches,
                   el, el / (bi + 1) * (n_batches - bi - 1))


def softmax(x: np.ndarray) -> np.ndarray:
  """Softmax over the last axis in float64."""
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


class WindowProbabilities:
  """Per-window class probabilities from the time slices of every crop.

  Slice ``j`` of a crop starting at ``s`` is centred on sample ``s + centres[j]``; it counts for
  the window holding that sample (windows of ``window`` samples; slices centred past ``length``
  or at window ``num_windows`` or later are dropped). Each window's probabilities are the mean
  over every slice counted for it; NaN where none was.
  """

  def __init__(self, num_windows: int, window: int, length: int, centres: np.ndarray,
               shape: tuple[int, ...]):
    self.window, self.length, self.centres = int(window), int(length), np.asarray(centres)
    self._sum = np.zeros((num_windows,) + tuple(shape), np.float64)
    self._count = np.zeros((num_windows,), np.float64)

  def add(self, starts: np.ndarray, probs: np.ndarray) -> None:
    """``probs [B, S, J, D]`` of the crops at ``starts [B]`` (J = number of slices)."""
    centre = starts[:, None] + self.centres[None]  # [B, J]
    widx = (centre // self.window).astype(np.int64)
    ok = (widx < self._count.shape[0]) & (centre < self.length)
    np.add.at(self._sum, widx[ok], probs.transpose(0, 2, 1, 3)[ok])
    np.add.at(self._count, widx[ok], 1.0)

  def result(self) -> np.ndarray:
    """float32 ``[S, W, D]``."""
    with np.errstate(invalid="ignore", divide="ignore"):
      return (self._sum / self._count[:, None, None]).transpose(1, 0, 2).astype(np.float32)


class CropReader:
  """Crops of a signal that arrives in blocks, holding only the samples still to be cropped.

  Args:
    blocks: float32 blocks ``[n]`` of the signal, in order.
    crop: crop length; a crop running past the signal's end is zero-padded.

  ``max_held`` is the most samples held at once (bounded by the crops of one batch and a block).
  """

  def __init__(self, blocks: Iterator[np.ndarray], crop: int):
    self._blocks, self.crop = iter(blocks), int(crop)
    self._buf = np.zeros((0,), np.float32)
    self._offset = 0  # signal index of self._buf[0]
    self.max_held = 0

  def crops(self, starts: np.ndarray) -> np.ndarray:
    """float32 ``[B, crop]``, crop b starting at sample ``starts[b]``."""
    need = int(np.max(starts)) + self.crop
    while self._offset + self._buf.shape[0] < need:
      block = next(self._blocks, None)
      if block is None:
        break
      self._buf = np.concatenate([self._buf, np.asarray(block, np.float32)])
      self.max_held = max(self.max_held, self._buf.shape[0])
    return np.stack([padded_crop(self._buf, int(s) - self._offset, self.crop) for s in starts])

  def release(self, before: int) -> None:
    """Forgets the samples before sample ``before`` (no later crop starts there)."""
    n = min(max(0, int(before) - self._offset), self._buf.shape[0])
    self._buf = self._buf[n:].copy()
    self._offset += n
