"""Speed of the learned providers (asmp_jax.vision) on this machine, full-size architectures at
random initialisation (the speed does not depend on the weights' values).

Prints, per provider, frames/s at the resolution it runs at (the frame size given, and the
model's own input size), on the CPU, or on the first CUDA device when torch sees one; then
(``--clip``) the wall time of ``python -m asmp_jax.preprocess_videos`` on one clip of
``--seconds`` seconds at the paper's frame sampling (8 fps, the raw builders' sampling) with the
three providers (fasterrcnn_resnet50_fpn, the DPT-hybrid architecture of ``Intel/dpt-hybrid-midas``,
raft_large).

  python bench/vision_bench.py --height=360 --width=640 --frames=8 --clip --seconds=10

``--record=FILE`` also writes the figures as JSON with the command, commit, machine and the load
average before and after (asmp_jax.run_record.machine).

Architectures: torchvision ``fasterrcnn_resnet50_fpn`` / ``_v2`` (input resized by the library to a
shorter side of 800 px), ``raft_small`` / ``raft_large`` (12 refinement steps), transformers
``DPTForDepthEstimation`` with the sizes of ``Intel/dpt-hybrid-midas`` (ViT-B/16 on a BiT-ResNet
stem) and ``Intel/dpt-large`` (ViT-L/16), both at 384 x 384. Those sizes are the ones
transformers' conversion scripts give the two checkpoints (``get_dpt_config`` in
``models/dpt/convert_dpt_hybrid_to_pytorch.py`` and ``convert_dpt_to_pytorch.py``): the hybrid's
``reassemble_factors = [1, 1, 1, 0.5]`` there differ from the default only for the first two
stages, which the hybrid does not reassemble (identity), so both give the same 414 tensors of the
same shapes (122.4 M parameters).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _dpt_config(name: str):
  from transformers import DPTConfig  # pylint: disable=g-import-not-at-top
  if name == "dpt-hybrid-midas":
    return DPTConfig(is_hybrid=True, neck_hidden_sizes=[256, 512, 768, 768])
  return DPTConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16, backbone_out_indices=[5, 11, 17, 23],
                   neck_hidden_sizes=[256, 512, 1024, 1024])


def save_full_size(d: str) -> dict[str, str]:
  """Random-init full-size weights in the libraries' published formats; name -> path."""
  import torch  # pylint: disable=g-import-not-at-top
  from torchvision.models import detection, optical_flow  # pylint: disable=g-import-not-at-top
  from transformers import DPTForDepthEstimation  # pylint: disable=g-import-not-at-top
  out = {}
  for name in ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2"):
    out[name] = os.path.join(d, name + ".pth")
    torch.save(getattr(detection, name)(weights=None, weights_backbone=None).state_dict(),
               out[name])
  for name in ("raft_small", "raft_large"):
    out[name] = os.path.join(d, name + ".pth")
    torch.save(getattr(optical_flow, name)(weights=None).state_dict(), out[name])
  for name in ("dpt-hybrid-midas", "dpt-large"):
    out[name] = os.path.join(d, name)
    DPTForDepthEstimation(_dpt_config(name)).save_pretrained(out[name])
  return out


def textured_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (height + n, width + 2 * n, 3), dtype=np.uint8)
  return np.stack([base[k:k + height, 2 * k:2 * k + width] for k in range(n)])


