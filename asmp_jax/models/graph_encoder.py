"""Scene-graph encoder: node MLP, edge-weighted multi-head GAT, EdgeConv, pooling (paper §3.3).

The data arrive as a dense padded layout per video (leading axes ``[B, U]``, node indices local to
each graph). `flatten_graphs` turns the ``G = B * U`` graphs into one `jraph.GraphsTuple` whose node
array is ``[G * Nn + 1, F]``: graph ``g`` owns rows ``g * Nn .. g * Nn + Nn - 1`` and the last row
is a dummy node. Senders/receivers get the per-graph offset ``g * Nn``; every invalid edge
(``edge_mask`` False, an endpoint that is a padding node or out of range) is redirected to the
dummy node at both ends, so it can neither send to nor receive from a real node. Every node also
gets a self loop (weight 1, the RBF of a zero Chamfer distance), so each segment of the
softmax/max aggregations is non-empty and a node without neighbours keeps its own feature. Padding
nodes only ever talk to themselves and are excluded from pooling, so their (arbitrary) features
change nothing.

GAT and the Chamfer edge weight: the attention logit of edge ``j -> i`` for head ``h`` is

    e_ij^h = LeakyReLU_0.2(a_src^h . W^h x_j + a_dst^h . W^h x_i + c^h * w_ij),

i.e. the edge weight is a one-dimensional edge feature with a learned per-head coefficient
``c^h`` (the formulation of PyTorch Geometric's ``GATConv(edge_dim=1)``). Coefficients are the
softmax of the masked logits over each node's incoming edges (`jraph.segment_softmax`); heads
are concatenated and passed through ReLU. With ``graph_mode="equal"`` (AVSGS) the weights are 1 on
every valid edge, so the edge term is a per-head constant and attention is driven by features only.

EdgeConv (DGCNN): message ``MLP([h_i, h_j - h_i])`` on every valid edge (self loops included),
max-aggregated at the receiver.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from asmp_jax.models.layers import leaky_relu_02

Array = jax.Array
Dtype = Any


def flatten_graphs(node_features: Array, node_mask: Array, senders: Array, receivers: Array,
                   edge_weight: Array, edge_mask: Array,
                   equal_weights: bool = False) -> jraph.GraphsTuple:
  """Flattens ``[..., Nn, F]`` padded graphs into one `jraph.GraphsTuple` with a dummy node.

  Args:
    node_features: ``[..., Nn, F]`` float.
    node_mask: ``[..., Nn]`` bool, valid nodes.
    senders, receivers: ``[..., Ne]`` int, node indices local to each graph.
    edge_weight: ``[..., Ne]`` float in (0, 1] (Chamfer RBF).
    edge_mask: ``[..., Ne]`` bool, valid edges.
    equal_weights: replace every weight by 1 (AVSGS).

  Returns:
    A GraphsTuple over ``G = prod(leading)`` graphs plus one dummy graph (holding the dummy node):
    ``nodes [G*Nn + 1, F]``, ``edges = {"weight": [E], "valid": [E]}`` with
    ``E = G * (Ne + Nn)`` (original edges, then one self loop per node), global ``senders`` /
    ``receivers`` ``[E]``, ``n_node = [Nn]*G + [1]``, ``n_edge`` likewise, ``globals = None``.
  """
  lead = node_features.shape[:-2]
  nn_, f = node_features.shape[-2:]
  ne = senders.shape[-1]
  g = 1
  for d in lead:
    g *= d
  for name, arr, want in (("node_mask", node_mask, lead + (nn_,)),
                          ("senders", senders, lead + (ne,)),
                          ("receivers", receivers, lead + (ne,)),
                          ("edge_weight", edge_weight, lead + (ne,)),
                          ("edge_mask", edge_mask, lead + (ne,))):
    if tuple(arr.shape) != tuple(want):
      raise ValueError(f"graph input {name!r}: expected shape {want}, got {tuple(arr.shape)}")

  dummy = g * nn_
  nmask = node_mask.reshape(g, nn_).astype(bool)
  s = senders.reshape(g, ne).astype(jnp.int32)
  r = receivers.reshape(g, ne).astype(jnp.int32)
  in_range = (s >= 0) & (s < nn_) & (r >= 0) & (r < nn_)
  s_c = jnp.clip(s, 0, nn_ - 1)
  r_c = jnp.clip(r, 0, nn_ - 1)
  both_valid = (jnp.take_along_axis(nmask, s_c, axis=1)
                & jnp.take_along_axis(nmask, r_c, axis=1))
  evalid = edge_mask.reshape(g, ne).astype(bool) & in_range & both_valid
  offset = (jnp.arange(g, dtype=jnp.int32) * nn_)[:, None]
  s_glob = jnp.where(evalid, s_c + offset, dummy)
  r_glob = jnp.where(evalid, r_c + offset, dummy)
  w = jnp.ones((g, ne), jnp.float32) if equal_weights else edge_weight.reshape(g, ne)
  w = jnp.where(evalid, w.astype(jnp.float32), 0.0)

  # Self loops for every node (padding nodes included: they only reach themselves).
  loops = jnp.arange(g * nn_, dtype=jnp.int32).reshape(g, nn_)
  senders_all = jnp.concatenate([s_glob.reshape(-1), loops.reshape(-1)])
  receivers_all = jnp.concatenate([r_glob.reshape(-1), loops.reshape(-1)])
  weight_all = jnp.concatenate([w.reshape(-1), jnp.ones((g * nn_,), jnp.float32)])
  valid_all = jnp.concatenate([evalid.reshape(-1), jnp.ones((g * nn_,), bool)])

  nodes = jnp.concatenate(
      [node_features.reshape(g * nn_, f), jnp.zeros((1, f), node_features.dtype)], axis=0)
  n_edge_valid = jnp.sum(evalid, axis=1).astype(jnp.int32) + nn_
  return jraph.GraphsTuple(
      nodes=nodes,
      edges={"weight": weight_all, "valid": valid_all},
      senders=senders_all,
      receivers=receivers_all,
      n_node=jnp.concatenate([jnp.full((g,), nn_, jnp.int32), jnp.ones((1,), jnp.int32)]),
      n_edge=jnp.concatenate([n_edge_valid, jnp.array([ne * g - jnp.sum(evalid)], jnp.int32)]),
      globals=None,
  )


def multiscale_edge_weights(edge_weight: Array, edge_mask: Array) -> tuple[Array, Array]:
  """The multiscale-Chamfer ablation's two edge sets, derived from the stored RBF weights.

  The data store one Chamfer RBF weight per edge, ``w = exp(-Dn / s)`` with ``Dn`` the Chamfer
  distance normalised by its maximum over the graph's edges (so ``max Dn = 1``) and ``s`` a
  per-graph scale (`asmp_jax.graph.geometry.rbf_edge_weights`). Hence ``Dn = log w / log w_min``
  with ``w_min`` the smallest weight of the graph, and the ablation's "forest of graphs" (paper
  §4.3; `asmp_jax.graph.build.build_window_graph` with ``edge_mode="multiscale"``) follows without
  rebuilding the data: scale 0 keeps the edges with ``Dn <= median(Dn)``, scale 1 keeps every
  edge (the 100th percentile), and a kept edge of scale ``t`` with threshold ``tau_t`` weighs
  ``exp(-Dn / tau_t^2)`` (``tau`` = 0 counts as 1), floored at float32's smallest normal number.
  Edges whose stored weight underflowed to 0 (float16 storage) are absent in both scales.

  Args:
    edge_weight: ``[..., Ne]`` stored RBF weights in (0, 1].
    edge_mask: ``[..., Ne]`` bool, valid edges.

  Returns:
    ``(weights, masks)``, each ``[2, ..., Ne]`` (scale 0, scale 1): float32 weights (0 where
    dropped) and bool masks.
  """
  mask = edge_mask.astype(bool) & (edge_weight > 0)
  w = jnp.where(mask, edge_weight.astype(jnp.float32), 1.0)
  neg_log = -jnp.log(jnp.clip(w, jnp.finfo(jnp.float32).tiny, 1.0))
  max_neg_log = jnp.max(jnp.where(mask, neg_log, 0.0), axis=-1, keepdims=True)
  dn = jnp.where(max_neg_log > 0, neg_log / jnp.where(max_neg_log > 0, max_neg_log, 1.0), 0.0)
  median = jnp.nanmedian(jnp.where(mask, dn, jnp.nan), axis=-1, keepdims=True)
  median = jnp.where(jnp.isnan(median), 0.0, median)
  weights, masks = [], []
  for tau in (median, jnp.ones_like(median)):
    keep = mask & (dn <= tau)
    denom = jnp.where(tau > 0, tau * tau, 1.0)
    wt = jnp.maximum(jnp.exp(-dn / denom), jnp.finfo(jnp.float32).tiny)
    weights.append(jnp.where(keep, wt, 0.0))
    masks.append(keep)
  return jnp.stack(weights), jnp.stack(masks)


class NodeMLP(nn.Module):
  """Linear(F -> hidden) -> LeakyReLU(0.2) -> Linear(-> out). ``[..., F] -> [..., out]``."""
  hidden: int
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
    x = leaky_relu_02(x)
    return nn.Dense(self.out, dtype=self.dtype, name="fc2")(x)


class EdgeWeightedGAT(nn.Module):
  """Multi-head graph attention with the edge weight in the attention logit (module docstring).

  ``__call__(graph)`` reads ``graph.nodes [N, Fin]``, ``graph.edges["weight"|"valid"] [E]``,
  ``senders/receivers [E]`` and returns ``[N, heads * head_dim]`` (concatenated heads, ReLU).
  """
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple) -> Array:
    num_nodes = graph.nodes.shape[0]
    z = nn.Dense(self.heads * self.head_dim, use_bias=False, dtype=self.dtype,
                 name="proj")(graph.nodes)
    z = z.reshape(num_nodes, self.heads, self.head_dim)
    init = nn.initializers.lecun_normal()
    a_src = self.param("att_src", init, (self.heads, self.head_dim))
    a_dst = self.param("att_dst", init, (self.heads, self.head_dim))
    a_edge = self.param("att_edge", nn.initializers.normal(1.0), (self.heads,))
    # Per-node scores, then gathered per edge: cheaper than gathering features first.
    s_src = jnp.einsum("nhd,hd->nh", z, a_src.astype(self.dtype))
    s_dst = jnp.einsum("nhd,hd->nh", z, a_dst.astype(self.dtype))
    w = graph.edges["weight"].astype(jnp.float32)
    valid = graph.edges["valid"]
    logits = (s_src[graph.senders].astype(jnp.float32) + s_dst[graph.receivers].astype(jnp.float32)
              + w[:, None] * a_edge[None, :])
    logits = nn.leaky_relu(logits, negative_slope=0.2)
    logits = jnp.where(valid[:, None], logits, -1e9)
    alpha = jraph.segment_softmax(logits, graph.receivers, num_segments=num_nodes)
    alpha = jnp.where(valid[:, None], alpha, 0.0)
    messages = z[graph.senders] * alpha[:, :, None].astype(self.dtype)
    out = jraph.segment_sum(messages, graph.receivers, num_segments=num_nodes)
    out = out.reshape(num_nodes, self.heads * self.head_dim)
    bias = self.param("bias", nn.initializers.zeros, (self.heads * self.head_dim,))
    return nn.relu(out + bias.astype(self.dtype))


class EdgeConv(nn.Module):
  """EdgeConv: ``h_i' = max_{j -> i} MLP([h_i, h_j - h_i])``, ``[N, C] -> [N, out]``.

  The maximum runs over valid incoming edges (self loops included, so never empty). The MLP is
  Linear -> LeakyReLU(0.2) -> Linear -> LeakyReLU(0.2) (DGCNN's activation).
  """
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, graph: jraph.GraphsTuple) -> Array:
    num_nodes = h.shape[0]
    h_i = h[graph.receivers]
    h_j = h[graph.senders]
    m = jnp.concatenate([h_i, h_j - h_i], axis=-1)
    m = leaky_relu_02(nn.Dense(self.out, dtype=self.dtype, name="fc1")(m))
    m = leaky_relu_02(nn.Dense(self.out, dtype=self.dtype, name="fc2")(m))
    m = jnp.where(graph.edges["valid"][:, None], m, jnp.finfo(m.dtype).min)
    agg = jraph.segment_max(m, graph.receivers, num_segments=num_nodes)
    # Every node has a valid self loop, so no segment is empty; guard anyway.
    return jnp.where(agg > jnp.finfo(m.dtype).min, agg, 0.0)


def masked_max_mean_pool(x: Array, mask: Array) -> Array:
  """``[G, Nn, C], [G, Nn] -> [G, 2C]``: ``[max || mean]`` over valid nodes (0 if none)."""
  m = mask[..., None]
  neg = jnp.finfo(x.dtype).min
  mx = jnp.max(jnp.where(m, x, neg), axis=-2)
  any_valid = jnp.any(mask, axis=-1, keepdims=True)
  mx = jnp.where(any_valid, mx, 0.0)
  count = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1).astype(x.dtype)
  mean = jnp.sum(jnp.where(m, x, 0.0), axis=-2) / count
  return jnp.concatenate([mx, mean], axis=-1)


class GraphEncoder(nn.Module):
  """Node MLP + GAT + EdgeConv, pooled per graph into ``zeta``.

  Attributes:
    node_hidden, embed_dim: node MLP widths (1024, 512).
    gat_heads, gat_head_dim: GAT heads (4 x 64); ``gat_heads * gat_head_dim`` must equal
      ``edgeconv_dim`` so the two pooled branches (each ``2 * edgeconv_dim``) can be summed.
    edgeconv_dim: EdgeConv width (256).
    equal_weights: ignore the Chamfer weights (AVSGS).

  ``__call__(node_features [..., Nn, F], node_mask, senders, receivers, edge_weight, edge_mask)``
  returns ``(zeta [..., 2 * edgeconv_dim], node_embed [..., Nn, embed_dim])``.
  """
  node_hidden: int
  embed_dim: int
  gat_heads: int
  gat_head_dim: int
  edgeconv_dim: int
  equal_weights: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, node_features: Array, node_mask: Array, senders: Array, receivers: Array,
               edge_weight: Array, edge_mask: Array) -> tuple[Array, Array]:
    if self.gat_heads * self.gat_head_dim != self.edgeconv_dim:
      raise ValueError(
          f"config.model: gat_heads * gat_head_dim ({self.gat_heads} * {self.gat_head_dim}) must "
          f"equal edgeconv_dim ({self.edgeconv_dim}) so the pooled branches can be summed")
    lead = node_features.shape[:-2]
    nn_ = node_features.shape[-2]
    h = NodeMLP(self.node_hidden, self.embed_dim, dtype=self.dtype, name="node_mlp")(
        node_features)                                            # [..., Nn, embed_dim]
    graph = flatten_graphs(h, node_mask, senders, receivers, edge_weight, edge_mask,
                           equal_weights=self.equal_weights)
    gat = EdgeWeightedGAT(self.gat_heads, self.gat_head_dim, dtype=self.dtype, name="gat")(graph)
    ec = EdgeConv(self.edgeconv_dim, dtype=self.dtype, name="edgeconv")(gat, graph)
    g = graph.nodes.shape[0] - 1
    mask = node_mask.reshape(g // nn_, nn_).astype(bool)
    pooled_gat = masked_max_mean_pool(gat[:g].reshape(g // nn_, nn_, -1), mask)
    pooled_ec = masked_max_mean_pool(ec[:g].reshape(g // nn_, nn_, -1), mask)
    zeta = (pooled_gat + pooled_ec).reshape(lead + (2 * self.edgeconv_dim,))
    return zeta, h
