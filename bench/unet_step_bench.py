"""U-Net train-step time with the plain vs the CPU-tuned kernels (asmp_jax.models.layers).

Times one jitted step (forward + backward + Adam update) of the ASMP U-Net
(`asmp_jax.models.unet.ConditionedUNet`, 7 down / 7 up, full width by default) on a batch of
256x256 log-spectrograms, once with ``conv_impl="plain"`` (autodiff of ``lax.conv_transpose`` and
``lax.conv_general_dilated``,
whose kernel gradients take XLA:CPU's slow paths) and once with ``conv_impl="cpu_tuned"``
(asmp_jax.models.cpu_kernels: custom and batch-chunked kernel gradients). Both variants are
compiled first, then measured in alternation (A B A B ...) so that drifting machine load affects
both alike; the script prints per-variant medians and the plain/cpu_tuned ratio.

  python bench/unet_step_bench.py                       # batch 4, full width, 5 rounds
  python bench/unet_step_bench.py --rounds=3 --steps_per_round=1 --width_mult=0.5
  # Encoder once + 6 decodes (ASMP) vs re-encoding the mixture for each of the 6 conditionings:
  python bench/unet_step_bench.py --impls=cpu_tuned --batch=4 --conditionings=6
  python bench/unet_step_bench.py --impls=cpu_tuned --batch=24 --conditionings=1
"""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from asmp_jax.models.unet import ConditionedUNet

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 4, "Mixtures per step.")
flags.DEFINE_integer("conditionings", 1, "Conditionings decoded per mixture (ASMP: U*S = 6).")
flags.DEFINE_integer("size", 256, "Spectrogram height = width.")
flags.DEFINE_float("width_mult", 1.0, "U-Net width multiplier (1.0 = paper).")
flags.DEFINE_integer("embed_dim", 512, "Conditioning vector size.")
flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds per variant.")
flags.DEFINE_integer("steps_per_round", 2, "Steps timed per round (mean per step is recorded).")
flags.DEFINE_list("impls", ["plain", "cpu_tuned"], "Kernel choices (layers.KERNELS) to time.")


def make_step(impl: str, spec: jax.Array, cond: jax.Array, target: jax.Array):
  """Builds (state, jitted step) for one transposed-convolution implementation."""
  net = ConditionedUNet(FLAGS.width_mult, conv_impl=impl)
  with jax.threefry_partitionable(False):
    variables = jax.jit(lambda r: net.init(r, spec, cond, False))(jax.random.key(0))
  tx = optax.adam(1e-4)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

  @jax.jit
  def step(state, spec, cond, target):
    params, stats, opt = state

    def loss_fn(p):
      masks, upd = net.apply({"params": p, "batch_stats": stats}, spec, cond, True,
                             mutable=["batch_stats"])
      return jnp.mean(jnp.abs(masks - target)), upd["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), stats, opt), loss

  return state, step


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  b, c, n = FLAGS.batch, FLAGS.conditionings, FLAGS.size
  spec = jnp.asarray(rng.normal(size=(b, n, n)), jnp.float32)
  cond = jnp.asarray(rng.normal(size=(b, c, FLAGS.embed_dim)), jnp.float32)
  cond = cond / jnp.linalg.norm(cond, axis=-1, keepdims=True)
  target = jnp.asarray(rng.random((b, c, n, n)) > 0.5, jnp.float32)
  print(f"devices: {jax.devices()}  batch={b} conditionings={c} size={n} "
        f"width_mult={FLAGS.width_mult}")

  variants = {}
  for impl in FLAGS.impls:
    state, step = make_step(impl, spec, cond, target)
    t0 = time.perf_counter()
    state, loss = step(state, spec, cond, target)  # compile + first step
    jax.block_until_ready(loss)
    print(f"{impl:>6}: compile + first step {time.perf_counter() - t0:.2f} s, "
          f"loss {float(loss):.4f}")
    variants[impl] = [state, step, []]

  for r in range(FLAGS.rounds):
    for impl, v in variants.items():
      state, step, times = v
      t0 = time.perf_counter()
      for _ in range(FLAGS.steps_per_round):
        state, loss = step(state, spec, cond, target)
      jax.block_until_ready(loss)
      times.append((time.perf_counter() - t0) / FLAGS.steps_per_round)
      v[0] = state
      print(f"round {r + 1}/{FLAGS.rounds} {impl:>6}: {times[-1]:.3f} s/step", flush=True)

  med = {impl: statistics.median(v[2]) for impl, v in variants.items()}
  for impl, v in variants.items():
    print(f"{impl:>6}: median {med[impl]:.3f} s/step  (min {min(v[2]):.3f}, max {max(v[2]):.3f}, "
          f"{len(v[2])} rounds x {FLAGS.steps_per_round} steps)")
  if "plain" in med and "cpu_tuned" in med:
    print(f"plain / cpu_tuned = {med['plain'] / med['cpu_tuned']:.2f}x")


if __name__ == "__main__":
  app.run(main)
