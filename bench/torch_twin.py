"""PyTorch twin of ASMP (asmp_jax.models.asmp), written the way the public PyTorch code is.

The twin computes the same function as our Flax model, parameter for parameter, so that the two
can be timed side by side (bench/torch_vs_jax.py) and checked against each other
(tests/test_torch_twin.py). It covers the whole training step: the audio front end (STFT,
log-frequency warp), the scene-graph encoder and slot GRU, the conditioned U-Net with
``C = U * S`` conditionings per mixture, the consistency and direction classifiers, and the four
losses of eq. 4.

Written like the public code (Sound of Pixels / Co-Separation / AVSGS / ASMP, PyTorch, NCHW):

* U-Net: the mixture spectrogram is repeated ``C`` times and *re-encoded for every
  conditioning* (the public code calls the whole U-Net once per visual feature), the visual vector
  is tiled over the 2x2 bottleneck and concatenated after the audio feature, and every decoder
  layer convolves ``cat(decoder_state, skip)``. Our model encodes once per mixture and convolves the
  shared skip once per layer (asmp_jax/models/unet.py); the outputs are identical because
  BatchNorm statistics over ``C`` identical copies of a batch equal those of the batch.
  ``UNetTwin(encoder_once=True)`` encodes once and repeats the skips (an ablation for the
  benchmark; it still materialises and convolves the concatenations).
* Graph encoder: an edge list with self loops, softmax/max aggregation by ``scatter_reduce`` /
  ``index_add_`` (the PyTorch Geometric formulation of ``GATConv(edge_dim=1)`` and
  ``EdgeConv(aggr="max")``), invalid edges dropped by boolean indexing.
* Log-frequency warp: the public code calls ``F.grid_sample`` (bilinear, ``align_corners=True``)
  with a grid that leaves the time axis alone; that is a linear interpolation between two rows,
  which the twin does with two gathers at the rows of ``asmp_jax.audio.warp_grid``.

Where the twin (= our architecture) differs from the public code, on purpose:

* The consistency / direction classifiers are our ResNet-18-style networks (asmp_jax/models/
  classifiers.py); the public code's heads differ in detail (e.g. Co-Separation's classifier is a
  ResNet-18 on a 3-channel copy of the spectrogram, ASMP's direction head pools differently).
* GAT puts the Chamfer weight into the attention logit; the public ASMP code multiplies messages by
  the weight. The GRU input is zeta at every step; the public code feeds the previous output.
* BatchNorm's running variance: PyTorch updates it with the unbiased batch variance, Flax with the
  biased one (a factor ``n / (n - 1)``, ``n = B*C*H*W`` here). Normalisation in training mode uses
  the biased variance in both, so outputs and gradients agree; only the running statistics drift
  by that factor.

`port_flax_variables(twin, variables)` copies a Flax ``{'params', 'batch_stats'}`` tree into the
twin (kernels transposed / flipped as needed) and checks that every tensor found its counterpart.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asmp_jax import audio as audio_lib
from asmp_jax.models import conditioners
from asmp_jax.models.asmp import ModelSpec, spec_from_config
from asmp_jax.models.unet import unet_widths

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- small functions


def _bn(channels: int) -> nn.BatchNorm2d:
  """BatchNorm2d with PyTorch's defaults (momentum 0.1, eps 1e-5) = Flax momentum 0.9."""
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
  """``x / max(||x||, eps)`` over the last axis (as `asmp_jax.models.layers.l2_normalize`)."""
  sq = torch.sum(x * x, dim=-1, keepdim=True)
  return x * torch.rsqrt(torch.clamp(sq, min=eps * eps))


# ----------------------------------------------------------------------------- audio front end


