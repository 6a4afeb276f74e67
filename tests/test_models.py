"""Tests for the ASMP model (asmp_jax.models) on a tiny configuration."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from asmp_jax import config_lib, losses, models
from asmp_jax.models import asmp, conditioners, graph_encoder, inputs, unet

NN, F, H = 6, 12, 128
TINY = dict(config_lib.base_config().model.to_dict(),
            node_feature_dim=F, node_hidden=32, embed_dim=16, gat_heads=2, gat_head_dim=4,
            edgeconv_dim=8, num_slots=3, unet_width_mult=0.125, num_classes=5,
            num_direction_classes=10, dir_window_cols=20, dir_window_stride=20,
            num_dir_windows=6, cls_width=4, cls_blocks=(1,), graph_mode="asmp",
            dtype="float32")


def _graph_batch(seed, b=2, u=2, nn_=NN):
  """Random padded dense graphs: nodes [aud, (aud), ctx..., bg] then padding."""
  rng = np.random.default_rng(seed)
  n_valid = rng.integers(3, nn_ + 1, size=(b, u))
  n_aud = rng.integers(1, 3, size=(b, u))
  idx = np.arange(nn_)
  node_mask = idx < n_valid[..., None]
  node_type = np.where(idx < n_aud[..., None], 0, 1)
  node_type = np.where(idx == n_valid[..., None] - 1, 2, node_type)
  node_type = np.where(node_mask, node_type, 1).astype(np.int32)
  snd, rcv = np.nonzero(~np.eye(nn_, dtype=bool))
  ne = len(snd)
  senders = np.broadcast_to(snd, (b, u, ne)).astype(np.int32)
  receivers = np.broadcast_to(rcv, (b, u, ne)).astype(np.int32)
  edge_mask = node_mask[..., snd] & node_mask[..., rcv] & (rng.random((b, u, ne)) < 0.8)
  source_mask = np.stack([np.ones((b, u), bool), n_aud == 2, np.ones((b, u), bool)], -1)
  return {
      "node_features": rng.normal(size=(b, u, nn_, F)).astype(np.float32),
      "node_mask": node_mask, "node_type": node_type,
      "senders": senders, "receivers": receivers,
      "edge_weight": rng.uniform(0.05, 1.0, size=(b, u, ne)).astype(np.float32),
      "edge_mask": edge_mask, "source_mask": source_mask,
  }


def _full_batch(seed, b=2):
  rng = np.random.default_rng(seed + 100)
  batch = _graph_batch(seed, b)
  s = batch["source_mask"]
  mags = rng.gamma(1.0, size=(b, 2, H, H)).astype(np.float32)
  batch.update(
      mix_log_mag=np.log(mags.sum(1) + 1e-4).astype(np.float32),
      video_mag_warped=mags,
      class_labels=np.where(np.arange(3) == 2, 4, rng.integers(0, 4, size=(b, 2, 3))).astype(
          np.int32),
      dir_labels=rng.integers(0, 10, size=(b, 2, 3, 6)).astype(np.int32),
      dir_valid=s[..., None] & (rng.random((b, 2, 3, 6)) < 0.9),
  )
  return batch


class _FastJit:
  """``jax.jit`` compiled with XLA's backend optimisations off: the tiny test programs compile
  about 2x faster and run just as well. One executable per input signature."""

  def __init__(self, fn):
    self._jitted = jax.jit(fn)
    self._cache = {}

  def __call__(self, *args):
    leaves, tree = jax.tree.flatten(args)
    key = (tree, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves))
    if key not in self._cache:
      self._cache[key] = self._jitted.lower(*args).compile(
          compiler_options={"xla_backend_optimization_level": 0})
    return self._cache[key](*args)


def _embed(model, params, batch):
  """Jitted visual part of the model (graph -> slot embeddings)."""
  return _FastJit(lambda p, b: model.apply({"params": p}, b, method=asmp.ASMP.embed))(
      params, batch)


def _jit_init(module, *args, method=None, **static_kwargs):
  """Jitted init (eager init compiles every op separately, which is slow on CPU)."""
  fn = lambda r, a: module.init(r, *a, method=method, **static_kwargs)
  with jax.threefry_partitionable(False):
    return _FastJit(fn)(jax.random.key(0), args)


def _embed_params(model, batch):
  return _jit_init(model, batch, method=asmp.ASMP.embed)["params"]


@pytest.fixture(scope="module")
def asmp_embed(train_step_result):
  """The tiny ASMP's graph part, with the full model's parameters."""
  model = train_step_result["model"]
  params = train_step_result["variables"]["params"]
  return model, params, _FastJit(
      lambda p, b: model.apply({"params": p}, b, method=asmp.ASMP.embed))


@pytest.fixture(scope="module")
def train_step_result():
  """One jitted value_and_grad of total_loss through the full tiny model."""
  model = models.create_model(TINY)
  batch = {k: jnp.asarray(v) for k, v in _full_batch(1).items()}
  shapes = {k: v for k, v in batch.items() if k in models.BATCH_DTYPES}
  variables = _jit_init(model, shapes, train=False)
  loss_cfg = config_lib.base_config().loss  # lambdas 0.05, 1, 1, 0.05; ibm target

  def step(params, batch_stats, batch):
    def loss_fn(p):
      out, upd = model.apply({"params": p, "batch_stats": batch_stats}, batch, train=True,
                             mutable=["batch_stats"])
      loss, metrics = losses.total_loss(out, batch, loss_cfg)
      return loss, (metrics, out, upd["batch_stats"])
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (metrics, out, new_stats)), grads = _FastJit(step)(
      variables["params"], variables["batch_stats"], batch)
  return dict(model=model, batch=batch, variables=variables, loss=loss, metrics=metrics, out=out,
              new_stats=new_stats, grads=grads)


def test_full_model_output_shapes_and_ranges(train_step_result):
  r = train_step_result
  out, batch = r["out"], r["batch"]
  b = batch["mix_log_mag"].shape[0]
  assert out["embeddings"].shape == (b, 2, 3, 16)
  assert out["graph_embedding"].shape == (b, 2, 16)
  assert out["masks"].shape == (b, 2, 3, H, H)
  assert out["sep_log_mag"].shape == (b, 2, 3, H, H)
  assert out["cons_logits"].shape == (b, 2, 3, 5)
  assert out["dir_logits"].shape == (b, 2, 3, 6, 10)
  for v in out.values():
    assert v.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(v)))
  masks = np.asarray(out["masks"])
  assert masks.min() >= 0.0 and masks.max() <= 1.0
  # The logits (loss.mask_loss="bce") are the masks before their sigmoid.
  np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(out["mask_logits"])), masks, rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out["embeddings"]), axis=-1), 1.0,
                             rtol=1e-5)
  # sep_log_mag is log(mask * mixture magnitude + eps).
  np.testing.assert_allclose(
      np.asarray(out["sep_log_mag"]),
      np.log(masks * np.exp(np.asarray(batch["mix_log_mag"]))[:, None, None] + 1e-4),
      rtol=1e-4, atol=1e-4)


def test_value_and_grad_finite_for_every_leaf(train_step_result):
  r = train_step_result
  assert np.isfinite(float(r["loss"]))
  for key in ("loss", "loss_cons", "loss_cyc", "loss_ortho", "loss_dir", "acc_cons", "acc_dir",
              "acc_mask"):
    assert np.isfinite(float(r["metrics"][key])), key
  leaves = jax.tree_util.tree_flatten_with_path(r["grads"])[0]
  assert len(leaves) == len(jax.tree.leaves(r["variables"]["params"]))
  for path, g in leaves:
    name = jax.tree_util.keystr(path)
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), name
    # Residual branches start at zero (zero-init last BN scale), so their inner layers get no
    # gradient on the first step; everything else must.
    in_branch = "_block" in name and any(f"'{n}'" in name for n in ("conv1", "bn1", "conv2"))
    if not in_branch:
      assert np.any(g != 0), name
  # Every part of the network receives gradient.
  for part in ("graph_encoder", "slot_gru", "unet", "consistency", "direction"):
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(r["grads"][part])), part
  # Training mode updated the BatchNorm statistics.
  old = jax.tree.leaves(r["variables"]["batch_stats"])
  new = jax.tree.leaves(r["new_stats"])
  assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(old, new))


def _pad_more(batch, seed, extra_nodes=3, extra_edges=7):
  """Adds padding nodes/edges with random content, and junk in existing padded slots."""
  rng = np.random.default_rng(seed)
  b, u, nn_, f = batch["node_features"].shape
  out = {k: np.array(v) for k, v in batch.items()}
  nf = out["node_features"]
  nf[~out["node_mask"]] = rng.normal(size=(int((~out["node_mask"]).sum()), f)) * 100
  ew = out["edge_weight"]
  ew[~out["edge_mask"]] = rng.uniform(0, 1, size=int((~out["edge_mask"]).sum()))
  n2 = nn_ + extra_nodes
  cat = lambda a, extra, axis=2: np.concatenate([a, extra], axis=axis)
  out["node_features"] = cat(nf, rng.normal(size=(b, u, extra_nodes, f)).astype(np.float32) * 50)
  out["node_mask"] = cat(out["node_mask"], np.zeros((b, u, extra_nodes), bool))
  out["node_type"] = cat(out["node_type"], rng.integers(0, 3, size=(b, u, extra_nodes)))
  # Extra edges: masked ones between random nodes, and *unmasked* ones that touch padding nodes
  # (invalid because an endpoint is padding), plus out-of-range indices.
  snd = rng.integers(0, n2, size=(b, u, extra_edges))
  rcv = rng.integers(0, n2, size=(b, u, extra_edges))
  rcv[..., 0] = nn_  # valid-looking edge into a padding node
  snd[..., 1] = nn_ + 1
  rcv[..., 1] = 0    # padding node -> real node 0, edge_mask True
  snd[..., 2] = -3   # out of range
  emask = np.zeros((b, u, extra_edges), bool)  # masked edges may join any two nodes...
  emask[..., :3] = True                          # ...these are unmasked but invalid
  out["senders"] = cat(out["senders"], snd.astype(np.int32))
  out["receivers"] = cat(out["receivers"], rcv.astype(np.int32))
  out["edge_weight"] = cat(ew, rng.uniform(0, 1, size=(b, u, extra_edges)).astype(np.float32))
  out["edge_mask"] = cat(out["edge_mask"], emask)
  return out


def test_padding_nodes_and_edges_change_nothing(asmp_embed):
  model, params, embed = asmp_embed
  batch = _graph_batch(0)
  base = embed(params, batch)
  padded = embed(params, _pad_more(batch, 1))
  for key in ("embeddings", "graph_embedding"):
    np.testing.assert_allclose(np.asarray(padded[key]), np.asarray(base[key]), rtol=1e-5,
                               atol=1e-6)
  # Sanity: a *valid* node's feature does change the result.
  changed = {k: np.array(v) for k, v in batch.items()}
  changed["node_features"][0, 0, 0] += 1.0
  assert not np.allclose(np.asarray(embed(params, changed)["embeddings"][0, 0]),
                         np.asarray(base["embeddings"][0, 0]))


def test_graphs_do_not_leak_between_videos_or_examples(asmp_embed):
  model, params, embed = asmp_embed
  batch = _graph_batch(0)
  base = np.asarray(embed(params, batch)["embeddings"])
  other = _graph_batch(5)
  changed = {k: np.array(v) for k, v in batch.items()}
  for k in ("node_features", "edge_weight", "edge_mask", "node_mask", "node_type"):
    changed[k][:, 1] = other[k][:, 1]   # replace video 2's graph in every example
  changed["node_features"][1, 0] += 0.5  # and example 2's first video
  got = np.asarray(embed(params, changed)["embeddings"])
  np.testing.assert_allclose(got[0, 0], base[0, 0], rtol=1e-6, atol=1e-7)
  assert not np.allclose(got[:, 1], base[:, 1])
  assert not np.allclose(got[1, 0], base[1, 0])


def test_edge_weights_matter_only_in_asmp_mode(asmp_embed):
  model, params, embed = asmp_embed
  batch = _graph_batch(2)
  reweighted = dict(batch, edge_weight=np.random.default_rng(3).uniform(
      0.05, 1, size=batch["edge_weight"].shape).astype(np.float32))
  a = np.asarray(embed(params, batch)["embeddings"])
  b = np.asarray(embed(params, reweighted)["embeddings"])
  assert not np.allclose(a, b)
  eq_model = models.create_model(dict(TINY, graph_mode="equal"))
  eq_params = params  # same parameter tree as "asmp"
  a = np.asarray(_embed(eq_model, eq_params, batch)["embeddings"])
  b = np.asarray(_embed(eq_model, eq_params, reweighted)["embeddings"])
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, rtol=1e-5)


def test_no_vision_mode_ignores_features_but_slots_differ():
  model = models.create_model(dict(TINY, graph_mode="no_vision"))
  batch = _graph_batch(4)
  params = _embed_params(model, batch)
  a = np.asarray(_embed(model, params, batch)["embeddings"])
  other = dict(batch, node_features=batch["node_features"] * -3.0 + 1.0)
  b = np.asarray(_embed(model, params, other)["embeddings"])
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, rtol=1e-5)
  assert not np.allclose(a[0, 0, 0], a[0, 0, 1])


def test_single_node_mode_uses_the_slot_nodes():
  model = models.create_model(dict(TINY, graph_mode="single_node"))
  batch = _graph_batch(6)
  params = _embed_params(model, batch)
  assert set(params) == {"node_mlp"}
  emb = np.asarray(_embed(model, params, batch)["embeddings"])
  node = graph_encoder.NodeMLP(32, 16).apply({"params": params["node_mlp"]},
                                             batch["node_features"])
  node = np.asarray(node / jnp.linalg.norm(node, axis=-1, keepdims=True))
  for bi in range(2):
    for ui in range(2):
      types, valid = batch["node_type"][bi, ui], batch["node_mask"][bi, ui]
      aud = np.nonzero((types == 0) & valid)[0]
      bg = np.nonzero((types == 2) & valid)[0][0]
      np.testing.assert_allclose(emb[bi, ui, 0], node[bi, ui, aud[0]], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(emb[bi, ui, 2], node[bi, ui, bg], rtol=1e-5, atol=1e-6)
      if len(aud) > 1:
        np.testing.assert_allclose(emb[bi, ui, 1], node[bi, ui, aud[1]], rtol=1e-5, atol=1e-6)
      else:
        np.testing.assert_array_equal(emb[bi, ui, 1], 0.0)


def test_assign_steps_to_slots():
  steps = np.arange(3)[None, :, None] * np.ones((3, 1, 2))        # step k holds value k
  mask = np.array([[True, True, True], [True, False, True], [False, False, True]])
  got = np.asarray(models.assign_steps_to_slots(steps, mask))[..., 0]
  np.testing.assert_array_equal(got, [[0, 1, 2], [0, 2, 1], [1, 2, 0]])


def test_unet_encoder_once_equals_per_conditioning(train_step_result):
  rng = np.random.default_rng(7)
  spec = rng.normal(size=(2, H, H)).astype(np.float32) * 3
  # Large conditionings: at init (eval mode) their effect on the masks is otherwise tiny.
  cond = rng.normal(size=(2, 3, 16)).astype(np.float32) * 30
  net = unet.ConditionedUNet(0.125)  # the tiny model's U-Net: reuse its initial variables
  variables = {c: train_step_result["variables"][c]["unet"] for c in ("params", "batch_stats")}
  run = _FastJit(lambda v, s, c: net.apply(v, s, c, False))
  joint = np.asarray(run(variables, spec, cond))
  assert joint.shape == (2, 3, H, H)
  assert joint.min() >= 0 and joint.max() <= 1
  single = np.asarray(run(variables, spec, cond[:, 1:2]))
  np.testing.assert_allclose(joint[:, 1], single[:, 0], rtol=1e-5, atol=1e-6)
  assert np.abs(joint[:, 0] - joint[:, 1]).max() > 1e-4  # the conditioning reaches the mask
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(lambda s, c: net.init(jax.random.key(1), s, c, False), spec[:, :100], cond)


def test_bfloat16_compute_keeps_float32_outputs(train_step_result):
  model = models.create_model(dict(TINY, dtype="bfloat16"))
  batch = {k: v for k, v in train_step_result["batch"].items() if k in models.BATCH_DTYPES}
  variables = train_step_result["variables"]  # float32 params; same tree for any compute dtype
  out = _FastJit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  ref = train_step_result["model"].apply(variables, batch,
                                         method=asmp.ASMP.embed)["embeddings"]
  for key in ("embeddings", "masks", "cons_logits", "dir_logits"):
    assert out[key].dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out[key])))
  # bfloat16 compute stays close to float32 (8-bit mantissa).
  np.testing.assert_allclose(np.asarray(out["embeddings"]), np.asarray(ref), atol=0.1)


def test_one_model_separates_any_number_of_videos(train_step_result):
  """The number of videos per mixture comes from the batch: in inference mode each video of a
  two-video mixture gets from a one-video batch (same mixture) what it gets beside the other."""
  r = train_step_result
  model, variables = r["model"], r["variables"]
  batch = {k: v for k, v in r["batch"].items() if k in models.BATCH_DTYPES}
  fwd = _FastJit(lambda v, b: model.apply(v, b, train=False))
  both = fwd(variables, batch)
  for ui in range(2):
    alone = fwd(variables, {k: v if k == "mix_log_mag" else v[:, ui:ui + 1]
                            for k, v in batch.items()})
    for k, v in both.items():
      assert alone[k].shape == v[:, ui:ui + 1].shape, k
      np.testing.assert_allclose(np.asarray(alone[k]), np.asarray(v[:, ui:ui + 1]), rtol=1e-5,
                                 atol=1e-5, err_msg=k)
  three = fwd(variables, {k: v if k == "mix_log_mag" else jnp.concatenate([v, v[:, :1]], axis=1)
                          for k, v in batch.items()})
  assert three["masks"].shape[1] == 3
  np.testing.assert_allclose(np.asarray(three["dir_logits"][:, 2]),
                             np.asarray(both["dir_logits"][:, 0]), rtol=1e-5, atol=1e-5)
  # A config written when the model had a num_videos setting builds the same model.
  assert models.create_model(dict(TINY, num_videos=2)).spec == model.spec


@pytest.mark.parametrize("mode", conditioners.names())
def test_each_conditioner_reads_exactly_the_batch_keys_it_declares(mode):
  """Every registered graph_mode declares model inputs; a batch of exactly those keys (what
  batch_shapes gives) builds and runs the model, and leaving out any of them is refused by name."""
  entry = conditioners.get(mode)
  assert entry.batch_keys and set(entry.batch_keys) <= set(inputs.ALL_DTYPES), mode
  cfg = dict(TINY, graph_mode=mode)
  model = models.create_model(cfg)
  shapes = models.batch_shapes(cfg, 2, NN, 30, spec_shape=(H, H), videos=2)
  assert set(shapes) == set(inputs.BASE_DTYPES) | set(entry.batch_keys)
  variables = jax.eval_shape(lambda r: models.init_variables(model, r, shapes), jax.random.key(0))
  out = jax.eval_shape(lambda v, b: model.apply(v, b, train=False), variables, shapes)
  assert out["embeddings"].shape == (2, 2, 3, 16)
  if entry.model is not None:  # a whole model of its own (the public code's networks)
    return
  for key in entry.batch_keys:
    with pytest.raises(ValueError, match=f"graph_mode {mode!r} reads batch\\['{key}'\\]"):
      jax.eval_shape(lambda v, b: model.apply(v, b, train=False), variables,
                     {k: v for k, v in shapes.items() if k != key})


class _Mean(nn.Module):
  """A toy conditioner: every slot gets the mean of the video's node features, projected."""
  spec: object
  scale: float = 1.0

  def setup(self):
    self.proj = nn.Dense(self.spec.embed_dim)

  def __call__(self, batch):
    mean = jnp.mean(batch["node_features"], axis=-2)                      # [B, U, F]
    emb = jnp.broadcast_to(self.proj(mean * self.scale)[:, :, None],
                           batch["source_mask"].shape + (self.spec.embed_dim,))
    return {"embeddings": emb}


