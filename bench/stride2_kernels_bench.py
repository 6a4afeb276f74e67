"""Per-layer time of the stride-2 kernels of asmp_jax.models.cpu_kernels against JAX's own.

Two operations, at the shapes of the ASMP U-Net and classifiers (batch, conditionings, widths
from the flags; the defaults are the synthetic benchmark's: batch 8, U * S = 6 conditionings,
U-Net width 0.25, classifier width 8):

* the 4x4 stride-2 transposed convolution's value (the U-Net decoder), as ``lax.conv_transpose``
  ("dilated"), as four phase convolutions ("4 phases") and as one ("1 conv");
* the input gradient of a stride-2 convolution (the U-Net encoder's 4x4 and the classifiers' 7x7
  stem, 3x3 and 1x1 convolutions), as JAX's autodiff ("dilated"), as four phase convolutions and,
  for even kernels, as one.

Each variant is jitted and compiled first, then timed in alternation (A B C A B C ...) so that
drifting load affects all alike; the table gives medians in ms and each variant's time over the
"dilated" one.

  python bench/stride2_kernels_bench.py
  python bench/stride2_kernels_bench.py --width_mult=1.0 --batch=4 --cls_width=64 --rounds=3
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from asmp_jax.models import cpu_kernels
from asmp_jax.models.unet import unet_widths

DN = ("NHWC", "HWIO", "NHWC")


def _transpose_variants(x_shape, co):
  def dilated(x, k):
    return cpu_kernels.conv_transpose_4x4s2_plain(x, k)

  def phases4(x, k):
    flipped = jnp.swapaxes(k[::-1, ::-1], 2, 3)  # the equivalent strided convolution's kernel
    return cpu_kernels.stride2_input_grad(x, flipped, (2 * x.shape[1], 2 * x.shape[2]),
                                          ((1, 1), (1, 1)), merge=False)

  variants = {"dilated": dilated, "4 phases": phases4,
              "1 conv": cpu_kernels.conv_transpose_4x4s2_phases}
  return variants, (x_shape, (4, 4, x_shape[-1], co)), x_shape


def _input_grad_variants(x_shape, k, pad, co):
  n, h, w, ci = x_shape
  pads = ((pad, pad), (pad, pad))
  ho, wo = (h + 2 * pad - k) // 2 + 1, (w + 2 * pad - k) // 2 + 1

  def dilated(g, kernel):
    _, vjp = jax.vjp(lambda a: lax.conv_general_dilated(a, kernel, (2, 2), pads,
                                                        dimension_numbers=DN),
                     jnp.zeros(x_shape, g.dtype))
    return vjp(g)[0]

  variants = {
      "dilated": dilated,
      "4 phases": lambda g, kernel: cpu_kernels.stride2_input_grad(g, kernel, (h, w), pads,
                                                                   merge=False)}
  if k % 2 == 0:
    variants["1 conv"] = lambda g, kernel: cpu_kernels.stride2_input_grad(g, kernel, (h, w), pads)
  return variants, ((n, ho, wo, co), (k, k, ci, co)), x_shape


def layer_cases(batch: int, conditionings: int, width_mult: float, cls_width: int, size: int,
                cls_freq_pool: int):
  """(name, variants, (argument shapes), the layer's input shape) for each layer."""
  widths = unet_widths(width_mult)
  cases = []
  for i in range(1, len(widths)):     # the first layer's input (the spectrogram) needs no gradient
    s = size // 2**i
    cases.append((f"unet down{i + 1} input grad",) + _input_grad_variants(
        (batch, s, s, widths[i - 1]), 4, 1, widths[i]))
  up = tuple(reversed(widths[:-1])) + (1,)
  maps = batch * conditionings
  for i, co in enumerate(up):
    s = size // 2**(len(widths) - i)
    ci = widths[-1 - i]
    cases.append((f"unet up{i + 1} value ({maps} maps)",) + _transpose_variants(
        (maps, s, s, ci), co))
  h, w = size // cls_freq_pool, size
  cases.append(("classifier stem 7x7 input grad",) + _input_grad_variants(
      (maps, h, w, 1), 7, 3, cls_width))
  h, w = h // 4, w // 4       # after the stem and the 3x3 stride-2 max pool
  for stage in (1, 2, 3):
    ci, co = cls_width * 2**(stage - 1), cls_width * 2**stage
    cases.append((f"classifier stage {stage + 1} 3x3 input grad",) + _input_grad_variants(
        (maps, h, w, ci), 3, 1, co))
    cases.append((f"classifier stage {stage + 1} 1x1 input grad",) + _input_grad_variants(
        (maps, h, w, ci), 1, 0, co))
    h, w = (h + 1) // 2, (w + 1) // 2
  return cases


def time_variants(variants, shapes, rounds: int, seed: int = 0) -> dict[str, float]:
  rng = np.random.default_rng(seed)
  args = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
  fns = {name: jax.jit(fn) for name, fn in variants.items()}
  ref = None
  for name, fn in fns.items():
    out = jax.block_until_ready(fn(*args))
    if ref is None:
      ref = out
    err = float(jnp.max(jnp.abs(out - ref)) / (jnp.max(jnp.abs(ref)) + 1e-30))
    if err > 1e-4:
      raise SystemExit(f"{name}: relative difference {err:.2e} from the dilated form")
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--conditionings", type=int, default=6)
  parser.add_argument("--width_mult", type=float, default=0.25)
  parser.add_argument("--cls_width", type=int, default=8)
  parser.add_argument("--cls_freq_pool", type=int, default=1)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  print(f"batch {args.batch}, {args.conditionings} conditionings, U-Net width "
        f"{args.width_mult}, classifier width {args.cls_width}, {args.rounds} alternating rounds, "
        "medians in ms (time / dilated)")
  print("| layer | input | dilated | 4 phases | 1 conv |")
  print("|---|---|---|---|---|")
  totals = {"dilated": 0.0, "4 phases": 0.0, "best": 0.0}
  cases = layer_cases(args.batch, args.conditionings, args.width_mult, args.cls_width, args.size,
                      args.cls_freq_pool)
  for name, variants, shapes, x_shape in cases:
    ms = time_variants(variants, shapes, args.rounds)
    base = ms["dilated"]
    cells = [f"{ms[v]:.1f} ({ms[v] / base:.2f})" if v in ms else "" for v in
             ("dilated", "4 phases", "1 conv")]
    print(f"| {name} | {'x'.join(map(str, x_shape))} | " + " | ".join(cells) + " |")
    totals["dilated"] += base
    totals["4 phases"] += ms["4 phases"]
    totals["best"] += min(ms.values())
  print(f"sum over layers: dilated {totals['dilated']:.0f} ms, 4 phases {totals['4 phases']:.0f} "
        f"ms, fastest per layer {totals['best']:.0f} ms")


if __name__ == "__main__":
  main()
