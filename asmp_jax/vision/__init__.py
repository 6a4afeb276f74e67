"""Learned providers of the scene graph's detections, pseudo-depth and optical flow.

The paper's front end, from the libraries researchers get it from, with local weight files only
(nothing is downloaded at run time; formats and safety in :mod:`asmp_jax.vision.weights`):

  detector  torchvision ``fasterrcnn_resnet50_fpn`` / ``_v2`` state_dict ``.pth``: boxes, scores,
            labels and a 2048-d region feature per box (:mod:`asmp_jax.vision.detector`);
  depth     transformers ``DPTForDepthEstimation`` ``save_pretrained`` directory (safetensors):
            pseudo-depth (:mod:`asmp_jax.vision.depth`);
  flow      torchvision ``raft_small`` / ``raft_large`` state_dict ``.pth`` (:mod:`asmp_jax.vision.flow`).

Needs the optional extra ``pip install -e ".[vision]"`` (torch, torchvision, transformers); the
rest of asmp_jax never imports torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from asmp_jax.vision import weights as weights_lib

KINDS = ("detections", "depth", "flow")


def _require_torch() -> None:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise weights_lib.WeightsError(
        f"learned providers need torch and torchvision ({e}); install the extra: "
        "pip install -e '.[vision]'") from e


@dataclasses.dataclass
class VisionProviders:
  """The learned providers of one run; ``None`` = that provider is not used (fallback)."""
  detector: Any = None
  depth: Any = None
  flow: Any = None

  @classmethod
  def load(cls, detector_weights: str | None = None, depth_weights: str | None = None,
           flow_weights: str | None = None, *, detector_score_threshold: float = 0.5,
           batch_size: int = 4, device: str | None = None, detector_min_size: int = 800,
           detector_kwargs: dict[str, Any] | None = None) -> "VisionProviders":
    """Loads the providers whose weights are given (each checked in full before returning).

    ``detector_min_size``: the detector's input resizing, shorter side to this many pixels and
    longer side at most ``1333 / 800`` times that (torchvision's defaults 800 / 1333).

    Raises:
      weights.WeightsError: a missing, unreadable, unsafe or wrong-architecture weight file,
        or torch missing.
    """
    if not (detector_weights or depth_weights or flow_weights):
      return cls()
    _require_torch()
    from asmp_jax.vision import depth, detector, flow  # pylint: disable=g-import-not-at-top
    out = cls()
    if detector_weights:
      out.detector = detector.FasterRCNNDetector(
          detector_weights, detector_score_threshold, batch_size, device=device,
          min_size=int(detector_min_size), max_size=int(round(detector_min_size * 1333 / 800)),
          **(detector_kwargs or {}))
    if depth_weights:
      out.depth = depth.DPTDepth(depth_weights, batch_size, device=device)
    if flow_weights:
      out.flow = flow.RAFTFlow(flow_weights, batch_size, device=device)
    return out

  def __bool__(self) -> bool:
    return any(p is not None for p in (self.detector, self.depth, self.flow))

  def records(self) -> dict[str, dict[str, Any] | None]:
    """Per kind, the provider's name and weight sha256 (None: not used)."""
    return {k: (None if p is None else p.record())
            for k, p in zip(KINDS, (self.detector, self.depth, self.flow))}


def check_checkpoint(config, learned: VisionProviders, detections_file: str | None) -> None:
  """Refuses, before any video is decoded, a 'precomputed'-feature checkpoint that would get no
  region features or features of another size than the detector's, and a 'resnet18_crops' one
  whose crop-encoder weight file is missing or not a ResNet-18."""
  from asmp_jax.graph import features as graph_features  # pylint: disable=g-import-not-at-top
  from asmp_jax.vision import separation  # pylint: disable=g-import-not-at-top
  extractor = config.graph.feature_extractor
  if extractor == graph_features.RESNET18_CROPS:
    from asmp_jax.vision import crops  # pylint: disable=g-import-not-at-top
    crops.encoder(str(config.graph.get("crop_encoder_weights", "")))
  if extractor != graph_features.PRECOMPUTED:
    return
  if learned.detector is None and not detections_file:
    raise separation.FeatureMismatch(
        f"the checkpoint's node features are {int(config.model.node_feature_dim)}-d detector "
        "region features ('precomputed'): pass --detector_weights (or a --detections file with "
        "region features)")
  separation.check_feature_dim(extractor, config.model.node_feature_dim, learned.detector)
