"""The ASMP model: scene-graph encoder -> GRU slots -> conditioned U-Net -> classifiers.

Per example: one mixture of ``U`` videos, each with ``S`` source slots (``S - 1`` auditory + the
background, always valid). ``U`` is read from the batch (``source_mask [B, U, S]``), not fixed by
the model: the same parameters run a training mixture of two videos (``U = 2``) and the separation
of one video (``U = 1``). ``ASMP.__call__(batch, train)`` maps the batch dict (leading axis B on
every array, see `BATCH_DTYPES`) to::

  embeddings   [B, U, S, E]          unit-norm conditioning vectors y_hat (float32)
  masks        [B, U, S, H, W]       sigmoid masks in [0, 1], warped-frequency domain (float32)
  mask_logits  [B, U, S, H, W]       the masks before the sigmoid (float32; loss.mask_loss="bce")
  sep_log_mag  [B, U, S, H, W]       log(mask * exp(mix_log_mag) + sep_log_eps) (float32)
  cons_logits  [B, U, S, K]          consistency-classifier logits (float32)
  dir_logits   [B, U, S, Wd, D]      direction logits per 1 s window (float32)
  graph_embedding [B, U, 2*edgeconv_dim]  zeta (graph modes only, not "single_node")

Design choices (documented here once):

* Conditioning (``graph_mode``): a registered conditioner (`asmp_jax.models.conditioners`: the
  ASMP scene-graph encoder + slot GRU, and the baselines as config variants) maps the batch to
  the unit slot embeddings; it declares the batch keys it reads. The losses match slots to labels
  by permutation, so no slot is tied to a particular label.
* The U-Net encodes each mixture once and decodes ``U * S`` conditionings (see unet.py).
* Invalid slots are computed like valid ones (static shapes) and masked in the losses; they do
  take part in the decoder's and classifiers' BatchNorm statistics.
* Every ``config.model`` key is required (`spec_from_config`); `asmp_jax.config_lib.base_config`
  holds the defaults and says what each key does.
* Direction conditioning: the paper builds a scene graph in each 1 s window's reference frame
  and gives h_Lambda "the visual encoding of the source i" beside the window's spectrogram slice,
  without saying which window's graph that encoding comes from. By default every slice of a crop
  sees the embedding of the crop's first window (the one that conditions the U-Net);
  ``dir_window_graphs`` (True) runs the same graph encoder and GRU on each slice's
  own window graph (batch keys `WINDOW_BATCH_DTYPES`) and gives each slice that embedding. The
  separation is conditioned as before.
* ``dtype`` is the compute dtype (``"bfloat16"`` for accelerators); parameters stay float32 and
  every output above is float32.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asmp_jax.models import conditioners, inputs
from asmp_jax.models.classifiers import ConsistencyClassifier, DirectionClassifier
from asmp_jax.models.inputs import BATCH_DTYPES, WINDOW_BATCH_DTYPES  # noqa: F401  (public here)
from asmp_jax.models.layers import KERNELS, resolve_dtype
from asmp_jax.models.unet import CONDITIONINGS as UNET_CONDITIONINGS
from asmp_jax.models.unet import NORMS as UNET_NORMS, ConditionedUNet

Array = jax.Array

_REQUIRED_INT_KEYS = ("node_feature_dim", "node_hidden", "embed_dim", "gat_heads", "gat_head_dim",
                      "edgeconv_dim", "num_slots", "num_classes",
                      "num_direction_classes", "dir_window_cols", "dir_window_stride",
                      "num_dir_windows", "cls_width", "unet_pool", "cls_freq_pool")
_MIN_VALUES = {"num_slots": 2, "num_classes": 2, "num_direction_classes": 2}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Validated, hashable copy of ``config.model`` (see `spec_from_config`; the values and their
  meaning are those of `asmp_jax.config_lib.base_config`, the one place defaults live)."""
  node_feature_dim: int
  node_hidden: int
  embed_dim: int
  gat_heads: int
  gat_head_dim: int
  edgeconv_dim: int
  num_slots: int
  unet_width_mult: float
  num_classes: int
  num_direction_classes: int
  dir_window_cols: int
  dir_window_stride: int
  num_dir_windows: int
  cls_width: int
  cls_blocks: tuple[int, ...]
  graph_mode: str
  dtype: str
  unet_first_layer_norm: bool
  kernels: str
  sep_log_eps: float
  compact_slots: bool
  node_batch_norm: bool
  unet_cond_scale: float
  unet_norm: str
  unet_conditioning: str
  unet_pool: int
  cls_freq_pool: int
  dir_window_graphs: bool


