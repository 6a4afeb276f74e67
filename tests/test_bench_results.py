"""bench/synthetic_results.py's paired comparison of two evaluations (on hand-made JSONs)."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
  """The bench/ script ``name`` as a module."""
  spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _bench():
  return _load("synthetic_results")


def _write(path, model, mixture, pairs=((0, 1), (2, 3), (4, 5))):
  """An eval_test.json with per-source SDRs ``model`` / ``mixture`` ([pairs, 2], None = silent)."""
  def block(per_source):
    vals = [x for row in per_source for x in row if x is not None]
    return {"sdr": float(np.mean(vals)), "sir": 0.0, "sar": 0.0, "num_valid": len(vals),
            "sdr_per_source": per_source}
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"pairs": [list(p) for p in pairs], "model": block(model),
                              "mixture": block(mixture)}))
  return path


def test_paired_difference_of_two_evaluations(tmp_path):
  bench = _bench()
  mixture = [[0.0, 0.0], [1.0, -1.0], [0.5, None]]
  a = _write(tmp_path / "a" / "eval_test.json", [[1.0, 3.0], [2.0, 2.0], [4.0, None]], mixture)
  b = _write(tmp_path / "b" / "eval_test.json", [[2.0, 4.0], [4.0, 4.0], [4.0, None]], mixture)
  text = bench.compare_pair_results(a, b)
  # Per pair (mean over the valid sources): A = 2, 2, 4; B = 3, 4, 4; B - A = 1, 2, 0.
  diff = np.array([1.0, 2.0, 0.0])
  se = diff.std(ddof=1) / np.sqrt(3)
  assert f"B − A per pair: +1.00 ± {se:.2f} (3 pairs)" in text
  # A's gain over the mixture per pair: 2 - 0, 2 - 0, 4 - 0.5.
  gain = np.array([2.0, 2.0, 3.5])
  gain_se = gain.std(ddof=1) / np.sqrt(3)
  assert f"| {a} | 2.40 | +{gain.mean():.2f} ± {gain_se:.2f} (3 pairs) |" in text


def test_paired_comparison_refuses_different_pairs_and_missing_per_source(tmp_path):
  bench = _bench()
  same = [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
  a = _write(tmp_path / "a" / "eval_test.json", same, same)
  b = _write(tmp_path / "b" / "eval_test.json", same, same, pairs=((0, 1), (2, 3), (5, 4)))
  with pytest.raises(ValueError, match="different test pairs"):
    bench.compare_pair_results(a, b)
  old = json.loads(a.read_text())
  del old["model"]["sdr_per_source"]
  c = tmp_path / "c" / "eval_test.json"
  c.parent.mkdir()
  c.write_text(json.dumps(old))
  with pytest.raises(ValueError, match="no per-source SDRs"):
    bench.compare_pair_results(a, c)
  with pytest.raises(FileNotFoundError, match="no evaluation JSON at .*eval_test_step7.json"):
    bench.compare_pair_results(a, tmp_path / "b" / "eval_test_step7.json")


def _ceiling():
  return _load("direction_ceiling")


def test_direction_cell_shows_the_clustered_error_where_recorded():
  bench = _bench()
  assert bench.direction_cell({"direction_accuracy_10": 0.5123}, 10) == "0.51 (10)"
  assert bench.direction_cell({"direction_accuracy_10": 0.5123, "direction_accuracy_10_se": 0.0214},
                              10) == "0.512 ± 0.021 (10)"
  assert bench.direction_cell({}, 28) == "— (28)"


def test_direction_ceiling_counts_windows_once_per_covering_crop():
  bench = _ceiling()
  w = 8  # 8 windows: crops start on windows 0, 1, 2
  lab = np.arange(w)
  disp = np.stack([np.arange(w, dtype=float), np.zeros(w), np.zeros(w)], -1)
  ok = np.ones(w, bool)
  ok[1] = False  # the crop starting on window 1 is left out; window 1 is left out of the others
  labels, d, first, offset = bench.crop_windows([(lab, disp, ok, None)])
  # Crop 0: windows 0, 2..5; crop 2: windows 2..7.
  np.testing.assert_array_equal(labels, [0, 2, 3, 4, 5, 2, 3, 4, 5, 6, 7])
  np.testing.assert_array_equal(first[:, 0], [0] * 5 + [2] * 6)
  np.testing.assert_array_equal(offset, [0, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])
  np.testing.assert_array_equal(d[:, 0], labels)


def test_direction_ceiling_lookup_is_the_most_frequent_training_label_per_key():
  bench = _ceiling()
  tr_lab = np.array([1, 1, 2, 3, 3, 3])
  tr_keys = {"nothing": np.zeros(6, int), "key": np.array([0, 0, 0, 1, 1, 1])}
  ev_lab = np.array([1, 3, 3, 2])
  ev_keys = {"nothing": np.zeros(4, int), "key": np.array([0, 1, 2, 0])}  # 2: unseen -> overall
  acc = bench.lookup_accuracy(tr_lab, tr_keys, ev_lab, ev_keys)
  assert acc["nothing"] == pytest.approx(0.5)  # always 3
  assert acc["key"] == pytest.approx(0.75)     # 1, 3, 3 (fallback), 1


def test_direction_ceiling_ridge_probe_finds_a_linear_label_and_not_a_shuffled_one():
  bench = _ceiling()
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, size=600)
  centres = 3.0 * rng.normal(size=(4, 12))
  scale = rng.uniform(0.1, 10.0, size=12)  # feature scales differ: the probe standardises
  x = (centres[y] + rng.normal(size=(600, 12))) * scale
  assert bench.ridge_accuracy(x[:400], y[:400], x[400:], y[400:], 4) > 0.95
  shuffled = rng.permutation(y)
  chance = bench.majority_accuracy(shuffled[:400], shuffled[400:])
  assert bench.ridge_accuracy(x[:400], shuffled[:400], x[400:], shuffled[400:], 4) < chance + 0.1


def test_direction_ceiling_feature_windows_skip_windows_without_the_node():
  bench = _ceiling()
  w = 7  # crops start on windows 0 and 1
  lab = np.arange(w)
  disp = np.zeros((w, 3))
  ok = np.ones(w, bool)
  feat = np.arange(w, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
  feat[0] = np.nan  # no node in window 0: its crop is left out, and window 0 from the first list
  labels, _, feats = bench.feature_windows([(lab, disp, ok, feat)])
  np.testing.assert_array_equal(labels, [1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(feats[:, 0], labels)
  labels, _, first, offset = bench.crop_windows([(lab, disp, ok, feat)], first_features=True)
  np.testing.assert_array_equal(labels, [1, 2, 3, 4, 5, 6])  # only the crop starting on window 1
  np.testing.assert_array_equal(first[:, 0], [1] * 6)
  np.testing.assert_array_equal(offset, range(6))


def test_train_step_bench_sets_config_values_by_name(monkeypatch):
  monkeypatch.syspath_prepend(str(REPO / "bench"))
  bench = _load("train_step_bench")
  config = bench.load_config(str(REPO / "configs/synthetic_benchmark.py"))
  bench.apply_settings(config, ["model.unet_pool=2", "model.unet_conditioning=film",
                                "train.lr_boundaries=()"])
  assert config.model.unet_pool == 2 and config.model.unet_conditioning == "film"
  assert tuple(config.train.lr_boundaries) == ()
  for bad in ("model.unet_pools=2", "unet_pool=2", "model.unet_pool"):
    with pytest.raises(SystemExit, match="--set"):
      bench.apply_settings(config, [bad])
