"""What the U-Net's log-frequency grid costs a perfect mask: ideal binary masks through the warp.

The model predicts its masks on the 256-row log-frequency grid (``audio.log_freq_warp``) and they
are mapped back to the 512 linear rows (``audio.log_freq_unwarp``) before they are applied; the
evaluation's oracle masks are computed on the linear rows. For fixed test pairs (first 65535
samples of each clip, unit gains) this prints the mean SDR (BSS Eval v3, mean over the two
videos) of:

  * the mixture as both estimates;
  * the ideal binary mask on the linear STFT rows (the evaluation's oracle);
  * the ideal binary mask computed on the warped magnitudes and unwarped: the best binary mask a
    model on the warped grid can output;
  * with ``--pool=p > 1``, the ideal binary mask of the warped magnitudes averaged over ``p x p``
    bins, resized back as the U-Net resizes its logits (``config.model.unet_pool``) and unwarped.

  python bench/warp_oracle.py [--config=configs/synthetic.py] [--split=test] [--pairs=30] [--pool=2]
      [--set data.builder_config=octant]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asmp_jax import audio, datasets, metrics  # noqa: E402
from asmp_jax.models.unet import pool_grid, unpool_grid  # noqa: E402
from train_step_bench import apply_settings, load_config  # noqa: E402  (bench/ is sys.path[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=str(REPO / "configs/synthetic.py"))
  parser.add_argument("--split", default="test")
  parser.add_argument("--pairs", type=int, default=30)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--pool", type=int, default=1, help="also the mask pooled p x p (p > 1)")
  parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a config value (repeatable), e.g. data.builder_config=octant")
  args = parser.parse_args()
  config = load_config(args.config)
  apply_settings(config, args.set)
  source = datasets.data_source(datasets.get_builder(config.data), args.split)
  rng = np.random.default_rng(args.seed)
  scores = {"mixture": [], "ideal binary mask, linear rows": [],
            "ideal binary mask, warped grid (unwarped)": []}
  pooled_name = f"ideal binary mask, warped grid pooled {args.pool}x{args.pool} (resized, unwarped)"
  if args.pool > 1:
    scores[pooled_name] = []
  for _ in range(args.pairs):
    a, b = rng.choice(len(source), size=2, replace=False)
    wav = np.stack([np.asarray(source[int(i)]["audio"][:audio.CROP], np.float32) / 32767.0
                    for i in (a, b)])
    spec = audio.stft(jnp.asarray(wav))  # [2, F, T]
    mix = spec.sum(axis=0)
    mags = jnp.abs(spec)
    linear = audio.masks_to_waveforms(audio.ideal_binary_mask(mags), mix, audio.CROP)
    warped_mags = audio.log_freq_warp(mags)
    warped_mask = audio.log_freq_unwarp(audio.ideal_binary_mask(warped_mags))
    warped = audio.masks_to_waveforms(warped_mask, mix, audio.CROP)
    mixture = jnp.broadcast_to(audio.istft(mix, audio.CROP), wav.shape)
    estimates = [mixture, linear, warped]
    if args.pool > 1:
      small = audio.ideal_binary_mask(pool_grid(warped_mags, args.pool))
      pooled_mask = audio.log_freq_unwarp(unpool_grid(small, warped_mags.shape[-2:]))
      estimates.append(audio.masks_to_waveforms(pooled_mask, mix, audio.CROP))
    ref = wav.astype(np.float64)
    for name, est in zip(scores, estimates):
      sdr = metrics.bss_eval_sources(ref, np.asarray(est, np.float64))[0]
      scores[name].append(float(np.mean(sdr)))
  print(f"{args.pairs} {args.split} pairs (seed {args.seed}), first {audio.CROP} samples; "
        "SDR in dB, mean over videos and pairs (± s.e.)\n")
  print("| estimate | SDR |\n|---|---|")
  for name, values in scores.items():
    v = np.asarray(values)
    print(f"| {name} | {v.mean():.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f} |")


if __name__ == "__main__":
  main()
