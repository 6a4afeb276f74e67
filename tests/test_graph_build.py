"""Tests for asmp_jax.graph.build: IoU, context, background crop, graphs and padding."""

import numpy as np
import pytest

from asmp_jax import graph
from asmp_jax.graph import build
from asmp_jax.graph import geometry

# ------------------------------------------------------------------------------ IoU


def test_iou_hand_computed():
  a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], float)
  b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [1, 1, 3, 3], [3, 3, 3, 8]],
               float)
  out = graph.iou(a, b)
  assert out.shape == (2, 5)
  np.testing.assert_allclose(out[0], [1.0, 50 / 150, 0.0, 4 / 100, 0.0])
  np.testing.assert_allclose(out[1], [4 / 100, 0.0, 0.0, 1 / 7, 0.0])
  # Symmetry and brute force on random boxes.
  rng = np.random.default_rng(0)
  xy = rng.random((12, 2)) * 50
  boxes = np.concatenate([xy, xy + rng.random((12, 2)) * 30 + 1], axis=1)
  m = graph.iou(boxes, boxes)
  np.testing.assert_allclose(m, m.T)
  np.testing.assert_allclose(np.diag(m), 1.0)
  for i in range(12):
    for j in range(12):
      iw = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
      ih = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
      area = lambda bx: (bx[2] - bx[0]) * (bx[3] - bx[1])
      ref = iw * ih / (area(boxes[i]) + area(boxes[j]) - iw * ih)
      assert m[i, j] == pytest.approx(ref)
  assert graph.iou(np.zeros((0, 4)), b).shape == (0, 5)


# ------------------------------------------------------------------------------ context


def test_select_context_threshold_score_and_count():
  aud = np.array([[0, 0, 10, 10]], float)
  det = np.array([
      [0, 0, 10, 10],    # 0: the auditory object itself
      [5, 0, 15, 10],    # 1: IoU 1/3, score .9
      [9, 0, 19, 10],    # 2: IoU 10/190 ~ 0.053 < 0.1
      [0, 0, 10, 10],    # 3: IoU 1, score 0.4 (not > 0.4)
      [2, 2, 8, 8],      # 4: IoU 0.36, score 0.95
      [50, 50, 60, 60],  # 5: no overlap
      [0, 0, 11, 10],    # 6: IoU 10/11, score 0.5
  ], float)
  scores = np.array([0.99, 0.9, 0.99, 0.4, 0.95, 0.99, 0.5])
  is_aud = np.array([True, False, False, False, False, False, False])
  idx = graph.select_context(aud, det, scores, is_aud)
  assert idx.tolist() == [4, 1, 6]
  assert graph.select_context(aud, det, scores, is_aud, max_context=2).tolist() == [4, 1]
  assert graph.select_context(aud, det, scores, is_aud, min_score=-np.inf).tolist() == [4, 1, 6,
                                                                                         3]
  assert graph.select_context(aud, det, scores, is_aud, iou_threshold=0.05).tolist() == [2, 4, 1,
                                                                                          6]
  assert graph.select_context(np.zeros((0, 4)), det, scores, is_aud).size == 0


def test_select_context_any_auditory_object_and_cap_of_20():
  rng = np.random.default_rng(1)
  aud = np.array([[0, 0, 20, 20], [100, 100, 120, 120]], float)
  jitter = rng.random((30, 4)) * 2
  det = np.concatenate([np.tile(aud[0], (15, 1)) + jitter[:15], np.tile(aud[1], (15, 1))
                        + jitter[15:]])
  scores = rng.uniform(0.5, 1.0, 30)
  idx = graph.select_context(aud, det, scores, np.zeros(30, bool))
  assert len(idx) == 20
  np.testing.assert_array_equal(idx, np.argsort(-scores, kind="stable")[:20])


def test_select_context_shape_mismatch_raises():
  with pytest.raises(ValueError, match="det_scores"):
    graph.select_context(np.zeros((1, 4)), np.zeros((3, 4)), np.zeros(2), np.zeros(3, bool))


# ------------------------------------------------------------------------------ background


@pytest.mark.parametrize("seed", range(5))
def test_background_box_overlaps_no_box(seed):
  rng = np.random.default_rng(seed)
  h, w = 90, 120
  xy = rng.random((4, 2)) * [w - 30, h - 30]
  boxes = np.concatenate([xy, xy + rng.uniform(10, 30, (4, 2))], axis=1)
  for r in (None, np.random.default_rng(seed)):
    bg = graph.background_box(boxes, h, w, size_frac=0.2, rng=r)
    assert bg.shape == (4,) and bg.dtype == np.float32
    assert bg[0] >= 0 and bg[1] >= 0 and bg[2] <= w and bg[3] <= h
    assert bg[2] - bg[0] == round(0.2 * w) and bg[3] - bg[1] == round(0.2 * h)
    np.testing.assert_array_equal(graph.iou(bg[None], boxes), 0.0)


