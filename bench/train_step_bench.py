"""Train-step time, examples/s and XLA's FLOP count for an ASMP config, and grain's batch rate.

Times the jitted, donated train step of ``asmp_jax.train`` (forward, backward, Adam, on a random
batch of the right shapes: 2 videos per example, 23-node graphs, 65535-sample crops) after one
warm-up step, and prints the median over ``--steps`` steps, examples/s, the FLOPs per step from
``compiled.cost_analysis()``, the achieved FLOP/s and its fraction of the CPU's fp32 peak (derived
from cores, clock and vector width by bench/machine_peak.py, printed with the derivation; on an
accelerator the fraction is not printed). ``--pipeline_data_dir`` additionally times the
grain input pipeline on a prepared data set (batches/s), for comparison with the step rate.

  python bench/train_step_bench.py --config=configs/asiw.py --batch=8 --steps=3     # paper size
  # scaling over simulated CPU devices, and bfloat16 vs float32 compute:
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python bench/train_step_bench.py \
      --config=configs/synthetic_tiny.py --batch=4 --steps=3 [--dtype=bfloat16]
  python bench/train_step_bench.py --config=configs/synthetic.py --batch=8 --steps=10 \
      --pipeline_data_dir=$HOME/tensorflow_datasets [--pipeline_only]
  python bench/train_step_bench.py --config=configs/synthetic.py --batch=8 --steps=10 \
      --dir_window_graphs   # the direction head's per-window graphs (config.model)
  # any config value, e.g. the U-Net on a 2x2-pooled grid:
  python bench/train_step_bench.py --config=configs/synthetic_benchmark.py --set model.unet_pool=2
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import statistics
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from asmp_jax import config_lib, input_pipeline, optimizer, preprocess, train
from asmp_jax.models import asmp as asmp_model

import machine_peak  # bench/machine_peak.py, next to this script

load_config = config_lib.config_from_file  # other bench scripts and tests call it by this name


def random_batch(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A batch with the pipeline's layout and random content."""
  rng = np.random.default_rng(seed)
  n = preprocess.MAX_NODES
  e = n * (n - 1)
  u, s, f = config.data.num_videos, config.model.num_slots, config.model.node_feature_dim
  senders, receivers = preprocess.dense_edges(n)
  node_mask = rng.uniform(size=(batch_size, u, n)) < 0.5
  node_mask[..., [0, -1]] = True
  edge_mask = node_mask[..., senders] & node_mask[..., receivers]
  batch = {
      "audio": rng.normal(size=(batch_size, u, config.data.crop_samples)).astype(np.float32) * 0.1,
      "gain": np.ones((batch_size, u), np.float32),
      "node_features": rng.normal(size=(batch_size, u, n, f)).astype(np.float32),
      "node_mask": node_mask,
      "node_type": np.zeros((batch_size, u, n), np.int32),
      "senders": np.broadcast_to(senders, (batch_size, u, e)).copy(),
      "receivers": np.broadcast_to(receivers, (batch_size, u, e)).copy(),
      "edge_weight": rng.uniform(size=(batch_size, u, e)).astype(np.float32) * edge_mask,
      "edge_mask": edge_mask,
      "source_mask": np.ones((batch_size, u, s), bool),
      "class_labels": rng.integers(0, config.model.num_classes, size=(batch_size, u, s)).astype(
          np.int32),
      "dir_labels": rng.integers(0, config.model.num_direction_classes,
                                 size=(batch_size, u, s, config.model.num_dir_windows)).astype(
                                     np.int32),
      "dir_valid": np.ones((batch_size, u, s, config.model.num_dir_windows), bool),
      "clip_index": np.zeros((batch_size, u), np.int32),
  }
  if config.model.get("dir_window_graphs"):  # each direction window's graph: the crop's, repeated
    wd = config.model.num_dir_windows
    for k in asmp_model.WINDOW_BATCH_DTYPES:
      batch[k] = np.repeat(batch[k.removeprefix("window_")][:, :, None], wd, axis=2)
  return batch


def compile_train_step(config, batch_size: int):
  """Compiles the donated train step on a random batch; returns (step, state, batch, info)."""
  mesh = train.make_mesh()
  data = NamedSharding(mesh, P("data"))
  repl = NamedSharding(mesh, P())
  model = asmp_model.create_model(config.model)
  tx = optimizer.create_optimizer(config.train)
  batch = jax.device_put(random_batch(config, batch_size), data)
  state = jax.jit(lambda b, r: train.create_train_state(config, model, tx, b, r),
                  out_shardings=repl)(batch, jax.random.key(0))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, config=config),
                 in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  # The cost analysis describes the partitioned (per-device) program: scale to the global step.
  flops = float(cost.get("flops", float("nan"))) * jax.device_count() if cost else float("nan")
  state, m = compiled(state, batch)  # warm-up
  jax.block_until_ready(m)
  return compiled, state, batch, {"params": n_params, "compile_s": compile_s, "flops": flops}