def rate(fn, frames: np.ndarray, pairs: bool = False) -> float:
  fn(frames[:2 if pairs else 1])  # warm-up (first-call allocations)
  t0 = time.perf_counter()
  fn(frames)
  n = len(frames) - 1 if pairs else len(frames)
  return n / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--height", type=int, default=360)
  p.add_argument("--width", type=int, default=640)
  p.add_argument("--frames", type=int, default=8, help="frames timed per provider")
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--clip", action="store_true", help="also time preprocess_videos on one clip")
  p.add_argument("--seconds", type=float, default=10.0, help="length of that clip")
  p.add_argument("--skip_rates", action="store_true", help="only the clip (with --clip)")
  p.add_argument("--record", default=None, help="also write the figures to this JSON file")
  args = p.parse_args()
  load_before = os.getloadavg()
  figures: dict[str, float] = {}
  import torch  # pylint: disable=g-import-not-at-top
  from asmp_jax import vision  # pylint: disable=g-import-not-at-top
  from asmp_jax.vision import depth, detector, flow  # pylint: disable=g-import-not-at-top
  dev = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
         else f"CPU ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)")
  print(f"device: {dev}; torch {torch.__version__}; frames {args.height}x{args.width}, "
        f"batch {args.batch_size}, {args.frames} frames timed per provider")
  frames = textured_frames(args.frames, args.height, args.width)
  with tempfile.TemporaryDirectory() as d:
    w = save_full_size(d)
    for name in () if args.skip_rates else ("fasterrcnn_resnet50_fpn",
                                            "fasterrcnn_resnet50_fpn_v2"):
      prov = detector.FasterRCNNDetector(w[name], batch_size=args.batch_size)
      r = figures[f"{name}_frames_per_s"] = rate(prov.detect, frames)
      print(f"detector {name:28s} {r:7.3f} frames/s (input resized to shorter side 800 px)")
    for name in () if args.skip_rates else ("dpt-hybrid-midas", "dpt-large"):
      prov = depth.DPTDepth(w[name], batch_size=args.batch_size)
      r = figures[f"{name}_frames_per_s"] = rate(prov.depth, frames)
      print(f"depth    {name:28s} {r:7.3f} frames/s (model input {prov.image_size}x"
            f"{prov.image_size})")
    for name in () if args.skip_rates else ("raft_small", "raft_large"):
      prov = flow.RAFTFlow(w[name], batch_size=args.batch_size)
      r = figures[f"{name}_frame_pairs_per_s"] = rate(prov.flow, frames, pairs=True)
      h8, w8 = flow.model_size(args.height, args.width)
      print(f"flow     {name:28s} {r:7.3f} frame pairs/s (model input {h8}x{w8})")
    if args.clip:
      from asmp_jax import media, preprocess_videos  # pylint: disable=g-import-not-at-top
      fps = 24
      clip = textured_frames(int(args.seconds * fps), args.height, args.width, seed=1)
      vids = os.path.join(d, "videos")
      os.makedirs(vids)
      media.write_video(os.path.join(vids, "clip.mp4"), clip, fps)
      learned = vision.VisionProviders.load(w["fasterrcnn_resnet50_fpn"], w["dpt-hybrid-midas"],
                                            w["raft_large"], batch_size=args.batch_size)
      t0 = time.perf_counter()
      report = preprocess_videos.run(vids, os.path.join(d, "out"), learned=learned,
                                     num_windows=int(np.ceil(args.seconds)))
      el = time.perf_counter() - t0
      n = report["videos"]["clip"]["frames"]
      figures.update(clip_seconds=args.seconds, clip_frames=n, clip_wall_s=round(el, 1))
      print(f"preprocess_videos, one {args.seconds:g} s clip ({args.height}x{args.width}, "
            f"{fps} fps) at 8 fps = {n} frames, fasterrcnn_resnet50_fpn + dpt-hybrid-midas + "
            f"raft_large: {el:.1f} s ({n / el:.3f} frames/s)")
  if args.record:
    import shlex  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    from asmp_jax import run_record  # pylint: disable=g-import-not-at-top
    record = {"command": shlex.join(["python"] + sys.argv), "commit": run_record.git_commit(
        __file__), "device": dev, "torch": torch.__version__, "machine": run_record.machine(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "frame_size": [args.height, args.width], "batch_size": args.batch_size,
              "figures": figures}
    run_record.write(args.record, record)
    print(f"record: {args.record}")


if __name__ == "__main__":
  main()
