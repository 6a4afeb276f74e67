"""Pseudo-depth from a DPT model (the architecture of MiDaS v3: ``Intel/dpt-hybrid-midas``,
``Intel/dpt-large``), read from a local ``save_pretrained`` directory (safetensors only).

Model input: each RGB frame resized to ``config.image_size`` x ``config.image_size`` (bicubic,
aspect ratio not kept, as the released DPT image processors do), scaled to [0, 1] and normalised
with mean 0.5 and std 0.5 per channel. The model's ``predicted_depth`` is resized back to the
frame (bicubic): a *relative inverse depth* (larger = nearer) known only up to an unknown scale
and shift per image (MiDaS is trained scale- and shift-invariant).

Conversion to the graph's pseudo-depth (:func:`pseudo_depth`; larger = farther, see
asmp_jax.graph.geometry), per frame, since scale and shift are per image:

  lo, hi = the 2nd and 98th percentiles of the frame's inverse depth
  z = 1 - clip((inverse - lo) / (hi - lo), 0, 1)

so the nearest 2 % of pixels get 0, the farthest 2 % get 1, in the same [0, 1] range as the
pixel-normalised x and y of the pseudo-3D points. A frame whose inverse depth is (nearly) constant
(``hi - lo <= 1e-6 * max(1, |hi|)``) gets z = 1 everywhere: the flat-depth fallback's value.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from asmp_jax.vision import detector as detector_lib
from asmp_jax.vision import progress as progress_lib
from asmp_jax.vision import weights as weights_lib

LOW_PERCENTILE, HIGH_PERCENTILE = 2.0, 98.0
_EXPECTED = "a transformers DPTForDepthEstimation"


def pseudo_depth(inverse: np.ndarray) -> np.ndarray:
  """float32 [T, H, W] pseudo-depth in [0, 1] (larger = farther) from relative inverse depth
  [T, H, W] (module docstring)."""
  inv = np.asarray(inverse, np.float64)
  if inv.ndim != 3:
    raise ValueError(f"inverse depth must be [T, H, W], got {inv.shape}")
  lo, hi = np.percentile(inv.reshape(len(inv), -1), [LOW_PERCENTILE, HIGH_PERCENTILE], axis=1)
  span = (hi - lo)[:, None, None]
  flat = span[:, 0, 0] <= 1e-6 * np.maximum(1.0, np.abs(hi))
  z = 1.0 - np.clip((inv - lo[:, None, None]) / np.where(flat[:, None, None], 1.0, span), 0, 1)
  z[flat] = 1.0
  return z.astype(np.float32)


class DPTDepth:
  """Pseudo-depth of every frame from a DPT depth model (module docstring).

  Args:
    directory: a ``save_pretrained`` directory of ``DPTForDepthEstimation`` (config.json +
      model.safetensors).
    batch_size: frames per forward pass.
    device: torch device (default: CUDA when available, else CPU).
  """

  kind = "depth"

  def __init__(self, directory: str, batch_size: int = 4, device: str | None = None):
    import torch  # pylint: disable=g-import-not-at-top
    self.path = os.fspath(directory)
    self.files = weights_lib.safetensors_files(self.path, _EXPECTED)
    fmt = f"expected {_EXPECTED} save_pretrained directory (config.json + model.safetensors)"
    try:
      with open(os.path.join(self.path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
      raise weights_lib.WeightsError(f"{self.path}/config.json: unreadable ({e}); {fmt}") from e
    if model_type != "dpt":
      raise weights_lib.WeightsError(f"{self.path}/config.json: model_type {model_type!r}, "
                                     f"not 'dpt'; {fmt}")
    from transformers import DPTForDepthEstimation  # pylint: disable=g-import-not-at-top
    from transformers.utils import logging as hf_logging  # pylint: disable=g-import-not-at-top
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the library's per-tensor loading bar; ours is per video
    try:
      model, info = DPTForDepthEstimation.from_pretrained(
          self.path, use_safetensors=True, local_files_only=True, output_loading_info=True)
    except Exception as e:  # pylint: disable=broad-except  # transformers raises many types
      msg = " ".join(str(e).split())[:200]
      raise weights_lib.WeightsError(f"{self.path}: cannot load ({type(e).__name__}: {msg}); "
                                     f"{fmt}") from e
    finally:
      if bars:
        hf_logging.enable_progress_bar()
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys",
                                                  "mismatched_keys") and v}
    if bad:
      detail = ", ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {sorted(map(str, v))[0]})"
                         for k, v in bad.items())
      raise weights_lib.WeightsError(f"{self.path}: weights do not match the config: {detail}; "
                                     f"{fmt}")
    self.model = model.eval()
    self.name = "DPTForDepthEstimation" + (" (hybrid)" if model.config.is_hybrid else "")
    self.image_size = int(model.config.image_size)
    self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    self.model.to(self.device)
    self.batch_size = int(batch_size)
    self.sha256 = weights_lib.sha256_files(self.files)

  def record(self) -> dict[str, Any]:
    """What summary files record about this provider."""
    return {"name": self.name, "weights": self.path, "sha256": self.sha256,
            "weight_files": [os.path.basename(p) for p in self.files]}

  def preprocess(self, frames: np.ndarray):
    """uint8 [T, H, W, 3] -> the model's pixel_values float32 [T, 3, S, S] (module docstring)."""
    import torch  # pylint: disable=g-import-not-at-top
    x = detector_lib.to_tensor(detector_lib.check_frames(frames))
    s = self.image_size
    x = torch.nn.functional.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
    return (x.clamp(0.0, 1.0) - 0.5) / 0.5

  def inverse_depth(self, frames: np.ndarray, label: str = "") -> np.ndarray:
    """float32 [T, H, W]: the model's relative inverse depth, resized to the frames."""
    import torch  # pylint: disable=g-import-not-at-top
    frames = detector_lib.check_frames(frames)
    h, w = frames.shape[1:3]
    prog = progress_lib.Progress(f"{label or 'video'}: depth {self.name}", len(frames))
    out = []
    with torch.inference_mode():
      for s in range(0, len(frames), self.batch_size):
        x = self.preprocess(frames[s:s + self.batch_size]).to(self.device)
        pred = self.model(pixel_values=x).predicted_depth[:, None]
        pred = torch.nn.functional.interpolate(pred, size=(h, w), mode="bicubic",
                                               align_corners=False)
        out.append(pred[:, 0].float().cpu().numpy())
        prog.update(len(x))
    return np.concatenate(out).astype(np.float32)

  def depth(self, frames: np.ndarray, label: str = "") -> np.ndarray:
    """float32 [T, H, W] pseudo-depth (larger = farther, in [0, 1]) of uint8 frames."""
    return pseudo_depth(self.inverse_depth(frames, label))