def audio_inputs(audio: Tensor, normalise_mix: bool = False) -> dict[str, Tensor]:
  """STFT + log-frequency warp of waveform crops (as `asmp_jax.train.audio_inputs`).

  Args:
    audio: ``[B, U, L]`` float waveforms (gains applied), ``L = 65535`` -> 256 frames.
    normalise_mix: divide the mixture by ``U`` (public code).

  Returns:
    ``mix_log_mag [B, 256, T]`` and ``video_mag_warped [B, U, 256, T]``.
  """
  b, u, length = audio.shape
  window = torch.hann_window(audio_lib.WIN, periodic=True, dtype=audio.dtype,
                             device=audio.device)
  spec = torch.stft(audio.reshape(b * u, length), n_fft=audio_lib.N_FFT, hop_length=audio_lib.HOP,
                    win_length=audio_lib.WIN, window=window, center=True, pad_mode="reflect",
                    return_complex=True)
  spec = spec.reshape(b, u, spec.shape[-2], spec.shape[-1])          # [B, U, 512, T]
  mix = spec.sum(dim=1)
  if normalise_mix:
    mix = mix / u
  return {"mix_log_mag": torch.log(warp_rows(mix.abs()) + 1e-10),
          "video_mag_warped": warp_rows(spec.abs())}


def warp_rows(x: Tensor, out_rows: int = audio_lib.WARP_SIZE) -> Tensor:
  """Linear-frequency rows ``[..., R, T]`` -> log-frequency rows ``[..., out_rows, T]``."""
  rows = audio_lib.warp_grid(out_rows, x.shape[-2])
  lo = np.clip(np.floor(rows).astype(np.int64), 0, x.shape[-2] - 2)
  frac = torch.as_tensor(rows - lo, dtype=x.dtype, device=x.device)[:, None]
  lo_t = torch.as_tensor(lo, device=x.device)
  return x[..., lo_t, :] * (1 - frac) + x[..., lo_t + 1, :] * frac


# ----------------------------------------------------------------------------- U-Net


class UNetTwin(nn.Module):
  """Co-Separation's 7-layer conditioned U-Net.
  ``(spec [B, H, W], cond [B, C, E]) -> [B, C, H, W]``.

  Attributes follow `asmp_jax.models.unet.ConditionedUNet`; module names mirror its Flax names
  (``down1..7``, ``down1_bn..``, ``up1..7``, ``up1_bn..up6_bn``).
  """

  def __init__(self, width_mult: float, cond_dim: int, first_layer_norm: bool = True,
               encoder_once: bool = False):
    super().__init__()
    self.widths = unet_widths(width_mult)
    self.first_layer_norm = first_layer_norm
    self.encoder_once = encoder_once
    n = len(self.widths)
    cin = 1
    for i, w in enumerate(self.widths):
      setattr(self, f"down{i + 1}", nn.Conv2d(cin, w, 4, 2, 1))
      if i > 0 or first_layer_norm:
        setattr(self, f"down{i + 1}_bn", _bn(w))
      cin = w
    up_out = tuple(reversed(self.widths[:-1])) + (1,)
    for i, w in enumerate(up_out):
      skip = self.widths[n - 1 - i] if i > 0 else cond_dim
      state = up_out[i - 1] if i > 0 else self.widths[-1]
      setattr(self, f"up{i + 1}", nn.ConvTranspose2d(state + skip, w, 4, 2, 1))
      if i < n - 1:
        setattr(self, f"up{i + 1}_bn", _bn(w))

  def forward(self, spec: Tensor, cond: Tensor) -> Tensor:
    b, h, w = spec.shape
    c, e = cond.shape[1], cond.shape[2]
    n = len(self.widths)
    x = spec[:, None]                                              # [B, 1, H, W]
    if not self.encoder_once:                                      # public code: re-encode
      x = x.repeat_interleave(c, dim=0)                            # [B*C, 1, H, W]
    skips = []
    for i in range(n):
      x = getattr(self, f"down{i + 1}")(x)
      if i > 0 or self.first_layer_norm:
        x = getattr(self, f"down{i + 1}_bn")(x)
      x = F.leaky_relu(x, 0.2)
      skips.append(x.repeat_interleave(c, dim=0) if self.encoder_once else x)
    vis = cond.reshape(b * c, e, 1, 1).expand(-1, -1, skips[-1].shape[2], skips[-1].shape[3])
    y = torch.cat([skips[-1], vis], dim=1)
    for i in range(n):
      if i > 0:
        y = torch.cat([y, skips[n - 1 - i]], dim=1)
      y = getattr(self, f"up{i + 1}")(y)
      if i < n - 1:
        y = F.relu(getattr(self, f"up{i + 1}_bn")(y))
    return torch.sigmoid(y).reshape(b, c, h, w)


