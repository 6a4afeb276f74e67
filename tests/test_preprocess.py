"""One clip -> per-window graphs and motion labels (asmp_jax.preprocess), on hand-made clips."""
import numpy as np
import pytest

from asmp_jax import preprocess
from asmp_jax.graph import motion
from asmp_jax.graph.providers import Detections

T, H, W = 16, 64, 64  # two windows of 8 frames
AUD = np.array([0, 1, 2])  # auditory class ids; 5 = a context class


def _clip(shift_px=0.0):
  rng = np.random.default_rng(0)
  tex = (rng.uniform(size=(H, W + 40, 3)) * 255).astype(np.uint8)
  frames = np.stack([tex[:, :W] for _ in range(T)])
  depth = np.full((T, H, W), 4.0, np.float32)
  flow = np.zeros((T, H, W, 2), np.float32)
  flow[:-1, 10:30, 10:30, 0] = shift_px  # the box region moves right
  return frames, depth, flow


def _dets(frames_with=range(T)):
  rows = []
  for f in frames_with:
    rows.append((f, [10, 10, 30, 30], 1, 0.9))   # auditory source (class 1)
    rows.append((f, [20, 12, 40, 32], 5, 0.8))   # context: overlaps it
    rows.append((f, [50, 50, 60, 60], 5, 0.8))   # far away: not context
  f, b, l, s = zip(*rows) if rows else ((), np.zeros((0, 4)), (), ())
  return Detections(np.array(f), np.array(b, np.float32), np.array(l), np.array(s))


CFG = preprocess.PreprocessConfig(window_frames=8, num_windows=2, rectify=False,
                                  no_motion_thresholds=(0.02, 0.02, 0.1))


def test_layout_masks_and_labels():
  frames, depth, flow = _clip(shift_px=1.0)  # 7 px over the window: 0.11 of the width
  ex = preprocess.preprocess_clip(frames, np.zeros(100, np.float32) + 0.1, _dets(), depth, flow,
                                  AUD, CFG, num_samples=120)
  assert ex["audio"].shape == (120,) and ex["audio"].dtype == np.int16
  np.testing.assert_array_equal(ex["source_class"], [1, -1])  # classifier index of class 1
  n = preprocess.MAX_NODES
  for w in range(2):
    mask = ex["node_mask"][w]
    assert mask[0] and not mask[1]  # source 0 present, no second source
    assert mask[2] and not mask[3:n - 1].any()  # exactly one context node
    assert mask[n - 1]  # background
    adj = ex["adjacency"][w].astype(np.float32)
    np.testing.assert_allclose(adj, adj.T, atol=1e-3)
    assert (adj[np.ix_(mask, mask)][~np.eye(mask.sum(), dtype=bool)] > 0).all()
    assert not adj[~mask].any() and not adj[:, ~mask].any()
    assert ex["node_features"][w, 0].any() and not ex["node_features"][w, 1].any()
  # Rightward motion in the image with no depth change -> octant with dx > 0, and the first
  # window's displacement is the 7-pixel shift.
  np.testing.assert_allclose(ex["displacement"][0, 0], [7 / W, 0, 0], atol=1e-3)
  assert ex["dir10"][0, 0] == motion.direction_class(np.array([7 / W, 0, 0]), 10,
                                                     thresholds=CFG.no_motion_thresholds)
  assert ex["dir10"][0, 1] == -1 and np.isnan(ex["displacement"][0, 1]).all()


def test_still_object_is_no_motion():
  frames, depth, flow = _clip(shift_px=0.0)
  ex = preprocess.preprocess_clip(frames, np.ones(50, np.float32) * 0.1, _dets(), depth, flow, AUD,
                                  CFG)
  assert ex["dir10"][0, 0] == motion.NO_MOTION_CLASS(10)
  assert ex["dir28"][0, 0] == motion.NO_MOTION_CLASS(28)


def test_zero_detections_gives_background_only_graph():
  frames, depth, flow = _clip()
  ex = preprocess.preprocess_clip(frames, np.ones(50, np.float32) * 0.1, _dets(frames_with=[]),
                                  depth, flow, AUD, CFG)
  assert ex["node_mask"].sum() == 2 and ex["node_mask"][:, -1].all()  # background node per window
  assert not ex["adjacency"].any()
  np.testing.assert_array_equal(ex["source_class"], [-1, -1])
  assert (ex["dir10"] == -1).all()


def test_source_missed_in_reference_frame_uses_nearest_frame():
  frames, depth, flow = _clip()
  ex = preprocess.preprocess_clip(frames, np.ones(50, np.float32) * 0.1,
                                  _dets(frames_with=[3, 11]), depth, flow, AUD, CFG)
  assert ex["source_present"][:, 0].all()


def test_box_outside_frame_and_bad_inputs():
  frames, depth, flow = _clip()
  dets = Detections(np.array([0, 8]), np.array([[500, 500, 520, 520], [10, 10, 30, 30]],
                                                np.float32), np.array([1, 1]), np.array([0.9, 0.9]))
  ex = preprocess.preprocess_clip(frames, np.ones(50, np.float32) * 0.1, dets, depth, flow,
                                  AUD, CFG)
  assert np.isnan(ex["displacement"][0, 0]).all() and ex["dir10"][0, 0] == -1  # unknown, no crash
  assert ex["dir10"][1, 0] >= 0
  with pytest.raises(preprocess.PreprocessError, match="no audio"):
    preprocess.preprocess_clip(frames, np.zeros(0), dets, depth, flow, AUD, CFG)
  with pytest.raises(preprocess.PreprocessError, match="no video frames"):
    preprocess.preprocess_clip(frames[:0], np.ones(5), dets, depth[:0], flow[:0], AUD, CFG)
  with pytest.raises(preprocess.PreprocessError, match="do not match"):
    preprocess.preprocess_clip(frames, np.ones(5), dets, depth[:3], flow, AUD, CFG)
