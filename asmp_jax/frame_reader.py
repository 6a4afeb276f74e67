"""Video frames resampled for the model, read in chunks so that memory does not grow with length.

Frames are decoded with PyAV one at a time and resampled to the model's frame rate (for every
tick ``k / fps`` the decoded frame nearest in time) and to the training frame size (area
interpolation when shrinking, aspect ratio not kept). :class:`VideoFile` hands them out in chunks
of a fixed number of frames (each with the next chunk's first frame, which optical flow needs), by
decoding the file again on every pass; :class:`VideoFrames` holds frames already in memory and
has the same interface.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import av
import cv2
import numpy as np

from asmp_jax import media
from asmp_jax.media.common import stream_fps

# (first frame index, uint8 frames [k, H, W, 3], the next frame or None at the end)
Chunk = tuple[int, np.ndarray, "np.ndarray | None"]


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  h, w = size
  if rgb.shape[:2] == (h, w):
    return rgb
  shrink = rgb.shape[0] > h or rgb.shape[1] > w
  return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _chunked(frames: Iterator[np.ndarray], n: int) -> Iterator[Chunk]:
  buf, k0 = [], 0
  for frame in frames:
    if len(buf) == n:
      yield k0, np.stack(buf), frame
      k0, buf = k0 + n, []
    buf.append(frame)
  if buf:
    yield k0, np.stack(buf), None


def check_video(video: str | os.PathLike[str]) -> None:
  """Cheap up-front check: the file has a video stream whose first frame decodes.

  Raises:
    media.MediaError: missing/empty/corrupt file, no video stream, zero frames.
  """
  if not media.probe(video)["has_video"]:
    raise media.MediaError(video, "no video stream in the file")
  try:
    media.read_video(video, max_frames=1)
  except media.MediaError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # decoders fail in many ways
    raise media.MediaError(video, f"unsupported video format or codec ({type(e).__name__}: {e})"
                           ) from e


class VideoFile:
  """A video file read chunk by chunk at ``fps`` and ``size`` (height, width).

  ``source_index`` (int64 [T], the decoded frame each resampled frame was taken from),
  ``source_size`` (height, width of the decoded frames) and ``source_fps`` are known after the
  first complete pass (:meth:`scan` makes one if needed).

  Raises (on reading): media.MediaError: missing/corrupt file, no video stream, no frame.
  """

  def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]):
    self.path, self.fps, self.size = os.fspath(path), float(fps), (int(size[0]), int(size[1]))
    if not media.probe(self.path)["has_video"]:  # missing / unreadable files fail here
      raise media.MediaError(self.path, "no video stream in the file")
    self._index: np.ndarray | None = None
    self.source_size: tuple[int, int] | None = None
    self.source_fps: float | None = None

  def _decode(self, index: list[int]) -> Iterator[np.ndarray]:
    """The resampled frames in order; appends each one's decoded frame index to ``index``."""
    path, fps = self.path, self.fps
    try:
      with av.open(path, mode="r") as container:
        stream = container.streams.video[0]
        src_fps = stream_fps(stream) or fps
        self.source_fps = src_fps
        prev = prev_t = t0 = None
        for i, frame in enumerate(container.decode(stream)):
          t = frame.time if frame.time is not None else i / src_fps
          t0 = t if t0 is None else t0
          t -= t0
          self.source_size = (frame.height, frame.width)
          while len(index) / fps <= t + 1e-6:
            target = len(index) / fps
            use_prev = prev is not None and target - prev_t < t - target
            chosen, chosen_i = (prev, i - 1) if use_prev else (frame, i)
            rgb = chosen.reformat(format="rgb24", interpolation=media.RGB_FLAGS,
                                  threads=1).to_ndarray()
            index.append(chosen_i)
            yield resize(rgb, self.size)
          prev, prev_t = frame, t
    except av.FFmpegError as e:
      raise media.MediaError(path, f"corrupt or unreadable video stream ({e})") from e
    except (AttributeError, TypeError, ValueError) as e:  # e.g. a stream without a known codec
      raise media.MediaError(path, f"unsupported video format or codec ({type(e).__name__}: "
                             f"{e})") from e
    if not index:
      raise media.MediaError(path, "video stream decodes to zero frames")

  def chunks(self, n: int) -> Iterator[Chunk]:
    """Chunks of ``n`` resampled frames (one decoding pass)."""
    index: list[int] = []
    yield from _chunked(self._decode(index), n)
    self._index = np.asarray(index, np.int64)

  def scan(self) -> None:
    """Makes one pass if none was completed yet (to learn ``source_index``)."""
    if self._index is None:
      for _ in self.chunks(64):
        pass

  @property
  def source_index(self) -> np.ndarray:
    if self._index is None:
      raise RuntimeError("source_index is known after one pass over the video (scan())")
    return self._index

  @property
  def num_frames(self) -> int:
    return len(self.source_index)


class VideoFrames:
  """Resampled frames in memory, with :class:`VideoFile`'s interface.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB at ``fps`` and the training frame size.
    source_index: int64 [T] index of the decoded frame each one was taken from.
    source_size: (height, width) of the decoded frames.
    source_fps: the stream's average frame rate.
    fps: the model's frame rate.
  """

  def __init__(self, frames: np.ndarray, source_index: np.ndarray,
               source_size: tuple[int, int], source_fps: float, fps: float):
    self.frames, self.source_index = frames, np.asarray(source_index, np.int64)
    self.source_size, self.source_fps, self.fps = source_size, source_fps, fps

  @property
  def size(self) -> tuple[int, int]:
    return tuple(self.frames.shape[1:3])

  @property
  def num_frames(self) -> int:
    return self.frames.shape[0]

  def scan(self) -> None:
    pass

  def chunks(self, n: int) -> Iterator[Chunk]:
    t = self.num_frames
    for k0 in range(0, t, n):
      yield k0, self.frames[k0:k0 + n], self.frames[k0 + n] if k0 + n < t else None


def read_frames(path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> VideoFrames:
  """All frames of a video, resampled (module docstring), in memory.

  Raises:
    media.MediaError: missing/corrupt file, no video stream, no decodable frame.
  """
  video = VideoFile(path, fps, size)
  frames = np.concatenate([c for _, c, _ in video.chunks(256)])
  return VideoFrames(frames, video.source_index, video.source_size, video.source_fps, fps)
