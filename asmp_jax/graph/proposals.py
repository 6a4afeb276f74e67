"""Motion-based box proposals: the detector fallback when no detections file is given.

The paper's detector (Faster R-CNN) needs weights that nothing here may download. Without a
detections file, inference (asmp_jax.inference) proposes objects from optical flow instead:

1. **Camera motion.** A similarity motion ``p -> s R p + t`` (pan, zoom, in-plane rotation) is
   fitted to each frame's flow by trimmed least squares on a pixel grid
   (:func:`fit_camera_motion`): fit, keep the ``keep_fraction`` best-fitting points, refit.
   Objects covering less than about ``1 - keep_fraction`` of the frame do not bias it. The fitted
   motion is subtracted (:func:`residual_flow`).
2. **Moving pixels.** A pixel moves when its residual flow magnitude exceeds
   ``max(min_magnitude_px, relative_threshold * median residual magnitude of the frame)``; the mask
   is cleaned with a morphological opening and closing (OpenCV).
3. **Boxes.** Connected components of at least ``min_area_fraction`` of the frame become boxes
   (:func:`motion_proposals`), scored by how far their mean residual motion exceeds the threshold:
   ``score = m / (m + threshold)`` with ``m`` the component's mean residual magnitude, so a box
   just above the threshold scores ~0.5 and a fast object approaches 1.
4. **Tracks.** Boxes of nearby frames are linked greedily by their overlap, the intersection over
   the smaller box's area (:func:`link_tracks`; IoU would break a track whenever a box grows or
   shrinks with the motion boundary).

Class ids (what the preprocessing needs): ``asmp_jax.preprocess`` picks a clip's auditory sources
as the (up to 2) *auditory class ids* with the highest summed detection score, and every window's
auditory node is the best box of that class. A proposal has no class, so each **track gets its own
pseudo-class id, its track index** (``label == track``): the source selection then picks the two
tracks with the most (and strongest) motion as two distinct sources, and the remaining tracks can
only be context nodes. The inference code passes the chosen track ids as the auditory class ids and
names these sources ``"unknown"`` (the data set's class names do not apply to them).

What to expect: only objects that move relative to the camera are found; a sound source that
stands still (a violin on a chair) gets no node, and its sound can only go to the background slot.
Boxes follow motion boundaries, so two objects moving together merge into one box.
"""

from __future__ import annotations

import cv2
import numpy as np

from asmp_jax.graph import build as graph_build
from asmp_jax.graph.providers import Detections

UNKNOWN_CLASS_NAME = "unknown"


def _check_flow(flow: np.ndarray) -> np.ndarray:
  flow = np.asarray(flow, np.float32)
  if flow.ndim != 4 or flow.shape[-1] != 2:
    raise ValueError(f"flow: expected [T, H, W, 2], got shape {flow.shape}")
  return flow


def fit_camera_motion(flow: np.ndarray, step: int = 4, keep_fraction: float = 0.6,
                      iterations: int = 3) -> np.ndarray:
  """Trimmed least-squares similarity motion of each frame's flow.

  The model is ``p + f(p) = [[a, -b], [b, a]] p + (tx, ty)`` with ``p = (x, y)`` in pixels.

  Args:
    flow: float [T, H, W, 2] forward flow (x, y) in pixels.
    step: grid spacing (pixels) of the points used in the fit.
    keep_fraction: fraction of points (smallest residuals) kept in each refit.
    iterations: number of refits after the first fit.

  Returns:
    float64 [T, 4] parameters ``(a, b, tx, ty)`` per frame (``(1, 0, 0, 0)`` is no camera motion).
  """
  flow = _check_flow(flow)
  if not 0.0 < keep_fraction <= 1.0:
    raise ValueError(f"keep_fraction: expected a value in (0, 1], got {keep_fraction}")
  t, h, w = flow.shape[:3]
  ys, xs = np.mgrid[0:h:step, 0:w:step].astype(np.float64)
  x, y = xs.reshape(-1), ys.reshape(-1)
  f = flow[:, ::step, ::step].reshape(t, -1, 2).astype(np.float64)  # [T, P, 2]
  # Rows of the design matrix for the x and y equations, stacked: [2P, 4].
  ones, zeros = np.ones_like(x), np.zeros_like(x)
  design = np.concatenate([np.stack([x, -y, ones, zeros], -1), np.stack([y, x, zeros, ones], -1)])
  target = np.concatenate([x[None] + f[..., 0], y[None] + f[..., 1]], axis=1)  # [T, 2P]
  weights = np.ones((t, len(x)))
  params = np.zeros((t, 4))
  for _ in range(iterations + 1):
    wt = np.concatenate([weights, weights], axis=1)  # [T, 2P]
    normal = np.einsum("tp,pi,pj->tij", wt, design, design) + 1e-9 * np.eye(4)
    rhs = np.einsum("tp,pi,tp->ti", wt, design, target)
    params = np.linalg.solve(normal, rhs[..., None])[..., 0]
    pred = params @ design.T  # [T, 2P]
    err = np.hypot(*(np.split(pred - target, 2, axis=1)))  # [T, P]
    cut = np.quantile(err, keep_fraction, axis=1, keepdims=True)
    weights = (err <= cut).astype(np.float64)
  return params


