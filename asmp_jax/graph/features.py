"""Appearance features of graph nodes, computed from the pixels inside each box.

The paper takes node features from its Faster R-CNN detector (2048-d region features). We need the
*same* extractor at training time and on a user's video, and nothing may download weights, so the
default is a fixed descriptor that needs no learned parameters:

``hog_color`` (400-d, float32), for a box resized to 32x32 RGB pixels:
  * HOG, 324-d (Dalal & Triggs layout, computed here in numpy because OpenCV 5 dropped
    ``HOGDescriptor``): unsigned gradient orientation in 9 bins over [0, 180) degrees with linear
    vote interpolation, 8x8-pixel cells, 2x2-cell blocks at a one-cell stride (3x3 blocks x 4 cells
    x 9 bins), L2-Hys block normalisation (clip 0.2);
  * colour, 72-d: HSV histogram with 8 hue x 3 saturation x 3 value bins, L1-normalised;
  * layout, 4-d: box centre and size as fractions of the frame (cx/W, cy/H, w/W, h/H).
  HOG sees the outline (and the heading cue of the synthetic objects), the histogram the colour.

``precomputed``: the detector features shipped with a data set (e.g. the 2048-d region features of
the authors' released ASIW files); the provider hands them over and this module only checks shapes.

``resnet18_crops`` (512-d, float32): each box's crop of the reference frame, resized to 224x224,
through a torchvision ResNet-18 globally average-pooled (Co-Separation's object features; the
weights are a local ``state_dict`` file, ``config.graph.crop_encoder_weights``; needs torch; see
:mod:`asmp_jax.vision.crops`).

Extractors are registered by name (:func:`register`); ``config.graph.feature_extractor`` picks one.

The extractor's name and output size are recorded in the data set and in the checkpoint's config;
inference refuses a checkpoint whose extractor differs from the one it is asked to use.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import cv2
import numpy as np

HOG_COLOR = "hog_color"
PRECOMPUTED = "precomputed"
RESNET18_CROPS = "resnet18_crops"
RESNET18_CROPS_DIM = 512  # ResNet-18 channels after global average pooling

_PATCH = 32
_HUE_BINS, _SAT_BINS, _VAL_BINS = 8, 3, 3
HOG_COLOR_DIM = 324 + _HUE_BINS * _SAT_BINS * _VAL_BINS + 4

_CELL = 8
_BINS = 9


def hog(gray: np.ndarray) -> np.ndarray:
  """HOG descriptors of a stack of grey patches.

  Args:
    gray: float [K, 32, 32] intensities.

  Returns:
    float32 [K, 324]: 3x3 blocks x (2x2 cells x 9 bins), each block L2-Hys normalised.
  """
  g = np.asarray(gray, np.float32)
  gx = np.zeros_like(g)
  gy = np.zeros_like(g)
  gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]  # centred differences, [-1, 0, 1]
  gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
  mag = np.hypot(gx, gy)
  ang = np.rad2deg(np.arctan2(gy, gx)) % 180.0
  pos = ang / (180.0 / _BINS) - 0.5  # bin centres at 10, 30, ... degrees
  lo = np.floor(pos).astype(np.int64)
  frac = pos - lo
  k, h, w = g.shape
  n_cells = h // _CELL
  cell_idx = (np.arange(h) // _CELL)[:, None] * n_cells + (np.arange(w) // _CELL)[None, :]
  hist = np.zeros((k, n_cells * n_cells, _BINS), np.float32)
  kk = np.broadcast_to(np.arange(k)[:, None, None], g.shape)
  cc = np.broadcast_to(cell_idx[None], g.shape)
  np.add.at(hist, (kk, cc, lo % _BINS), mag * (1.0 - frac))
  np.add.at(hist, (kk, cc, (lo + 1) % _BINS), mag * frac)
  hist = hist.reshape(k, n_cells, n_cells, _BINS)
  blocks = np.concatenate([hist[:, :-1, :-1], hist[:, :-1, 1:], hist[:, 1:, :-1], hist[:, 1:, 1:]],
                          axis=-1).reshape(k, (n_cells - 1) ** 2, 4 * _BINS)
  blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-6)
  blocks = np.minimum(blocks, 0.2)
  blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-6)
  return blocks.reshape(k, -1).astype(np.float32)


def crop_box(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
  """The pixels of ``box`` (x0, y0, x1, y1) clipped to ``frame``; None outside it or without area."""
  h, w = frame.shape[:2]
  x0, y0, x1, y1 = box
  x0 = int(np.clip(np.floor(x0), 0, w - 1))
  y0 = int(np.clip(np.floor(y0), 0, h - 1))
  x1 = int(np.clip(np.ceil(x1), x0 + 1, w))
  y1 = int(np.clip(np.ceil(y1), y0 + 1, h))
  if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0 and box[0] < w and box[1] < h):
    return None
  return frame[y0:y1, x0:x1]


def hog_color_features(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """``hog_color`` descriptors of ``boxes`` in one RGB frame.

  Args:
    frame: uint8 [H, W, 3] RGB.
    boxes: [K, 4] (x0, y0, x1, y1) in pixels; boxes are clipped to the frame.

  Returns:
    float32 [K, 400]. A box that lies entirely outside the frame (or has no area) gets zeros,
    which the graph marks like any other node; callers decide whether to keep such a node.
  """
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  h, w = frame.shape[:2]
  out = np.zeros((len(boxes), HOG_COLOR_DIM), np.float32)
  keep, patches, hists = [], [], []
  for k, box in enumerate(boxes):  # K <= 23 boxes per frame; resizing and histograms are OpenCV's.
    crop = crop_box(frame, box)
    if crop is None:
      continue
    patch = cv2.resize(crop, (_PATCH, _PATCH), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [_HUE_BINS, _SAT_BINS, _VAL_BINS],
                        [0, 180, 0, 256, 0, 256]).reshape(-1)
    hists.append(hist / max(hist.sum(), 1.0))
    patches.append(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY))
    keep.append(k)
  if not keep:
    return out
  keep = np.asarray(keep)
  clipped = np.clip(boxes[keep], 0, [w, h, w, h])
  layout = np.stack([(clipped[:, 0] + clipped[:, 2]) / (2 * w),
                     (clipped[:, 1] + clipped[:, 3]) / (2 * h),
                     (clipped[:, 2] - clipped[:, 0]) / w, (clipped[:, 3] - clipped[:, 1]) / h], -1)
  out[keep] = np.concatenate([hog(np.stack(patches) / 255.0), np.stack(hists), layout], -1)
  return out


def _precomputed(frame, boxes, precomputed, weights):
  del frame, weights
  if precomputed is None:
    raise ValueError("feature extractor 'precomputed' chosen but the provider has no features "
                     "for these detections")
  precomputed = np.asarray(precomputed, np.float32)
  if precomputed.shape[0] != np.asarray(boxes).reshape(-1, 4).shape[0]:
    raise ValueError(f"{precomputed.shape[0]} precomputed features for "
                     f"{np.asarray(boxes).reshape(-1, 4).shape[0]} boxes")
  return precomputed


def _precomputed_dim(precomputed_dim):
  if not precomputed_dim:
    raise ValueError("feature extractor 'precomputed' needs the data set's feature size")
  return int(precomputed_dim)


def _resnet18_crops_unloaded(frame, boxes, precomputed, weights):
  del frame, boxes, precomputed, weights
  raise ValueError("feature extractor 'resnet18_crops' is provided by asmp_jax.vision.crops, "
                   "which registers it when imported (preprocess.PreprocessConfig does)")


@dataclasses.dataclass(frozen=True)
class Extractor:
  """A node-feature extractor.

  Attributes:
    dim: ``precomputed_dim -> int``, the size of its feature vector.
    extract: ``(frame, boxes, precomputed, weights) -> float32 [K, dim]``.
  """
  dim: Callable[[int | None], int]
  extract: Callable[..., np.ndarray]


_REGISTRY: dict[str, Extractor] = {}


def register(name: str, extractor: Extractor) -> None:
  """Makes ``extractor`` selectable as ``config.graph.feature_extractor = name``."""
  _REGISTRY[name] = extractor


register(HOG_COLOR, Extractor(lambda _: HOG_COLOR_DIM,
                              lambda frame, boxes, *_: hog_color_features(frame, boxes)))
register(PRECOMPUTED, Extractor(_precomputed_dim, _precomputed))
# Its feature size is known here; its torch code registers itself from asmp_jax.vision.crops.
register(RESNET18_CROPS, Extractor(lambda _: RESNET18_CROPS_DIM, _resnet18_crops_unloaded))
EXTRACTORS = tuple(_REGISTRY)


def _get(name: str) -> Extractor:
  if name not in _REGISTRY:
    raise ValueError(f"unknown feature extractor {name!r}; expected one of {tuple(_REGISTRY)}")
  return _REGISTRY[name]


def feature_dim(name: str, precomputed_dim: int | None = None) -> int:
  """Size of the feature vector produced by extractor ``name``."""
  return _get(name).dim(precomputed_dim)


def extract(name: str, frame: np.ndarray, boxes: np.ndarray,
            precomputed: np.ndarray | None = None, weights: str | None = None) -> np.ndarray:
  """Features of ``boxes`` in ``frame`` with extractor ``name`` (see module docstring).

  Args:
    precomputed: the detector's features of ``boxes`` (``precomputed`` only).
    weights: the extractor's weight file (``resnet18_crops``: ``config.graph.crop_encoder_weights``).
  """
  return _get(name).extract(frame, boxes, precomputed, weights)