def test_a_new_conditioner_is_one_register_call(monkeypatch):
  monkeypatch.setattr(conditioners, "_REGISTRY", dict(conditioners._REGISTRY))
  entry = conditioners.register("mean", _Mean, ("node_features",), scale=2.0)
  assert conditioners.get("mean") is entry and "mean" in conditioners.names()
  assert entry.build(models.create_model(TINY).spec).scale == 2.0
  cfg = dict(TINY, graph_mode="mean")
  model = models.create_model(cfg)
  shapes = models.batch_shapes(cfg, 2, NN, 30, spec_shape=(H, H))
  variables = jax.eval_shape(lambda r: models.init_variables(model, r, shapes), jax.random.key(0))
  # Its parameters sit at the top of the model's tree, beside the U-Net and the classifiers.
  assert set(variables["params"]) == {"proj", "unet", "consistency", "direction"}
  with pytest.raises(ValueError, match="already registered"):
    conditioners.register("mean", _Mean, ("node_features",))
  with pytest.raises(ValueError, match=r"\['video_frames'\] that are not model inputs"):
    conditioners.register("frames", _Mean, ("video_frames",))
  with pytest.raises(ValueError, match="a conditioner module or a whole model"):
    conditioners.register("both", _Mean, ("node_features",), model=lambda cfg, sp: None)
  # A whole model of its own is what create_model returns for its name.
  as_mean = lambda cfg, sp: models.ASMP(dataclasses.replace(sp, graph_mode="mean"))
  conditioners.register("whole", None, ("node_features",), model=as_mean)
  assert models.create_model(dict(TINY, graph_mode="whole")).spec.graph_mode == "mean"
  assert conditioners.needs_labels("class_label") and not conditioners.needs_labels("mean")