def timed_step(compiled, state, batch):
  """Runs one step; returns (new state, seconds)."""
  t0 = time.perf_counter()
  state, m = compiled(state, batch)
  jax.block_until_ready(m)
  return state, time.perf_counter() - t0


def time_train_step(config, batch_size: int, steps: int):
  compiled, state, batch, info = compile_train_step(config, batch_size)
  times = []
  for _ in range(steps):
    state, dt = timed_step(compiled, state, batch)
    times.append(dt)
  return dict(info, median_s=statistics.median(times))


def time_pipeline(config, data_dir: str, batch_size: int, batches: int) -> float:
  from asmp_jax import datasets  # pylint: disable=g-import-not-at-top
  config.data.data_dir = data_dir
  builder = datasets.get_builder(config.data)
  meta = datasets.metadata(builder)
  train.fill_data_dependent_config(config, meta)
  src = datasets.data_source(builder, "train")
  ds = input_pipeline.batched(input_pipeline.pair_dataset(
      src, input_pipeline.PairConfig.from_config(config), seed=0, train=True), batch_size,
                              worker_count=config.data.worker_count)
  it = iter(ds)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches / (time.perf_counter() - t0)


def apply_settings(config, settings) -> None:
  """Sets each ``section.key=value`` of ``settings`` on ``config`` (the value read as a Python
  literal, else as a string); an unknown key is refused by name."""
  for item in settings:
    key, sep, text = item.partition("=")
    if not sep or "." not in key:
      raise SystemExit(f"--set {item!r}: expected section.key=value")
    section, leaf = key.split(".", 1)
    if section not in config or leaf not in config[section]:
      raise SystemExit(f"--set {item!r}: config has no key {key}")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    config[section][leaf] = value


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/asiw.py")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--feature_dim", type=int, default=0,
                      help="node feature size (default: 2048 for precomputed, 400 for hog_color)")
  parser.add_argument("--num_classes", type=int, default=15)
  parser.add_argument("--pipeline_data_dir", default="")
  parser.add_argument("--pipeline_batches", type=int, default=50)
  parser.add_argument("--pipeline_only", action="store_true", help="skip the train step")
  parser.add_argument("--dtype", default="", help="override config.model.dtype (bfloat16|float32)")
  parser.add_argument("--unet_width_mult", type=float, default=0.0,
                      help="override config.model.unet_width_mult (0: the config's)")
  parser.add_argument("--dir_window_graphs", action="store_true",
                      help="set config.model.dir_window_graphs (each direction window's own graph)")
  parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a config value (repeatable), e.g. model.unet_pool=2")
  parser.add_argument("--json", action="store_true", help="print one JSON line (for scripts)")
  args = parser.parse_args()
  config = load_config(args.config)
  apply_settings(config, args.set)
  if args.pipeline_data_dir:
    rate = time_pipeline(config, args.pipeline_data_dir, args.batch, args.pipeline_batches)
    print(f"grain pipeline ({config.data.name}/{config.data.builder_config}, batch {args.batch}, "
          f"{config.data.worker_count} workers): {rate:.2f} batches/s")
    if args.pipeline_only:
      return
  else:
    config.model.node_feature_dim = args.feature_dim or (
        2048 if config.graph.feature_extractor == "precomputed" else 400)
    config.model.num_classes = args.num_classes
  if args.dtype:
    config.model.dtype = args.dtype
  if args.unet_width_mult:
    config.model.unet_width_mult = args.unet_width_mult
  if args.dir_window_graphs:
    config.model.dir_window_graphs = True
  r = time_train_step(config, args.batch, args.steps)
  if args.json:
    extra = {}
    if jax.default_backend() == "cpu":
      peak = machine_peak.machine_peak()
      extra = {"peak_gflops": peak.gflops, "peak_derivation": peak.describe(),
               "fraction_of_peak": r["flops"] / r["median_s"] / 1e9 / peak.gflops}
    print(json.dumps(dict(r, devices=jax.device_count(), batch=args.batch, steps=args.steps,
                          dtype=config.model.dtype, **extra)))
    return
  print(f"config {args.config}  dtype {config.model.dtype}  batch {args.batch}  "
        f"devices {jax.device_count()} "
        f"({jax.devices()[0].device_kind})")
  print(f"  parameters        {r['params'] / 1e6:.1f} M")
  print(f"  compile           {r['compile_s']:.1f} s")
  print(f"  train step        {r['median_s'] * 1e3:.0f} ms (median of {args.steps})")
  print(f"  examples/s        {args.batch / r['median_s']:.2f}")
  print(f"  FLOPs/step (XLA)  {r['flops'] / 1e12:.3f} TFLOP (all {jax.device_count()} devices)")
  achieved = r['flops'] / r['median_s'] / 1e9
  print(f"  achieved          {achieved:.1f} GFLOP/s")
  if jax.default_backend() == "cpu":
    peak = machine_peak.machine_peak()
    print(f"  fraction of peak  {achieved / peak.gflops:.0%}  (peak: {peak.describe()})")


if __name__ == "__main__":
  main()
