"""Runs two train steps of the tiny model on a fixed random batch over all local devices, and the
gradient of the first step.

Usage: python tests/helpers/one_step.py OUT.npz   (set XLA_FLAGS for simulated devices)
Writes the losses, the first gradient, the parameters after each step and the BatchNorm
statistics (with their names) after the first.
"""
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from asmp_jax import input_pipeline, optimizer, preprocess, train
import importlib.util


def load_config():
  spec = importlib.util.spec_from_file_location("cfg", "configs/synthetic_tiny.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config()
  config.model.node_feature_dim = 12
  config.model.num_classes = 5
  return config


def fake_batch(batch_size, config, seed=0):
  rng = np.random.default_rng(seed)
  cfg = input_pipeline.PairConfig.from_config(config)
  n = preprocess.MAX_NODES
  elems = []
  for i in range(batch_size):
    exs = []
    for u in range(2):
      node_mask = rng.uniform(size=(10, n)) < 0.6
      node_mask[:, [0, -1]] = True
      adj = rng.uniform(0.1, 1, size=(10, n, n)).astype(np.float16)
      exs.append({
          "audio": (rng.normal(size=10 * 11025) * 3000).astype(np.int16),
          "node_features": rng.normal(size=(10, n, 12)).astype(np.float16),
          "node_mask": node_mask, "node_type": np.zeros((10, n), np.int8),
          "adjacency": np.where(node_mask[:, :, None] & node_mask[:, None, :], adj, 0),
          "window_valid": np.ones(10, bool),
          "source_class": np.array([rng.integers(4), -1 if i % 2 else rng.integers(4)], np.int32),
          "dir10": rng.integers(0, 9, size=(10, 2)).astype(np.int32),
          "dir28": rng.integers(0, 27, size=(10, 2)).astype(np.int32),
      })
    elems.append(input_pipeline.make_pair(exs, np.random.default_rng([seed, i]), cfg))
  return {k: np.stack([e[k] for e in elems]) for k in elems[0]}


def main(out):
  config = load_config()
  config.train.batch_size = 4
  mesh = train.make_mesh()
  sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  from asmp_jax.models import asmp as asmp_model
  model = asmp_model.create_model(config.model)
  tx = optimizer.create_optimizer(config.train)
  batch = fake_batch(4, config)
  state = jax.jit(lambda b, r: train.create_train_state(config, model, tx, b, r),
                  out_shardings=replicated)(batch, jax.random.key(0))
  step = jax.jit(lambda s, b: train.train_step(s, b, model=model, tx=tx, config=config),
                 in_shardings=(replicated, sharding), out_shardings=(replicated, replicated))
  from asmp_jax import losses as losses_lib

  def grad_fn(state, batch):
    mb = train._model_batch(batch, config.data.normalise_mix)

    def loss_fn(params):
      out, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, mb, train=True,
                           mutable=["batch_stats"])
      return losses_lib.total_loss(out, mb, config.loss)[0]
    return jax.grad(loss_fn)(state.params)

  grads = jax.jit(grad_fn, in_shardings=(replicated, sharding), out_shardings=replicated)(
      state, jax.device_put(batch, sharding))
  grads = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(grads)])
  losses = []
  for i in range(2):
    state, metrics = step(state, jax.device_put(batch, sharding))
    losses.append(float(metrics["loss"]))
    if i == 0:
      params1 = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(state.params)])
      stat_leaves = jax.tree_util.tree_flatten_with_path(state.batch_stats)[0]
      stats1 = np.concatenate([np.asarray(x).ravel() for _, x in stat_leaves])
      stat_names = np.array([jax.tree_util.keystr(k) for k, x in stat_leaves
                             for _ in range(x.size)])
  flat = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(state.params)])
  np.savez(out, losses=np.array(losses), params=flat, params1=params1, grads=grads,
           batch_stats1=stats1, batch_stat_names=stat_names, devices=jax.device_count())


if __name__ == "__main__":
  main(sys.argv[1])