def test_config_validation_names_the_key():
  with pytest.raises(ValueError, match="config.model.cls_width"):
    models.create_model({k: v for k, v in TINY.items() if k != "cls_width"})
  with pytest.raises(ValueError, match="graph_mode"):
    models.create_model(dict(TINY, graph_mode="gcn"))
  with pytest.raises(ValueError, match="node_feature_dim"):
    models.create_model(dict(TINY, node_feature_dim=0))
  with pytest.raises(ValueError, match="edgeconv_dim"):
    models.create_model(dict(TINY, edgeconv_dim=12))
  with pytest.raises(ValueError, match="config.model.dtype"):
    models.create_model(dict(TINY, dtype="float8"))
  with pytest.raises(ValueError, match="config.model.unet_norm"):
    models.create_model(dict(TINY, unet_norm="layer"))
  # ConfigDict input (as the trainer passes config.model); every key is required.
  # Keys of other variants (authors_*) sit beside the spec's own in config.model.
  model = models.create_model(ml_collections.ConfigDict(TINY))
  spec_keys = {f.name for f in dataclasses.fields(models.ModelSpec)}
  assert model.spec == models.ModelSpec(**{k: v for k, v in TINY.items() if k in spec_keys})
  for key in ("compact_slots", "sep_log_eps", "dir_window_graphs"):
    with pytest.raises(ValueError, match=f"config.model.{key} is missing"):
      models.create_model({k: v for k, v in TINY.items() if k != key})
  with pytest.raises(ValueError, match="config.model.compact_slots must be True or False"):
    models.create_model(dict(TINY, compact_slots=1))
  with pytest.raises(ValueError, match="config.model.sep_log_eps must be a number > 0"):
    models.create_model(dict(TINY, sep_log_eps=0.0))
  # The spec's fields are exactly the keys of base_config's model section (its defaults), less
  # the keys only the public-code variant reads.
  from asmp_jax.models import authors  # pylint: disable=g-import-not-at-top
  base = set(config_lib.base_config().model) - set(authors.OPTIONAL_KEYS)
  assert {f.name for f in dataclasses.fields(models.ModelSpec)} == base
  assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(models.ModelSpec))


