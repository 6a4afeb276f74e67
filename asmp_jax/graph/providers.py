"""Where detections, pseudo-depth and optical flow come from.

The paper gets them from pretrained networks (Faster R-CNN, MiDaS, RAFT). Here they come through one
small interface, :class:`Provider`, with implementations that need no weights:

* :class:`SyntheticOracle` reads the ground-truth sidecar of a synthetic clip (``<id>.npz``, format
  in docs/synthetic.md): exact boxes (``detections="exact"``) or the simulated detector's noisy
  output (``"noisy"``), exact depth and exact flow. It never hands out features from the
  generator's memory: node features are computed from the decoded pixels (graph.features).
* :class:`PrecomputedFiles` reads documented files produced elsewhere (e.g. by Faster R-CNN, MiDaS
  and RAFT run on a GPU box): detections from HDF5 or npz, depth and flow from npy/npz.
* :func:`opencv_flow` / :class:`OpenCVFlow`: dense DIS optical flow computed from decoded frames, a
  classical stand-in for RAFT. :func:`flat_depth`: constant depth, the fallback without a depth
  model.
* Learned providers (asmp_jax.vision, optional extra ``.[vision]``): torchvision's Faster R-CNN
  (boxes + 2048-d region features), transformers' DPT (pseudo-depth) and torchvision's RAFT
  (flow), computed from the frames themselves (:func:`is_frame_model`); the command
  ``python -m asmp_jax.preprocess_videos`` writes their output in the file formats below.

File formats of :class:`PrecomputedFiles` (T frames, H x W pixels, D detections in all):

``detections`` (``.h5``/``.hdf5`` or ``.npz``), either flat
  ``frame [D] int``, ``box [D, 4] float (x0, y0, x1, y1) pixels``, ``label [D] int``,
  ``score [D] float`` and optionally ``feature [D, F] float``; or per frame, the layout of the
  authors' released ASIW region features: ``boxes [T, M, 4]``, ``features [T, M, F]`` and optional
  ``labels [T, M]``, ``scores [T, M]`` (missing labels -> -1, missing scores -> 1; rows whose box is
  all zeros are padding and dropped).
``depth`` (``.npy`` or ``.npz`` with key ``depth``): float [T, H, W], larger = farther.
``flow`` (``.npy`` or ``.npz`` with key ``flow``): float [T, H, W, 2] forward flow t -> t+1 in
  pixels.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Protocol

import cv2
import numpy as np

from asmp_jax import safe_io


class ProviderError(ValueError):
  """A provider's input file is missing or not in the documented format."""


@dataclasses.dataclass
class Detections:
  """Detections over a whole clip, flat over frames.

  Attributes:
    frame: int32 [D] frame index of each detection.
    box: float32 [D, 4] (x0, y0, x1, y1) in pixels.
    label: int32 [D] class id in the data set's class list (-1 unknown).
    score: float32 [D] detector confidence in [0, 1].
    feature: optional float32 [D, F] detector region features (precomputed extractor only).
    track: optional int32 [D] identity of the object (synthetic ground truth; -1 false positive).
  """
  frame: np.ndarray
  box: np.ndarray
  label: np.ndarray
  score: np.ndarray
  feature: np.ndarray | None = None
  track: np.ndarray | None = None

  def __post_init__(self):
    self.frame = np.asarray(self.frame, np.int32).reshape(-1)
    self.box = np.asarray(self.box, np.float32).reshape(-1, 4)
    self.label = np.asarray(self.label, np.int32).reshape(-1)
    self.score = np.asarray(self.score, np.float32).reshape(-1)
    n = len(self.frame)
    for name in ("box", "label", "score"):
      if len(getattr(self, name)) != n:
        raise ProviderError(f"detections: {name} has {len(getattr(self, name))} rows, "
                            f"frame has {n}")
    if self.feature is not None:
      feature = np.asarray(self.feature, np.float32)
      # reshape(0, -1) is ambiguous: an empty [0, F] array keeps its F.
      self.feature = (feature.reshape(n, -1) if n or feature.ndim != 2 else feature)
    if self.track is not None:
      self.track = np.asarray(self.track, np.int32).reshape(n)

  def __len__(self) -> int:
    return len(self.frame)

  def select(self, idx: np.ndarray) -> "Detections":
    return Detections(self.frame[idx], self.box[idx], self.label[idx], self.score[idx],
                      None if self.feature is None else self.feature[idx],
                      None if self.track is None else self.track[idx])


