"""Faster R-CNN detector with 2048-d region features (torchvision ``fasterrcnn_resnet50_fpn`` or
``fasterrcnn_resnet50_fpn_v2``, read from a state_dict ``.pth``).

Per frame it returns the library's own detections (boxes in pixels, scores, class ids of the
checkpoint; ``box_score_thresh`` set to the score threshold) and, per box, a 2048-d region
feature: the output of the ResNet-50 body's last stage (``layer4``, 2048 channels, stride 32) on
the detector's own resized input, RoIAlign-pooled over the box (7 x 7 bins, 2 samples per bin,
``aligned=True``) and averaged over the bins, like the paper's bottom-up-attention features
(res5 output mean-pooled over each region). Frames go through the model ``batch_size`` at a time
on the first CUDA device when torch sees one.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from asmp_jax.graph import providers as graph_providers
from asmp_jax.vision import progress as progress_lib
from asmp_jax.vision import weights as weights_lib

FEATURE_DIM = 2048
_ROI_BINS = 7
_EXPECTED = "a torchvision fasterrcnn_resnet50_fpn or fasterrcnn_resnet50_fpn_v2 state_dict"


def _num_classes(sd: Mapping[str, Any]) -> int:
  return int(sd["roi_heads.box_predictor.cls_score.weight"].shape[0])


def _builder(name: str):
  def build(sd, **kwargs):
    from torchvision.models import detection  # pylint: disable=g-import-not-at-top
    return getattr(detection, name)(weights=None, weights_backbone=None,
                                    num_classes=_num_classes(sd), **kwargs)
  return build


VARIANTS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2")


def default_class_names(num_classes: int) -> list[str]:
  """COCO category names (from torchvision's weight enum, no download) for a 91-class head;
  ``"class i"`` otherwise."""
  if num_classes == 91:
    from torchvision.models import detection  # pylint: disable=g-import-not-at-top
    return list(detection.FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"])
  return [f"class {i}" for i in range(num_classes)]


def to_tensor(frames: np.ndarray):
  """uint8 [T, H, W, 3] RGB -> float32 torch [T, 3, H, W] in [0, 1]."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


class FasterRCNNDetector:
  """Detections and 2048-d region features of every frame (module docstring).

  Args:
    path: state_dict ``.pth`` of a torchvision Faster R-CNN (variant and class count are read
      from it).
    score_threshold: detections scoring below are dropped (the library's ``box_score_thresh``).
    batch_size: frames per forward pass.
    min_size, max_size: the library's input resizing (shorter side to ``min_size``, longer side
      at most ``max_size``; torchvision's defaults 800 / 1333).
    class_names: the checkpoint's class names by id (default: COCO's for 91 classes).
    device: torch device (default: CUDA when available, else CPU).
    **model_kwargs: further arguments of torchvision's ``FasterRCNN`` (e.g.
      ``rpn_post_nms_top_n_test``, ``box_detections_per_img``).
  """

  kind = "detector"

  def __init__(self, path: str, score_threshold: float = 0.5, batch_size: int = 4,
               min_size: int = 800, max_size: int = 1333, class_names: list[str] | None = None,
               device: str | None = None, **model_kwargs):
    import torch  # pylint: disable=g-import-not-at-top
    if not 0.0 <= score_threshold <= 1.0:
      raise ValueError(f"detector score threshold must be in [0, 1], got {score_threshold}")
    self.path = path
    sd = weights_lib.load_state_dict(path, _EXPECTED)
    if "roi_heads.box_predictor.cls_score.weight" not in sd:
      raise weights_lib.WeightsError(f"{path}: no roi_heads.box_predictor.cls_score.weight; "
                                     f"expected {_EXPECTED}")
    v2_first = "backbone.fpn.inner_blocks.0.0.weight" in sd
    order = VARIANTS[::-1] if v2_first else VARIANTS
    kwargs = {"box_score_thresh": float(score_threshold), "min_size": int(min_size),
              "max_size": int(max_size), **model_kwargs}
    variants = tuple(weights_lib.Variant(n, lambda s, n=n: _builder(n)(s, **kwargs))
                     for n in order)
    self.model, self.name = weights_lib.build_matching(path, sd, variants, _EXPECTED)
    self.num_classes = _num_classes(sd)
    self.class_names = list(class_names) if class_names else default_class_names(self.num_classes)
    if len(self.class_names) != self.num_classes:
      raise ValueError(f"{len(self.class_names)} class names for a {self.num_classes}-class "
                       f"detector ({path})")
    self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    self.model.to(self.device)
    self.score_threshold, self.batch_size = float(score_threshold), int(batch_size)
    self.sha256 = weights_lib.sha256_file(path)
    self.feature_dim = FEATURE_DIM

  def record(self) -> dict[str, Any]:
    """What summary files record about this provider."""
    return {"name": self.name, "weights": self.path, "sha256": self.sha256,
            "score_threshold": self.score_threshold}

  def _forward(self, batch):
    """Library detections (original pixel coordinates) and region features of a batch."""
    import torch  # pylint: disable=g-import-not-at-top
    from torchvision import ops  # pylint: disable=g-import-not-at-top
    model = self.model
    sizes = [tuple(img.shape[-2:]) for img in batch]
    images, _ = model.transform(list(batch))
    captured = {}
    hook = model.backbone.body.layer4.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("c5", out))
    try:
      feats = model.backbone(images.tensors)
    finally:
      hook.remove()
    proposals, _ = model.rpn(images, feats)
    dets, _ = model.roi_heads(feats, proposals, images.image_sizes)
    c5 = captured["c5"]
    scale = c5.shape[-1] / images.tensors.shape[-1]  # 1/32: inputs are padded to multiples of 32
    pooled = ops.roi_align(c5, [d["boxes"] for d in dets], output_size=_ROI_BINS,
                           spatial_scale=scale, sampling_ratio=2, aligned=True)
    region = pooled.mean(dim=(2, 3))
    dets = model.transform.postprocess(dets, images.image_sizes, sizes)
    counts = [len(d["boxes"]) for d in dets]
    return dets, torch.split(region, counts)

  def detect(self, frames: np.ndarray, label: str = "") -> graph_providers.Detections:
    """Detections of uint8 frames [T, H, W, 3]; ``label`` names the video in progress lines.

    Returns:
      Detections with ``frame`` in 0..T-1, ``box`` in pixels of the frames, ``label`` = the
      checkpoint's class ids, ``score``, ``feature`` float32 [D, 2048].
    """
    import torch  # pylint: disable=g-import-not-at-top
    frames = check_frames(frames)
    prog = progress_lib.Progress(f"{label or 'video'}: detector {self.name}", len(frames))
    out = {k: [] for k in ("frame", "box", "label", "score", "feature")}
    with torch.inference_mode():
      for s in range(0, len(frames), self.batch_size):
        batch = to_tensor(frames[s:s + self.batch_size]).to(self.device)
        dets, region = self._forward(batch)
        for j, (d, f) in enumerate(zip(dets, region)):
          out["frame"].append(np.full(len(d["boxes"]), s + j, np.int32))
          out["box"].append(d["boxes"].float().cpu().numpy().reshape(-1, 4))
          out["label"].append(d["labels"].cpu().numpy())
          out["score"].append(d["scores"].float().cpu().numpy())
          out["feature"].append(f.float().cpu().numpy().reshape(-1, FEATURE_DIM))
        prog.update(len(batch))
    return graph_providers.Detections(**{k: np.concatenate(v) for k, v in out.items()})

