"""Preprocessing on synthetic clips: throughput, and how well it recovers the true motion.

For each clip of a directory made by ``python -m asmp_data.synthetic.generate`` (or the clips the
TFDS builder generated under ``<data_dir>/downloads/asmp_synthetic_clips/<config>-<version>/``),
runs the full preprocessing (decode mp4, features from pixels, graphs, LK+ICP rectification, flow
median) with the synthetic oracle provider, once with the simulated detector's noisy detections and
once with exact boxes, and compares each auditory source's per-window displacement class with the
class of the generator's exact ``window_displacement`` (same thresholds). Prints clips/s per
configuration and the direction-class agreement (10 and 28 classes).

  python bench/preprocess_bench.py --clips_dir=DIR/val --num_clips=40
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from asmp_jax import media, preprocess, scene_pipeline, schema
from asmp_jax.graph import motion, providers


def _truth(json_path, ex, auditory_ids):
  with open(json_path) as f:
    meta = json.load(f)
  gt = np.load(os.path.splitext(json_path)[0] + ".npz")["window_displacement"]
  out = np.full(ex["displacement"].shape, np.nan)
  for a, k in enumerate(ex["source_class"]):
    if k < 0:
      continue
    objs = [i for i, o in enumerate(meta["objects"]) if o["class_id"] == auditory_ids[k]]
    if len(objs) == 1:
      out[:, a] = gt[:, objs[0]]
  return out


def run(jsons, detections, rectify, flow, thresholds):
  from asmp_data.synthetic import classes  # pylint: disable=g-import-not-at-top
  auditory_ids = [classes.class_id(c.name) for c in classes.SOUNDING_CLASSES]
  cfg = preprocess.PreprocessConfig(rectify=rectify, no_motion_thresholds=thresholds)
  agree = {10: [], 28: []}
  t0 = time.perf_counter()
  for path in jsons:
    base = os.path.splitext(path)[0]
    frames, _ = media.read_video(base + ".mp4")
    wav, _ = media.load_audio(base + ".wav")
    prov = providers.SyntheticOracle(path, detections=detections, flow=flow)
    ex = scene_pipeline.clip_example(frames, wav, prov, auditory_ids, cfg)
    truth = _truth(path, ex, auditory_ids)
    for n in (10, 28):
      est = ex[schema.direction_key(n)]
      ok = np.isfinite(truth).all(-1) & (est >= 0)
      true_cls = motion.direction_class(np.nan_to_num(truth), n, thresholds=thresholds)
      agree[n].append(np.stack([est[ok], true_cls[ok]], -1))
  dt = time.perf_counter() - t0
  res = {"clips_per_s": len(jsons) / dt}
  for n in (10, 28):
    pairs = np.concatenate(agree[n])
    res[f"agreement_{n}"] = float(np.mean(pairs[:, 0] == pairs[:, 1]))
    res[f"windows_{n}"] = int(len(pairs))
    counts = np.bincount(pairs[:, 1], minlength=n)
    res[f"majority_{n}"] = float(counts.max() / counts.sum())
  return res


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips_dir", required=True, help="directory with <id>.json/.npz/.mp4/.wav")
  parser.add_argument("--num_clips", type=int, default=40)
  args = parser.parse_args()
  jsons = sorted(os.path.join(args.clips_dir, f) for f in os.listdir(args.clips_dir)
                 if f.endswith(".json"))[:args.num_clips]
  if not jsons:
    raise SystemExit(f"{args.clips_dir}: no clips")
  thresholds = tuple(motion.DEFAULT_THRESHOLDS)
  print(f"{len(jsons)} clips from {args.clips_dir}; no-motion thresholds {thresholds}")
  print(f"{'detections':>10} {'rectify':>7} {'flow':>7} {'clips/s':>8} {'agree10':>8} "
        f"{'agree28':>8} {'majority10':>10} {'windows':>8}")
  for det, rect, flow in (("exact", True, "sidecar"), ("noisy", True, "sidecar"),
                          ("noisy", False, "sidecar"), ("noisy", True, "opencv")):
    r = run(jsons, det, rect, flow, thresholds)
    print(f"{det:>10} {str(rect):>7} {flow:>7} {r['clips_per_s']:8.2f} {r['agreement_10']:8.3f} "
          f"{r['agreement_28']:8.3f} {r['majority_10']:10.3f} {r['windows_10']:8d}", flush=True)


if __name__ == "__main__":
  main()
