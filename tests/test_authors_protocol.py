"""The paper's evaluation protocol (asmp_jax.paper_protocol): pair lists, windows, mixing, and an
end-to-end run of ``python -m asmp_jax.evaluate --paper_pairs`` on a converted release."""
from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np
import pytest

from asmp_jax import config_lib
from asmp_jax import datasets
from asmp_jax import input_pipeline
from asmp_jax import paper_protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, obj):
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=3)


def test_pair_lists_in_the_release_format(tmp_path):
  i64 = np.int64
  _write(tmp_path / paper_protocol.SEPARATION_PAIRS, [("a", i64(0), "b", i64(2))])
  _write(tmp_path / paper_protocol.DIRECTION_PAIRS, [("a", i64(0), 4, "b", i64(2), 9)])
  sep, dirs = paper_protocol.load_pair_lists(tmp_path)
  assert sep == [paper_protocol.Pair(("a", "b"), (0, 2))]
  assert dirs == [paper_protocol.Pair(("a", "b"), (0, 2), (4, 9))]
  assert isinstance(sep[0].classes[0], int)


class _Runs:
  def __reduce__(self):
    return (os.system, ("touch ran",))


@pytest.mark.parametrize("content, words", [
    ([("a", 0, "b")], ["entry 0", "(video_1, class_1, video_2, class_2)"]),
    ([("a", 0, "b", 1), ("a", "x", "b", 1)], ["entry 1"]),
    ({"a": 1}, ["expected a non-empty list"]),
    ([("a", 0, "b", np.float64(1.0))], ["entry 0", "integer classes"]),
    ([("a", 0, "b", np.array([1]))], ["refused", "numpy"]),
    ([_Runs()], ["refused", "system"]),
])
def test_bad_pair_list_is_refused_in_one_line(tmp_path, content, words):
  path = tmp_path / "pairs.pickle"
  _write(path, content)
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    with pytest.raises(paper_protocol.PairListError) as e:
      paper_protocol.load_pairs(path, with_windows=False)
  finally:
    os.chdir(cwd)
  msg = str(e.value)
  assert msg.startswith(str(path)) and "\n" not in msg
  for w in words:
    assert w in msg, msg
  assert not (tmp_path / "ran").exists()


def test_direction_window_out_of_range_is_refused(tmp_path):
  path = tmp_path / "dir.pickle"
  _write(path, [("a", 0, 10, "b", 1, 2)])
  with pytest.raises(paper_protocol.PairListError, match="windows 0-9"):
    paper_protocol.load_pairs(path, with_windows=True)


def test_direction_crop_keeps_the_listed_window_inside():
  # The public script: start at 0 s and step a second until the window's first sample is in.
  for w in range(10):
    k = paper_protocol.direction_crop(w, 11025, 65535)
    start = 0
    while start > w * 11025 or start + 65535 < w * 11025:
      start += 11025
    assert k * 11025 == start
    assert 0 <= w - k <= 5        # one of the six direction slices of the crop


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
  config = config_lib.config_from_file(os.path.join(REPO, "configs", "synthetic_tiny.py"))
  config.data.data_dir = tiny_data_dir
  builder = datasets.get_builder(config.data)
  meta = datasets.metadata(builder)
  config.model.node_feature_dim = int(meta["feature_dim"])
  config.model.num_classes = len(meta["auditory_classes"]) + 1
  return config, datasets.data_source(builder, "test"), meta


def test_separation_mixes_halves_windows_and_doubles(tiny):
  """With every video's estimate equal to its crop's mixture, the protocol returns
  clip(a1 + a2): (a1 + a2) / 2 overlap-averaged over 0.05 s hops, times 2, clipped."""
  config, source, _ = tiny
  cfg = input_pipeline.PairConfig.from_config(config)
  exs = [source[0], source[1]]

  def fake(variables, batch):
    mix = batch["audio"].mean(axis=1, keepdims=True)
    return {"estimate": np.repeat(mix, 2, axis=1)}

  est, ref = paper_protocol.separate_pair(fake, None, exs, cfg, 551, 4)
  a = [np.clip(np.asarray(e["audio"], np.float32) / 32767.0, -1, 1) for e in exs]
  length = min(map(len, a))
  assert ref.shape == (2, length)
  np.testing.assert_allclose(ref, np.stack([x[:length] for x in a]))
  want = np.clip(a[0][:length] + a[1][:length], -1, 1)
  np.testing.assert_allclose(est[0], want, atol=1e-6)
  np.testing.assert_allclose(est[1], want, atol=1e-6)


