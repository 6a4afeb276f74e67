"""How much of the direction labels can a predictor know? Ceilings for the synthetic set.

The direction classifier sees a source's separated *mono* spectrogram (and the slot embedding of
the crop's first window). A mono microphone hears motion in depth (Doppler shift, 1/r loudness)
but not which way a source moves sideways. This script measures, per (auditory source, 1 s
window) of the built synthetic data set, the accuracy of the best predictor that knows only:

  * nothing: the majority class of the training split;
  * the true depth motion: toward / away / none (|dz| below the no-motion threshold), from the
    generator's exact displacement (``gt_window_displacement``);
  * the true depth motion and whether the source moves at all (any axis above its threshold);
  * the true displacement, quantised like the labels (the labels' agreement with the truth; the
    rest is preprocessing error, see bench/preprocess_bench.py).

Each predictor is a lookup table from what it knows to the most frequent label of the training
split, applied to the evaluated split. Windows are counted once each (the evaluation protocol
counts a window once per crop that covers it, so its majority-vote figure differs).

  python bench/direction_ceiling.py [--split=test] [--num_classes=10] [--data_dir=DIR]
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asmp_jax import config_lib, datasets  # noqa: E402
from asmp_jax.graph import motion  # noqa: E402


def windows(source, num_classes: int):
  """(labels [N], true displacement [N, 3]) of every valid auditory-source window."""
  key = "dir10" if num_classes == 10 else "dir28"
  labs, disp = [], []
  for i in range(len(source)):
    ex = source[i]
    lab = np.asarray(ex[key])                                   # [W, A]
    gt = np.asarray(ex["gt_window_displacement"], np.float64)   # [W, A, 3]
    ok = (lab >= 0) & np.asarray(ex["window_valid"], bool)[:, None] & np.all(np.isfinite(gt), -1)
    labs.append(lab[ok])
    disp.append(gt[ok])
  return np.concatenate(labs), np.concatenate(disp)


def keys(disp: np.ndarray, num_classes: int, thresholds) -> dict[str, np.ndarray]:
  thr = np.asarray(thresholds, np.float64)
  depth = np.where(np.abs(disp[:, 2]) >= thr[2], np.sign(disp[:, 2]), 0).astype(np.int64)
  moving = np.any(np.abs(disp) >= thr, axis=-1).astype(np.int64)
  return {
      "nothing (majority vote)": np.zeros(len(disp), np.int64),
      "true depth motion (audible)": depth,
      "true depth motion + moving or not": depth * 2 + moving,
      "true displacement": motion.direction_class(disp, num_classes, thresholds=thresholds),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--split", default="test")
  parser.add_argument("--num_classes", type=int, default=10, choices=(10, 28))
  parser.add_argument("--data_dir", default="", help="TFDS data_dir (default: TFDS's)")
  args = parser.parse_args()
  config = config_lib.base_config()
  config.data.data_dir = args.data_dir
  builder = datasets.get_builder(config.data)
  thr = tuple(config.graph.no_motion_thresholds)
  tr_lab, tr_disp = windows(datasets.data_source(builder, "train"), args.num_classes)
  ev_lab, ev_disp = windows(datasets.data_source(builder, args.split), args.num_classes)
  tr_keys = keys(tr_disp, args.num_classes, thr)
  ev_keys = keys(ev_disp, args.num_classes, thr)
  print(f"{args.split}: {len(ev_lab)} (source, window) labels, {args.num_classes} classes; "
        f"lookup tables from {len(tr_lab)} training labels\n")
  print("| predictor knows | accuracy |")
  print("|---|---|")
  for name, tr_k in tr_keys.items():
    table = {}
    for k in np.unique(tr_k):
      table[k] = collections.Counter(tr_lab[tr_k == k].tolist()).most_common(1)[0][0]
    fallback = collections.Counter(tr_lab.tolist()).most_common(1)[0][0]
    pred = np.array([table.get(k, fallback) for k in ev_keys[name]])
    print(f"| {name} | {np.mean(pred == ev_lab):.3f} |")


if __name__ == "__main__":
  main()