def test_batch_shapes_and_eval_shape_init():
  model = models.create_model(TINY)
  shapes = models.batch_shapes(TINY, 3, NN, 30, spec_shape=(H, H), videos=2)
  assert shapes["node_features"].shape == (3, 2, NN, F)
  assert shapes["source_mask"].dtype == jnp.bool_
  abstract = jax.eval_shape(lambda r: models.init_variables(model, r, shapes), jax.random.key(0))
  assert set(abstract) == {"params", "batch_stats"}
  # up1 sees the last encoder map (512 * 0.125 channels) and the embedding (16).
  assert abstract["params"]["unet"]["up1"]["kernel"].shape == (4, 4, 64 + 16, 64)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(abstract["params"]))
  # The audio-only class_label baseline reads the labels too (restoring its checkpoints needs it).
  cl = dict(TINY, graph_mode="class_label")
  cl_shapes = models.batch_shapes(cl, 3, NN, 30, spec_shape=(H, H), videos=2)
  assert cl_shapes["class_labels"].shape == (3, 2, 3) and "class_labels" not in shapes
  abstract = jax.eval_shape(lambda r: models.init_variables(models.create_model(cl), r, cl_shapes),
                            jax.random.key(0))
  assert "class_embed" in abstract["params"]
  # The variables do not depend on the number of videos per mixture (one video by default).
  one = models.batch_shapes(TINY, 3, NN, 30, spec_shape=(H, H))
  assert one["node_features"].shape == (3, 1, NN, F)
  tree = lambda shapes: jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(
      lambda r: models.init_variables(model, r, shapes), jax.random.key(0)))
  assert tree(one) == tree(shapes)


