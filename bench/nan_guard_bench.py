"""Compile time and step time of the train step under two forms of its non-finite guard.

The train step keeps the old state when the loss or a gradient is not finite. ``cond`` is the
form in ``asmp_jax.train.keep_if_finite`` (one ``lax.cond``); ``select`` is the form it replaced
(``jnp.where(finite, new, old)`` on every leaf). Both are compiled in this process, alternating
(select, cond, select, cond, ...), on the same random batch; the script prints each compile's
seconds and optimized-HLO size, the median step time over ``--steps`` steps, and the ratios.

  python bench/nan_guard_bench.py --config=configs/synthetic_tiny.py --batch=2 --rounds=2
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_bench import load_config, random_batch  # pylint: disable=g-import-not-at-top,wrong-import-position

from asmp_jax import optimizer, train  # pylint: disable=wrong-import-position
from asmp_jax.models import asmp as asmp_model  # pylint: disable=wrong-import-position

GUARDS = {
    "select": lambda finite, new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old),
    "cond": train.keep_if_finite,
}


def measure(guard: str, config, model, tx, state, batch, steps: int) -> dict[str, float]:
  original = train.keep_if_finite
  train.keep_if_finite = GUARDS[guard]
  try:
    fn = jax.jit(lambda s, b: train.train_step(s, b, model=model, tx=tx, config=config))
    t0 = time.perf_counter()
    compiled = fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
  finally:
    train.keep_if_finite = original
  hlo = compiled.as_text()
  jax.block_until_ready(compiled(state, batch))  # warm-up
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, batch))
    times.append(time.perf_counter() - t0)
  return {"compile_s": compile_s, "hlo_lines": hlo.count("\n"),
          "and_ops": len(re.findall(r"= \S+ and\(", hlo)), "step_s": statistics.median(times)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/synthetic_tiny.py")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  config = load_config(args.config)
  config.model.node_feature_dim = 400 if config.graph.feature_extractor != "precomputed" else 2048
  config.model.num_classes = 15  # filled from the data set in training; any size will do here
  batch = random_batch(config, args.batch)
  config.train.batch_size = args.batch
  model = asmp_model.create_model(config.model)
  tx = optimizer.create_optimizer(config.train)
  state = jax.jit(lambda b, r: train.create_train_state(config, model, tx, b, r))(
      batch, jax.random.key(0))
  print(f"train state: {len(jax.tree.leaves(state))} leaves, "
        f"{len(jax.tree.leaves(state.params))} of them parameters (one gradient leaf each)")
  results = {g: [] for g in GUARDS}
  for r in range(args.rounds):
    for guard in GUARDS:
      m = measure(guard, config, model, tx, state, batch, args.steps)
      results[guard].append(m)
      print(f"round {r + 1} {guard:6s}: compile {m['compile_s']:6.1f} s, optimized HLO "
            f"{m['hlo_lines']} lines ({m['and_ops']} `and` ops), step {m['step_s']:.3f} s",
            flush=True)
  med = {g: {k: statistics.median(x[k] for x in v) for k in v[0]} for g, v in results.items()}
  print(f"{args.config}, batch {args.batch}, {jax.device_count()} device(s), medians of "
        f"{args.rounds} alternated rounds:")
  print(f"  compile select/cond = {med['select']['compile_s'] / med['cond']['compile_s']:.2f}x, "
        f"step select/cond = {med['select']['step_s'] / med['cond']['step_s']:.2f}x")


if __name__ == "__main__":
  main()
