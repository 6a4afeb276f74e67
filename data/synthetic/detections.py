"""Simulated object-detector output: noisy versions of the exact boxes plus false positives.

The default preprocessing computes appearance features from the pixels of the boxes; the simulated
``feature`` here (a noisy per-class prototype) is only for experiments that want a detector-like
embedding without running a network.
"""

from __future__ import annotations

import numpy as np

from asmp_data.synthetic import classes


def class_prototypes(dim: int) -> np.ndarray:
  """Fixed unit-norm ``[NUM_CLASSES, dim]`` prototype features (the same in every clip)."""
  rng = np.random.default_rng(np.random.SeedSequence(20221128, spawn_key=(dim,)))
  p = rng.standard_normal((classes.NUM_CLASSES, dim))
  return p / np.linalg.norm(p, axis=1, keepdims=True)


def simulate(rng: np.random.Generator, boxes: np.ndarray, visible: np.ndarray,
             class_ids: np.ndarray, width: int, height: int, box_jitter: float,
             miss_prob: float, false_positives: float, feature_dim: int,
             feature_noise: float) -> dict[str, np.ndarray]:
  """Detections for every frame, flattened over frames.

  Args:
    rng: random generator.
    boxes: float ``[T, O, 4]`` exact (x0, y0, x1, y1) pixel boxes.
    visible: bool ``[T, O]``.
    class_ids: int ``[O]`` class of each object.
    width, height: image size (boxes are clipped to it).
    box_jitter: corner noise standard deviation as a fraction of the box width/height.
    miss_prob: probability of missing a visible object.
    false_positives: Poisson mean of false positives per frame.
    feature_dim: size of ``det_feature``.
    feature_noise: standard deviation of the feature noise (true detections; doubled for false
      positives).

  Returns:
    dict with ``det_frame`` int32 ``[D]``, ``det_box`` float32 ``[D, 4]``, ``det_class`` int32
    ``[D]``, ``det_score`` float32 ``[D]``, ``det_track`` int32 ``[D]`` (-1 = false positive) and
    ``det_feature`` float32 ``[D, feature_dim]``, sorted by frame then descending score.
  """
  num_frames, num_objects = visible.shape
  # True positives.
  wh = np.concatenate([boxes[..., 2:] - boxes[..., :2]] * 2, axis=-1)  # [T, O, 4] (w, h, w, h)
  noisy = boxes + rng.normal(0.0, 1.0, boxes.shape) * box_jitter * wh
  hit = visible & (rng.random(visible.shape) >= miss_prob)
  frame_t, track_t = np.nonzero(hit)
  box_t = noisy[frame_t, track_t]
  score_t = 0.55 + 0.44 * rng.beta(4.0, 1.5, frame_t.shape[0])
  class_t = class_ids[track_t]
  # False positives: random boxes with random classes and low scores.
  count = rng.poisson(false_positives, num_frames)
  frame_f = np.repeat(np.arange(num_frames), count)
  n_f = frame_f.shape[0]
  size = rng.uniform(0.08, 0.4, (n_f, 2)) * np.array([width, height])
  centre = rng.uniform(0.0, 1.0, (n_f, 2)) * np.array([width, height])
  box_f = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
  class_f = rng.integers(0, classes.NUM_CLASSES, n_f)
  score_f = rng.uniform(0.05, 0.6, n_f)

  frame = np.concatenate([frame_t, frame_f])
  box = np.concatenate([box_t.reshape(-1, 4), box_f])
  box[:, 0::2] = np.clip(box[:, 0::2], 0, width)
  box[:, 1::2] = np.clip(box[:, 1::2], 0, height)
  # Keep boxes at least one pixel wide/high after jitter and clipping.
  box[:, 2] = np.maximum(box[:, 2], np.minimum(box[:, 0] + 1, width))
  box[:, 0] = np.minimum(box[:, 0], box[:, 2] - 1)
  box[:, 3] = np.maximum(box[:, 3], np.minimum(box[:, 1] + 1, height))
  box[:, 1] = np.minimum(box[:, 1], box[:, 3] - 1)
  cls = np.concatenate([class_t, class_f]).astype(np.int32)
  score = np.concatenate([score_t, score_f])
  track = np.concatenate([track_t, np.full(n_f, -1)]).astype(np.int32)
  noise = np.where((track >= 0)[:, None], feature_noise, 2 * feature_noise)
  feature = (class_prototypes(feature_dim)[cls]
             + rng.standard_normal((cls.shape[0], feature_dim)) * noise)
  order = np.lexsort((-score, frame))
  return {
      "det_frame": frame[order].astype(np.int32),
      "det_box": box[order].astype(np.float32),
      "det_class": cls[order],
      "det_score": score[order].astype(np.float32),
      "det_track": track[order],
      "det_feature": feature[order].astype(np.float32),
  }