def test_multiscale_mode_shares_the_asmp_parameters_and_uses_two_scales():
  batch = _graph_batch(7)
  model = models.create_model(dict(TINY, graph_mode="multiscale"))
  params = _embed_params(model, batch)
  asmp_params = _embed_params(models.create_model(TINY), batch)
  assert jax.tree.structure(params) == jax.tree.structure(asmp_params)
  out = np.asarray(_embed(model, params, batch)["embeddings"])
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  single = np.asarray(_embed(models.create_model(TINY), params, batch)["embeddings"])
  assert not np.allclose(out, single, atol=1e-4)
  # Only the ranking-free part of the weights matters: a monotone power of every weight (the
  # same graph with another RBF scale) gives the same normalised distances, hence the same output.
  rescaled = dict(batch, edge_weight=batch["edge_weight"] ** 3)
  again = np.asarray(_embed(model, params, rescaled)["embeddings"])
  np.testing.assert_allclose(again, out, rtol=1e-4, atol=1e-5)


def test_node_batch_norm_uses_valid_nodes_only_and_padding_changes_nothing():
  model = models.create_model(dict(TINY, node_batch_norm=True))
  batch = _graph_batch(11)
  variables = _jit_init(model, batch, method=asmp.ASMP.embed)
  assert "node_norm" in variables["batch_stats"]
  run = _FastJit(lambda v, b: model.apply(v, b, True, method=asmp.ASMP.embed,
                                          mutable=["batch_stats"]))
  out, upd = run(variables, batch)
  padded_out, padded_upd = run(variables, _pad_more(batch, 2))
  for key in ("embeddings", "graph_embedding"):
    np.testing.assert_allclose(np.asarray(padded_out[key]), np.asarray(out[key]), rtol=1e-4,
                               atol=1e-5)
  # Running statistics after one step (momentum 0.9, from mean 0 / var 1): the valid nodes' own.
  valid = batch["node_features"][batch["node_mask"]]
  stats = upd["batch_stats"]["node_norm"]
  np.testing.assert_allclose(np.asarray(stats["mean"]), 0.1 * valid.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(stats["var"]), 0.9 + 0.1 * valid.var(0), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(padded_upd["batch_stats"]["node_norm"]["mean"]),
                             np.asarray(stats["mean"]), rtol=1e-5, atol=1e-6)
  # Inference (train=False) normalises with the running statistics: features shifted by the
  # running mean and scaled by the running std give the same embeddings as standard ones would.
  ev = _FastJit(lambda v, b: model.apply(v, b, method=asmp.ASMP.embed))
  shifted = dict(batch, node_features=(batch["node_features"] * 3.0 + 2.0).astype(np.float32))
  eval_vars = {"params": variables["params"], "batch_stats": {"node_norm": {
      "mean": jnp.full((F,), 2.0), "var": jnp.full((F,), 9.0)}}}
  unit_vars = {"params": variables["params"], "batch_stats": {"node_norm": {
      "mean": jnp.zeros((F,)), "var": jnp.ones((F,))}}}
  np.testing.assert_allclose(np.asarray(ev(eval_vars, shifted)["embeddings"]),
                             np.asarray(ev(unit_vars, batch)["embeddings"]), rtol=1e-3, atol=1e-4)