def test_background_box_deterministic_choice_farthest_and_centre():
  # One box at the top-left: the farthest free crop is the bottom-right corner.
  bg = graph.background_box(np.array([[0, 0, 30, 20]], float), 80, 100, size_frac=0.25)
  np.testing.assert_array_equal(bg, [75, 60, 100, 80])
  # No boxes: centre crop.
  bg0 = graph.background_box(np.zeros((0, 4)), 80, 100, size_frac=0.5, grid=3)
  np.testing.assert_array_equal(bg0, [25, 20, 75, 60])


def test_background_box_full_frame_falls_back_to_least_overlap():
  boxes = np.array([[0, 0, 100, 80], [0, 0, 50, 40]], float)
  bg = graph.background_box(boxes, 80, 100, size_frac=0.25)
  overlap = build.intersection_area(bg[None], boxes).sum()
  area = 25 * 20
  assert overlap == area  # every crop overlaps the full-frame box; this one avoids the second
  assert graph.iou(bg[None], boxes[1:2])[0, 0] == 0.0


# ------------------------------------------------------------------------------ graphs


def _scene(seed=0, h=60, w=80):
  rng = np.random.default_rng(seed)
  depth = rng.uniform(1.0, 3.0, (h, w))
  aud = np.array([[5, 5, 30, 30], [40, 10, 70, 40]], float)
  ctx = np.array([[10, 20, 35, 50], [45, 30, 75, 55], [0, 0, 12, 12]], float)
  bg = graph.background_box(np.concatenate([aud, ctx]), h, w, size_frac=0.15)
  return depth, aud, ctx, bg


def _check_symmetric(g):
  pairs = set(zip(g["senders"].tolist(), g["receivers"].tolist(), g["edge_type"].tolist()))
  w = {(s, r, t): x for s, r, t, x in zip(g["senders"].tolist(), g["receivers"].tolist(),
                                          g["edge_type"].tolist(), g["edge_weight"].tolist())}
  for s, r, t in pairs:
    assert s != r
    assert (r, s, t) in pairs
    assert w[(s, r, t)] == w[(r, s, t)]


@pytest.mark.parametrize("rbf_mode", ["paper", "public"])
def test_chamfer_graph_structure_and_weights(rbf_mode):
  depth, aud, ctx, bg = _scene()
  g = graph.build_window_graph(depth, aud, ctx, bg, rbf_mode=rbf_mode)
  k = 2 + 3 + 1
  assert g["node_type"].tolist() == [0, 0, 1, 1, 1, 2]
  assert int(g["n_node"]) == k and int(g["n_edge"]) == k * (k - 1)
  np.testing.assert_array_equal(g["boxes"][-1], bg)
  assert g["senders"].dtype == np.int32 and g["edge_weight"].dtype == np.float32
  _check_symmetric(g)
  assert np.all((g["edge_weight"] > 0) & (g["edge_weight"] <= 1))
  # Weights are the RBF of the pairwise Chamfer distances of the nodes' point clouds.
  clouds = [geometry.box_points(depth, b) for b in g["boxes"]]
  cham = geometry.pairwise_chamfer(clouds)
  np.testing.assert_allclose(g["chamfer"], cham, rtol=1e-6)
  w = geometry.rbf_edge_weights(cham, mode=rbf_mode)
  np.testing.assert_allclose(g["edge_weight"], w[g["senders"], g["receivers"]], rtol=1e-6)
  # Closer nodes get larger weights.
  order_d = np.argsort(cham[g["senders"], g["receivers"]], kind="stable")
  assert np.all(np.diff(g["edge_weight"][order_d]) <= 1e-7)


def test_min_edge_weight_prunes_symmetrically():
  depth, aud, ctx, bg = _scene(1)
  full = graph.build_window_graph(depth, aud, ctx, bg, rbf_mode="public")
  thr = float(np.median(full["edge_weight"]))
  g = graph.build_window_graph(depth, aud, ctx, bg, rbf_mode="public", min_edge_weight=thr)
  assert 0 < int(g["n_edge"]) < int(full["n_edge"])
  assert np.all(g["edge_weight"] >= thr)
  _check_symmetric(g)


def test_equal_graph_is_dense_with_unit_weights():
  depth, aud, ctx, bg = _scene()
  g = graph.build_window_graph(depth, aud, ctx, bg, edge_mode="equal")
  assert int(g["n_edge"]) == 30
  np.testing.assert_array_equal(g["edge_weight"], 1.0)
  _check_symmetric(g)


def test_multiscale_graph_is_a_forest_of_two_scales():
  depth, aud, ctx, bg = _scene(2)
  g = graph.build_window_graph(depth, aud, ctx, bg, edge_mode="multiscale")
  assert g["num_edge_types"] == 2
  t = g["edge_type"]
  dn = geometry.normalized_distances(g["chamfer"].astype(np.float64))
  off = ~np.eye(6, dtype=bool)
  med = np.median(dn[off])
  fine = dn[g["senders"][t == 0], g["receivers"][t == 0]]
  assert np.all(fine <= med) and (t == 0).sum() == (dn[off] <= med).sum()
  assert (t == 1).sum() == 30  # the 100th percentile keeps every pair
  _check_symmetric(g)
  assert np.all((g["edge_weight"] > 0) & (g["edge_weight"] <= 1))
  p = graph.pad_graph(g)
  assert p["senders"].shape == (graph.default_max_edges(23, 2),)


