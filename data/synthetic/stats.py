r"""Measures the generator: speed and the statistics of what it produces.

  python -m asmp_data.synthetic.stats --num_clips=40 [--seed=0]

Generates clips in memory (one process, nothing written) and prints the time per clip and, over
the clips: sources per clip, camera motion, how often a context object overlaps a sounding object
with IoU > 0.1, the motion kinds and the share of windows below the no-motion thresholds, the
Doppler ratios reached, the visibility of sounding objects and the number of silent-stem re-draws.
"""

from __future__ import annotations

import collections
import sys
import time

import numpy as np
from absl import app
from absl import flags

from asmp_data.synthetic import generator
from asmp_data.synthetic.config import GeneratorConfig

_NUM_CLIPS = flags.DEFINE_integer("num_clips", 40, "Clips to generate.")
_SEED = flags.DEFINE_integer("seed", 0, "Data-set seed (clips use the 'stats' split seeds).")
# The graph's default no-motion thresholds on (u/W, v/H, depth) per window.
NO_MOTION = np.array([0.02, 0.02, 0.1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes ``a [..., 4]`` and ``b [..., 4]`` (x0, y0, x1, y1), broadcasting."""
  lo = np.maximum(a[..., :2], b[..., :2])
  hi = np.minimum(a[..., 2:], b[..., 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)
  union = area(a) + area(b) - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def clip_stats(clip: generator.Clip) -> dict:
  """Per-clip figures (see the module docstring)."""
  meta, arr = clip.sidecar, clip.arrays
  objs = meta["objects"]
  sounding = [o["track"] for o in objs if o["sounding"]]
  context = [o["track"] for o in objs if not o["sounding"]]
  boxes, vis = arr["boxes"], arr["visible"]
  overlap = np.zeros(boxes.shape[0], bool)
  for s in sounding:
    for c in context:
      overlap |= (box_iou(boxes[:, s], boxes[:, c]) > 0.1) & vis[:, s] & vis[:, c]
  disp = arr["window_displacement"][:, sounding]
  still = np.all(np.abs(disp) < NO_MOTION, axis=-1)
  world = arr["world_position"].astype(np.float64)
  r = np.linalg.norm(world[:, sounding], axis=-1)
  radial = np.diff(r, axis=0) * meta["fps"]  # units/s between frames
  c = meta["speed_of_sound"]
  return {
      "num_sounding": len(sounding),
      "num_context": len(context),
      "moving_camera": meta["camera"]["moving"],
      "overlap_frames": float(overlap.mean()) if context else 0.0,
      "any_overlap": bool(overlap.any()),
      "kinds": [k for s in sounding for k in objs[s]["motion"]],
      "still_windows": still.ravel().tolist(),
      "doppler_max": float(c / (c - max(-radial.min(), 0.0))),
      "doppler_min": float(c / (c + max(radial.max(), 0.0))),
      "visible": float(vis[:, sounding].mean()),
      "redraws": [objs[s]["sound"]["redraws"] for s in sounding],
  }


def main(argv):
  del argv
  cfg = GeneratorConfig()
  rows, times = [], []
  for i in range(_NUM_CLIPS.value):
    start = time.perf_counter()
    clip = generator.generate_clip(generator.derive_clip_seed(_SEED.value, "stats", i), cfg)
    times.append(time.perf_counter() - start)
    rows.append(clip_stats(clip))
  n = len(rows)
  kinds = collections.Counter(k for r in rows for k in r["kinds"])
  total_kinds = sum(kinds.values())
  still = np.concatenate([r["still_windows"] for r in rows])
  with_ctx = [r for r in rows if r["num_context"]]
  print(f"clips: {n}; generation (in memory, 1 process): {np.mean(times):.3f} s/clip "
        f"(median {np.median(times):.3f}), {1 / np.mean(times):.2f} clips/s")
  print(f"2 sources: {np.mean([r['num_sounding'] == 2 for r in rows]):.0%}; "
        f"mean context objects {np.mean([r['num_context'] for r in rows]):.2f}; "
        f"moving camera {np.mean([r['moving_camera'] for r in rows]):.0%}")
  if with_ctx:
    print(f"clips with context: {len(with_ctx)}; of these with a context box at IoU > 0.1 with a "
          f"sounding box in some frame: {np.mean([r['any_overlap'] for r in with_ctx]):.0%}; "
          f"frames with such an overlap: {np.mean([r['overlap_frames'] for r in with_ctx]):.0%}")
  print("motion kinds of sounding objects per window: " + ", ".join(
      f"{k} {v / total_kinds:.0%}" for k, v in kinds.most_common()))
  print(f"sounding windows below the no-motion thresholds {NO_MOTION.tolist()}: {still.mean():.0%}")
  print(f"Doppler ratio range over clips: {min(r['doppler_min'] for r in rows):.3f} .. "
        f"{max(r['doppler_max'] for r in rows):.3f}")
  print(f"sounding objects visible in {np.mean([r['visible'] for r in rows]):.1%} of frames; "
        f"silent-stem re-draws: {sum(sum(r['redraws']) for r in rows)} over "
        f"{sum(r['num_sounding'] for r in rows)} sources")
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