def test_unet_cond_scale_multiplies_the_conditioning(train_step_result):
  rng = np.random.default_rng(8)
  spec = rng.normal(size=(2, H, H)).astype(np.float32) * 3
  cond = rng.normal(size=(2, 3, 16)).astype(np.float32)
  variables = {c: train_step_result["variables"][c]["unet"] for c in ("params", "batch_stats")}
  scaled = unet.ConditionedUNet(0.125, cond_scale=7.0)
  plain = unet.ConditionedUNet(0.125)
  a = _FastJit(lambda v, s, c: scaled.apply(v, s, c, False))(variables, spec, cond)
  b = _FastJit(lambda v, s, c: plain.apply(v, s, c, False))(variables, spec, cond * 7.0)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  c = _FastJit(lambda v, s, c: plain.apply(v, s, c, False))(variables, spec, cond)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4


def test_unet_film_starts_as_the_paper_network_and_conditions_every_decoder_layer(
    train_step_result):
  rng = np.random.default_rng(10)
  spec = rng.normal(size=(2, H, H)).astype(np.float32) * 3
  cond = rng.normal(size=(2, 3, 16)).astype(np.float32)
  variables = {c: train_step_result["variables"][c]["unet"] for c in ("params", "batch_stats")}
  film = unet.ConditionedUNet(0.125, conditioning="film")
  film_vars = film.init(jax.random.key(0), spec, cond, False)
  film_names = sorted(k for k in film_vars["params"] if k.endswith("_film"))
  assert film_names == [f"up{i}_film" for i in range(1, 7)]  # every decoder layer but the mask
  # The paper network's parameters plus zero FiLM maps: the paper network's masks.
  params = dict(variables["params"], **{k: film_vars["params"][k] for k in film_names})
  assert all(not np.asarray(leaf).any() for k in film_names
             for leaf in jax.tree.leaves(params[k]))
  run = _FastJit(lambda v, s, c: film.apply(v, s, c, False))
  plain = unet.ConditionedUNet(0.125)
  ref = np.asarray(_FastJit(lambda v, s, c: plain.apply(v, s, c, False))(variables, spec, cond))
  np.testing.assert_allclose(np.asarray(run(dict(variables, params=params), spec, cond)), ref,
                             rtol=1e-6, atol=1e-6)
  # A non-zero map on one layer: masks then depend on the conditioning there as well.
  moved = dict(params, up6_film={"kernel": rng.normal(size=params["up6_film"]["kernel"].shape)
                                 .astype(np.float32) * 0.1,
                                 "bias": np.zeros_like(params["up6_film"]["bias"])})
  out = np.asarray(run(dict(variables, params=moved), spec, cond))
  assert np.abs(out - ref).max() > 1e-3
  with pytest.raises(ValueError, match="unet_conditioning"):
    jax.eval_shape(lambda s, c: unet.ConditionedUNet(0.125, conditioning="everywhere").init(
        jax.random.key(0), s, c, False), spec, cond)
  with pytest.raises(ValueError, match="config.model.unet_conditioning"):
    models.create_model(dict(TINY, unet_conditioning="everywhere"))