def residual_flow(flow: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
  """Flow minus the fitted camera motion (:func:`fit_camera_motion`), float32 [T, H, W, 2]."""
  flow = _check_flow(flow)
  if params is None:
    params = fit_camera_motion(flow)
  t, h, w = flow.shape[:3]
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  a, b, tx, ty = (np.asarray(params, np.float32)[:, k, None, None] for k in range(4))
  cam_x = a * xs - b * ys + tx - xs
  cam_y = b * xs + a * ys + ty - ys
  return flow - np.stack([cam_x, cam_y], axis=-1)


def motion_proposals(flow: np.ndarray, *, min_magnitude_px: float = 0.75,
                     relative_threshold: float = 3.0, min_area_fraction: float = 0.003,
                     max_per_frame: int = 8, frame_offset: int = 0) -> Detections:
  """Boxes around independently moving regions of every frame (module docstring, steps 1-3).

  Args:
    flow: float [T, H, W, 2] forward flow t -> t+1 in pixels (the last frame may be zeros).
    min_magnitude_px: absolute floor of the motion threshold, pixels per frame.
    relative_threshold: the threshold is at least this many times the frame's median residual
      magnitude (robust to a flow field that is noisy everywhere).
    min_area_fraction: smallest component kept, as a fraction of the frame area.
    max_per_frame: keep at most this many boxes per frame (largest score first).
    frame_offset: added to the frame indices (for flows computed in chunks).

  Returns:
    Detections with ``label == -1`` (no class yet; see :func:`link_tracks`), boxes in pixels,
    scores in (0.5, 1).
  """
  flow = _check_flow(flow)
  t, h, w = flow.shape[:3]
  mag = np.linalg.norm(residual_flow(flow), axis=-1)  # [T, H, W]
  thr = np.maximum(min_magnitude_px, relative_threshold * np.median(mag.reshape(t, -1), axis=1))
  moving = (mag > thr[:, None, None]).astype(np.uint8)
  kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
  min_area = max(1, int(np.ceil(min_area_fraction * h * w)))
  frames, boxes, scores = [], [], []
  for k in range(t):  # per-frame image operations (OpenCV); pixels are never looped over
    mask = cv2.morphologyEx(moving[k], cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
      continue
    comp = np.arange(1, n)
    area = stats[1:, cv2.CC_STAT_AREA]
    keep = comp[area >= min_area]
    if not len(keep):
      continue
    sums = np.bincount(labels.reshape(-1), weights=mag[k].reshape(-1), minlength=n)
    mean_mag = sums[keep] / stats[keep, cv2.CC_STAT_AREA]
    score = mean_mag / (mean_mag + thr[k])
    order = np.argsort(-score, kind="stable")[:max_per_frame]
    keep, score = keep[order], score[order]
    x0, y0 = stats[keep, cv2.CC_STAT_LEFT], stats[keep, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[keep, cv2.CC_STAT_WIDTH], y0 + stats[keep, cv2.CC_STAT_HEIGHT]
    frames.append(np.full(len(keep), k + frame_offset))
    boxes.append(np.stack([x0, y0, x1, y1], -1))
    scores.append(score)
  if not frames:
    return Detections(np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
  frame = np.concatenate(frames)
  return Detections(frame, np.concatenate(boxes), np.full(len(frame), -1), np.concatenate(scores))


def overlap_fraction(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """float64 [A, B]: intersection area over the smaller of the two boxes' areas (0 if empty)."""
  inter = graph_build.intersection_area(boxes_a, boxes_b)
  smaller = np.minimum(graph_build.box_area(np.asarray(boxes_a).reshape(-1, 4))[:, None],
                       graph_build.box_area(np.asarray(boxes_b).reshape(-1, 4))[None, :])
  return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def link_tracks(dets: Detections, min_overlap: float = 0.3, max_gap: int = 8) -> Detections:
  """Links boxes into tracks and gives each track its own pseudo-class id (module docstring).

  Frames are visited in order; each box joins the track whose last box (seen at most ``max_gap``
  frames before) overlaps it most (:func:`overlap_fraction` > ``min_overlap``), matched greedily,
  or starts a new track. Track ids are then renumbered by total score, best first (track 0 is the
  most confidently moving object).

  Returns:
    The detections sorted by frame, with ``track`` and ``label`` both set to the track id.
  """
  order = np.argsort(dets.frame, kind="stable")
  dets = dets.select(order)
  track = np.full(len(dets), -1, np.int64)
  last_box = np.zeros((0, 4))
  last_frame = np.zeros(0, np.int64)
  for f in np.unique(dets.frame):
    idx = np.flatnonzero(dets.frame == f)
    alive = np.flatnonzero(f - last_frame <= max_gap)
    if len(alive):
      overlap = overlap_fraction(dets.box[idx], last_box[alive])  # [boxes, alive tracks]
      while overlap.size and overlap.max() > min_overlap:
        i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
        track[idx[i]] = alive[j]
        overlap[i, :] = -1.0
        overlap[:, j] = -1.0
    new = idx[track[idx] < 0]
    track[new] = len(last_box) + np.arange(len(new))
    last_box = np.concatenate([last_box, np.zeros((len(new), 4))])
    last_frame = np.concatenate([last_frame, np.zeros(len(new), np.int64)])
    last_box[track[idx]] = dets.box[idx]
    last_frame[track[idx]] = f
  if len(track):
    totals = np.bincount(track, weights=dets.score)
    rank = np.empty(len(totals), np.int64)
    rank[np.argsort(-totals, kind="stable")] = np.arange(len(totals))
    track = rank[track]
  return Detections(dets.frame, dets.box, track, dets.score, dets.feature, track)


def propose(flow: np.ndarray, **kwargs) -> Detections:
  """:func:`motion_proposals` then :func:`link_tracks`: labelled proposals for a whole clip."""
  return link_tracks(motion_proposals(flow, **kwargs))
