"""Weight files of the learned providers: safe loading, architecture variants, fingerprints.

Weight files are data, never code:

* torchvision models (Faster R-CNN, RAFT) come from a ``state_dict`` saved with ``torch.save``
  (``.pth``), read with ``torch.load(..., map_location="cpu", weights_only=True)``: a pickle that
  would construct anything but tensors and plain containers is refused by torch;
* transformers models (DPT) come from a ``save_pretrained`` directory and are read from its
  ``*.safetensors`` file(s) only (``use_safetensors=True``); a directory holding only
  ``pytorch_model.bin`` (a pickle) is refused.

The architecture variant is read from the weights: every candidate of a family (e.g.
``raft_small`` / ``raft_large``) is built at random initialisation (never downloading anything) and
the one whose parameter names and shapes equal the file's is used. A file that matches none is one
:class:`WeightsError` naming the file and the expected format.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from typing import Any, Callable, Mapping

from asmp_jax import files as file_records
from asmp_jax import safe_io
from asmp_jax.graph import providers as graph_providers


class WeightsError(graph_providers.ProviderError):
  """A weight file is missing, unreadable or not of the expected architecture."""


sha256_file = file_records.sha256_file


def sha256_files(paths: list[str]) -> str:
  """sha256 of one file, or of the concatenated bytes of several (sharded safetensors)."""
  if len(paths) == 1:
    return sha256_file(paths[0])
  h = hashlib.sha256()
  for p in paths:
    with open(p, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()


def load_state_dict(path: str, expected: str) -> dict[str, Any]:
  """A ``torch.save``'d state_dict, read without executing code.

  Args:
    path: the ``.pth`` file.
    expected: words for the error line, e.g. "a torchvision raft_small/raft_large state_dict".

  Raises:
    WeightsError: missing, unreadable, not a mapping of tensors.
  """
  import torch  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  fmt = f"expected {expected} saved with torch.save(model.state_dict(), path)"
  if not os.path.isfile(path):
    raise WeightsError(f"{path}: weight file not found ({fmt})")
  try:
    sd = safe_io.load_torch_state_dict(path, expected=fmt)
  except safe_io.SafeLoadError as e:
    raise WeightsError(f"{path}: unreadable or unsafe weight file: {e.reason}") from e
  if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
    sd = sd["state_dict"]
  if (not isinstance(sd, Mapping) or not sd
      or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())):
    raise WeightsError(f"{path}: not a state_dict (a mapping of parameter names to tensors); "
                       f"{fmt}")
  return dict(sd)


@dataclasses.dataclass(frozen=True)
class Variant:
  """One architecture a family's weight file may hold.

  Attributes:
    name: the library's builder name (e.g. ``fasterrcnn_resnet50_fpn_v2``).
    build: ``state_dict -> torch.nn.Module`` at random init (the state_dict may set sizes, e.g. the
      number of classes).
  """
  name: str
  build: Callable[[Mapping[str, Any]], Any]


def _shapes(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in sd.items()}


def build_matching(path: str, sd: Mapping[str, Any], variants: tuple[Variant, ...],
                   expected: str) -> tuple[Any, str]:
  """The variant whose parameters (names and shapes) equal the state_dict's, loaded, in eval mode.

  Raises:
    WeightsError: no variant matches (the closest one's first differences are named).
  """
  want = _shapes(sd)
  best = None
  for v in variants:
    try:
      model = v.build(sd)
    except (KeyError, IndexError, ValueError):
      continue
    have = _shapes(model.state_dict())
    if have == want:
      model.load_state_dict(sd, strict=True)
      return model.eval(), v.name
    missing = sorted(set(have) - set(want))
    unexpected = sorted(set(want) - set(have))
    shape = sorted(k for k in set(have) & set(want) if have[k] != want[k])
    score = len(missing) + len(unexpected) + len(shape)
    if best is None or score < best[0]:
      best = (score, v.name, missing, unexpected, shape)
  detail = ""
  if best is not None:
    _, name, missing, unexpected, shape = best
    parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
             f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
             f"{len(shape)} of another shape (e.g. {shape[0]}: file {want[shape[0]]})"
             if shape else ""]
    detail = f"; closest {name}: " + ", ".join(p for p in parts if p)
  raise WeightsError(f"{path}: the state_dict is not {expected}{detail}")


def safetensors_files(directory: str, expected: str) -> list[str]:
  """The ``*.safetensors`` weight files of a ``save_pretrained`` directory (sorted).

  Raises:
    WeightsError: not a directory, no config.json, or no safetensors file (a ``.bin`` pickle is
      refused).
  """
  directory = os.fspath(directory)
  fmt = (f"expected {expected}: a directory written by save_pretrained holding config.json and "
         "model.safetensors (safetensors only; pickled .bin weights are refused)")
  if not os.path.isdir(directory):
    what = "is a file, not a directory" if os.path.exists(directory) else "not found"
    raise WeightsError(f"{directory}: {what} ({fmt})")
  if not os.path.isfile(os.path.join(directory, "config.json")):
    raise WeightsError(f"{directory}: no config.json ({fmt})")
  files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  if not files:
    bins = sorted(glob.glob(os.path.join(directory, "*.bin")))
    found = f"found only {os.path.basename(bins[0])}" if bins else "no weight file"
    raise WeightsError(f"{directory}: {found} ({fmt})")
  return files
