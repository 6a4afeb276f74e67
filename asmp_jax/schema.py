"""The stored example: what every data set (synthetic, ASIW, AVE) holds per clip.

One example is one clip of ``W`` one-second windows: its mono audio, one scene graph per window
(``N`` padded nodes, dense adjacency of Chamfer edge weights) and, per auditory source (``A``), its
class, presence, displacement and direction labels (`asmp_jax.preprocess.preprocess_clip` makes the
arrays). `example_spec` lists them with shapes and dtypes; `features` is the TFDS ``FeaturesDict``
the data set builders declare (``tensorflow_datasets`` is imported only there, so reading a key
name here loads no TFDS).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from asmp_jax import preprocess

# Direction labels are stored for both classifiers; the model's class count picks one.
DIRECTION_KEYS = {10: "dir10", 28: "dir28"}


def direction_key(num_classes: int) -> str:
  """The example key of the direction labels for ``num_classes`` direction classes."""
  try:
    return DIRECTION_KEYS[num_classes]
  except (KeyError, TypeError):
    raise ValueError(f"config.model.num_direction_classes must be one of "
                     f"{sorted(DIRECTION_KEYS)} (the stored direction labels), got "
                     f"{num_classes!r}") from None


def example_spec(num_windows: int, num_samples: int,
                 feature_dim: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  """``{key: (shape, dtype)}`` of a stored example's arrays (``clip_id`` is text, not listed)."""
  nw, n, a = num_windows, preprocess.MAX_NODES, preprocess.MAX_AUDITORY
  return {
      "audio": ((num_samples,), np.int16),
      "node_features": ((nw, n, feature_dim), np.float16),
      "node_mask": ((nw, n), np.bool_),
      "node_type": ((nw, n), np.int8),
      "adjacency": ((nw, n, n), np.float16),
      "window_valid": ((nw,), np.bool_),
      "source_class": ((a,), np.int32),
      "source_present": ((nw, a), np.bool_),
      "displacement": ((nw, a, 3), np.float32),
      DIRECTION_KEYS[10]: ((nw, a), np.int32),
      DIRECTION_KEYS[28]: ((nw, a), np.int32),
      "gt_window_displacement": ((nw, a, 3), np.float32),
  }


def features(num_windows: int, num_samples: int, feature_dim: int) -> Any:
  """The TFDS ``FeaturesDict`` of a stored example (``clip_id`` text + `example_spec`)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = example_spec(num_windows, num_samples, feature_dim)
  return tfds.features.FeaturesDict({
      "clip_id": tfds.features.Text(),
      **{k: tfds.features.Tensor(shape=shape, dtype=dtype) for k, (shape, dtype) in spec.items()}})