class Provider(Protocol):
  """What the preprocessing needs besides the frames themselves."""

  def detections(self) -> Detections:
    ...

  def depth(self, frames: np.ndarray) -> np.ndarray:
    """float32 [T, H, W] pseudo-depth for uint8 frames [T, H, W, 3]."""
    ...

  def flow(self, frames: np.ndarray) -> np.ndarray:
    """float32 [T, H, W, 2] forward optical flow t -> t+1 (last frame zeros)."""
    ...


def is_frame_model(obj) -> bool:
  """Whether ``obj`` is a learned provider (asmp_jax.vision) that computes its output from the
  frames (``detect(frames)``, ``depth(frames)`` or ``flow(frames)``) and describes itself with
  ``record()`` (name and weight sha256)."""
  return callable(getattr(obj, "record", None)) and any(
      callable(getattr(obj, m, None)) for m in ("detect", "depth", "flow"))


def flat_depth(frames: np.ndarray, value: float = 1.0) -> np.ndarray:
  """Constant depth: the documented fallback when no depth model or file is available."""
  t, h, w = np.asarray(frames).shape[:3]
  return np.full((t, h, w), value, np.float32)


def opencv_flow(frames: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
  """Dense forward flow between consecutive frames with OpenCV's DIS optical flow.

  Args:
    frames: uint8 [T, H, W, 3] RGB.
  Returns:
    float32 [T, H, W, 2] (dx, dy) in pixels from frame t to t+1; the last frame is zeros.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
  dis = cv2.DISOpticalFlow_create(preset)
  gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
  out = np.zeros(frames.shape[:3] + (2,), np.float32)
  for t in range(len(frames) - 1):
    out[t] = dis.calc(gray[t], gray[t + 1], None)
  return out


class SyntheticOracle:
  """Ground truth of a synthetic clip, read from its sidecar (``<id>.json`` + ``<id>.npz``).

  Args:
    sidecar: path of the clip's ``.json`` or ``.npz`` (the other one must sit beside it).
    detections: "noisy" (the simulated detector's output stored by the generator: jittered boxes,
      misses, false positives) or "exact" (ground-truth boxes of every visible object, score 1).
    flow: "sidecar" (exact flow) or "opencv" (DIS flow from the decoded frames).
    depth: "sidecar" (exact depth) or "flat".
  """

  def __init__(self, sidecar: str, detections: str = "noisy", flow: str = "sidecar",
               depth: str = "sidecar"):
    base, _ = os.path.splitext(sidecar)
    self.json_path, self.npz_path = base + ".json", base + ".npz"
    for p in (self.json_path, self.npz_path):
      if not os.path.exists(p):
        raise ProviderError(f"{p}: synthetic sidecar file not found")
    if detections not in ("noisy", "exact"):
      raise ValueError(f"detections must be 'noisy' or 'exact', got {detections!r}")
    if flow not in ("sidecar", "opencv"):
      raise ValueError(f"flow must be 'sidecar' or 'opencv', got {flow!r}")
    if depth not in ("sidecar", "flat"):
      raise ValueError(f"depth must be 'sidecar' or 'flat', got {depth!r}")
    self.mode, self.flow_mode, self.depth_mode = detections, flow, depth
    try:
      with open(self.json_path) as f:
        self.meta = json.load(f)
      self._npz = dict(np.load(self.npz_path))
    except (OSError, ValueError, json.JSONDecodeError) as e:
      raise ProviderError(f"{base}: unreadable synthetic sidecar ({e})") from e

  def _array(self, key: str) -> np.ndarray:
    if key not in self._npz:
      raise ProviderError(f"{self.npz_path}: missing array {key!r} (see docs/synthetic.md)")
    return self._npz[key]

  def detections(self) -> Detections:
    if self.mode == "noisy":
      return Detections(self._array("det_frame"), self._array("det_box"), self._array("det_class"),
                        self._array("det_score"), track=self._array("det_track"))
    boxes, visible = self._array("boxes"), self._array("visible").astype(bool)
    t_idx, o_idx = np.nonzero(visible)
    class_ids = np.array([o["class_id"] for o in self.meta["objects"]], np.int32)
    return Detections(t_idx, boxes[t_idx, o_idx], class_ids[o_idx], np.ones(len(t_idx)),
                      track=o_idx)

  def depth(self, frames: np.ndarray) -> np.ndarray:
    if self.depth_mode == "flat":
      return flat_depth(frames)
    return self._array("depth").astype(np.float32)

  def flow(self, frames: np.ndarray) -> np.ndarray:
    if self.flow_mode == "opencv":
      return opencv_flow(frames)
    return self._array("flow").astype(np.float32)


def _load_array(path: str, key: str) -> np.ndarray:
  if not os.path.exists(path):
    raise ProviderError(f"{path}: {key} file not found")
  try:
    arr = safe_io.np_load(path)
  except safe_io.SafeLoadError as e:
    raise ProviderError(f"{path}: not a readable .npy/.npz {key} file ({e.reason})") from e
  if isinstance(arr, dict):
    if key not in arr:
      raise ProviderError(f"{path}: expected an array named {key!r}, found {sorted(arr.keys())}")
    arr = arr[key]
  return np.asarray(arr, np.float32)


def load_detections(path: str) -> Detections:
  """Reads a detections file in either documented layout (module docstring)."""
  if not os.path.exists(path):
    raise ProviderError(f"{path}: detections file not found")
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext in (".h5", ".hdf5"):
      import h5py  # pylint: disable=g-import-not-at-top
      with h5py.File(path, "r") as f:
        data = {k: np.asarray(f[k]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    elif ext == ".npz":
      data = dict(np.load(path))
    else:
      raise ProviderError(f"{path}: detections must be .h5/.hdf5 or .npz, got {ext!r}")
  except ProviderError:
    raise
  except Exception as e:  # h5py/numpy raise many types for corrupt files
    raise ProviderError(f"{path}: unreadable detections file ({e})") from e
  if "frame" in data and "box" in data:
    n = len(data["frame"])
    return Detections(data["frame"], data["box"], data.get("label", np.full(n, -1)),
                      data.get("score", np.ones(n)), data.get("feature"))
  if "boxes" in data:
    boxes = np.asarray(data["boxes"], np.float32)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
      raise ProviderError(f"{path}: 'boxes' must be [T, M, 4], got {boxes.shape}")
    t, m = boxes.shape[:2]
    labels = np.asarray(data.get("labels", np.full((t, m), -1)))
    scores = np.asarray(data.get("scores", np.ones((t, m))))
    feats = data.get("features")
    if feats is not None and tuple(feats.shape[:2]) != (t, m):
      raise ProviderError(f"{path}: 'features' must be [T, M, F] matching boxes {boxes.shape}")
    keep = np.abs(boxes).sum(-1) > 0
    ti, mi = np.nonzero(keep)
    return Detections(ti, boxes[ti, mi], labels[ti, mi], scores[ti, mi],
                      None if feats is None else np.asarray(feats)[ti, mi])
  raise ProviderError(f"{path}: expected arrays (frame, box, label, score[, feature]) or "
                      f"(boxes, features[, labels, scores]); found {sorted(data)}")


class PrecomputedFiles:
  """Detections, depth and flow from files computed elsewhere (formats in the module docstring).

  ``depth_path=None`` falls back to :func:`flat_depth`, ``flow_path=None`` to :func:`opencv_flow`.
  """

  def __init__(self, detections_path: str, depth_path: str | None = None,
               flow_path: str | None = None):
    self.detections_path, self.depth_path, self.flow_path = detections_path, depth_path, flow_path

  def detections(self) -> Detections:
    return load_detections(self.detections_path)

  def depth(self, frames: np.ndarray) -> np.ndarray:
    if self.depth_path is None:
      return flat_depth(frames)
    depth = _load_array(self.depth_path, "depth")
    if depth.shape != np.asarray(frames).shape[:3]:
      raise ProviderError(f"{self.depth_path}: depth {depth.shape} does not match frames "
                          f"{np.asarray(frames).shape[:3]}")
    return depth

  def flow(self, frames: np.ndarray) -> np.ndarray:
    if self.flow_path is None:
      return opencv_flow(frames)
    flow = _load_array(self.flow_path, "flow")
    if flow.shape != np.asarray(frames).shape[:3] + (2,):
      raise ProviderError(f"{self.flow_path}: flow {flow.shape} does not match frames "
                          f"{np.asarray(frames).shape[:3]} x 2")
    return flow
