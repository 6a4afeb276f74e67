"""Command-line flags of the learned providers, shared by ``asmp_jax.separate`` and
``asmp_jax.preprocess_videos``."""

from __future__ import annotations

from typing import Any

from absl import flags

FLAG_NAMES = ("detector_weights", "depth_weights", "flow_weights", "detector_score_threshold",
              "detector_min_size")


def define_flags() -> None:
  """Defines the weight and detector flags (call once per program)."""
  flags.DEFINE_string("detector_weights", None, "torchvision fasterrcnn_resnet50_fpn(_v2) "
                      "state_dict .pth: the learned detector (README, 'Your own video with "
                      "learned vision').")
  flags.DEFINE_string("depth_weights", None, "transformers DPTForDepthEstimation "
                      "save_pretrained directory (safetensors): learned pseudo-depth.")
  flags.DEFINE_string("flow_weights", None, "torchvision raft_small/raft_large state_dict .pth: "
                      "learned optical flow.")
  flags.DEFINE_float("detector_score_threshold", 0.5, "Detections scoring below are dropped.")
  flags.DEFINE_integer("detector_min_size", 800, "The detector's input: shorter side resized to "
                       "this many pixels (torchvision's default 800; smaller is faster).")


def flag_values() -> dict[str, Any]:
  """The flags' values as keyword arguments of the commands' ``run``."""
  return {n: flags.FLAGS[n].value for n in FLAG_NAMES}
