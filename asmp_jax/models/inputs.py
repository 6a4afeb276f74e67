"""The model's input batch: every key the model may read, with its dtype and layout.

Leading axes: ``B`` mixtures, ``U`` videos per mixture (read from the batch), ``Wd`` direction
windows; ``Nn`` nodes and ``Ne`` edges per graph (padded), ``F`` node features, ``S`` source slots,
``H x W`` the warped spectrogram grid. Which keys a model reads depends on its conditioner
(`asmp_jax.models.conditioners`, each declaring its keys) and on ``dir_window_graphs``.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

# Every model reads these two.
BASE_DTYPES: dict[str, Any] = {
    "mix_log_mag": jnp.float32,      # [B, H, W]
    "source_mask": jnp.bool_,        # [B, U, S]
}
# The scene graph of each video.
GRAPH_DTYPES: dict[str, Any] = {
    "node_features": jnp.float32,    # [B, U, Nn, F]
    "node_mask": jnp.bool_,          # [B, U, Nn]
    "node_type": jnp.int32,          # [B, U, Nn]  0 auditory, 1 context, 2 background
    "senders": jnp.int32,            # [B, U, Ne]
    "receivers": jnp.int32,          # [B, U, Ne]
    "edge_weight": jnp.float32,      # [B, U, Ne]
    "edge_mask": jnp.bool_,          # [B, U, Ne]
}
# The inputs the data pipelines give every model (a conditioner reads a subset of the graph keys).
BATCH_DTYPES: dict[str, Any] = {
    "mix_log_mag": BASE_DTYPES["mix_log_mag"], **GRAPH_DTYPES,
    "source_mask": BASE_DTYPES["source_mask"]}
# Ground truth that a conditioner may read (baselines that are told what sounds).
LABEL_DTYPES: dict[str, Any] = {
    "class_labels": jnp.int32,       # [B, U, S]
}
# Each direction window's own scene graph (only with config.model.dir_window_graphs); the
# senders/receivers and source_mask above serve every window.
WINDOW_BATCH_DTYPES: dict[str, Any] = {
    "window_node_features": jnp.float32,  # [B, U, Wd, Nn, F]
    "window_node_mask": jnp.bool_,        # [B, U, Wd, Nn]
    "window_node_type": jnp.int32,        # [B, U, Wd, Nn]
    "window_edge_weight": jnp.float32,    # [B, U, Wd, Ne]
    "window_edge_mask": jnp.bool_,        # [B, U, Wd, Ne]
}
ALL_DTYPES: dict[str, Any] = {**BATCH_DTYPES, **LABEL_DTYPES, **WINDOW_BATCH_DTYPES}


def shapes(batch_size: int, videos: int, num_slots: int, num_nodes: int, num_edges: int,
           feature_dim: int, num_windows: int,
           spec_shape: tuple[int, int]) -> dict[str, tuple[int, ...]]:
  """The shape of every key of `ALL_DTYPES` for the given sizes."""
  bu = (batch_size, videos)
  buw = bu + (num_windows,)
  return {
      "mix_log_mag": (batch_size,) + tuple(spec_shape),
      "node_features": bu + (num_nodes, feature_dim),
      "node_mask": bu + (num_nodes,),
      "node_type": bu + (num_nodes,),
      "senders": bu + (num_edges,),
      "receivers": bu + (num_edges,),
      "edge_weight": bu + (num_edges,),
      "edge_mask": bu + (num_edges,),
      "source_mask": bu + (num_slots,),
      "class_labels": bu + (num_slots,),
      "window_node_features": buw + (num_nodes, feature_dim),
      "window_node_mask": buw + (num_nodes,),
      "window_node_type": buw + (num_nodes,),
      "window_edge_weight": buw + (num_edges,),
      "window_edge_mask": buw + (num_edges,),
  }
