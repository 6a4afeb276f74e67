"""What JAX's persistent compilation cache saves a fresh launch.py process (as the tests start).

Builds the tiny synthetic set (if ``--data_dir`` lacks it), then runs the tiny config's
``launch.py`` (6 train steps, validation, test evaluation) in fresh processes: once to fill a
cache, then ``--rounds`` times alternating without the cache and with the warm cache. Prints each
wall time, the medians, their ratio, and whether the final validation line is the same with and
without the cache. tests/conftest.py gives every test run such a shared cache.

  python bench/compile_cache_bench.py --rounds=2
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def build_tiny(data_dir: str) -> None:
  subprocess.run([sys.executable, "-m", "asmp_jax.datasets", "--config=configs/synthetic_tiny.py",
                  f"--config.data.data_dir={data_dir}"], check=True, cwd=REPO)


def timed_launch(workdir: str, data_dir: str, cache_dir: str | None) -> tuple[float, str]:
  """Wall seconds of one tiny launch.py run, and its last validation line."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")
         and k != "JAX_COMPILATION_CACHE_DIR"}
  env["JAX_PLATFORMS"] = "cpu"
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "launch.py", "--config=configs/synthetic_tiny.py",
                         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"],
                        cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode:
    sys.exit(f"launch.py failed:\n{proc.stderr[-3000:]}")
  lines = re.findall(r"validation at step .*", proc.stderr)
  return wall, (lines[-1] if lines else "")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--data_dir", default=None, help="TFDS dir with asmp_synthetic/tiny "
                      "(default: built in a temporary directory)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or os.path.join(tmp, "tfds")
    if not (pathlib.Path(data_dir) / "asmp_synthetic" / "tiny").exists():
      print(f"building the tiny set in {data_dir} ...", flush=True)
      build_tiny(data_dir)
    cache, work = os.path.join(tmp, "cache"), os.path.join(tmp, "run")
    fill, _ = timed_launch(work, data_dir, cache)
    print(f"filling the cache: {fill:.1f} s", flush=True)
    off, on, lines = [], [], set()
    for r in range(args.rounds):
      for label, cache_dir, out in (("no cache", None, off), ("warm cache", cache, on)):
        wall, line = timed_launch(work, data_dir, cache_dir)
        out.append(wall)
        lines.add(line)
        print(f"round {r}: {label}: {wall:.1f} s", flush=True)
    print(f"median without the cache {statistics.median(off):.1f} s, with the warm cache "
          f"{statistics.median(on):.1f} s: {statistics.median(off) / statistics.median(on):.2f}x; "
          f"same final validation line in every run: {len(lines) == 1}")


if __name__ == "__main__":
  main()
