"""Detections, depth and flow files -> the model's resampled frames.

A provider file describes either every decoded frame of the video (its own rate and pixel size,
frame 0 = the first decoded frame) or the frames some sampling kept; :func:`load_array`,
:func:`map_detections`, :func:`resample_depth` and :func:`resample_flow` read both.

Files of sampled frames:

``python -m asmp_jax.preprocess_videos`` runs the learned providers on the frames the raw data
builders sample (8 fps, nearest earlier frame, the first ``--num_windows`` seconds) and stores with
each detections/depth/flow file ``source_frame``: int64 [T], the decoded frame (index in the video
stream) each stored frame is. Such a file describes a subset of the decoded frames, so
``separate --detections/--depth/--flow``, whose frames come from :mod:`asmp_jax.frame_reader`
(another sampling rule, possibly another rate), maps each of its resampled frames to the stored
frame nearest to it in the stream:

  * detections: every resampled frame takes the detections of its nearest stored frame (boxes
    rescaled from the video's pixel size to the model's);
  * depth: the nearest stored frame's map, resized;
  * flow: the stored flows between the nearest stored frames of two consecutive resampled frames,
    chained (zero where both map to the same stored frame), resized and rescaled.

A file that stops before the video does is refused in one line that says which ``--num_windows``
covers it. Files without ``source_frame`` describe every decoded frame.
"""

from __future__ import annotations

import dataclasses
import math
import os

import cv2
import numpy as np

from asmp_jax import safe_io
from asmp_jax.graph import motion as graph_motion
from asmp_jax.graph import providers as graph_providers

SOURCE_FRAME_KEY = "source_frame"
SOURCE_FPS_KEY = "source_fps"


@dataclasses.dataclass
class SampledArray:
  """Depth [T, H0, W0] or flow [T, H0, W0, 2] of the stored frames ``source_frame`` [T]."""
  data: np.ndarray
  source_frame: np.ndarray
  path: str


def read_extras(path: str) -> dict[str, np.ndarray]:
  """``source_frame`` / ``detector_classes`` of an .npz provider file (those present; nothing is
  read for other files, and no pickled object ever)."""
  if not os.fspath(path).lower().endswith(".npz"):
    return {}
  try:
    with np.load(path, allow_pickle=False) as arrays:
      return {k: np.asarray(arrays[k]) for k in (SOURCE_FRAME_KEY, "detector_classes")
              if k in arrays.files}
  except Exception as e:  # pylint: disable=broad-except  # numpy/zipfile raise many types
    raise graph_providers.ProviderError(f"{path}: not a readable .npz provider file "
                                        f"({type(e).__name__}: {e})") from e


def nearest_stored(source_frame: np.ndarray, decoded: np.ndarray) -> np.ndarray:
  """int64: for each decoded frame index, the position of the stored frame nearest to it."""
  sf = np.asarray(source_frame, np.int64)
  hi = np.clip(np.searchsorted(sf, decoded), 1, len(sf) - 1) if len(sf) > 1 else None
  if hi is None:
    return np.zeros(len(decoded), np.int64)
  lo = hi - 1
  return np.where(np.abs(decoded - sf[lo]) <= np.abs(sf[hi] - decoded), lo, hi)


def check(source_frame: np.ndarray, video, path: str, what: str) -> None:
  """Refuses a file whose stored frames are not increasing or stop before the video does."""
  sf = np.asarray(source_frame)
  if sf.ndim != 1 or not len(sf) or np.any(np.diff(sf) <= 0) or sf[0] < 0:
    raise graph_providers.ProviderError(
        f"{path}: {SOURCE_FRAME_KEY} must be increasing decoded-frame indices, got "
        f"{sf.shape} values")
  gap = max(int(np.median(np.diff(sf))) if len(sf) > 1 else 1, 1)
  last = int(video.source_index.max())
  if last > sf[-1] + gap:
    src_fps = video.source_fps or video.fps
    covered, needed = (sf[-1] + gap) / src_fps, (last + 1) / src_fps
    raise graph_providers.ProviderError(
        f"{path}: the {what} file covers the video's first {covered:.1f} s, the video runs "
        f"{needed:.1f} s; rerun python -m asmp_jax.preprocess_videos with "
        f"--num_windows={math.ceil(needed)} (or 0: the whole video)")


def check_array(arr: SampledArray, video, name: str, trailing: tuple[int, ...]) -> None:
  want = tuple(video.source_size) + trailing
  if arr.data.ndim != 3 + len(trailing) or tuple(arr.data.shape[1:]) != want or (
      arr.data.shape[0] != len(arr.source_frame)):
    raise graph_providers.ProviderError(
        f"{arr.path}: expected {name} [{len(arr.source_frame)}, {', '.join(map(str, want))}] "
        f"(one per stored frame, the video's pixel size), got {tuple(arr.data.shape)}")
  check(arr.source_frame, video, arr.path, name)


