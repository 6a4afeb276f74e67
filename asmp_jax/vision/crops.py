"""Object crops embedded by a torchvision ResNet-18: the node features of the Co-Separation baseline.

Co-Separation (Gao & Grauman, ICCV 2019, supplementary §C) feeds each detected object's crop,
resized to 224x224x3, to an ImageNet-pretrained ResNet-18 and reads its 7x7x512 feature map. Here
each box of the reference frame (the background node's box included) is:

1. cut out of the uint8 RGB frame (clipped to the frame, as the other extractors do),
2. resized to 224x224 (bilinear, ``cv2.INTER_LINEAR``), scaled to [0, 1] and normalised with the
   ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225),
3. passed through the ResNet-18 trunk in eval mode and globally average-pooled: 512-d (float32).

A box entirely outside the frame (or without area) gets zeros, like ``hog_color``.

Weights: a torchvision ``resnet18`` ``state_dict`` saved with ``torch.save`` (e.g. the ImageNet
weights), read with ``torch.load(..., weights_only=True)`` through :mod:`asmp_jax.vision.weights`;
the classifier (``fc``) may have any number of classes, it is not used. Nothing downloads. The
path ``"random"`` builds a ResNet-18 at a fixed random initialisation (seed 0; for tests only,
logged as a warning).
"""

from __future__ import annotations

import functools
import logging

import cv2
import numpy as np

from asmp_jax.graph import features as graph_features
from asmp_jax.vision import weights as weights_lib

NAME = graph_features.RESNET18_CROPS
DIM = graph_features.RESNET18_CROPS_DIM
CROP_SIZE = 224
RANDOM = "random"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
_EXPECTED = "a torchvision resnet18 state_dict"


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise weights_lib.WeightsError(
        f"feature extractor '{NAME}' needs torch and torchvision ({e}); install the extra: "
        "pip install -e '.[vision]'") from e
  return torch, torchvision


def preprocess_crops(frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The network inputs of ``boxes`` (steps 1-2 of the module docstring).

  Returns:
    (float32 [M, 3, 224, 224] normalised crops, int [M] indices of the boxes they belong to); boxes
    outside the frame are left out.
  """
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  keep, crops = [], []
  for k, box in enumerate(boxes):
    crop = graph_features.crop_box(frame, box)
    if crop is None:
      continue
    patch = cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    crops.append(((patch.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    keep.append(k)
  if not crops:
    return np.zeros((0, 3, CROP_SIZE, CROP_SIZE), np.float32), np.zeros((0,), np.int64)
  return np.stack(crops).astype(np.float32), np.asarray(keep, np.int64)


class CropEncoder:
  """A ResNet-18 trunk (fc removed) that maps crops to their 512-d pooled features."""

  def __init__(self, weights: str, batch_size: int = 32):
    torch, torchvision = _torch()
    self.weights = str(weights)
    self.batch_size = int(batch_size)
    if self.weights == RANDOM:
      logging.warning("feature extractor '%s': ResNet-18 at a random initialisation (seed 0), "
                      "not pretrained weights", NAME)
      with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
      self.sha256 = RANDOM
    else:
      if not self.weights:
        raise weights_lib.WeightsError(
            f"feature extractor '{NAME}' needs config.graph.crop_encoder_weights: the path of "
            f"{_EXPECTED} (.pth), or 'random' for a randomly initialised network")
      sd = weights_lib.load_state_dict(self.weights, _EXPECTED)
      variant = weights_lib.Variant("resnet18", lambda sd: torchvision.models.resnet18(
          weights=None, num_classes=int(sd["fc.weight"].shape[0])))
      model, _ = weights_lib.build_matching(self.weights, sd, (variant,), _EXPECTED)
      self.sha256 = weights_lib.sha256_file(self.weights)
    model.fc = torch.nn.Identity()
    self.model = model.eval()

  def record(self) -> dict[str, str]:
    """The extractor's name and weight sha256 ("random" for the random initialisation)."""
    return {"name": NAME, "sha256": self.sha256}

  def embed(self, crops: np.ndarray) -> np.ndarray:
    """float32 [M, 512] features of preprocessed crops [M, 3, 224, 224]."""
    torch, _ = _torch()
    out = np.zeros((len(crops), DIM), np.float32)
    with torch.inference_mode():
      for i in range(0, len(crops), self.batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[i:i + self.batch_size]))
        out[i:i + len(x)] = self.model(x).numpy()
    return out

  def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """float32 [K, 512]: the features of ``boxes`` in ``frame``; zeros for boxes outside it."""
    crops, keep = preprocess_crops(frame, boxes)
    out = np.zeros((np.asarray(boxes).reshape(-1, 4).shape[0], DIM), np.float32)
    if len(keep):
      out[keep] = self.embed(crops)
    return out


@functools.lru_cache(maxsize=2)
def encoder(weights: str) -> CropEncoder:
  """The encoder of a weight file, built once per process."""
  return CropEncoder(weights)


def crop_features(frame: np.ndarray, boxes: np.ndarray, weights: str) -> np.ndarray:
  """``resnet18_crops`` features of ``boxes`` in one RGB frame (see the module docstring)."""
  return encoder(str(weights or ""))(frame, boxes)


graph_features.register(
    graph_features.RESNET18_CROPS,
    graph_features.Extractor(lambda _: DIM, lambda frame, boxes, _, weights: crop_features(
        frame, boxes, weights)))
