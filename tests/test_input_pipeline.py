"""grain mix-and-separate pipeline: shapes, determinism, sharding, checkpointable position."""
import numpy as np
import pytest

from asmp_jax import input_pipeline, preprocess
from asmp_jax.graph import motion

NW, F, WS = 10, 12, 512  # windows, feature size, samples per window
CFG = input_pipeline.PairConfig(num_classes=5, num_direction_classes=10, crop_samples=6 * WS - 1,
                                window_samples=WS, num_dir_windows=6)


def fake_clip(i: int, n_sources: int = 2) -> dict:
  rng = np.random.default_rng(i)
  n = preprocess.MAX_NODES
  node_mask = rng.uniform(size=(NW, n)) < 0.5
  node_mask[:, -1] = True
  adj = rng.uniform(0.1, 1, size=(NW, n, n)).astype(np.float16)
  adj = np.where(node_mask[:, :, None] & node_mask[:, None, :], adj, 0)
  src = np.array([i % 4, (i + 1) % 4][:n_sources] + [-1] * (2 - n_sources), np.int32)
  return {
      "audio": (np.full(NW * WS, i + 1) * 100).astype(np.int16),  # constant: identifies the clip
      "node_features": rng.normal(size=(NW, n, F)).astype(np.float16),
      "node_mask": node_mask, "node_type": np.zeros((NW, n), np.int8), "adjacency": adj,
      "window_valid": np.ones(NW, bool), "source_class": src,
      "dir10": rng.integers(0, 9, size=(NW, 2)).astype(np.int32),
      "dir28": rng.integers(0, 27, size=(NW, 2)).astype(np.int32),
  }


SOURCE = [fake_clip(i, n_sources=1 + i % 2) for i in range(9)]


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batch_shapes_and_labels():
  ds = input_pipeline.batched(input_pipeline.pair_dataset(SOURCE, CFG, seed=0, train=True), 4)
  b = next(iter(ds))
  n, e = preprocess.MAX_NODES, preprocess.MAX_NODES * (preprocess.MAX_NODES - 1)
  assert b["audio"].shape == (4, 2, CFG.crop_samples) and b["audio"].dtype == np.float32
  assert b["node_features"].shape == (4, 2, n, F)
  assert b["senders"].shape == b["edge_weight"].shape == b["edge_mask"].shape == (4, 2, e)
  assert b["source_mask"].shape == (4, 2, 3) and b["source_mask"][..., 2].all()
  assert (b["class_labels"][..., 2] == CFG.num_classes - 1).all()
  assert b["dir_labels"].shape == (4, 2, 3, 6)
  assert (b["dir_labels"][..., 2, :] == motion.BACKGROUND_CLASS(10)).all()
  # invalid slots carry no valid direction labels; edges only between valid nodes
  assert not (b["dir_valid"] & ~b["source_mask"][..., None]).any()
  nm = b["node_mask"]
  ok = np.take_along_axis(nm, b["senders"], -1) & np.take_along_axis(nm, b["receivers"], -1)
  assert not (b["edge_mask"] & ~ok).any()
  # gains in range: each clip's audio is constant (i + 1) * 100 / 32767 times the gain
  ci = b["clip_index"]
  gain = b["audio"][..., 0] / ((ci + 1) * 100 / 32767.0)
  np.testing.assert_allclose(gain, b["gain"], rtol=1e-5)
  assert ((gain >= 0.5) & (gain <= 1.5)).all()
  assert (ci[:, 0] != ci[:, 1]).all()


def test_deterministic_and_resumable():
  def make():
    return iter(input_pipeline.batched(input_pipeline.pair_dataset(SOURCE, CFG, seed=3, train=True),
                                       2))
  a = _take(make(), 6)
  b_it = make()
  _take(b_it, 3)
  state = b_it.get_state()
  c_it = make()
  c_it.set_state(state)
  for x, y in zip(a[3:], _take(c_it, 3)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  d = _take(iter(input_pipeline.batched(
      input_pipeline.pair_dataset(SOURCE, CFG, seed=4, train=True), 2)), 1)[0]
  assert not np.array_equal(d["clip_index"], a[0]["clip_index"])  or not np.allclose(
      d["gain"], a[0]["gain"])


def test_process_shards_are_disjoint_and_cover_the_stream():
  full = _take(iter(input_pipeline.batched(
      input_pipeline.pair_dataset(SOURCE, CFG, seed=1, train=True), 1)), 8)
  shards = [_take(iter(input_pipeline.batched(input_pipeline.pair_dataset(
      SOURCE, CFG, seed=1, train=True, process_index=p, process_count=2), 1)), 4) for p in (0, 1)]
  full_idx = [tuple(b["clip_index"][0]) for b in full]
  assert [tuple(b["clip_index"][0]) for b in shards[0]] == full_idx[0::2]
  assert [tuple(b["clip_index"][0]) for b in shards[1]] == full_idx[1::2]
  # Same crops and gains as in the single-process stream, not just the same clips.
  for p in (0, 1):
    for a, b in zip(shards[p], full[p::2]):
      np.testing.assert_array_equal(a["audio"], b["audio"])
      np.testing.assert_array_equal(a["gain"], b["gain"])


def test_eval_pairs_fixed_and_unit_gain():
  ds = input_pipeline.pair_dataset(SOURCE, CFG, seed=7, train=False, num_pairs=5)
  assert len(ds) == 5
  first = [ds[i]["clip_index"].tolist() for i in range(5)]
  again = input_pipeline.pair_dataset(SOURCE, CFG, seed=7, train=False, num_pairs=5)
  assert first == [again[i]["clip_index"].tolist() for i in range(5)]
  np.testing.assert_array_equal(ds[0]["gain"], [1.0, 1.0])


def test_too_few_clips():
  with pytest.raises(ValueError, match="at least 2 clips"):
    input_pipeline.pair_dataset(SOURCE[:1], CFG, seed=0, train=True)


def test_window_graphs_hold_each_label_window_graph():
  """config.model.dir_window_graphs: window k of a crop from window w carries window w+k's graph
  (the clip's last valid window's past its end); without it there are no window_* arrays."""
  import dataclasses
  cfg = dataclasses.replace(CFG, window_graphs=True)
  ex = dict(SOURCE[3])
  ex["window_valid"] = np.arange(NW) < 8  # windows 8, 9 invalid and, as in preprocess, unlabelled
  ex["dir10"] = np.where(ex["window_valid"][:, None], ex["dir10"], -1)
  view = input_pipeline.clip_view(ex, 4, 1.0, cfg)
  assert view["window_node_features"].shape == (6, preprocess.MAX_NODES, F)
  assert view["window_edge_mask"].shape == (6, preprocess.MAX_NODES * (preprocess.MAX_NODES - 1))
  for k, w in enumerate([4, 5, 6, 7, 7, 7]):
    g = input_pipeline.window_graph(ex, w)
    for key, v in g.items():
      np.testing.assert_array_equal(view["window_" + key][k], v)
  # window 0 is the crop's own graph
  for key in ("node_features", "node_mask", "node_type", "edge_weight", "edge_mask"):
    np.testing.assert_array_equal(view["window_" + key][0], view[key])
  assert not (view["dir_valid"][:, 4:]).any()  # the clamped windows carry no labels
  assert not any(k.startswith("window_") for k in input_pipeline.clip_view(ex, 4, 1.0, CFG))
  b = next(iter(input_pipeline.batched(input_pipeline.pair_dataset(SOURCE, cfg, seed=0,
                                                                    train=True), 2)))
  assert b["window_node_mask"].shape == (2, 2, 6, preprocess.MAX_NODES)
