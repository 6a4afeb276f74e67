"""Conditioners: what turns a video's scene graph (or its labels) into the slot embeddings.

``config.model.graph_mode`` names one registered conditioner. A conditioner is a Flax module built
as ``module(spec=<ModelSpec>, **options)`` whose ``__call__(batch)`` maps the batch (leading axes
``[B, U]``; when it declares ``node_features`` the model hands them over as float32, normalised
when ``node_batch_norm``) to
``{"embeddings": [B, U, S, E] unit vectors (float32), ["graph_embedding": [B, U, Z]]}``. It is
registered with the batch keys it reads (`asmp_jax.models.inputs`); the model checks for those
keys, and `asmp_jax.models.asmp.batch_shapes` gives exactly them. The model shares its scope with
the conditioner, so the conditioner's parameters sit at the top of the model's parameter tree
(``graph_encoder``, ``slot_gru``, ``node_mlp``, ``class_embed``, ``zeta``).

A new variant is one `register` call (in the module that defines it, imported by
`asmp_jax.models`)::

  conditioners.register("mine", MyConditioner, batch_keys=("node_features", "node_mask"))

A variant whose networks differ beyond the conditioning registers a whole model instead
(``model=factory``, called as ``factory(config.model, spec)`` by `asmp_jax.models.create_model`
in place of `ASMP`, with `ASMP`'s methods and outputs), e.g. ``"authors"`` (the public code's
networks, `asmp_jax.models.authors`).

The registered variants (paper baselines as config variants):

- ``"asmp"``: Chamfer-weighted GAT (weight in the attention logit) + EdgeConv (graph_encoder),
  then the slot GRU.
- ``"equal"`` (AVSGS): same network, every valid edge weight replaced by 1.
- ``"multiscale"`` (the paper's multiscale-Chamfer ablation): the stored Chamfer weights are
  turned into a "forest" of two thresholded graphs (`graph_encoder.multiscale_edge_weights`:
  edges up to the median normalised distance, and all edges, each with its own RBF scale); the
  same encoder runs on both and zeta is their mean. Same parameters as ``"asmp"``.
- ``"single_node"`` (Co-Separation): no message passing and no GRU; slot ``i < S - 1`` is
  conditioned on the node-MLP feature of the ``i``-th valid auditory node (``node_type == 0``, in
  node order) and the last slot on the first valid background node (``node_type == 2``),
  unit-normalised; a slot with no such node gets the zero vector (its loss terms are masked).
- ``"no_vision"`` (control): no visual input at all; zeta is a learned constant vector, so only
  the GRU step (slot index) differs between conditionings. This is what zeroing the node
  features amounts to (the encoder output then depends on its biases only), without its
  degenerate start: with zero features and Flax's zero bias init every embedding would be the
  zero vector, where the gradient of unit normalisation is ~1/eps (1e6).
- ``"class_label"`` (audio-only, class-conditioned baseline): no visual input; each slot is
  conditioned on a learned, unit-normalised embedding of its ground-truth class label
  (``batch["class_labels"]``, background included). It needs the labels, so it is an
  evaluation baseline (how far does knowing *which classes* sound get you without seeing
  *where* they are), not a model for separating unlabelled videos (`needs_labels`).

The slot GRU (paper: "executed N + 1 steps"): `nn.GRUCell` with ``embed_dim`` hidden units starts
from a zero hidden state and receives zeta at every step; it runs ``S`` steps and each output is
unit-normalised. With ``compact_slots`` step ``k`` is assigned to the ``k``-th *valid* slot of
``source_mask`` and the remaining steps to the invalid slots, so a video with ``N_u`` auditory
sources is conditioned on exactly the first ``N_u + 1`` GRU outputs, as in the paper (e.g.
``[True, False, True]``: slot 0 <- step 0, slot 2 (background) <- step 1, slot 1 <- step 2).
"""
from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asmp_jax.models import inputs
from asmp_jax.models.graph_encoder import GraphEncoder, NodeMLP, multiscale_edge_weights
from asmp_jax.models.layers import l2_normalize, resolve_dtype

Array = jax.Array

_GRAPH_KEYS = ("node_features", "node_mask", "senders", "receivers", "edge_weight", "edge_mask")


@dataclasses.dataclass(frozen=True)
class Conditioner:
  """A registered ``graph_mode``: how to build it and the batch keys it reads."""
  name: str
  module: Callable[..., nn.Module] | None
  batch_keys: tuple[str, ...]
  options: Mapping[str, Any]
  model: Callable[[Any, Any], nn.Module] | None = None

  def build(self, spec: Any) -> nn.Module:
    return self.module(spec=spec, **self.options)


_REGISTRY: dict[str, Conditioner] = {}


