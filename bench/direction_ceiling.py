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

A second table counts windows as the evaluation does, once per 6-window crop that covers them
(crops start on every window), and adds what the direction head can see besides the audio: the
slot embedding comes from the scene graph of the crop's *first* window, whose frame shows the
object's sideways heading (the synthetic heading marker). Its predictors know:

  * the true displacement of the crop's first window (the most the first frame can tell, and
    more: the frame does not show motion in depth);
  * that, plus this window's true depth motion (what the audio adds);
  * both, plus the window's offset in the crop.

Each predictor is a lookup table from what it knows to the most frequent label of the training
split, applied to the evaluated split.

  python bench/direction_ceiling.py [--split=test] [--num_classes=10] [--data_dir=DIR]
      [--builder_config=default]
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


CROP_WINDOWS = 6  # windows per 65535-sample crop (the direction head's time slices)


def sources(source, num_classes: int):
  """Per auditory source: (labels [W], true displacement [W, 3], valid [W])."""
  key = "dir10" if num_classes == 10 else "dir28"
  out = []
  for i in range(len(source)):
    ex = source[i]
    lab = np.asarray(ex[key])                                   # [W, A]
    gt = np.asarray(ex["gt_window_displacement"], np.float64)   # [W, A, 3]
    ok = (lab >= 0) & np.asarray(ex["window_valid"], bool)[:, None] & np.all(np.isfinite(gt), -1)
    for a in range(lab.shape[1]):
      if ok[:, a].any():
        out.append((lab[:, a], np.nan_to_num(gt[:, a]), ok[:, a]))
  return out


def windows(srcs):
  """(labels [N], true displacement [N, 3]) of every valid window, each once."""
  return (np.concatenate([lab[ok] for lab, _, ok in srcs]),
          np.concatenate([disp[ok] for _, disp, ok in srcs]))


def crop_windows(srcs):
  """(labels [N], displacement [N, 3], the crop's first window's displacement [N, 3], offset [N])
  of every valid window of every crop whose first window is valid, once per covering crop."""
  lab_, disp_, first_, off_ = [], [], [], []
  for lab, disp, ok in srcs:
    for start in range(len(lab) - CROP_WINDOWS + 1):
      if not ok[start]:
        continue
      for off in range(CROP_WINDOWS):
        w = start + off
        if ok[w]:
          lab_.append(lab[w])
          disp_.append(disp[w])
          first_.append(disp[start])
          off_.append(off)
  return np.array(lab_), np.array(disp_), np.array(first_), np.array(off_)


def depth_motion(disp: np.ndarray, thresholds) -> np.ndarray:
  """-1 / 0 / +1: away... toward the camera or no motion in depth (|dz| below its threshold)."""
  thr = float(thresholds[2])
  return np.where(np.abs(disp[:, 2]) >= thr, np.sign(disp[:, 2]), 0).astype(np.int64)


def keys(disp: np.ndarray, num_classes: int, thresholds) -> dict[str, np.ndarray]:
  thr = np.asarray(thresholds, np.float64)
  depth = depth_motion(disp, thresholds)
  moving = np.any(np.abs(disp) >= thr, axis=-1).astype(np.int64)
  return {
      "nothing (majority vote)": np.zeros(len(disp), np.int64),
      "true depth motion (audible)": depth,
      "true depth motion + moving or not": depth * 2 + moving,
      "true displacement": motion.direction_class(disp, num_classes, thresholds=thresholds),
  }


def crop_keys(disp, first, offset, num_classes: int, thresholds) -> dict[str, np.ndarray]:
  depth = depth_motion(disp, thresholds)
  first_class = motion.direction_class(first, num_classes, thresholds=thresholds).astype(np.int64)
  return {
      "nothing (majority vote)": np.zeros(len(disp), np.int64),
      "true depth motion (audible)": depth,
      "the crop's first window's true displacement": first_class,
      "the first window's displacement + this window's depth motion": first_class * 3 + depth + 1,
      "both + the window's offset in the crop": (first_class * 3 + depth + 1) * CROP_WINDOWS
                                                + offset,
  }


def lookup_accuracy(tr_lab, tr_keys, ev_lab, ev_keys) -> dict[str, float]:
  """Accuracy on the evaluated split of each key's most-frequent-training-label table."""
  fallback = collections.Counter(tr_lab.tolist()).most_common(1)[0][0]
  out = {}
  for name, tr_k in tr_keys.items():
    table = {}
    for k in np.unique(tr_k):
      table[k] = collections.Counter(tr_lab[tr_k == k].tolist()).most_common(1)[0][0]
    pred = np.array([table.get(k, fallback) for k in ev_keys[name]])
    out[name] = float(np.mean(pred == ev_lab))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--split", default="test")
  parser.add_argument("--num_classes", type=int, default=10, choices=(10, 28))
  parser.add_argument("--data_dir", default="", help="TFDS data_dir (default: TFDS's)")
  parser.add_argument("--builder_config", default="default",
                      help="synthetic builder config (default, persistent, large, ...)")
  args = parser.parse_args()
  config = config_lib.base_config()
  config.data.data_dir = args.data_dir
  config.data.builder_config = args.builder_config
  builder = datasets.get_builder(config.data)
  thr = tuple(config.graph.no_motion_thresholds)
  tr_src = sources(datasets.data_source(builder, "train"), args.num_classes)
  ev_src = sources(datasets.data_source(builder, args.split), args.num_classes)

  tr_lab, tr_disp = windows(tr_src)
  ev_lab, ev_disp = windows(ev_src)
  acc = lookup_accuracy(tr_lab, keys(tr_disp, args.num_classes, thr),
                        ev_lab, keys(ev_disp, args.num_classes, thr))
  print(f"{args.builder_config}/{args.split}: {len(ev_lab)} (source, window) labels, "
        f"{args.num_classes} classes; lookup tables from {len(tr_lab)} training labels\n")
  print("| predictor knows (each window once) | accuracy |")
  print("|---|---|")
  for name, a in acc.items():
    print(f"| {name} | {a:.3f} |")

  tr_c, ev_c = crop_windows(tr_src), crop_windows(ev_src)
  acc = lookup_accuracy(tr_c[0], crop_keys(*tr_c[1:], args.num_classes, thr),
                        ev_c[0], crop_keys(*ev_c[1:], args.num_classes, thr))
  print(f"\n{len(ev_c[0])} (source, crop, window) labels ({CROP_WINDOWS}-window crops starting "
        f"on every window); lookup tables from {len(tr_c[0])}\n")
  print("| predictor knows (each window once per covering crop) | accuracy |")
  print("|---|---|")
  for name, a in acc.items():
    print(f"| {name} | {a:.3f} |")


if __name__ == "__main__":
  main()
