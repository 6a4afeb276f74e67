"""Writes the checked-in run of tests/test_pre_redesign_checkpoint.py (kept as the record of how
it was made; the test reads only its scene_graphs and example_batch).

  python tests/data/pre_redesign/make_fixture.py DATA_DIR

DATA_DIR holds the tiny synthetic set (python -m asmp_jax.datasets
--config=configs/synthetic_tiny.py --config.data.data_dir=DATA_DIR). Trains configs/synthetic_tiny.py
(U-Net and classifiers at half
width) for 1 step on one CPU device into tests/data/pre_redesign/run (config.json, dataset_meta.json,
checkpoints/1), then separates a fixed waveform conditioned on fixed random scene graphs and saves
input and output in tests/data/pre_redesign/separation.npz.
"""
import os
import shutil
import sys

import numpy as np

from asmp_jax import inference, preprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def fixed_input(feature_dim, num_windows=8, length=70_000, seed=0):
  """A deterministic waveform and per-window scene graphs (2 sources, 3 context nodes)."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / 11025.0
  wav = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
         + 0.05 * rng.standard_normal(length)).astype(np.float32)
  n = preprocess.MAX_NODES
  mask = np.zeros((num_windows, n), bool)
  mask[:, :5] = True
  mask[:, -1] = True
  node_type = np.ones((num_windows, n), np.int8)
  node_type[:, :2] = 0
  node_type[:, -1] = 2
  feats = (rng.standard_normal((num_windows, n, feature_dim)) * mask[..., None]).astype(np.float16)
  adj = rng.uniform(0.1, 1.0, (num_windows, n, n)) * (mask[:, :, None] & mask[:, None, :])
  adj = adj * (1 - np.eye(n))
  return {"wav": wav, "node_features": feats, "node_mask": mask, "node_type": node_type,
          "adjacency": adj.astype(np.float16), "window_valid": np.ones(num_windows, bool)}


def scene_graphs(inp):
  w, n = inp["node_mask"].shape
  return inference.SceneGraphs(
      node_features=inp["node_features"], node_mask=inp["node_mask"],
      node_type=inp["node_type"], adjacency=inp["adjacency"], window_valid=inp["window_valid"],
      node_boxes=np.full((w, n, 4), np.nan, np.float32),
      reference_frames=np.zeros((w, 8, 8, 3), np.uint8), source_ids=np.arange(2),
      source_names=["a", "b"], measured_direction=np.full((2, w), -1, np.int32))


def example_batch(config, batch_size):
  """Zeros shaped as a training batch of ``config`` (filled by training) without the data set."""
  from asmp_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  n, nw, a = preprocess.MAX_NODES, 10, preprocess.MAX_AUDITORY
  clip = {"audio": np.zeros(nw * config.data.sample_rate, np.int16),
          "node_features": np.zeros((nw, n, config.model.node_feature_dim), np.float16),
          "node_mask": np.ones((nw, n), bool), "node_type": np.zeros((nw, n), np.int8),
          "adjacency": np.zeros((nw, n, n), np.float16), "window_valid": np.ones(nw, bool),
          "source_class": np.zeros(a, np.int32), "dir10": np.zeros((nw, a), np.int32),
          "dir28": np.zeros((nw, a), np.int32)}
  pair = input_pipeline.make_pair([clip, clip], None,
                                  input_pipeline.PairConfig.from_config(config))
  return {k: np.zeros((batch_size,) + np.shape(v), np.asarray(v).dtype) for k, v in pair.items()}


def main(data_dir):
  from asmp_jax import config_lib, run_folder, train  # pylint: disable=g-import-not-at-top
  run = os.path.join(HERE, "run")
  shutil.rmtree(run, ignore_errors=True)
  config = config_lib.config_from_file(os.path.join(REPO, "configs", "synthetic_tiny.py"))
  config.data.data_dir = data_dir
  config.model.unet_width_mult = 0.0625  # small enough to check in (~2 MB with Adam's moments)
  config.model.cls_width = 4
  config.train.num_train_steps = 1
  config.train.checkpoint_every = 1
  config.train.log_every = 1
  config.train.eval_every = 1
  config.eval.num_pairs = 0
  train.train_and_evaluate(config, run)
  for name in os.listdir(run):  # keep config, metadata and the checkpoint only
    if name not in (run_folder.CONFIG_FILE, run_folder.DATASET_META_FILE, "checkpoints"):
      path = os.path.join(run, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  sep = inference.Separator.from_checkpoint(run)
  inp = fixed_input(int(sep.config.model.node_feature_dim))
  out = sep.separate_waveform(inp["wav"], scene_graphs(inp), 2)
  np.savez_compressed(os.path.join(HERE, "separation.npz"), **inp,
                      **{"out_" + k: np.asarray(v) for k, v in out.items()})


if __name__ == "__main__":
  main(sys.argv[1])
