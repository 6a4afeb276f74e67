"""Where the energy of the training mixtures lies, and what the unweighted L_cyc spends on it.

Builds fixed validation pairs of a config's data set with the training pipeline (unit gains, first
windows), computes the mixtures' warped magnitudes as the train step does, and prints:

  * the fraction of time-frequency bins that holds 90 / 99 / 99.9 % of each mixture's energy;
  * the share of the ideal-binary-mask L1 (L_cyc with ``mask_weight=none``) that comes from the
    bins outside the loudest ones, for a model that is perfect on the loud bins and outputs 0.5
    elsewhere: the part of the unweighted loss that does not move SDR.

  python bench/spectrogram_energy.py [--config=configs/synthetic.py] [--pairs=16]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asmp_jax import config_lib, datasets, input_pipeline, losses, train  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=str(REPO / "configs/synthetic.py"))
  parser.add_argument("--pairs", type=int, default=16)
  parser.add_argument("--split", default="validation")
  args = parser.parse_args()
  config = config_lib.config_from_file(args.config)
  builder = datasets.get_builder(config.data)
  with config.unlocked():
    train.fill_data_dependent_config(config, datasets.metadata(builder))
  src = datasets.data_source(builder, args.split)
  pair_cfg = input_pipeline.PairConfig.from_config(config)
  ds = input_pipeline.pair_dataset(src, pair_cfg, seed=0, train=False, num_pairs=args.pairs)
  elems = [ds[i] for i in range(args.pairs)]
  batch = {k: np.stack([e[k] for e in elems]) for k in elems[0]}
  mb = train._model_batch(batch, config.data.normalise_mix)  # pylint: disable=protected-access
  mix = np.exp(np.asarray(mb["mix_log_mag"], np.float64))                  # [B, H, W]
  ibm = np.asarray(losses.ibm_target(jnp.asarray(mb["video_mag_warped"])))  # [B, U, H, W]
  energy = (mix ** 2).reshape(len(mix), -1)
  order = np.argsort(-energy, axis=1)
  cum = np.cumsum(np.take_along_axis(energy, order, 1), 1) / energy.sum(1, keepdims=True)
  print(f"{args.split}: {args.pairs} pairs, {mix.shape[1]}x{mix.shape[2]} warped bins")
  print("| energy share | fraction of bins holding it (mean over mixtures) | unweighted L_cyc "
        "of a model perfect on those bins, 0.5 elsewhere |")
  print("|---|---|---|")
  for q in (0.9, 0.99, 0.999):
    n = (cum < q).sum(1) + 1
    loud = np.zeros_like(energy, bool)
    for b in range(len(mix)):
      loud[b, order[b, :n[b]]] = True
    loud = loud.reshape(mix.shape)[:, None]
    pred = np.where(loud, ibm, 0.5)                       # summed masks of each video
    l_cyc = np.abs(pred - ibm).mean(axis=(2, 3)).sum(1).mean()
    print(f"| {q:.1%} | {np.mean(n / energy.shape[1]):.3f} | {l_cyc:.3f} |")


if __name__ == "__main__":
  main()