def _lookup(cfg: Any, key: str) -> Any:
  if isinstance(cfg, Mapping):
    if key not in cfg:
      raise KeyError(key)
    return cfg[key]
  try:
    return cfg[key]  # ml_collections.ConfigDict
  except (KeyError, AttributeError, TypeError):
    if hasattr(cfg, key):
      return getattr(cfg, key)
    raise KeyError(key) from None


def spec_from_config(model_config: Any) -> ModelSpec:
  """Reads and validates ``config.model`` (a ConfigDict, a mapping or a `ModelSpec`).

  Raises:
    ValueError: naming the key (``config.model.<key>``) that is missing or invalid.
  """
  if isinstance(model_config, ModelSpec):
    return model_config
  values: dict[str, Any] = {}
  for f in dataclasses.fields(ModelSpec):
    try:
      values[f.name] = _lookup(model_config, f.name)
    except KeyError:
      raise ValueError(f"config.model.{f.name} is missing") from None
  for key in _REQUIRED_INT_KEYS:
    v = values[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < _MIN_VALUES.get(key, 1):
      raise ValueError(f"config.model.{key} must be an int >= {_MIN_VALUES.get(key, 1)}, "
                       f"got {v!r}")
  if not isinstance(values["unet_width_mult"], (int, float)) or values["unet_width_mult"] <= 0:
    raise ValueError(f"config.model.unet_width_mult must be > 0, got {values['unet_width_mult']!r}")
  try:
    blocks = tuple(int(b) for b in values["cls_blocks"])
  except TypeError:
    raise ValueError(f"config.model.cls_blocks must be a tuple of ints, got "
                     f"{values['cls_blocks']!r}") from None
  if not blocks or min(blocks) < 1:
    raise ValueError(f"config.model.cls_blocks must be positive ints, got {blocks}")
  values["cls_blocks"] = blocks
  conditioners.get(values["graph_mode"])  # raises naming config.model.graph_mode
  resolve_dtype(values["dtype"])  # raises naming config.model.dtype
  if values["unet_norm"] not in UNET_NORMS:
    raise ValueError(f"config.model.unet_norm must be one of {UNET_NORMS}, got "
                     f"{values['unet_norm']!r}")
  if values["unet_conditioning"] not in UNET_CONDITIONINGS:
    raise ValueError(f"config.model.unet_conditioning must be one of {UNET_CONDITIONINGS}, got "
                     f"{values['unet_conditioning']!r}")
  for key in ("dir_window_graphs", "unet_first_layer_norm", "compact_slots", "node_batch_norm"):
    if not isinstance(values[key], bool):
      raise ValueError(f"config.model.{key} must be True or False, got {values[key]!r}")
  for key in ("sep_log_eps", "unet_cond_scale"):
    if isinstance(values[key], bool) or not isinstance(values[key], (int, float)) or not (
        values[key] > 0):
      raise ValueError(f"config.model.{key} must be a number > 0, got {values[key]!r}")
  if values["kernels"] not in KERNELS:
    raise ValueError(f"config.model.kernels must be one of {KERNELS}, got {values['kernels']!r}")
  if values["gat_heads"] * values["gat_head_dim"] != values["edgeconv_dim"]:
    raise ValueError(
        f"config.model.gat_heads * config.model.gat_head_dim ({values['gat_heads']} * "
        f"{values['gat_head_dim']}) must equal config.model.edgeconv_dim "
        f"({values['edgeconv_dim']})")
  return ModelSpec(**values)


def _check_batch(batch: Mapping[str, Array], spec: ModelSpec) -> None:
  missing = [k for k in inputs.BASE_DTYPES if k not in batch]
  if missing:
    raise ValueError(f"ASMP batch is missing keys {missing}; expected {sorted(inputs.BASE_DTYPES)}"
                     f" and the keys of graph_mode {spec.graph_mode!r}")
  if batch["mix_log_mag"].ndim != 3:
    raise ValueError(f"batch['mix_log_mag'] must be [B, H, W], got {batch['mix_log_mag'].shape}")
  if batch["source_mask"].ndim != 3:
    raise ValueError(f"batch['source_mask'] must be [B, U, S], got {batch['source_mask'].shape}")
  b, u, s = batch["mix_log_mag"].shape[0], batch["source_mask"].shape[1], spec.num_slots
  if tuple(batch["source_mask"].shape) != (b, u, s):
    raise ValueError(f"batch['source_mask'] must be [B={b}, U={u}, S={s}], got "
                     f"{batch['source_mask'].shape}")
  if "class_labels" in batch and tuple(batch["class_labels"].shape) != (b, u, s):
    raise ValueError(f"batch['class_labels'] must be [B={b}, U={u}, S={s}], got "
                     f"{batch['class_labels'].shape}")
  nf = batch.get("node_features")
  if nf is not None:
    if nf.ndim != 4 or nf.shape[:2] != (b, u) or nf.shape[-1] != spec.node_feature_dim:
      raise ValueError(f"batch['node_features'] must be [B={b}, U={u}, Nn, "
                       f"F={spec.node_feature_dim}], got {nf.shape}")
    for k in ("node_mask", "node_type"):
      if k in batch and tuple(batch[k].shape) != nf.shape[:3]:
        raise ValueError(f"batch[{k!r}] must be {nf.shape[:3]}, got {batch[k].shape}")
  if spec.dir_window_graphs:
    missing = [k for k in (*WINDOW_BATCH_DTYPES, "senders", "receivers") if k not in batch]
    if missing:
      raise ValueError(f"config.model.dir_window_graphs needs each direction window's graph; the "
                       f"batch is missing {missing}")
    wnf = batch["window_node_features"]
    nodes = tuple(nf.shape[2:]) if nf is not None else (wnf.shape[-2], spec.node_feature_dim)
    want = (b, u, spec.num_dir_windows) + nodes
    if tuple(wnf.shape) != want:
      raise ValueError(f"batch['window_node_features'] must be {want}, got {wnf.shape}")
    for k, shape in (("window_node_mask", want[:4]), ("window_node_type", want[:4]),
                     ("window_edge_weight", want[:3] + tuple(batch["senders"].shape[2:])),
                     ("window_edge_mask", want[:3] + tuple(batch["senders"].shape[2:]))):
      if tuple(batch[k].shape) != shape:
        raise ValueError(f"batch[{k!r}] must be {shape}, got {batch[k].shape}")


class ASMP(nn.Module):
  """Audio Separator and Motion Predictor (module docstring). Build with `create_model`.

  Methods (all usable through ``model.apply(variables, ..., method=ASMP.<name>)``):
    ``__call__(batch, train)``: the full forward pass -> outputs dict, for any number of videos
      ``U >= 1`` per mixture (``model.apply(variables, batch, train=False)`` separates).
    ``embed(batch)``: the visual part only -> ``{"embeddings", ["graph_embedding"]}``.
    ``separate(mix_log_mag [B, H, W], embeddings [B, C, E], train)``: masks ``[B, C, H, W]``.
  """
  spec: ModelSpec

  def setup(self) -> None:
    sp = self.spec
    dtype = resolve_dtype(sp.dtype)
    if sp.node_batch_norm:
      self.node_norm = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    # The conditioner shares the model's scope: its parameters sit at the top of the tree.
    self.conditioner = conditioners.get(sp.graph_mode).build(sp)
    nn.share_scope(self, self.conditioner)
    self.unet = ConditionedUNet(sp.unet_width_mult, sp.unet_first_layer_norm,
                                sp.kernels, float(sp.unet_cond_scale), sp.unet_norm,
                                conditioning=sp.unet_conditioning, pool=sp.unet_pool,
                                dtype=dtype)
    self.consistency = ConsistencyClassifier(sp.num_classes, sp.cls_width, sp.cls_blocks,
                                             dtype=dtype, kernels=sp.kernels)
    self.direction = DirectionClassifier(sp.num_direction_classes, sp.dir_window_cols,
                                         sp.dir_window_stride, sp.num_dir_windows, sp.cls_width,
                                         sp.cls_blocks, dtype=dtype, kernels=sp.kernels)

  def embed(self, batch: Mapping[str, Array], train: bool = False) -> dict[str, Array]:
    """The conditioner: ``{"embeddings": [B, U, S, E], ["graph_embedding": [B, U, Z]]}``."""
    sp = self.spec
    conditioners.check_batch(sp.graph_mode, batch)
    if "node_features" in conditioners.get(sp.graph_mode).batch_keys:
      feats = batch["node_features"].astype(jnp.float32)
      if sp.node_batch_norm:
        valid = batch["node_mask"].astype(bool)[..., None]
        feats = jnp.where(valid, self.node_norm(feats, use_running_average=not train, mask=valid),
                          0.0)
      batch = {**batch, "node_features": feats}
    return self.conditioner(batch)

  def window_embeddings(self, batch: Mapping[str, Array], train: bool = False) -> Array:
    """Each direction window's own unit embeddings ``[B, U, S, Wd, E]`` (`WINDOW_BATCH_DTYPES`).

    The same `embed` (shared parameters) runs on the ``U * Wd`` window graphs of each example;
    with ``node_batch_norm`` this second pass normalises by the window graphs' own batch
    statistics in training and also updates the running statistics.
    """
    nf = batch["window_node_features"]
    b, u, wd = nf.shape[:3]
    wb = {k[len("window_"):]: batch[k].reshape((b, u * wd) + batch[k].shape[3:])
          for k in WINDOW_BATCH_DTYPES}
    for k in ("senders", "receivers", "source_mask", "class_labels"):
      if k in batch:  # per video -> per (video, window), video-major like the reshape above
        wb[k] = jnp.repeat(batch[k], wd, axis=1)
    emb = self.embed(wb, train)["embeddings"]                            # [B, U*Wd, S, E]
    return jnp.moveaxis(emb.reshape((b, u, wd) + emb.shape[2:]), 2, 3)

  def separate(self, mix_log_mag: Array, embeddings: Array, train: bool = False) -> Array:
    """Masks ``[B, C, H, W]`` (float32, [0, 1]) for ``C`` embeddings ``[B, C, E]`` per mixture."""
    return self.unet(mix_log_mag.astype(jnp.float32), embeddings, train)

  def __call__(self, batch: Mapping[str, Array], train: bool) -> dict[str, Array]:
    sp = self.spec
    _check_batch(batch, sp)
    mix = batch["mix_log_mag"].astype(jnp.float32)
    b, h, w = mix.shape
    u, s, e = batch["source_mask"].shape[1], sp.num_slots, sp.embed_dim
    out = self.embed(batch, train)
    emb = out["embeddings"]
    mask_logits = self.unet(mix, emb.reshape(b, u * s, e), train, logits=True)
    out["mask_logits"] = mask_logits.reshape(b, u, s, h, w)
    masks = jax.nn.sigmoid(out["mask_logits"])
    out["masks"] = masks
    sep = jnp.log(masks * jnp.exp(mix)[:, None, None] + sp.sep_log_eps)
    out["sep_log_mag"] = sep
    flat_sep = pool_frequency(sep.reshape(b * u * s, h, w), sp.cls_freq_pool)
    out["cons_logits"] = self.consistency(flat_sep, train).reshape(b, u, s, sp.num_classes)
    if sp.dir_window_graphs:
      dir_emb = self.window_embeddings(batch, train).reshape(b * u * s, sp.num_dir_windows, e)
    else:
      dir_emb = emb.reshape(b * u * s, e)
    dirs = self.direction(flat_sep, dir_emb, train)
    out["dir_logits"] = dirs.reshape(b, u, s, sp.num_dir_windows, sp.num_direction_classes)
    return out


def pool_frequency(spec: Array, pool: int) -> Array:
  """Mean of ``spec [N, H, T]`` over ``pool`` adjacent frequency rows: ``[N, H / pool, T]``
  (``config.model.cls_freq_pool``, the classifiers' input)."""
  if pool == 1:
    return spec
  n, h, t = spec.shape
  if h % pool:
    raise ValueError(f"config.model.cls_freq_pool={pool} must divide the {h} frequency bins")
  return spec.reshape(n, h // pool, pool, t).mean(axis=2)


def create_model(model_config: Any) -> nn.Module:
  """Builds the model of ``config.model`` (ConfigDict or mapping); validates every key.

  `ASMP` with the conditioner ``graph_mode`` names, or the whole model of a variant registered
  with its own (e.g. ``graph_mode="authors"``, the public code's networks,
  `asmp_jax.models.authors`).
  """
  spec = spec_from_config(model_config)
  entry = conditioners.get(spec.graph_mode)
  return ASMP(spec) if entry.model is None else entry.model(model_config, spec)


def batch_shapes(model_config: Any, batch_size: int, num_nodes: int, num_edges: int,
                 spec_shape: tuple[int, int] = (256, 256),
                 videos: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes/dtypes of the keys the model reads, for ``videos`` videos per mixture (for
  `init_variables` and abstract evaluation; the variables are the same for any number of videos).
  """
  sp = spec_from_config(model_config)
  keys = [*inputs.BASE_DTYPES, *conditioners.get(sp.graph_mode).batch_keys]
  if sp.dir_window_graphs:
    keys += [*inputs.WINDOW_BATCH_DTYPES, "senders", "receivers"]
  shapes = inputs.shapes(batch_size, videos, sp.num_slots, num_nodes, num_edges,
                         sp.node_feature_dim, sp.num_dir_windows, spec_shape)
  return {k: jax.ShapeDtypeStruct(shapes[k], inputs.ALL_DTYPES[k]) for k in dict.fromkeys(keys)}
def init_variables(model: ASMP, rng: Array, batch_shapes: Mapping[str, Any]) -> dict[str, Any]:
  """Initialises ``{'params', 'batch_stats'}`` from an all-zeros batch of the given shapes.

  Args:
    model: an `ASMP` (or any module taking ``(batch, train)``).
    rng: PRNG key.
    batch_shapes: name -> shape tuple, `jax.ShapeDtypeStruct` or array (only ``.shape``/``.dtype``
      are used; dtypes default to `BATCH_DTYPES`). Extra keys are passed through as zeros.

  Returns:
    The variables dict. Pure and jit/`jax.eval_shape`-compatible.
  """
  def zeros(k: str, v: Any) -> Array:
    if hasattr(v, "shape"):
      dt = getattr(v, "dtype", None) or inputs.ALL_DTYPES.get(k, jnp.float32)
      return jnp.zeros(tuple(v.shape), dt)
    return jnp.zeros(tuple(v), inputs.ALL_DTYPES.get(k, jnp.float32))

  def _init(key: Array, batch: dict[str, Array]) -> dict[str, Any]:
    return dict(model.init({"params": key}, batch, train=False))

  # The zeros are jit *arguments*: as in-graph constants XLA would constant-fold the whole
  # forward pass (slowly). Under an outer jit / eval_shape they are traced like anything else.
  # Non-partitionable threefry: on XLA:CPU the partitionable variant (JAX's default) makes this
  # init compile ~5x slower (12.5 s vs 2.4 s for the tiny U-Net on the dev machine); the
  # variables are replicated, so partitionability buys nothing here.
  batch = {k: zeros(k, v) for k, v in batch_shapes.items()}
  with jax.threefry_partitionable(False):
    return jax.jit(_init)(rng, batch)
