"""The mixture to separate, read block by block and resampled to the model's rate, and the
separated signals resampled back to the input's rate, block by block.

soxr's streaming resampler gives the same samples as resampling the whole signal at once
(media.resample), so streaming changes no output; memory holds a few blocks, whatever the length.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import soxr

from asmp_jax import media

BLOCK = 1 << 16  # samples per block of an in-memory mixture


@dataclasses.dataclass
class Mixture:
  """A mono mixture at its own rate.

  Attributes:
    where: the file it is read from, or "<array>" for one given in memory.
    sample_rate: Hz.
    num_samples: its length.
    blocks: ``() -> iterator`` over float32 blocks [n] (``num_samples`` samples in all).
  """
  where: str
  sample_rate: int
  num_samples: int
  blocks: Callable[[], Iterator[np.ndarray]]

  def read(self) -> np.ndarray:
    """The whole mixture, float32 [num_samples]."""
    return np.concatenate(list(self.blocks()))


AudioInput = str | os.PathLike[str] | tuple[np.ndarray, int] | Mixture | None


def open_mixture(video: str | os.PathLike[str], audio: AudioInput = None) -> Mixture:
  """The mixture: ``audio`` (a file, ``(wav [L] or [L, C], sample_rate)`` or a :class:`Mixture`
  already opened) or the video's own audio stream; checked in full before anything else runs.

  Raises:
    media.MediaError: no audio stream anywhere, unreadable/empty audio, bad samples.
  """
  if isinstance(audio, Mixture):
    return audio
  if isinstance(audio, tuple):
    wav, sr = audio
    wav = media.downmix(np.asarray(wav, np.float32))
    where = "<array>"
    if int(sr) <= 0:
      raise media.MediaError(where, f"sample rate must be positive, got {sr}")
    if wav.size == 0 or not np.all(np.isfinite(wav)):
      raise media.MediaError(where, "audio is empty or has NaN/inf samples")
    blocks = lambda: (wav[i:i + BLOCK] for i in range(0, wav.shape[0], BLOCK))
    return Mixture(where, int(sr), int(wav.shape[0]), blocks)
  path = os.fspath(audio) if audio is not None else os.fspath(video)
  if audio is None and not media.probe(path)["has_audio"]:
    raise media.MediaError(path, "no audio stream in the video and no separate audio file given")
  try:
    source = media.MonoAudio(path)
  except media.MediaError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # decoders fail in many ways
    raise media.MediaError(path, f"unsupported audio format or codec ({type(e).__name__}: {e})"
                           ) from e
  return Mixture(path, source.sample_rate, source.num_samples, source.blocks)


def load_mixture(video: str | os.PathLike[str], audio: AudioInput = None
                 ) -> tuple[np.ndarray, int, str]:
  """The whole mono mixture: ``(float32 [L], sample_rate, where from)`` (:func:`open_mixture`)."""
  mix = open_mixture(video, audio)
  return mix.read(), mix.sample_rate, mix.where


def resampled_length(num_samples: int, rate_in: int, rate_out: int) -> int:
  """Length of a signal of ``num_samples`` at ``rate_in`` after resampling to ``rate_out``."""
  return num_samples if rate_in == rate_out else int(round(num_samples * rate_out / rate_in))


def resampled_blocks(blocks: Iterator[np.ndarray], rate_in: int, rate_out: int,
                     channels: int = 1) -> Iterator[np.ndarray]:
  """Blocks ``[n]`` (or ``[n, channels]``) resampled with soxr's HQ filter as they come."""
  if rate_in == rate_out:
    yield from blocks
    return
  stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")
  trailing = (channels,) if channels > 1 else ()
  for block in blocks:
    trailing = block.shape[1:]
    out = stream.resample_chunk(np.ascontiguousarray(block, np.float32))
    if out.shape[0]:
      yield out
  yield stream.resample_chunk(np.zeros((0,) + trailing, np.float32), last=True)


def fit_length(blocks: Iterator[np.ndarray], length: int) -> Iterator[np.ndarray]:
  """Blocks ``[n, ...]`` cut or zero-padded at the end to ``length`` samples in all."""
  left, shape = length, None
  for block in blocks:
    shape = block.shape[1:]
    if left > 0 and block.shape[0]:
      yield block[:left]
    left -= min(left, block.shape[0])
  if left > 0:
    yield np.zeros((left,) + (shape or ()), np.float32)