def load_sampled(path: str, arr: np.ndarray) -> np.ndarray | SampledArray:
  """``arr`` (read from ``path``) as a :class:`SampledArray` when the file records its frames."""
  extras = read_extras(path)
  if SOURCE_FRAME_KEY not in extras:
    return arr
  return SampledArray(arr, extras[SOURCE_FRAME_KEY].astype(np.int64), os.fspath(path))


# ----------------------------------------------------------------------------- every decoded frame


def load_array(value, key: str) -> np.ndarray | None:
  """A provider array from a path (.npy / .npz[key], memory-mapped for .npy) or an array."""
  if value is None or isinstance(value, np.ndarray) or graph_providers.is_frame_model(value):
    return value
  path = os.fspath(value)
  if not os.path.exists(path):
    raise graph_providers.ProviderError(f"{path}: {key} file not found")
  try:
    arr = safe_io.np_load(path, mmap_mode="r" if path.endswith(".npy") else None)
  except safe_io.SafeLoadError as e:
    raise graph_providers.ProviderError(f"{path}: not a readable .npy/.npz {key} file "
                                        f"({e.reason})") from e
  if isinstance(arr, dict):
    if key not in arr:
      raise graph_providers.ProviderError(f"{path}: expected an array named {key!r}, found "
                                          f"{sorted(arr.keys())}")
    arr = arr[key]
  return load_sampled(path, arr)


def check_source_array(arr: np.ndarray, name: str, num_frames: int, size: tuple[int, int],
                       trailing: tuple[int, ...]) -> None:
  want = (size[0], size[1]) + trailing
  if arr.ndim != 3 + len(trailing) or tuple(arr.shape[1:]) != want or arr.shape[0] < num_frames:
    raise graph_providers.ProviderError(
        f"{name}: expected [T >= {num_frames}, {', '.join(map(str, want))}] for the decoded "
        f"frames, got {tuple(arr.shape)}")


def rows(src, video) -> np.ndarray:
  """int64 [T]: for each resampled frame, the row of ``src`` that describes it: its decoded
  frame for an array of every decoded frame, the nearest stored frame for a
  :class:`SampledArray`."""
  if isinstance(src, SampledArray):
    return nearest_stored(src.source_frame, video.source_index)
  return np.asarray(video.source_index, np.int64)


def _data(src) -> np.ndarray:
  return src.data if isinstance(src, SampledArray) else src


def map_detections(dets: graph_providers.Detections, video,
                   source_frame: np.ndarray | None = None) -> graph_providers.Detections:
  """Detections of decoded frames (``frame`` = decoded index), or of the stored frames
  ``source_frame`` of a sampled file (``frame`` = stored index), -> detections of the resampled
  frames: each resampled frame takes those of the frame describing it (:func:`rows`), boxes
  rescaled to the model's pixel size."""
  j = (np.asarray(video.source_index, np.int64) if source_frame is None
       else nearest_stored(source_frame, video.source_index))
  order = np.argsort(dets.frame, kind="stable")
  starts = np.searchsorted(dets.frame[order], j, "left")
  ends = np.searchsorted(dets.frame[order], j, "right")
  out = dets.select(np.concatenate([order[s:e] for s, e in zip(starts, ends)] +
                                   [np.zeros(0, np.int64)]).astype(np.int64))
  h0, w0 = video.source_size
  h, w = video.size
  scale = np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
  new_frame = np.repeat(np.arange(len(j)), ends - starts).astype(dets.frame.dtype)
  return graph_providers.Detections(new_frame, out.box * scale, out.label, out.score,
                                    out.feature, out.track)


def resample_depth(depth, video, frames: np.ndarray) -> np.ndarray:
  """float32 [len(frames), H, W] depth of the resampled frames ``frames`` (indices): the map of
  the frame describing each (:func:`rows`), resized."""
  h, w = video.size
  r, data = rows(depth, video), _data(depth)
  return np.stack([cv2.resize(np.asarray(data[r[k]], np.float32), (w, h),
                              interpolation=cv2.INTER_LINEAR) for k in frames])


def resample_flow(flow, video, frames: np.ndarray) -> np.ndarray:
  """float32 [len(frames), H, W, 2] flow from each resampled frame in ``frames`` to the next.

  The file's flows between the rows describing the two frames (:func:`rows`) are chained
  (graph.motion.compose_flow; zero where both are the same row), then resized and their vectors
  rescaled to the new pixel size.
  """
  h, w = video.size
  h0, w0 = video.source_size
  scale = np.array([w / w0, h / h0], np.float32)
  r, data = rows(flow, video), _data(flow)
  out = np.zeros((len(frames), h, w, 2), np.float32)
  for n, k in enumerate(frames):
    if k + 1 >= len(r) or r[k + 1] <= r[k]:
      continue
    chained = graph_motion.compose_flow(np.asarray(data[r[k]:r[k + 1]], np.float32))
    out[n] = cv2.resize(chained, (w, h), interpolation=cv2.INTER_LINEAR) * scale
  return out
