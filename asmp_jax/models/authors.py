"""The networks of the ASMP public code, layer for layer (``config.model.graph_mode = "authors"``).

The authors released PyTorch weights of the networks their test scripts build
(``metro-smiles/asmp``: ``models/networks.py``, ``models/models.py`` and the two
``test_batch_noaug_varcontxt_*.py`` scripts). `AuthorsASMP` computes what those networks compute,
so that their weights, converted by ``python -m asmp_jax.convert_authors``, give their outputs.
It has the methods and outputs of `asmp_jax.models.asmp.ASMP` (``embed``, ``separate``,
``consistency``, ``direction``, ``__call__``), so training, evaluation and inference use it
unchanged. Our own variant (``graph_mode="asmp"``, the paper's text) stays the default.

Where the public code and the paper's text (our default variant) differ:

========================  ==========================================  ===========================
part                      public code (this module)                   paper text / ``"asmp"``
========================  ==========================================  ===========================
node MLP ``map_net``      Linear F->1024, LeakyReLU 0.2, Linear->512  same
GAT                       PyG ``GATConv(512, 64, heads=4,             edge weight times one
                          edge_dim=1)``: edge term                    learned coefficient per
                          ``att_edge . lin_edge(w)``; input self      head; a self loop of
                          loops dropped, one self loop per node       weight 1 per node
                          added whose weight is the mean of the
                          node's incoming edge weights (0 if none);
                          NaN weights read as 0; then ReLU
EdgeConv                  on the GAT output, message                  MLP Linear, LeakyReLU,
                          ``Linear(2*256->256), ReLU, BatchNorm``,    Linear, LeakyReLU
                          max over the node's edges and its self
                          loop, then ReLU
graph embedding zeta      ``[max || mean](GAT) + [max || mean]        same
                          (EdgeConv)``
GRU                       ``nn.GRU(512, 512)`` (separate input and    GRU, outputs unit-
                          hidden biases), zero start state, state     normalised
                          carried over the slots, outputs *not*
                          normalised; the test scripts use the
                          first step only
U-Net                     7 layers, ngf 64, BatchNorm on every        same layers, conditioning
                          encoder layer, conditioning tiled 2x2 and   concatenated after
                          concatenated *before* the audio channels    the audio channels
consistency classifier    ResNet-18 (1 channel), global *max* pool,   global average pool
                          Linear 512->K
direction head            the separated log spectrogram's window     the window's slice and
                          only (no visual input): ResNet-18           the source's embedding
                          (1 channel, max pool) + Linear 512->512     y_i; average pool;
                          (``fusion_enc``), then Linear 512->256,     Linear->256, ReLU,
                          BatchNorm, LeakyReLU 0.2, Linear->D,        Linear->D
                          BatchNorm (``dir_classifier``)
separated log spectrum    ``log(mask * mix + 1e-10)``                 ``sep_log_eps`` (1e-4)
========================  ==========================================  ===========================

Graph input: the public test code builds each video's graph complete, self loops included. Here
the GAT sees each graph's valid edges without their self loops plus one self loop per node (as
``GATConv`` does), and EdgeConv the valid edges without self loops plus one self loop per node:
on a complete graph, with or without its self loops listed, that is exactly the public code's
graph.

Parts a release may lack (``convert_authors`` sets these config keys from the files it finds):
``config.model.authors_direction`` (False without ``fusion_enc_final.pth`` /
``dir_classifier_final.pth``: direction logits are NaN, i.e. "no prediction") and
``config.model.authors_classifier`` (False without ``classifier_final.pth``: class logits are 0,
i.e. uniform class probabilities). Both default to True.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from asmp_jax.models import conditioners
from asmp_jax.models.classifiers import BasicBlock, time_windows
from asmp_jax.models.graph_encoder import NodeMLP, flatten_graphs, masked_max_mean_pool
from asmp_jax.models.layers import Conv, batch_norm, leaky_relu_02, max_pool_3x3s2, resolve_dtype
from asmp_jax.models.unet import ConditionedUNet

Array = jax.Array
Dtype = Any

GRAPH_MODE = "authors"
# Set by convert_authors from the files a release holds (base_config: both True).
OPTIONAL_KEYS = ("authors_direction", "authors_classifier")
# The public code's log floor of the separated spectrogram (test and training scripts).
SEP_LOG_EPS = 1e-10


def _bn(train: bool, dtype: Dtype, name: str) -> nn.BatchNorm:
  return batch_norm(train, dtype, name=name)


class AuthorsGAT(nn.Module):
  """PyG ``GATConv(in, head_dim, heads, edge_dim=1)`` (concatenated heads, bias), then ReLU.

  Parameters keep PyTorch's shapes except the transposed linear kernels: ``lin`` (the shared
  ``lin_src``/``lin_dst``), ``att_src``/``att_dst``/``att_edge`` ``[1, heads, head_dim]``,
  ``lin_edge`` ``[1, heads * head_dim]`` and ``bias``.

  ``__call__(h [N, Fin], senders, receivers [E], weight [E], valid [E], loop_weight [N])``: the
  valid edges must hold no self loop; every node gets one with weight ``loop_weight``.
  """
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, senders: Array, receivers: Array, weight: Array, valid: Array,
               loop_weight: Array) -> Array:
    n = h.shape[0]
    hc = self.heads * self.head_dim
    z = nn.Dense(hc, use_bias=False, dtype=self.dtype, name="lin")(h)
    z = z.reshape(n, self.heads, self.head_dim)
    glorot = nn.initializers.glorot_uniform()
    att_src = self.param("att_src", glorot, (1, self.heads, self.head_dim))
    att_dst = self.param("att_dst", glorot, (1, self.heads, self.head_dim))
    att_edge = self.param("att_edge", glorot, (1, self.heads, self.head_dim))
    loops = jnp.arange(n, dtype=senders.dtype)
    s = jnp.concatenate([senders, loops])
    r = jnp.concatenate([receivers, loops])
    w = jnp.concatenate([weight, loop_weight]).astype(jnp.float32)
    ok = jnp.concatenate([valid, jnp.ones((n,), bool)])
    a_src = jnp.sum(z * att_src.astype(self.dtype), axis=-1).astype(jnp.float32)   # [N, H]
    a_dst = jnp.sum(z * att_dst.astype(self.dtype), axis=-1).astype(jnp.float32)
    e = nn.Dense(hc, use_bias=False, dtype=jnp.float32, name="lin_edge")(w[:, None])
    a_edge = jnp.sum(e.reshape(-1, self.heads, self.head_dim) * att_edge, axis=-1)  # [E + N, H]
    logits = nn.leaky_relu(a_src[s] + a_dst[r] + a_edge, negative_slope=0.2)
    logits = jnp.where(ok[:, None], logits, -jnp.inf)
    alpha = jraph.segment_softmax(logits, r, num_segments=n)
    alpha = jnp.where(ok[:, None], alpha, 0.0)
    out = jraph.segment_sum(z[s] * alpha[:, :, None].astype(self.dtype), r, num_segments=n)
    bias = self.param("bias", nn.initializers.zeros, (hc,))
    return nn.relu(out.reshape(n, hc) + bias.astype(self.dtype))


class AuthorsEdgeConv(nn.Module):
  """PyG ``EdgeConv(Seq(Seq(Linear(2C, out), ReLU, BatchNorm1d(out))), aggr="max")``, then ReLU.

  The message of edge ``j -> i`` is ``mlp([h_i, h_j - h_i])``; BatchNorm statistics in training
  are over the valid edges. A node with no valid edge gets 0 (torch_scatter's empty maximum).
  """
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, senders: Array, receivers: Array, valid: Array,
               train: bool) -> Array:
    n = h.shape[0]
    h_i, h_j = h[receivers], h[senders]
    m = nn.Dense(self.out, dtype=self.dtype, name="fc")(jnp.concatenate([h_i, h_j - h_i], -1))
    m = nn.relu(m)
    m = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="bn")(m, mask=valid[:, None])
    low = jnp.finfo(m.dtype).min
    agg = jraph.segment_max(jnp.where(valid[:, None], m, low), receivers, num_segments=n)
    has_edge = jraph.segment_sum(valid.astype(jnp.int32), receivers, num_segments=n) > 0
    return nn.relu(jnp.where(has_edge[:, None], agg, 0.0))


class AuthorsGraphEncoder(nn.Module):
  """``map_net`` + GAT + EdgeConv pooled into zeta (public ``GraphNet_3``; module docstring).

  ``__call__(node_features [..., Nn, F], node_mask, senders, receivers, edge_weight, edge_mask,
  train)`` -> ``zeta [..., 2 * heads * head_dim]``.
  """
  node_hidden: int
  embed_dim: int
  heads: int
  head_dim: int
  edgeconv_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, node_features: Array, node_mask: Array, senders: Array, receivers: Array,
               edge_weight: Array, edge_mask: Array, train: bool = False) -> Array:
    lead, nn_ = node_features.shape[:-2], node_features.shape[-2]
    h = NodeMLP(self.node_hidden, self.embed_dim, dtype=self.dtype, name="map_net")(node_features)
    weight = jnp.where(jnp.isnan(edge_weight), 0.0, edge_weight)
    graph = flatten_graphs(h, node_mask, senders, receivers, weight, edge_mask)
    g = graph.nodes.shape[0] - 1                      # real node rows; the last is the dummy
    ne = graph.senders.shape[0] - g                   # the input edges (the rest: self loops)
    s, r = graph.senders[:ne], graph.receivers[:ne]
    valid = graph.edges["valid"][:ne] & (s != r)
    w = jnp.where(valid, graph.edges["weight"][:ne], 0.0)
    num = graph.nodes.shape[0]
    count = jraph.segment_sum(valid.astype(jnp.float32), r, num_segments=num)
    loop_w = jraph.segment_sum(w, r, num_segments=num) / jnp.maximum(count, 1.0)
    gat = AuthorsGAT(self.heads, self.head_dim, dtype=self.dtype, name="gat")(
        graph.nodes, s, r, w, valid, loop_w)
    loops = jnp.arange(num, dtype=s.dtype)
    ec = AuthorsEdgeConv(self.edgeconv_dim, dtype=self.dtype, name="edgeconv")(
        gat, jnp.concatenate([s, loops]), jnp.concatenate([r, loops]),
        jnp.concatenate([valid, jnp.arange(num) < g]), train)
    mask = node_mask.reshape(g // nn_, nn_).astype(bool)
    pooled_gat = masked_max_mean_pool(gat[:g].reshape(g // nn_, nn_, -1), mask)
    pooled_ec = masked_max_mean_pool(ec[:g].reshape(g // nn_, nn_, -1), mask)
    return (pooled_gat + pooled_ec).astype(jnp.float32).reshape(lead + (pooled_gat.shape[-1],))


class TorchGRUCell(nn.Module):
  """``torch.nn.GRU``'s cell: gates r, z, n, each with an input and a hidden bias.

  ``r = sigmoid(ir(x) + hr(h))``, ``z = sigmoid(iz(x) + hz(h))``, ``n = tanh(in(x) + r * hn(h))``,
  ``h' = (1 - z) * n + z * h``; all six are biased Dense layers (Flax's ``GRUCell`` has no
  ``hr``/``hz`` bias, so it cannot hold PyTorch's weights unchanged).
  """
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array, x: Array) -> Array:
    dense = lambda name: nn.Dense(self.hidden, dtype=self.dtype, name=name)
    r = jax.nn.sigmoid(dense("ir")(x) + dense("hr")(h))
    z = jax.nn.sigmoid(dense("iz")(x) + dense("hz")(h))
    n = jnp.tanh(dense("in")(x) + r * dense("hn")(h))
    return (1.0 - z) * n + z * h


class AuthorsSlotGRU(nn.Module):
  """``num_steps`` GRU steps on a constant input from a zero state, outputs as they are.

  ``[..., Z] -> [..., num_steps, hidden]`` float32 (the public training code's recurrence; its
  test scripts use step 0).
  """
  hidden: int
  num_steps: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, zeta: Array) -> Array:
    cell = TorchGRUCell(self.hidden, dtype=self.dtype, name="gru")
    x = zeta.astype(self.dtype)
    h = jnp.zeros(zeta.shape[:-1] + (self.hidden,), self.dtype)
    outs = []
    for _ in range(self.num_steps):
      h = cell(h, x)
      outs.append(h.astype(jnp.float32))
    return jnp.stack(outs, axis=-2)


class AuthorsResNet18(nn.Module):
  """The public ``Resnet18(pool_type="maxpool", input_channel=1, with_fc=True)``.

  ``[N, H, W] -> [N, fc_out]``: 7x7/2 stem conv (no bias), BatchNorm, ReLU, 3x3/2 max pool, four
  stages of two basic blocks, global max pool, Linear 512 -> ``fc_out``.
  """
  fc_out: int
  width: int = 64
  blocks: tuple[int, ...] = (2, 2, 2, 2)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = x[..., None].astype(self.dtype)
    x = Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
             dtype=self.dtype, name="stem")(x)
    x = nn.relu(_bn(train, self.dtype, "stem_bn")(x))
    x = max_pool_3x3s2(x)
    for stage, n_blocks in enumerate(self.blocks):
      for j in range(int(n_blocks)):
        x = BasicBlock(self.width * 2**stage, 2 if (stage > 0 and j == 0) else 1,
                       dtype=self.dtype, name=f"stage{stage + 1}_block{j + 1}")(x, train)
    x = jnp.max(x, axis=(1, 2))
    return nn.Dense(self.fc_out, dtype=self.dtype, name="fc")(x)


class AuthorsDirectionMLP(nn.Module):
  """The public ``net_fuse`` (``use_graph_enc=False``): Linear E->E/2 (512->256), BatchNorm,
  LeakyReLU 0.2, Linear ->D, BatchNorm. ``[N, E] -> [N, D]``."""
  num_directions: int
  hidden: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
    x = leaky_relu_02(_bn(train, self.dtype, "bn1")(x))
    x = nn.Dense(self.num_directions, dtype=self.dtype, name="fc2")(x)
    return _bn(train, self.dtype, "bn2")(x)


def _flag(model_config: Any, key: str) -> bool:
  value = model_config[key]
  if not isinstance(value, bool):
    raise ValueError(f"config.model.{key} must be True or False, got {value!r}")
  return value


class AuthorsASMP(nn.Module):
  """The public code's networks with `asmp_jax.models.asmp.ASMP`'s interface (module docstring).

  Attributes:
    spec: the validated ``config.model`` (``graph_mode="authors"``).
    has_direction: the direction networks are present (``config.model.authors_direction``).
    has_classifier: the consistency classifier is present (``config.model.authors_classifier``).
  """
  spec: Any
  has_direction: bool = True
  has_classifier: bool = True
  # Each video is conditioned on its first GRU step only (the paper protocol reads that slot).
  FIRST_STEP_ONLY = True

  def setup(self) -> None:
    sp = self.spec
    dtype = resolve_dtype(sp.dtype)
    self.graph_encoder = AuthorsGraphEncoder(sp.node_hidden, sp.embed_dim, sp.gat_heads,
                                             sp.gat_head_dim, sp.edgeconv_dim, dtype=dtype)
    self.slot_gru = AuthorsSlotGRU(sp.embed_dim, sp.num_slots, dtype=dtype)
    self.unet = ConditionedUNet(sp.unet_width_mult, True, sp.kernels, 1.0, "batch",
                                cond_first=True, dtype=dtype)
    if self.has_classifier:
      self.classifier = AuthorsResNet18(sp.num_classes, sp.cls_width, sp.cls_blocks, dtype=dtype)
    if self.has_direction:
      self.fusion_enc = AuthorsResNet18(sp.embed_dim, sp.cls_width, sp.cls_blocks, dtype=dtype)
      self.dir_classifier = AuthorsDirectionMLP(sp.num_direction_classes, sp.embed_dim // 2,
                                                dtype=dtype)

  def embed(self, batch: Mapping[str, Array], train: bool = False) -> dict[str, Array]:
    """Scene graphs -> GRU outputs ``[B, U, S, E]`` (not normalised) and zeta."""
    zeta = self.graph_encoder(batch["node_features"].astype(jnp.float32), batch["node_mask"],
                              batch["senders"], batch["receivers"], batch["edge_weight"],
                              batch["edge_mask"], train)
    steps = self.slot_gru(zeta)
    if self.spec.compact_slots:
      steps = conditioners.assign_steps_to_slots(steps, batch["source_mask"])
    return {"embeddings": steps, "graph_embedding": zeta}

  def separate(self, mix_log_mag: Array, embeddings: Array, train: bool = False) -> Array:
    """Masks ``[B, C, H, W]`` for ``C`` conditionings ``[B, C, E]`` per mixture."""
    return self.unet(mix_log_mag.astype(jnp.float32), embeddings, train)

  def consistency(self, sep_log_mag: Array, train: bool = False) -> Array:
    """Class logits ``[N, K]`` of separated log spectrograms ``[N, H, W]`` (0 without the
    classifier)."""
    if not self.has_classifier:
      return jnp.zeros((sep_log_mag.shape[0], self.spec.num_classes), jnp.float32)
    return self.classifier(sep_log_mag, train).astype(jnp.float32)

  def direction(self, sep_log_mag: Array, embed: Array | None = None,
                train: bool = False) -> Array:
    """Direction logits ``[N, Wd, D]`` of each time window of ``[N, H, T]`` (NaN without the
    direction networks). ``embed`` is accepted for the interface and not used: the public
    direction head has no visual input."""
    del embed
    sp = self.spec
    n = sep_log_mag.shape[0]
    if not self.has_direction:
      return jnp.full((n, sp.num_dir_windows, sp.num_direction_classes), jnp.nan, jnp.float32)
    slices = time_windows(sep_log_mag, sp.dir_window_cols, sp.dir_window_stride,
                          sp.num_dir_windows)
    slices = slices.reshape((n * sp.num_dir_windows,) + slices.shape[-2:])
    logits = self.dir_classifier(self.fusion_enc(slices, train), train)
    return logits.astype(jnp.float32).reshape(n, sp.num_dir_windows, -1)

  def __call__(self, batch: Mapping[str, Array], train: bool) -> dict[str, Array]:
    sp = self.spec
    mix = batch["mix_log_mag"].astype(jnp.float32)
    b, h, w = mix.shape
    u, s = batch["source_mask"].shape[1], sp.num_slots
    out = self.embed(batch, train)
    emb = out["embeddings"]
    logits = self.unet(mix, emb.reshape(b, u * s, -1), train, logits=True).reshape(b, u, s, h, w)
    masks = jax.nn.sigmoid(logits)
    sep = jnp.log(masks * jnp.exp(mix)[:, None, None] + sp.sep_log_eps)
    flat = sep.reshape(b * u * s, h, w)
    out.update(masks=masks, mask_logits=logits, sep_log_mag=sep,
               cons_logits=self.consistency(flat, train).reshape(b, u, s, sp.num_classes),
               dir_logits=self.direction(flat, None, train).reshape(
                   b, u, s, sp.num_dir_windows, sp.num_direction_classes))
    return out


# Switches of this project's networks that the public code's do not have, at the values that
# leave the paper's U-Net and classifiers unchanged.
PAPER_NETWORKS = {"unet_pool": 1, "unet_conditioning": "bottleneck", "cls_freq_pool": 1}


def create(model_config: Any, spec: Any) -> AuthorsASMP:
  """`AuthorsASMP` for a validated spec and the config's ``authors_*`` flags."""
  for key, value in PAPER_NETWORKS.items():
    if getattr(spec, key) != value:
      raise ValueError(f"config.model.{key}={getattr(spec, key)!r}: the public code's networks "
                       f"(graph_mode='authors') have the paper's U-Net and classifiers only "
                       f"({key}={value!r})")
  return AuthorsASMP(spec, has_direction=_flag(model_config, "authors_direction"),
                     has_classifier=_flag(model_config, "authors_classifier"))


conditioners.register(GRAPH_MODE, None, ("node_features", "node_mask", "senders", "receivers",
                                         "edge_weight", "edge_mask"), model=create)