@pytest.mark.slow
def test_paper_protocol_on_a_converted_release(tiny, tmp_path, capsys):
  torch = pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
  import authors_torch  # pylint: disable=g-import-not-at-top
  from asmp_jax import convert_authors, evaluate  # pylint: disable=g-import-not-at-top
  config, source, meta = tiny
  torch.manual_seed(0)
  net = authors_torch.Release(feat_dim=int(meta["feature_dim"]), ngf=8, heads=4, nhid=32,
                              res_width=8, num_classes=config.model.num_classes, num_dir=28)
  net.eval().save(str(tmp_path / "rel"))
  run = tmp_path / "run"
  convert_authors.main([f"--checkpoint_dir={tmp_path / 'rel'}", f"--workdir={run}",
                        f"--config={os.path.join(REPO, 'configs', 'synthetic_tiny.py')}",
                        f"--data_dir={config.data.data_dir}"])
  ids = [str(source[i]["clip_id"]) for i in range(3)]
  cls = [int(np.max(source[i]["source_class"])) for i in range(3)]
  _write(tmp_path / paper_protocol.SEPARATION_PAIRS,
         [(ids[0], np.int64(cls[0]), ids[1], np.int64(cls[1])), ("absent", 0, ids[2], 1)])
  _write(tmp_path / paper_protocol.DIRECTION_PAIRS,
         [(ids[1], np.int64(cls[1]), 1, ids[2], np.int64(cls[2]), 0)])
  evaluate.main([f"--workdir={run}", f"--paper_pairs={tmp_path}", "--split=test"])
  line = capsys.readouterr().out
  assert "paper protocol: 1 separation pairs (1 not in the split)" in line
  r = json.loads((run / "eval_paper_test_step0.json").read_text())
  assert r["hop_s"] == 0.05 and r["separation_pairs_missing"] == [["absent", ids[2]]]
  assert np.isfinite(r["sdr"]) and len(r["per_pair"]) == 1
  assert r["direction_count"] + r["direction_missing"] == 2
  assert "direction_accuracy_28" in r
  # The project's own protocol restores the converted workdir too.
  evaluate.main([f"--workdir={run}", "--split=test", "--num_pairs=1"])
  assert "SDR gain over the mixture" in capsys.readouterr().out
  assert (run / "eval_test_step0.json").exists()


def test_released_networks_are_read_from_the_slot_of_the_first_gru_step():
  """The video's estimate is the mask of its first valid slot (it holds GRU step 0), not slot 0,
  for graph_mode "authors"; the sum of the valid slots' masks for the other modes."""
  import types  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  class Stub:
    def __init__(self, mode):
      self.spec = types.SimpleNamespace(graph_mode=mode)
      self.FIRST_STEP_ONLY = mode == "authors"  # pylint: disable=invalid-name

    def apply(self, variables, batch, train):
      n, u, s = batch["source_mask"].shape
      level = (jnp.arange(s, dtype=jnp.float32) + 1) / 10          # slot k: mask (k + 1) / 10
      masks = jnp.broadcast_to(level[None, None, :, None, None], (n, u, s, 256, 256))
      return {"masks": masks, "cons_logits": jnp.zeros((n, u, s, 3)),
              "dir_logits": jnp.zeros((n, u, s, 6, 28))}

  rng = np.random.default_rng(0)
  audio = rng.uniform(-0.5, 0.5, size=(1, 2, 65535)).astype(np.float32)
  batch = {"audio": audio, "source_mask": np.array([[[False, True, True], [True, True, True]]])}
  mix = audio.mean(axis=1)[0]
  mid = slice(2000, -2000)  # away from the crop's edges
  out = paper_protocol.separation_fn(Stub("authors"))(None, batch)
  np.testing.assert_array_equal(out["first_slot"], [[1, 0]])
  np.testing.assert_allclose(out["estimate"][0, 0, mid], 0.2 * mix[mid], atol=1e-4)
  np.testing.assert_allclose(out["estimate"][0, 1, mid], 0.1 * mix[mid], atol=1e-4)
  out = paper_protocol.separation_fn(Stub("asmp"))(None, batch)
  np.testing.assert_allclose(out["estimate"][0, 0, mid], 0.5 * mix[mid], atol=1e-4)
  np.testing.assert_allclose(out["estimate"][0, 1, mid], 0.6 * mix[mid], atol=1e-4)
