"""bench/synthetic_results.py's paired comparison of two evaluations (on hand-made JSONs)."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bench():
  path = REPO / "bench" / "synthetic_results.py"
  spec = importlib.util.spec_from_file_location("synthetic_results", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


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