def test_box_outside_frame_gives_empty_cloud_but_valid_edges():
  depth, aud, ctx, bg = _scene()
  ctx = np.concatenate([ctx, [[500, 500, 600, 600]]])
  g = graph.build_window_graph(depth, aud, ctx, bg)
  assert g["num_points"][5] == 0 and np.all(np.delete(g["num_points"], 5) > 0)
  assert np.all(np.isinf(np.delete(g["chamfer"][5], 5)))
  w = g["edge_weight"]
  assert np.all(np.isfinite(w)) and np.all((w > 0) & (w <= 1))
  touching = (g["senders"] == 5) | (g["receivers"] == 5)
  assert touching.sum() == 2 * 6
  # The empty node counts as maximally distant: its weight is the weakest.
  assert w[touching].max() <= w[~touching].min() + 1e-7


def test_zero_auditory_detections_gives_background_only_graph():
  depth, _, ctx, bg = _scene()
  g = graph.build_window_graph(depth, np.zeros((0, 4)), ctx, bg)
  assert g["node_type"].tolist() == [2]
  assert int(g["n_edge"]) == 0 and g["senders"].shape == (0,)
  p = graph.pad_graph(g)
  assert p["node_mask"].tolist() == [True] + [False] * 22
  assert not p["edge_mask"].any()


def test_pad_graph_shapes_and_masks():
  depth, aud, ctx, bg = _scene()
  g = graph.build_window_graph(depth, aud, ctx, bg)
  p = graph.pad_graph(g)
  assert p["node_type"].shape == (23,) and p["boxes"].shape == (23, 4)
  assert p["senders"].shape == p["edge_weight"].shape == p["edge_mask"].shape == (23 * 22,)
  assert p["node_mask"].sum() == 6 and p["edge_mask"].sum() == 30
  np.testing.assert_array_equal(p["node_type"][:6], g["node_type"])
  np.testing.assert_array_equal(p["node_type"][6:], -1)
  np.testing.assert_array_equal(p["edge_weight"][:30], g["edge_weight"])
  np.testing.assert_array_equal(p["edge_weight"][30:], 0.0)
  assert int(p["n_node"]) == 6 and int(p["n_edge"]) == 30
  # Full-size graph: 2 auditory + 20 context + background fits exactly.
  rng = np.random.default_rng(3)
  xy = rng.random((20, 2)) * 50
  g_full = graph.build_window_graph(depth, aud, np.concatenate([xy, xy + 10], 1), bg)
  p_full = graph.pad_graph(g_full)
  assert p_full["node_mask"].all() and p_full["edge_mask"].all()
  with pytest.raises(ValueError, match="max_nodes"):
    graph.pad_graph(g_full, max_nodes=10)
  with pytest.raises(ValueError, match="max_edges"):
    graph.pad_graph(g, max_edges=10)


def test_build_rejects_bad_arguments():
  depth, aud, ctx, bg = _scene()
  with pytest.raises(ValueError, match="edge_mode"):
    graph.build_window_graph(depth, aud, ctx, bg, edge_mode="knn")
  with pytest.raises(ValueError, match="auditory_boxes"):
    graph.build_window_graph(depth, aud[:, :3], ctx, bg)


@pytest.mark.parametrize("seed", [2, 5])
def test_model_side_multiscale_matches_the_builders_forest(seed):
  """graph_mode="multiscale" rebuilds the ablation's two scales from the stored chamfer weights."""
  from asmp_jax.models import graph_encoder
  depth, aud, ctx, bg = _scene(seed)
  stored = graph.build_window_graph(depth, aud, ctx, bg, edge_mode="chamfer")
  forest = graph.build_window_graph(depth, aud, ctx, bg, edge_mode="multiscale")
  k = int(stored["n_node"])
  # The dense layout the data use: [K*K] per graph, weight 0 = no edge; stored as float16.
  adj = np.zeros((k, k), np.float16)
  adj[stored["senders"], stored["receivers"]] = stored["edge_weight"]
  ii, jj = np.nonzero(~np.eye(k, dtype=bool))
  w16 = adj[ii, jj].astype(np.float32)
  weights, masks = graph_encoder.multiscale_edge_weights(w16[None], (w16 > 0)[None])
  weights, masks = np.asarray(weights)[:, 0], np.asarray(masks)[:, 0]
  for scale in (0, 1):
    sel = forest["edge_type"] == scale
    want = np.zeros((k, k), np.float32)
    want[forest["senders"][sel], forest["receivers"][sel]] = forest["edge_weight"][sel]
    np.testing.assert_array_equal(masks[scale], want[ii, jj] > 0)
    np.testing.assert_allclose(weights[scale], want[ii, jj], rtol=2e-2, atol=1e-4)
  assert 0 < masks[0].sum() < masks[1].sum() == k * (k - 1)