def register(name: str, module: Callable[..., nn.Module] | None, batch_keys: tuple[str, ...],
             model: Callable[[Any, Any], nn.Module] | None = None,
             **options: Any) -> Conditioner:
  """Registers ``module`` as ``config.model.graph_mode = name``.

  Args:
    name: the ``graph_mode`` value.
    module: a Flax module class (or factory) called as ``module(spec=spec, **options)``; None
      for a variant that registers a whole ``model``.
    batch_keys: the batch keys it reads besides ``mix_log_mag`` and ``source_mask`` (which every
      model reads); each must be a key of `asmp_jax.models.inputs.ALL_DTYPES`.
    model: ``model(config.model, spec) -> nn.Module`` for a variant with its own networks
      (module docstring); None: `ASMP` with ``module`` as its conditioner.
    **options: fixed keyword arguments of ``module`` for this variant.

  Returns:
    The registered `Conditioner`.
  """
  if name in _REGISTRY:
    raise ValueError(f"graph_mode {name!r} is already registered")
  if (module is None) == (model is None):
    raise ValueError(f"graph_mode {name!r}: register a conditioner module or a whole model")
  unknown = [k for k in batch_keys if k not in inputs.ALL_DTYPES]
  if unknown:
    raise ValueError(f"graph_mode {name!r} declares batch keys {unknown} that are not model "
                     f"inputs (asmp_jax.models.inputs.ALL_DTYPES)")
  entry = Conditioner(name, module, tuple(batch_keys), types.MappingProxyType(dict(options)),
                      model)
  _REGISTRY[name] = entry
  return entry


def names() -> tuple[str, ...]:
  """The registered ``graph_mode`` values."""
  return tuple(_REGISTRY)