def test_unet_pool_runs_the_same_network_on_the_averaged_grid(train_step_result):
  rng = np.random.default_rng(11)
  spec = rng.normal(size=(2, 2 * H, 2 * H)).astype(np.float32) * 3
  cond = rng.normal(size=(2, 3, 16)).astype(np.float32)
  variables = {c: train_step_result["variables"][c]["unet"] for c in ("params", "batch_stats")}
  pooled = unet.ConditionedUNet(0.125, pool=2)
  plain = unet.ConditionedUNet(0.125)
  out = np.asarray(_FastJit(lambda v, s, c: pooled.apply(v, s, c, False, logits=True))(
      variables, spec, cond))
  assert out.shape == (2, 3, 2 * H, 2 * H)
  # The 2x2 block means, by hand, through the unpooled network, then resized.
  blocks = spec.reshape(2, H, 2, H, 2).mean(axis=(2, 4))
  small = _FastJit(lambda v, s, c: plain.apply(v, s, c, False, logits=True))(variables, blocks,
                                                                             cond)
  want = np.asarray(jax.image.resize(small, (2, 3, 2 * H, 2 * H), "bilinear"))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  # Smooth at the block scale: neighbouring bins differ far less than the pooled ones do.
  assert np.abs(np.diff(out, axis=-1)).mean() < 0.6 * np.abs(np.diff(np.asarray(small),
                                                                       axis=-1)).mean()
  with pytest.raises(ValueError, match="divisible by 384"):
    jax.eval_shape(lambda s, c: unet.ConditionedUNet(0.125, pool=3).init(
        jax.random.key(0), s, c, False), spec, cond)
  with pytest.raises(ValueError, match="config.model.unet_pool"):
    models.create_model(dict(TINY, unet_pool=0))
  # The public code's networks have the paper's U-Net only.
  for key, value in (("unet_pool", 2), ("unet_conditioning", "film")):
    with pytest.raises(ValueError, match=f"config.model.{key}=.*graph_mode='authors'"):
      models.create_model(dict(TINY, graph_mode="authors", **{key: value}))


def test_cls_freq_pool_feeds_both_classifiers_the_frequency_averaged_separation(
    train_step_result):
  r = train_step_result
  variables, batch = r["variables"], r["batch"]
  pooled = models.create_model(dict(TINY, cls_freq_pool=4))
  out = _FastJit(lambda v, x: pooled.apply(v, x, train=False))(variables, batch)
  plain = _FastJit(lambda v, x: r["model"].apply(v, x, train=False))(variables, batch)
  # The same masks; the classifiers see each separation's 4-bin frequency means, by hand.
  np.testing.assert_array_equal(np.asarray(out["masks"]), np.asarray(plain["masks"]))
  sep = np.asarray(out["sep_log_mag"])
  b, u, s = sep.shape[:3]
  small = sep.reshape(b * u * s, H // 4, 4, H).mean(axis=2)
  emb = np.asarray(out["embeddings"]).reshape(b * u * s, -1)

  def heads(m, x, e):
    return m.consistency(x, False), m.direction(x, e, False)
  cons, dirs = _FastJit(lambda v, x, e: r["model"].apply(v, x, e, method=heads))(
      variables, small, emb)
  np.testing.assert_allclose(np.asarray(out["cons_logits"]).reshape(cons.shape), cons,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out["dir_logits"]).reshape(dirs.shape), dirs,
                             rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(plain["cons_logits"]) - np.asarray(out["cons_logits"])).max() > 1e-4
  with pytest.raises(ValueError, match="config.model.cls_freq_pool=3 must divide the 128"):
    jax.eval_shape(lambda v, x: models.create_model(dict(TINY, cls_freq_pool=3)).apply(
        v, x, train=False), variables, batch)
  with pytest.raises(ValueError, match="config.model.cls_freq_pool"):
    models.create_model(dict(TINY, cls_freq_pool=0))
  with pytest.raises(ValueError, match="config.model.cls_freq_pool=.*graph_mode='authors'"):
    models.create_model(dict(TINY, graph_mode="authors", cls_freq_pool=2))


