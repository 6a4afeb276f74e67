"""Where a train step's time goes: one step under `jax.profiler.trace`, XLA ops summed by kind.

Compiles the donated train step of ``--config`` at ``--batch`` (as `train_step_bench.py` does),
runs one warm step, traces the next, and prints the op time summed over XLA:CPU's worker threads
per op kind (the HLO instruction name without its ``.N`` suffix: ``ynn_fusion`` = YNNPACK
convolution/dot fusions, ``transpose_copy_fusion`` = layout copies, ``convolution-base-dilated``
= convolutions on XLA's generic path, ...). The trace is kept in ``--trace_dir`` for Perfetto.

  python bench/profile_step.py --config=configs/asiw.py --batch=4
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_step_bench as tsb  # pylint: disable=wrong-import-position


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/asiw.py")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--feature_dim", type=int, default=2048, help="node feature size")
  parser.add_argument("--num_classes", type=int, default=15, help="K (ASIW: 14 + background)")
  parser.add_argument("--top", type=int, default=12, help="op kinds to print")
  parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a config value (repeatable), e.g. model.unet_pool=2")
  parser.add_argument("--trace_dir", default="", help="default: a new temporary directory")
  args = parser.parse_args()

  config = tsb.load_config(args.config)
  tsb.apply_settings(config, args.set)
  config.model.node_feature_dim = args.feature_dim
  config.model.num_classes = args.num_classes
  compiled, state, batch, info = tsb.compile_train_step(config, args.batch)
  state, _ = tsb.timed_step(compiled, state, batch)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="asmp_profile_")
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  state, step_s = tsb.timed_step(compiled, state, batch)
  jax.profiler.stop_trace()

  trace = next(pathlib.Path(trace_dir).rglob("*.trace.json.gz"))
  events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get("name", "")
    # Complete events of XLA ops only (not the executor, Python frames or thread-pool waits).
    if e.get("ph") != "X" or name.startswith(("Thunk", "$", "Slinky", "PjitFunction")):
      continue
    kind = re.sub(r"\.\d+$", "", name)
    total[kind] += e.get("dur", 0) * 1e-6
    count[kind] += 1
  op_s = sum(total.values())
  print(f"{args.config} batch {args.batch}: traced step {step_s:.2f} s, {op_s:.2f} s of XLA op "
        f"time summed over threads, {info['flops'] / 1e12:.3f} TFLOP (XLA); trace in {trace_dir}")
  print("| op kind | ops | seconds | share |")
  print("|---|---|---|---|")
  for kind, secs in total.most_common(args.top):
    print(f"| {kind} | {count[kind]} | {secs:.2f} | {secs / op_s:.0%} |")


if __name__ == "__main__":
  main()