def get(name: str) -> Conditioner:
  """The conditioner registered as ``name``; ValueError naming ``config.model.graph_mode``."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"config.model.graph_mode must be one of {names()}, got {name!r}") from None


def needs_labels(name: str) -> bool:
  """Whether the conditioner reads ground-truth labels (it cannot separate unlabelled videos)."""
  return any(k in inputs.LABEL_DTYPES for k in get(name).batch_keys)


def check_batch(name: str, batch: Mapping[str, Any]) -> None:
  """Raises ValueError naming the keys of its `Conditioner.batch_keys` that ``batch`` lacks."""
  missing = [k for k in get(name).batch_keys if k not in batch]
  if missing:
    labels = [k for k in missing if k in inputs.LABEL_DTYPES]
    why = (" (ground truth: this variant is an evaluation baseline that is told the labels)"
           if labels else "")
    raise ValueError(f"graph_mode {name!r} reads batch{missing} [B, U, ...]{why}; this batch "
                     f"has none")


# ----------------------------------------------------------------------------- pieces


def assign_steps_to_slots(steps: Array, source_mask: Array) -> Array:
  """Puts GRU step ``k`` in the ``k``-th valid slot, the remaining steps in the invalid slots.

  Args:
    steps: ``[..., S, E]`` GRU outputs in step order.
    source_mask: ``[..., S]`` bool.

  Returns:
    ``[..., S, E]`` slot-ordered embeddings (a per-example permutation of ``steps``).
  """
  valid = source_mask.astype(bool)
  n_valid = jnp.sum(valid, axis=-1, keepdims=True)
  rank_valid = jnp.cumsum(valid, axis=-1) - 1
  rank_invalid = n_valid + jnp.cumsum(~valid, axis=-1) - 1
  idx = jnp.where(valid, rank_valid, rank_invalid)
  return jnp.take_along_axis(steps, idx[..., None], axis=-2)


def select_slot_nodes(node_embed: Array, node_mask: Array, node_type: Array,
                      num_slots: int) -> Array:
  """Co-Separation conditioning: one node feature per slot (see the module docstring).

  Args:
    node_embed: ``[..., Nn, E]`` node-MLP features.
    node_mask: ``[..., Nn]`` bool.
    node_type: ``[..., Nn]`` int (0 auditory, 1 context, 2 background).
    num_slots: S.

  Returns:
    ``[..., S, E]``: the ``i``-th valid auditory node's feature for slot ``i < S - 1``, the first
    valid background node's for slot ``S - 1``; zeros where no such node exists.
  """
  valid = node_mask.astype(bool)
  aud = valid & (node_type == 0)
  bg = valid & (node_type == 2)
  aud_rank = jnp.cumsum(aud, axis=-1) - 1
  slots = jnp.arange(num_slots - 1)
  sel_aud = aud[..., None, :] & (aud_rank[..., None, :] == slots[:, None])   # [..., S-1, Nn]
  sel_bg = (bg & (jnp.cumsum(bg, axis=-1) == 1))[..., None, :]               # [..., 1, Nn]
  sel = jnp.concatenate([sel_aud, sel_bg], axis=-2).astype(node_embed.dtype)
  return jnp.einsum("...sn,...ne->...se", sel, node_embed)


class SlotGRU(nn.Module):
  """Runs a GRU for ``num_steps`` steps on a constant input from a zero state.

  ``[..., Z] -> [..., num_steps, hidden]`` float32, each output unit-normalised.
  """
  hidden: int
  num_steps: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, zeta: Array) -> Array:
    cell = nn.GRUCell(self.hidden, dtype=self.dtype, name="gru")
    x = zeta.astype(self.dtype)
    carry = jnp.zeros(zeta.shape[:-1] + (self.hidden,), self.dtype)
    outs = []
    for _ in range(self.num_steps):
      carry, y = cell(carry, x)
      outs.append(y.astype(jnp.float32))
    return l2_normalize(jnp.stack(outs, axis=-2))


def _slot_embeddings(gru: SlotGRU, zeta: Array, source_mask: Array,
                     compact: bool) -> dict[str, Array]:
  steps = gru(zeta)                                                      # [B, U, S, E]
  emb = assign_steps_to_slots(steps, source_mask) if compact else steps
  return {"embeddings": emb, "graph_embedding": zeta.astype(jnp.float32)}


# ----------------------------------------------------------------------------- the variants


class GraphConditioner(nn.Module):
  """Scene-graph encoder -> zeta -> slot GRU (``asmp``, ``equal``, ``multiscale``)."""
  spec: Any
  equal_weights: bool = False
  multiscale: bool = False

  def setup(self) -> None:
    sp = self.spec
    dtype = resolve_dtype(sp.dtype)
    self.graph_encoder = GraphEncoder(sp.node_hidden, sp.embed_dim, sp.gat_heads,
                                      sp.gat_head_dim, sp.edgeconv_dim,
                                      equal_weights=self.equal_weights, dtype=dtype)
    self.slot_gru = SlotGRU(sp.embed_dim, sp.num_slots, dtype=dtype)

  def __call__(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    feats = batch["node_features"]
    if self.multiscale:
      weights, masks = multiscale_edge_weights(batch["edge_weight"], batch["edge_mask"])
      two = lambda x: jnp.broadcast_to(x, (2,) + x.shape)
      zeta, _ = self.graph_encoder(two(feats), two(batch["node_mask"]), two(batch["senders"]),
                                   two(batch["receivers"]), weights, masks)
      zeta = jnp.mean(zeta, axis=0)
    else:
      zeta, _ = self.graph_encoder(feats, batch["node_mask"], batch["senders"],
                                   batch["receivers"], batch["edge_weight"], batch["edge_mask"])
    return _slot_embeddings(self.slot_gru, zeta, batch["source_mask"], self.spec.compact_slots)


class SingleNodeConditioner(nn.Module):
  """Co-Separation: each slot conditioned on one node's MLP feature (module docstring)."""
  spec: Any

  def setup(self) -> None:
    self.node_mlp = NodeMLP(self.spec.node_hidden, self.spec.embed_dim,
                            dtype=resolve_dtype(self.spec.dtype))

  def __call__(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    node_embed = self.node_mlp(batch["node_features"]).astype(jnp.float32)
    emb = select_slot_nodes(node_embed, batch["node_mask"], batch["node_type"],
                            self.spec.num_slots)
    return {"embeddings": l2_normalize(emb)}


class ConstantConditioner(nn.Module):
  """No vision: a learned constant zeta -> slot GRU (module docstring)."""
  spec: Any

  def setup(self) -> None:
    sp = self.spec
    self.zeta = self.param("zeta", nn.initializers.normal(1.0), (2 * sp.edgeconv_dim,))
    self.slot_gru = SlotGRU(sp.embed_dim, sp.num_slots, dtype=resolve_dtype(sp.dtype))

  def __call__(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    zeta = jnp.broadcast_to(self.zeta, batch["source_mask"].shape[:-1] + self.zeta.shape)
    return _slot_embeddings(self.slot_gru, zeta, batch["source_mask"], self.spec.compact_slots)


class ClassLabelConditioner(nn.Module):
  """Audio only: a learned embedding of each slot's ground-truth class (module docstring)."""
  spec: Any

  def setup(self) -> None:
    self.class_embed = nn.Embed(self.spec.num_classes, self.spec.embed_dim)

  def __call__(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    labels = jnp.clip(batch["class_labels"].astype(jnp.int32), 0, self.spec.num_classes - 1)
    return {"embeddings": l2_normalize(self.class_embed(labels).astype(jnp.float32))}


register("asmp", GraphConditioner, _GRAPH_KEYS)
register("equal", GraphConditioner, _GRAPH_KEYS, equal_weights=True)
register("multiscale", GraphConditioner, _GRAPH_KEYS, multiscale=True)
register("single_node", SingleNodeConditioner, ("node_features", "node_mask", "node_type"))
# no_vision reads no graph, but the model keeps the running statistics of the node features
# (node_batch_norm) as for the visual variants, so it declares the keys they come from.
register("no_vision", ConstantConditioner, ("node_features", "node_mask"))
register("class_label", ClassLabelConditioner, ("class_labels",))
