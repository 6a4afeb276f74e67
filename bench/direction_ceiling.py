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

A third table asks whether the frames' node features (what the graph network sees) carry that
sideways heading: a linear probe (one-vs-rest ridge regression on standardised features, trained
on the training split) from the auditory object's node features, over the windows whose scene
graph has the object's node, to the label:

  * of the same window (a per-window visual input, which the direction head does not get);
  * of every window of the crop, from the crop's first window's features (what the slot embedding
    can carry), alone and with this window's true depth motion and offset in the crop appended.

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

from asmp_jax import config_lib, datasets, schema  # noqa: E402
from asmp_jax.graph import motion  # noqa: E402
from asmp_jax.graph.build import NODE_AUDITORY  # noqa: E402


CROP_WINDOWS = 6  # windows per 65535-sample crop (the direction head's time slices)


def sources(source, num_classes: int):
  """Per auditory source: (labels [W], true displacement [W, 3], valid [W], node features [W, F]).

  The features are those of the source's node in each window's scene graph (auditory node ``a``
  for source ``a``), NaN in the windows whose graph lacks it (a missed detection).
  """
  key = schema.direction_key(num_classes)
  out = []
  for i in range(len(source)):
    ex = source[i]
    lab = np.asarray(ex[key])                                   # [W, A]
    gt = np.asarray(ex["gt_window_displacement"], np.float64)   # [W, A, 3]
    ok = (lab >= 0) & np.asarray(ex["window_valid"], bool)[:, None] & np.all(np.isfinite(gt), -1)
    feats = np.asarray(ex["node_features"], np.float32)         # [W, N, F]
    node_ok = np.asarray(ex["node_mask"], bool) & (np.asarray(ex["node_type"]) == NODE_AUDITORY)
    for a in range(lab.shape[1]):
      if ok[:, a].any():
        f = np.where(node_ok[:, a, None], feats[:, a], np.nan)
        out.append((lab[:, a], np.nan_to_num(gt[:, a]), ok[:, a], f))
  return out


def windows(srcs):
  """(labels [N], true displacement [N, 3]) of every valid window, each once."""
  return (np.concatenate([lab[ok] for lab, _, ok, *_ in srcs]),
          np.concatenate([disp[ok] for _, disp, ok, *_ in srcs]))


def feature_windows(srcs):
  """(labels [N], true displacement [N, 3], node features [N, F]) of every valid window whose
  graph has the source's node, each once."""
  lab_, disp_, feat_ = [], [], []
  for lab, disp, ok, feat in srcs:
    keep = ok & np.all(np.isfinite(feat), -1)
    lab_.append(lab[keep])
    disp_.append(disp[keep])
    feat_.append(feat[keep])
  return np.concatenate(lab_), np.concatenate(disp_), np.concatenate(feat_)


def ridge_accuracy(x_tr, y_tr, x_ev, y_ev, num_classes: int, lam: float = 100.0) -> float:
  """Accuracy on (x_ev, y_ev) of a one-vs-rest ridge regression fitted on (x_tr, y_tr).

  Features are standardised with the training statistics and get a bias column; the prediction
  is the class whose regression output is largest.
  """
  x_tr = np.asarray(x_tr, np.float64)
  x_ev = np.asarray(x_ev, np.float64)
  mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
  def design(x):
    return np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], axis=1)
  a_tr, a_ev = design(x_tr), design(x_ev)
  targets = np.eye(num_classes)[np.asarray(y_tr)]
  w = np.linalg.solve(a_tr.T @ a_tr + lam * np.eye(a_tr.shape[1]), a_tr.T @ targets)
  return float(np.mean((a_ev @ w).argmax(1) == np.asarray(y_ev)))


def majority_accuracy(tr_lab, ev_lab) -> float:
  """Accuracy on ev_lab of the most frequent training label."""
  return lookup_accuracy(tr_lab, {"": np.zeros(len(tr_lab))}, ev_lab,
                         {"": np.zeros(len(ev_lab))})[""]


def _one_hot(values: np.ndarray, num: int) -> np.ndarray:
  return np.eye(num)[np.asarray(values)]


def crop_windows(srcs, first_features: bool = False):
  """(labels [N], displacement [N, 3], the crop's first window's displacement [N, 3], offset [N])
  of every valid window of every crop whose first window is valid, once per covering crop.

  With ``first_features`` the first window's node features [N, F] replace its displacement, and
  only the crops whose first window has the source's node count.
  """
  lab_, disp_, first_, off_ = [], [], [], []
  for lab, disp, ok, *feat in srcs:
    first_of = feat[0] if first_features else disp
    for start in range(len(lab) - CROP_WINDOWS + 1):
      if not ok[start] or not np.all(np.isfinite(first_of[start])):
        continue
      for off in range(CROP_WINDOWS):
        w = start + off
        if ok[w]:
          lab_.append(lab[w])
          disp_.append(disp[w])
          first_.append(first_of[start])
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

  n = args.num_classes
  tr_l, tr_d, tr_f = feature_windows(tr_src)
  ev_l, ev_d, ev_f = feature_windows(ev_src)
  def depth(d):
    return _one_hot(depth_motion(d, thr) + 1, 3)
  rows = {"the window's own node features": ridge_accuracy(tr_f, tr_l, ev_f, ev_l, n),
          "the window's own node features + its true depth motion": ridge_accuracy(
              np.c_[tr_f, depth(tr_d)], tr_l, np.c_[ev_f, depth(ev_d)], ev_l, n)}
  maj_own = majority_accuracy(tr_l, ev_l)
  tr_l, tr_d, tr_f, tr_o = crop_windows(tr_src, first_features=True)
  ev_l, ev_d, ev_f, ev_o = crop_windows(ev_src, first_features=True)
  maj_crop = majority_accuracy(tr_l, ev_l)
  rows["the crop's first window's node features"] = ridge_accuracy(tr_f, tr_l, ev_f, ev_l, n)
  rows["the crop's first window's node features + this window's true depth motion and offset"] = (
      ridge_accuracy(np.c_[tr_f, depth(tr_d), _one_hot(tr_o, CROP_WINDOWS)], tr_l,
                     np.c_[ev_f, depth(ev_d), _one_hot(ev_o, CROP_WINDOWS)], ev_l, n))
  print(f"\nLinear probe (one-vs-rest ridge, lambda 100) from the source's node features; "
        f"majority vote {maj_own:.3f} over the windows with the node, {maj_crop:.3f} over "
        f"the crops' windows ({len(ev_l)})\n")
  print("| probe sees | accuracy |")
  print("|---|---|")
  for name, a in rows.items():
    print(f"| {name} | {a:.3f} |")


if __name__ == "__main__":
  main()