def test_class_label_mode_conditions_on_the_labels_only():
  model = models.create_model(dict(TINY, graph_mode="class_label"))
  batch = _graph_batch(12)
  labels = np.array([[[0, 1, 4], [2, 3, 4]], [[1, 0, 4], [0, 0, 4]]], np.int32)
  batch["class_labels"] = labels
  params = _embed_params(model, batch)
  assert set(params) == {"class_embed"}
  emb = np.asarray(_embed(model, params, batch)["embeddings"])
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
  other = dict(batch, node_features=batch["node_features"] * -2.0 + 5.0)
  np.testing.assert_allclose(np.asarray(_embed(model, params, other)["embeddings"]), emb)
  np.testing.assert_allclose(emb[0, 0, 0], emb[1, 0, 1])  # same label (0), same embedding
  assert not np.allclose(emb[0, 0, 0], emb[0, 0, 1])
  del batch["class_labels"]
  with pytest.raises(ValueError, match="class_labels"):
    jax.eval_shape(lambda p, b: model.apply({"params": p}, b, method=asmp.ASMP.embed), params,
                   batch)


def test_unet_group_norm_masks_depend_on_their_own_mixture_only():
  """With GroupNorm each mask is a function of its mixture and conditioning alone: the same in
  training and inference mode, whatever else is in the batch; BatchNorm's are not."""
  rng = np.random.default_rng(9)
  spec = rng.normal(size=(3, H, H)).astype(np.float32) * 3
  cond = rng.normal(size=(3, 2, 16)).astype(np.float32)
  group = unet.ConditionedUNet(0.125, norm="group")
  variables = group.init(jax.random.key(0), spec[:1], cond[:1], False)
  assert "batch_stats" not in variables
  assert any(k.endswith("_gn") for k in variables["params"])
  run = _FastJit(lambda v, s, c: group.apply(v, s, c, True))
  whole = np.asarray(run(variables, spec, cond))
  alone = np.asarray(run(variables, spec[:1], cond[:1]))
  np.testing.assert_allclose(whole[:1], alone, rtol=1e-5, atol=1e-6)
  infer = np.asarray(_FastJit(lambda v, s, c: group.apply(v, s, c, False))(variables, spec, cond))
  np.testing.assert_allclose(infer, whole, rtol=1e-5, atol=1e-6)
  # The first conditioning's mask does not change when the second one does.
  other = cond.copy()
  other[:, 1] = rng.normal(size=(3, 16))
  moved = np.asarray(run(variables, spec, other))
  np.testing.assert_allclose(moved[:, 0], whole[:, 0], rtol=1e-5, atol=1e-6)
  assert np.abs(moved[:, 1] - whole[:, 1]).max() > 1e-4
  # Control: in training mode BatchNorm couples the examples of a batch.
  batch = unet.ConditionedUNet(0.125)
  bvars = batch.init(jax.random.key(0), spec[:1], cond[:1], False)
  brun = _FastJit(lambda v, s, c: batch.apply(v, s, c, True, mutable=["batch_stats"])[0])
  assert np.abs(np.asarray(brun(bvars, spec, cond))[:1]
                - np.asarray(brun(bvars, spec[:1], cond[:1]))).max() > 1e-4


def test_dir_window_graphs_give_each_slice_its_own_window_embedding(train_step_result):
  r = train_step_result
  variables, base = r["variables"], dict(r["batch"])
  model_w = models.create_model(dict(TINY, dir_window_graphs=True))
  fwd = lambda m: _FastJit(lambda v, b: m.apply(v, b, train=False))
  keys = ("node_features", "node_mask", "node_type", "edge_weight", "edge_mask")
  # Every window holding the crop's graph: the same parameters give the default model's outputs.
  same = dict(base, **{"window_" + k: jnp.repeat(base[k][:, :, None], 6, axis=2) for k in keys})
  out0 = fwd(r["model"])(variables, base)
  out1 = fwd(model_w)(variables, same)
  for k in ("dir_logits", "masks", "cons_logits"):
    np.testing.assert_allclose(out1[k], out0[k], rtol=1e-5, atol=1e-5)
  # Another graph in window 3 changes slice 3's direction logits only.
  nf = np.array(same["window_node_features"])
  nf[:, :, 3] = np.random.default_rng(7).normal(size=nf[:, :, 3].shape)
  out2 = fwd(model_w)(variables, dict(same, window_node_features=jnp.asarray(nf)))
  diff = np.abs(np.asarray(out2["dir_logits"]) - np.asarray(out1["dir_logits"])).max(
      axis=(0, 1, 2, 4))
  assert diff[3] > 1e-4 and np.all(np.delete(diff, 3) == 0.0), diff
  np.testing.assert_array_equal(out2["masks"], out1["masks"])
  # The window graphs are required, and shaped per window.
  with pytest.raises(ValueError, match="dir_window_graphs"):
    model_w.apply(variables, base, train=False)
  bad = dict(same, window_node_mask=same["window_node_mask"][:, :, :5])
  with pytest.raises(ValueError, match="window_node_mask"):
    model_w.apply(variables, bad, train=False)
  shapes = models.batch_shapes(dict(TINY, dir_window_graphs=True), 3, NN, 30, spec_shape=(H, H),
                               videos=2)
  assert shapes["window_node_features"].shape == (3, 2, 6, NN, F)
  assert shapes["window_edge_mask"].shape == (3, 2, 6, 30) and "window_edge_mask" not in \
      models.batch_shapes(TINY, 3, NN, 30, spec_shape=(H, H))
  with pytest.raises(ValueError, match="dir_window_graphs"):
    models.create_model(dict(TINY, dir_window_graphs="yes"))
