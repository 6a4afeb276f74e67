"""Train-step scaling over simulated CPU devices, and bfloat16 against float32 compute.

Devices: the same global batch on 1, 2, 4 ... XLA host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), one `train_step_bench.py --json`
process per count, the counts alternated over ``--rounds`` rounds (order reversed every other
round) so that drifting machine load hits them alike. On a CPU the simulated devices share the
same cores: this checks that the sharded step is correct and what its overhead is, it is not a
speed-up claim.

A count may carry extra XLA flags (``--devices=1,2+--xla_cpu_multi_thread_eigen=false``): each
entry is one variant of the comparison.

Dtypes: both train steps compiled in one process and timed alternately (A B A B ...).

  python bench/scaling_bench.py --config=configs/synthetic_tiny.py --batch=4 --devices=1,2,4
  python bench/scaling_bench.py --config=configs/synthetic_tiny.py --batch=4 --dtypes --devices=
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def parse_variants(spec: str) -> list[tuple[str, int, list[str]]]:
  """``"1,2,2+--xla_flag=v"`` -> [(label, device count, extra XLA flags)], in order."""
  out = []
  for entry in (e for e in spec.split(",") if e):
    count, *flags = entry.split("+")
    out.append((entry, int(count), flags))
  return out


def run_devices(args) -> None:
  variants = parse_variants(args.devices)
  counts = [label for label, _, _ in variants]
  results: dict[str, list[dict]] = {label: [] for label in counts}
  for rnd in range(args.rounds):
    order = variants if rnd % 2 == 0 else variants[::-1]
    for n, count, flags in order:
      env = dict(os.environ, XLA_FLAGS=" ".join(
          [f"--xla_force_host_platform_device_count={count}"] + flags))
      cmd = [sys.executable, str(HERE / "train_step_bench.py"), f"--config={args.config}",
             f"--batch={args.batch}", f"--steps={args.steps}", "--json"]
      out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      if out.returncode != 0:
        sys.exit(f"{n} devices failed:\n{out.stderr[-3000:]}")
      results[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(f"round {rnd + 1}: {n} devices {results[n][-1]['median_s'] * 1e3:.0f} ms/step",
            flush=True)
  base = statistics.median(r["median_s"] for r in results[counts[0]])
  print(f"\nconfig {args.config}  global batch {args.batch}  {args.rounds} rounds x "
        f"{args.steps} steps (median of the per-round medians)")
  print("| devices | ms/step | examples/s | step time vs 1st | compile s | TFLOP/step (XLA) |")
  print("|---|---|---|---|---|---|")
  for n in counts:
    t = statistics.median(r["median_s"] for r in results[n])
    c = statistics.median(r["compile_s"] for r in results[n])
    print(f"| {n} | {t * 1e3:.0f} | {args.batch / t:.2f} | {t / base:.2f} | {c:.0f} | "
          f"{results[n][0]['flops'] / 1e12:.4f} |")


def run_dtypes(args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(HERE))
  import train_step_bench as tsb  # pylint: disable=g-import-not-at-top
  runs = {}
  for dtype in ("float32", "bfloat16"):
    config = tsb.load_config(args.config)
    config.model.node_feature_dim = 2048 if config.graph.feature_extractor == "precomputed" else 400
    config.model.num_classes = 15
    config.model.dtype = dtype
    compiled, state, batch, info = tsb.compile_train_step(config, args.batch)
    runs[dtype] = {"compiled": compiled, "state": state, "batch": batch, "info": info, "t": []}
  for _ in range(args.steps * args.rounds):
    for r in runs.values():
      r["state"], dt = tsb.timed_step(r["compiled"], r["state"], r["batch"])
      r["t"].append(dt)
  f32 = statistics.median(runs["float32"]["t"])
  print(f"\nconfig {args.config}  batch {args.batch}  {len(runs['float32']['t'])} alternating "
        f"steps each, {jax.device_count()} device(s) ({jax.devices()[0].device_kind})")
  print("| compute dtype | ms/step (median) | vs float32 | compile s |")
  print("|---|---|---|---|")
  for name, r in runs.items():
    t = statistics.median(r["t"])
    print(f"| {name} | {t * 1e3:.0f} | {t / f32:.2f} | {r['info']['compile_s']:.0f} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/synthetic_tiny.py")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--devices", default="1,2,4",
                      help="comma-separated device counts ('' skips); a count may carry extra XLA "
                           "flags after '+', e.g. 2+--xla_cpu_multi_thread_eigen=false")
  parser.add_argument("--dtypes", action="store_true", help="also time bfloat16 vs float32")
  args = parser.parse_args()
  if args.devices:
    run_devices(args)
  if args.dtypes:
    run_dtypes(args)


if __name__ == "__main__":
  main()