# ----------------------------------------------------------------------------- classifiers


class BasicBlockTwin(nn.Module):
  """ResNet basic block (torchvision layout; names as the Flax `BasicBlock`)."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = _bn(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = _bn(cout)
    self.has_proj = cin != cout or stride != 1
    if self.has_proj:
      self.proj = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
      self.proj_bn = _bn(cout)

  def forward(self, x: Tensor) -> Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.has_proj:
      x = self.proj_bn(self.proj(x))
    return F.relu(x + y)


class ResNetTwin(nn.Module):
  """ResNet-18-style backbone ``[N, H, W] -> [N, 8 * width]`` (one input channel)."""

  def __init__(self, width: int, blocks: tuple[int, ...]):
    super().__init__()
    self.stem = nn.Conv2d(1, width, 7, 2, 3, bias=False)
    self.stem_bn = _bn(width)
    self.block_names = []
    cin = width
    for stage, n_blocks in enumerate(blocks):
      for j in range(n_blocks):
        cout = width * 2**stage
        name = f"stage{stage + 1}_block{j + 1}"
        setattr(self, name, BasicBlockTwin(cin, cout, 2 if (stage > 0 and j == 0) else 1))
        self.block_names.append(name)
        cin = cout

  def forward(self, x: Tensor) -> Tensor:
    x = F.relu(self.stem_bn(self.stem(x[:, None])))
    x = F.max_pool2d(x, 3, 2, 1)
    for name in self.block_names:
      x = getattr(self, name)(x)
    return x.mean(dim=(2, 3))


class ConsistencyTwin(nn.Module):
  """Sound-class logits ``[N, H, W] -> [N, K]``."""

  def __init__(self, num_classes: int, width: int, blocks: tuple[int, ...]):
    super().__init__()
    self.backbone = ResNetTwin(width, blocks)
    self.head = nn.Linear(width * 2**(len(blocks) - 1), num_classes)

  def forward(self, spec: Tensor) -> Tensor:
    return self.head(self.backbone(spec))


class DirectionTwin(nn.Module):
  """Per-window direction logits ``([N, H, T], [N, E]) -> [N, Wd, D]``."""

  def __init__(self, spec: ModelSpec):
    super().__init__()
    feat = spec.cls_width * 2**(len(spec.cls_blocks) - 1)
    self.cols, self.stride, self.nwin = (spec.dir_window_cols, spec.dir_window_stride,
                                         spec.num_dir_windows)
    self.backbone = ResNetTwin(spec.cls_width, spec.cls_blocks)
    self.fc1 = nn.Linear(feat + spec.embed_dim, 256)
    self.head = nn.Linear(256, spec.num_direction_classes)

  def forward(self, spec: Tensor, embed: Tensor) -> Tensor:
    n, h, _ = spec.shape
    slices = torch.stack([spec[..., k * self.stride:k * self.stride + self.cols]
                          for k in range(self.nwin)], dim=1)         # [N, Wd, H, cols]
    feat = self.backbone(slices.reshape(n * self.nwin, h, self.cols)).reshape(n, self.nwin, -1)
    emb = embed[:, None, :].expand(-1, self.nwin, -1)
    return self.head(F.relu(self.fc1(torch.cat([feat, emb], dim=-1))))


# ----------------------------------------------------------------------------- graph encoder


class NodeMLPTwin(nn.Module):
  def __init__(self, fin: int, hidden: int, out: int):
    super().__init__()
    self.fc1 = nn.Linear(fin, hidden)
    self.fc2 = nn.Linear(hidden, out)

  def forward(self, x: Tensor) -> Tensor:
    return self.fc2(F.leaky_relu(self.fc1(x), 0.2))


def _scatter_softmax(logits: Tensor, index: Tensor, num: int) -> Tensor:
  """Softmax of ``logits [E, H]`` over the edges sharing ``index [E]`` (receiver)."""
  idx = index[:, None].expand_as(logits)
  mx = torch.full((num, logits.shape[1]), float("-inf"), dtype=logits.dtype, device=logits.device)
  mx = mx.scatter_reduce(0, idx, logits, reduce="amax", include_self=True)
  ex = torch.exp(logits - mx[index])
  den = torch.zeros_like(mx).index_add_(0, index, ex)
  return ex / den[index]


class GATTwin(nn.Module):
  """Edge-weighted multi-head GAT (the weight is a 1-d edge feature in the logit)."""

  def __init__(self, fin: int, heads: int, head_dim: int):
    super().__init__()
    self.heads, self.head_dim = heads, head_dim
    self.proj = nn.Linear(fin, heads * head_dim, bias=False)
    self.att_src = nn.Parameter(torch.zeros(heads, head_dim))
    self.att_dst = nn.Parameter(torch.zeros(heads, head_dim))
    self.att_edge = nn.Parameter(torch.zeros(heads))
    self.bias = nn.Parameter(torch.zeros(heads * head_dim))

  def forward(self, x: Tensor, senders: Tensor, receivers: Tensor, weight: Tensor) -> Tensor:
    n = x.shape[0]
    z = self.proj(x).reshape(n, self.heads, self.head_dim)
    s_src = (z * self.att_src).sum(-1)
    s_dst = (z * self.att_dst).sum(-1)
    logits = F.leaky_relu(s_src[senders] + s_dst[receivers] + weight[:, None] * self.att_edge, 0.2)
    alpha = _scatter_softmax(logits, receivers, n)
    out = torch.zeros_like(z).index_add_(0, receivers, z[senders] * alpha[:, :, None])
    return F.relu(out.reshape(n, -1) + self.bias)


class EdgeConvTwin(nn.Module):
  """EdgeConv: ``max_{j -> i} MLP([h_i, h_j - h_i])`` with LeakyReLU(0.2) after both layers."""

  def __init__(self, fin: int, out: int):
    super().__init__()
    self.fc1 = nn.Linear(2 * fin, out)
    self.fc2 = nn.Linear(out, out)

  def forward(self, h: Tensor, senders: Tensor, receivers: Tensor) -> Tensor:
    h_i, h_j = h[receivers], h[senders]
    m = F.leaky_relu(self.fc1(torch.cat([h_i, h_j - h_i], dim=-1)), 0.2)
    m = F.leaky_relu(self.fc2(m), 0.2)
    out = torch.zeros(h.shape[0], m.shape[1], dtype=m.dtype, device=m.device)
    return out.scatter_reduce(0, receivers[:, None].expand_as(m), m, reduce="amax",
                              include_self=False)


def _max_mean_pool(x: Tensor, mask: Tensor) -> Tensor:
  """``[G, Nn, C], [G, Nn] bool -> [G, 2C]`` (max || mean over valid nodes)."""
  m = mask[..., None]
  mx = torch.where(m, x, torch.finfo(x.dtype).min).amax(dim=1)
  mx = torch.where(mask.any(dim=1, keepdim=True), mx, torch.zeros_like(mx))
  mean = torch.where(m, x, torch.zeros_like(x)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
  return torch.cat([mx, mean], dim=-1)


class GraphEncoderTwin(nn.Module):
  """Node MLP -> GAT -> EdgeConv, each pooled ``[max || mean]``, summed: zeta ``[..., 2*ec]``."""

  def __init__(self, spec: ModelSpec):
    super().__init__()
    self.node_mlp = NodeMLPTwin(spec.node_feature_dim, spec.node_hidden, spec.embed_dim)
    self.gat = GATTwin(spec.embed_dim, spec.gat_heads, spec.gat_head_dim)
    self.edgeconv = EdgeConvTwin(spec.gat_heads * spec.gat_head_dim, spec.edgeconv_dim)
    self.equal_weights = conditioners.get(spec.graph_mode).options.get("equal_weights", False)

  def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
    feats = batch["node_features"]
    lead, nn_ = feats.shape[:-2], feats.shape[-2]
    g = int(np.prod(lead))
    h = self.node_mlp(feats.reshape(g * nn_, -1))
    nmask = batch["node_mask"].reshape(g, nn_).bool()
    s = batch["senders"].reshape(g, -1).long()
    r = batch["receivers"].reshape(g, -1).long()
    ok = (s >= 0) & (s < nn_) & (r >= 0) & (r < nn_)
    s_c, r_c = s.clamp(0, nn_ - 1), r.clamp(0, nn_ - 1)
    ok = ok & batch["edge_mask"].reshape(g, -1).bool() & nmask.gather(1, s_c) & nmask.gather(1, r_c)
    offset = (torch.arange(g, device=feats.device) * nn_)[:, None]
    w = batch["edge_weight"].reshape(g, -1).to(h.dtype)
    if self.equal_weights:
      w = torch.ones_like(w)
    loops = torch.arange(g * nn_, device=feats.device)
    senders = torch.cat([(s_c + offset)[ok], loops])
    receivers = torch.cat([(r_c + offset)[ok], loops])
    weight = torch.cat([w[ok], torch.ones(g * nn_, dtype=h.dtype, device=h.device)])
    gat = self.gat(h, senders, receivers, weight)
    ec = self.edgeconv(gat, senders, receivers)
    zeta = (_max_mean_pool(gat.reshape(g, nn_, -1), nmask)
            + _max_mean_pool(ec.reshape(g, nn_, -1), nmask))
    return zeta.reshape(tuple(lead) + (-1,))


class SlotGRUTwin(nn.Module):
  """GRU run ``num_steps`` steps on a constant input from zero: ``[..., Z] -> [..., S, E]``."""

  def __init__(self, fin: int, hidden: int, num_steps: int):
    super().__init__()
    self.gru = nn.GRUCell(fin, hidden)
    self.num_steps = num_steps

  def forward(self, zeta: Tensor) -> Tensor:
    lead = zeta.shape[:-1]
    x = zeta.reshape(-1, zeta.shape[-1])
    hcur = torch.zeros(x.shape[0], self.gru.hidden_size, dtype=x.dtype, device=x.device)
    outs = []
    for _ in range(self.num_steps):
      hcur = self.gru(x, hcur)
      outs.append(hcur)
    return l2_normalize(torch.stack(outs, dim=1)).reshape(tuple(lead) + (self.num_steps, -1))


def assign_steps_to_slots(steps: Tensor, source_mask: Tensor) -> Tensor:
  """GRU step ``k`` -> ``k``-th valid slot; remaining steps -> invalid slots (`asmp.py`)."""
  valid = source_mask.bool()
  n_valid = valid.sum(-1, keepdim=True)
  rank_valid = valid.long().cumsum(-1) - 1
  rank_invalid = n_valid + (~valid).long().cumsum(-1) - 1
  idx = torch.where(valid, rank_valid, rank_invalid)
  return torch.gather(steps, -2, idx[..., None].expand_as(steps))


# ----------------------------------------------------------------------------- the model


def _twinned(entry: conditioners.Conditioner) -> bool:
  return (entry.module is conditioners.GraphConditioner
          and not entry.options.get("multiscale", False))


class ASMPTwin(nn.Module):
  """The full model; ``forward(batch)`` returns the keys of `asmp_jax.models.asmp.ASMP`.

  Only the single-scale scene-graph conditioners (``graph_mode`` ``"asmp"`` / ``"equal"``: the
  configurations benchmarked) are twinned.
  """

  def __init__(self, model_config: Any, encoder_once: bool = False):
    super().__init__()
    sp = spec_from_config(model_config)
    if not _twinned(conditioners.get(sp.graph_mode)):
      twinned = [n for n in conditioners.names() if _twinned(conditioners.get(n))]
      raise ValueError(f"ASMPTwin: graph_mode {sp.graph_mode!r} is not twinned {twinned}")
    self.spec = sp
    self.graph_encoder = GraphEncoderTwin(sp)
    self.slot_gru = SlotGRUTwin(2 * sp.edgeconv_dim, sp.embed_dim, sp.num_slots)
    self.unet = UNetTwin(sp.unet_width_mult, sp.embed_dim, sp.unet_first_layer_norm,
                         encoder_once=encoder_once)
    self.consistency = ConsistencyTwin(sp.num_classes, sp.cls_width, sp.cls_blocks)
    self.direction = DirectionTwin(sp)

  def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    sp = self.spec
    mix = batch["mix_log_mag"]
    b, h, w = mix.shape
    u, s, e = batch["source_mask"].shape[1], sp.num_slots, sp.embed_dim
    zeta = self.graph_encoder(batch)                                 # [B, U, Z]
    steps = self.slot_gru(zeta)                                      # [B, U, S, E]
    emb = assign_steps_to_slots(steps, batch["source_mask"]) if sp.compact_slots else steps
    masks = self.unet(mix, emb.reshape(b, u * s, e)).reshape(b, u, s, h, w)
    sep = torch.log(masks * torch.exp(mix)[:, None, None] + sp.sep_log_eps)
    flat = sep.reshape(b * u * s, h, w)
    cons = self.consistency(flat).reshape(b, u, s, -1)
    dirs = self.direction(flat, emb.reshape(b * u * s, e))
    return {"embeddings": emb, "graph_embedding": zeta, "masks": masks, "sep_log_mag": sep,
            "cons_logits": cons,
            "dir_logits": dirs.reshape(b, u, s, sp.num_dir_windows, sp.num_direction_classes)}


# ----------------------------------------------------------------------------- losses


def permutation_match(logits: Tensor, labels: Tensor, valid: Tensor,
                      label_weight: Tensor | None = None) -> Tensor:
  """Minimum over admissible permutations of the summed CE (asmp_jax.losses), ``[...]``."""
  s = logits.shape[-2]
  perms = torch.as_tensor(list(itertools.permutations(range(s))), device=logits.device)
  logp = F.log_softmax(logits, dim=-1)
  lab = labels.long().clamp(0, logits.shape[-1] - 1)
  idx = lab[..., None, :].expand(lab.shape[:-1] + (s, s))
  cost = -torch.gather(logp, -1, idx)                               # [..., S(pred), S(label)]
  rows = torch.arange(s, device=logits.device).expand_as(perms)
  matched = cost[..., rows, perms]                                  # [..., P, S]
  if label_weight is not None:
    matched = matched * label_weight.to(matched.dtype)[..., perms]
  pred_valid = valid[..., None, :]
  admissible = (pred_valid == valid[..., perms]).all(-1)
  per_perm = torch.where(pred_valid, matched, torch.zeros_like(matched)).sum(-1)
  per_perm = torch.where(admissible, per_perm, torch.full_like(per_perm, float("inf")))
  return per_perm.min(dim=-1).values


def total_loss(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
               lambdas: Mapping[str, float],
               mask_target: str = "ibm") -> tuple[Tensor, dict[str, Tensor]]:
  """Eq. 4 (as `asmp_jax.losses.total_loss`, per-window direction permutations).

  Args:
    outputs: `ASMPTwin` outputs.
    batch: ``source_mask``, ``class_labels``, ``dir_labels``, ``dir_valid``, ``video_mag_warped``,
      ``mix_log_mag``.
    lambdas: ``{"cons", "cyc", "ortho", "dir"}`` weights.
    mask_target: ``"ibm"`` (paper) or ``"ratio"`` (public code).

  Returns:
    ``(loss, terms)`` with the unweighted batch means of the four terms.
  """
  src = batch["source_mask"].bool()
  cons = permutation_match(outputs["cons_logits"], batch["class_labels"], src).sum(-1)
  dir_valid = batch["dir_valid"].bool() & src[..., None]
  slots = src[:, :, None, :].expand(-1, -1, dir_valid.shape[-1], -1)
  dirs = permutation_match(outputs["dir_logits"].movedim(3, 2), batch["dir_labels"].movedim(3, 2),
                           slots, label_weight=dir_valid.movedim(3, 2) & slots).sum((1, 2))
  mags = batch["video_mag_warped"]
  if mask_target == "ibm":
    other = torch.flip(mags, dims=[1]) if mags.shape[1] == 2 else None
    if other is None:
      u = mags.shape[1]
      eye = torch.eye(u, dtype=torch.bool, device=mags.device)[None, :, :, None, None]
      other = torch.where(eye, torch.full_like(mags[:, None], float("-inf")),
                          mags[:, None].expand(-1, u, -1, -1, -1)).amax(2)
    target, weight = (mags > other).to(mags.dtype), None
  elif mask_target == "ratio":
    mix_mag = torch.exp(batch["mix_log_mag"])
    target = (mags / mix_mag.clamp(min=1e-10)[:, None]).clamp(0.0, 5.0)
    weight = torch.log1p(mix_mag).clamp(1e-3, 10.0)[:, None]
  else:
    raise ValueError(f"mask_target must be 'ibm' or 'ratio', got {mask_target!r}")
  summed = (outputs["masks"] * src[..., None, None].to(mags.dtype)).sum(2)
  diff = (summed - target).abs()
  if weight is not None:
    diff = diff * weight
  cyc = diff.mean((-2, -1)).sum(-1)
  emb = outputs["embeddings"]
  gram = torch.einsum("buie,buje->buij", emb, emb)
  s = src.shape[-1]
  pair = src[..., :, None] & src[..., None, :] & ~torch.eye(s, dtype=torch.bool,
                                                            device=src.device)
  ortho = torch.where(pair, gram * gram, torch.zeros_like(gram)).sum((1, 2, 3))
  terms = {"cons": cons.mean(), "cyc": cyc.mean(), "ortho": ortho.mean(), "dir": dirs.mean()}
  loss = sum(float(lambdas[k]) * v for k, v in terms.items())
  return loss, terms


# ----------------------------------------------------------------------------- steps


def make_optimizer(twin: nn.Module, config_train: Any) -> torch.optim.Adam:
  """``Adam(weight_decay=...)`` (L2 added to the gradient), as
  `asmp_jax.optimizer.create_optimizer` at its initial learning rate."""
  return torch.optim.Adam(twin.parameters(), lr=config_train.learning_rate,
                          betas=(config_train.b1, config_train.b2),
                          weight_decay=config_train.weight_decay)


def model_batch(batch: Mapping[str, Tensor], normalise_mix: bool = False) -> dict[str, Tensor]:
  """The pipeline batch plus the spectrogram inputs/targets (as `asmp_jax.train._model_batch`)."""
  out = dict(batch)
  with torch.no_grad():
    out.update(audio_inputs(batch["audio"], normalise_mix))
  return out


def train_step(twin: ASMPTwin, opt: torch.optim.Optimizer, batch: Mapping[str, Tensor],
               config: Any) -> Tensor:
  """Forward, eq. 4, backward, Adam. Returns the (detached) loss."""
  twin.train()
  mb = model_batch(batch, config.data.normalise_mix)
  lambdas = {k: config.loss[f"lambda_{k}"] for k in ("cons", "cyc", "ortho", "dir")}
  opt.zero_grad(set_to_none=True)
  loss, _ = total_loss(twin(mb), mb, lambdas, config.loss.mask_target)
  loss.backward()
  opt.step()
  return loss.detach()


@torch.inference_mode()
def inference_step(twin: ASMPTwin, batch: Mapping[str, Tensor], config: Any) -> dict[str, Tensor]:
  """Forward pass with BatchNorm's running statistics (``eval()``)."""
  twin.eval()
  return twin(model_batch(batch, config.data.normalise_mix))


