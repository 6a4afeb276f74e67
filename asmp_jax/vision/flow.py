"""Optical flow from torchvision's RAFT (``raft_small`` / ``raft_large``, read from a state_dict
``.pth``; the variant is read from its parameter names and shapes).

Each pair of consecutive frames is resized to a multiple of 8 pixels (at least 128 per side;
bilinear), scaled to [-1, 1] (the library's ``OpticalFlow`` preset), passed through the model with
``num_flow_updates`` refinement steps (the library's default 12), and the last estimate is
resized back to the frame with its vectors rescaled to the frame's pixels. Pairs are batched; the
last frame's flow is zeros, as for the other providers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asmp_jax.vision import detector as detector_lib
from asmp_jax.vision import progress as progress_lib
from asmp_jax.vision import weights as weights_lib

_EXPECTED = "a torchvision raft_small or raft_large state_dict"
VARIANTS = ("raft_large", "raft_small")
MIN_SIDE = 128


def _build(name: str):
  def build(_sd):
    from torchvision.models import optical_flow  # pylint: disable=g-import-not-at-top
    return getattr(optical_flow, name)(weights=None)
  return build


def model_size(height: int, width: int) -> tuple[int, int]:
  """(height, width) the frames are resized to: multiples of 8, at least MIN_SIDE."""
  up = lambda n: max(MIN_SIDE, -(-int(n) // 8) * 8)
  return up(height), up(width)


class RAFTFlow:
  """Forward optical flow t -> t+1 of every frame (module docstring).

  Args:
    path: state_dict ``.pth`` of torchvision's raft_small or raft_large.
    batch_size: frame pairs per forward pass.
    num_flow_updates: RAFT's iterative refinement steps.
    device: torch device (default: CUDA when available, else CPU).
  """

  kind = "flow"

  def __init__(self, path: str, batch_size: int = 4, num_flow_updates: int = 12,
               device: str | None = None):
    import torch  # pylint: disable=g-import-not-at-top
    self.path = path
    sd = weights_lib.load_state_dict(path, _EXPECTED)
    small_first = any(k.startswith("feature_encoder.") and v.shape[0] == 32 and v.ndim == 4
                      for k, v in sd.items() if k.endswith("convnormrelu.0.weight"))
    order = VARIANTS[::-1] if small_first else VARIANTS
    self.model, self.name = weights_lib.build_matching(
        path, sd, tuple(weights_lib.Variant(n, _build(n)) for n in order), _EXPECTED)
    self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    self.model.to(self.device)
    self.batch_size, self.num_flow_updates = int(batch_size), int(num_flow_updates)
    self.sha256 = weights_lib.sha256_file(path)

  def record(self) -> dict[str, Any]:
    """What summary files record about this provider."""
    return {"name": self.name, "weights": self.path, "sha256": self.sha256,
            "num_flow_updates": self.num_flow_updates}

  def preprocess(self, frames: np.ndarray):
    """uint8 [T, H, W, 3] -> float32 torch [T, 3, H8, W8] in [-1, 1] (module docstring)."""
    import torch  # pylint: disable=g-import-not-at-top
    x = detector_lib.to_tensor(detector_lib.check_frames(frames))
    size = model_size(*x.shape[-2:])
    if tuple(x.shape[-2:]) != size:
      x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0

  def flow(self, frames: np.ndarray, label: str = "") -> np.ndarray:
    """float32 [T, H, W, 2] (dx, dy) in pixels from frame t to t+1; the last frame zeros."""
    import torch  # pylint: disable=g-import-not-at-top
    frames = detector_lib.check_frames(frames)
    t, h, w = frames.shape[:3]
    out = np.zeros((t, h, w, 2), np.float32)
    prog = progress_lib.Progress(f"{label or 'video'}: flow {self.name}", max(1, t - 1))
    with torch.inference_mode():
      for s in range(0, t - 1, self.batch_size):
        e = min(t - 1, s + self.batch_size)
        x = self.preprocess(frames[s:e + 1]).to(self.device)
        pred = self.model(x[:-1], x[1:], num_flow_updates=self.num_flow_updates)[-1]
        h8, w8 = pred.shape[-2:]
        if (h8, w8) != (h, w):
          pred = torch.nn.functional.interpolate(pred, size=(h, w), mode="bilinear",
                                                 align_corners=False)
          pred = pred * torch.tensor([w / w8, h / h8], device=pred.device).view(1, 2, 1, 1)
        out[s:e] = pred.permute(0, 2, 3, 1).float().cpu().numpy()
        prog.update(e - s)
    return out
