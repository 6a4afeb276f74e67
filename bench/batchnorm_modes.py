"""Validation losses of a trained run with BatchNorm's running statistics vs batch statistics.

Restores the latest checkpoint of ``--workdir`` (trained by ``launch.py``), draws ``--batches``
fixed, seeded batches of validation pairs (``--seed``; no augmentation), and computes the losses
twice on each batch: as the trainer's evaluation does (``train=False``: BatchNorm normalises with
the running statistics saved in the checkpoint) and with ``train=True`` (each batch normalised
with its own statistics, as in training; the updated statistics are discarded). A large gap
means the model relies on within-batch statistics that the running averages do not reproduce at
inference. The same is printed for ``--batches`` batches of training pairs, as a reference.

  python bench/batchnorm_modes.py --workdir=runs/synthetic --batches=8
"""
from __future__ import annotations

import argparse
import statistics

import jax
import numpy as np

from asmp_jax import datasets, inference, input_pipeline, losses, run_folder, train
from asmp_jax.models import asmp as asmp_model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a launch.py run directory")
  parser.add_argument("--batches", type=int, default=8, help="batches per split")
  parser.add_argument("--seed", type=int, default=0, help="seed of the pairs")
  args = parser.parse_args()

  config = run_folder.load_saved_config(args.workdir)
  if config is None:
    raise SystemExit(f"{args.workdir}: no saved config (train with launch.py first)")
  variables, step = inference.restore_variables(args.workdir, config)
  model = asmp_model.create_model(config.model)
  builder = datasets.get_builder(config.data)
  pair_cfg = input_pipeline.PairConfig.from_config(config)
  norm = config.data.normalise_mix

  def loss_fn(v, batch, use_batch_stats):
    mb = train._model_batch(batch, norm)  # pylint: disable=protected-access
    if use_batch_stats:
      out, _ = model.apply(v, mb, train=True, mutable=["batch_stats"])
    else:
      out = model.apply(v, mb, train=False)
    _, metrics = losses.total_loss(out, mb, config.loss)
    return metrics

  running = jax.jit(lambda v, b: loss_fn(v, b, False))
  batchstat = jax.jit(lambda v, b: loss_fn(v, b, True))
  bs = config.train.batch_size
  print(f"{args.workdir}: checkpoint step {step}, batch {bs}, {args.batches} batches per split")
  print("| split | BatchNorm statistics | L_cyc | L_cons | L_dir |")
  print("|---|---|---|---|---|")
  for split in ("validation", "train"):
    src = datasets.data_source(builder, split)
    ds = input_pipeline.pair_dataset(src, pair_cfg, seed=args.seed, train=False,
                                     num_pairs=bs * args.batches)
    rows = {"running (inference)": [], "batch (as in training)": []}
    for batch in input_pipeline.batched(ds, bs, drop_remainder=True):
      rows["running (inference)"].append(jax.device_get(running(variables, batch)))
      rows["batch (as in training)"].append(jax.device_get(batchstat(variables, batch)))
    for name, hist in rows.items():
      mean = {k: statistics.fmean(float(np.asarray(h[k])) for h in hist)
              for k in ("loss_cyc", "loss_cons", "loss_dir")}
      print(f"| {split} | {name} | {mean['loss_cyc']:.4f} | {mean['loss_cons']:.3f} | "
            f"{mean['loss_dir']:.2f} |", flush=True)


if __name__ == "__main__":
  main()
