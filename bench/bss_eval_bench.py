"""Speed and agreement of BSS Eval v3 implementations on a batch of two-source clips.

Compares, in one process and on the same data:
  A. ``asmp_jax.metrics.bss_eval_sources_batched`` (float64, jitted, timed after a warm-up call;
     numpy in, numpy out, so host<->device copies are included);
  B. ``mir_eval.separation.bss_eval_sources`` (the reference), one call per clip;
  C. ``fast_bss_eval.bss_eval_sources`` with the numpy backend on the whole batch, called as
     ``bss_eval_sources(ref, est, filter_length=512, use_cg_iter=None, zero_mean=False,
     clamp_db=None, compute_permutation=True, load_diag=None)``: the same 512-tap BSS Eval v3
     definition, exact solves (no conjugate-gradient approximation), all permutations.
Runs alternate A B C A B C ... so that load changes on a shared machine hit all three alike; the
script prints per-method medians, speed ratios and the max |difference| of SDR/SIR/SAR against
mir_eval.

  python bench/bss_eval_bench.py --repeats 3
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import fast_bss_eval  # noqa: E402
import mir_eval.separation  # noqa: E402

from asmp_jax import metrics  # noqa: E402

SR = 11025


def make_clips(n_clips: int, n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Two-source clips: harmonic tones in coloured noise; estimates with leak and artefacts.

  Returns:
    reference, estimated: float64 [n_clips, 2, n_samples]; every other clip has its estimates
    in swapped order, so the permutation search matters.
  """
  rng = np.random.default_rng(seed)
  t = np.arange(n_samples) / SR
  k = np.arange(1, 9)[:, None]
  f0 = rng.uniform(110, 440, (n_clips, 2, 1, 1))
  phase = rng.uniform(0, 2 * np.pi, (n_clips, 2, 8, 1))
  tones = (0.6 ** k * np.sin(2 * np.pi * f0 * k * t + phase)).sum(axis=2)
  envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2, (n_clips, 2, 1)) * t)
  noise = np.cumsum(rng.standard_normal((n_clips, 2, n_samples)), axis=-1)
  noise -= np.mean(noise, axis=-1, keepdims=True)
  reference = tones * envelope + 0.3 * noise / np.std(noise, axis=-1, keepdims=True)
  leak = rng.uniform(0.05, 0.4, (n_clips, 2, 2)) * (1 - np.eye(2)) + np.eye(2)
  estimated = np.einsum("bij,bjt->bit", leak, reference)
  estimated += 0.05 * rng.standard_normal(estimated.shape)
  estimated[1::2] = estimated[1::2, ::-1]
  return reference, estimated


def run_jax(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
  out = metrics.bss_eval_sources_batched(ref, est)
  return np.stack([np.asarray(x) for x in out[:3]])  # [3, B, 2]


def run_mir_eval(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    scores = [mir_eval.separation.bss_eval_sources(r, e)[:3] for r, e in zip(ref, est)]
  return np.stack([np.stack(s) for s in scores], axis=1)


def run_fast_bss_eval(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
  sdr, sir, sar, _ = fast_bss_eval.bss_eval_sources(
      ref, est, filter_length=512, use_cg_iter=None, zero_mean=False, clamp_db=None,
      compute_permutation=True, load_diag=None)
  return np.stack([sdr, sir, sar])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
  parser.add_argument("--clips", type=int, default=16)
  parser.add_argument("--samples", type=int, default=65280)
  args = parser.parse_args()

  ref, est = make_clips(args.clips, args.samples)
  print(f"{args.clips} clips x 2 sources x {args.samples} samples, float64, "
        f"JAX device: {jax.devices()[0]}")
  start = time.perf_counter()
  run_jax(ref, est)
  print(f"JAX compile + first run: {time.perf_counter() - start:.2f} s")

  methods = {"jax (batched, jit)": run_jax, "mir_eval": run_mir_eval,
             "fast_bss_eval (numpy)": run_fast_bss_eval}
  times = {name: [] for name in methods}
  results = {}
  for _ in range(args.repeats):
    for name, fn in methods.items():
      start = time.perf_counter()
      results[name] = fn(ref, est)
      times[name].append(time.perf_counter() - start)

  median = {name: float(np.median(t)) for name, t in times.items()}
  reference = results["mir_eval"]
  print(f"\n{'method':24s} {'median s':>9s} {'runs (s)':>28s} {'x vs mir_eval':>14s}"
        f" {'max|dSDR|':>10s} {'max|dSIR|':>10s} {'max|dSAR|':>10s}")
  for name in methods:
    diff = np.max(np.abs(results[name] - reference), axis=(1, 2))
    runs = " ".join(f"{t:.2f}" for t in times[name])
    print(f"{name:24s} {median[name]:9.3f} {runs:>28s} {median['mir_eval'] / median[name]:14.1f}"
          f" {diff[0]:10.2e} {diff[1]:10.2e} {diff[2]:10.2e}")
  jax_name, fast_name = "jax (batched, jit)", "fast_bss_eval (numpy)"
  print(f"\njax vs mir_eval: {median['mir_eval'] / median[jax_name]:.1f}x faster; "
        f"jax vs fast_bss_eval: {median[fast_name] / median[jax_name]:.1f}x faster")
  print(f"mean SDR over sources/clips: mir_eval {reference[0].mean():.4f} dB, "
        f"jax {results[jax_name][0].mean():.4f} dB")


if __name__ == "__main__":
  main()