def to_torch(batch: Mapping[str, Any], device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
  """numpy / JAX arrays -> tensors (floating arrays cast to ``dtype``)."""
  out = {}
  for k, v in batch.items():
    a = np.asarray(v)
    t = torch.from_numpy(np.ascontiguousarray(a))
    out[k] = (t.to(dtype) if a.dtype.kind == "f" else t).to(device)
  return out


# ----------------------------------------------------------------------------- weight porting


def _assign(param: Tensor, value: np.ndarray, name: str) -> None:
  value = torch.tensor(np.array(value), dtype=param.dtype, device=param.device)
  if tuple(param.shape) != tuple(value.shape):
    raise ValueError(f"port_flax_variables: {name}: twin shape {tuple(param.shape)} != ported "
                     f"{tuple(value.shape)}")
  with torch.no_grad():
    param.copy_(value)


def _port_module(mod: nn.Module, params: Mapping[str, Any], stats: Mapping[str, Any], path: str,
                 done: set[int]) -> None:
  p = {k: np.asarray(v) for k, v in params.items() if not isinstance(v, Mapping)}
  st = {k: np.asarray(v) for k, v in stats.items() if not isinstance(v, Mapping)}
  if isinstance(mod, nn.ConvTranspose2d):
    # Flax [kh, kw, Ci, Co] correlation kernel -> torch [Ci, Co, kh, kw], spatially flipped.
    _assign(mod.weight, np.transpose(p.pop("kernel")[::-1, ::-1], (2, 3, 0, 1)), path)
  elif isinstance(mod, nn.Conv2d):
    _assign(mod.weight, np.transpose(p.pop("kernel"), (3, 2, 0, 1)), path)
  elif isinstance(mod, nn.Linear):
    _assign(mod.weight, p.pop("kernel").T, path)
  elif isinstance(mod, nn.BatchNorm2d):
    _assign(mod.weight, p.pop("scale"), path)
    _assign(mod.running_mean, st.pop("mean"), path + " (mean)")
    _assign(mod.running_var, st.pop("var"), path + " (var)")
  elif isinstance(mod, nn.GRUCell):
    sub = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in params.items()}
    hid = mod.hidden_size
    _assign(mod.weight_ih, np.concatenate([sub[g]["kernel"].T for g in ("ir", "iz", "in")]), path)
    _assign(mod.bias_ih, np.concatenate([sub[g]["bias"] for g in ("ir", "iz", "in")]), path)
    _assign(mod.weight_hh, np.concatenate([sub[g]["kernel"].T for g in ("hr", "hz", "hn")]), path)
    _assign(mod.bias_hh, np.concatenate([np.zeros(2 * hid), sub["hn"]["bias"]]), path)
    done.update(id(t) for t in (mod.weight_ih, mod.bias_ih, mod.weight_hh, mod.bias_hh))
    return
  for name, value in list(p.items()):            # bias and free parameters (GAT vectors)
    _assign(getattr(mod, name), value, f"{path}.{name}")
    p.pop(name)
  done.update(id(t) for t in list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False))
              if t.dtype.is_floating_point)
  for name, sub in params.items():
    if isinstance(sub, Mapping):
      if not hasattr(mod, name):
        raise ValueError(f"port_flax_variables: the twin has no module {path}.{name}")
      _port_module(getattr(mod, name), sub, stats.get(name, {}), f"{path}.{name}", done)


def port_flax_variables(twin: nn.Module, variables: Mapping[str, Any]) -> None:
  """Copies Flax ``{'params', 'batch_stats'}`` (e.g. of `asmp.ASMP`) into the twin, in place.

  Conv kernels ``[kh, kw, Ci, Co]`` -> ``[Co, Ci, kh, kw]``; transposed-conv kernels are flipped
  and become ``[Ci, Co, kh, kw]``; Dense ``[in, out]`` -> ``[out, in]``; BatchNorm scale/bias and
  running mean/var; GRU gates ``(r, z, n)`` stacked as ``nn.GRUCell`` wants (Flax has no hidden
  bias on r and z: zeros).

  Raises:
    ValueError: a Flax module without counterpart, a shape mismatch, or a twin parameter/buffer
      left unset.
  """
  done: set[int] = set()
  _port_module(twin, variables["params"], variables.get("batch_stats", {}), "twin", done)
  missing = [n for n, t in itertools.chain(twin.named_parameters(), twin.named_buffers())
             if t.dtype.is_floating_point and id(t) not in done]
  if missing:
    raise ValueError(f"port_flax_variables: twin tensors not set by the Flax tree: {missing}")
