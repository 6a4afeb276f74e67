"""The PyTorch twin (bench/torch_twin.py) computes what our Flax ASMP computes.

Random-init Flax variables (BatchNorm parameters and statistics perturbed so that porting them
matters) are ported into the twin; the twin runs in float64, our model in float32. Stated
tolerances (float32 rounding of our side):
  * forward outputs in training and inference mode: max |difference| <= 2e-5 (masks, embeddings,
    graph embedding) and <= 1e-4 relative to the largest value (logits, separated log-magnitudes);
  * the eq. 4 loss and its four terms: relative difference <= 1e-5;
  * every gradient tensor: ||g_flax - g_twin|| <= 2e-3 ||g_twin|| + 1e-6 (measured worst 4e-4;
    the +1e-6 covers the conv biases before BatchNorm, whose exact gradient is zero).
Needs torch (``pip install -e .[test,bench]``: ``torch==2.14.1``).
"""
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from asmp_jax import config_lib, losses, models, train

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import torch_twin as tt  # noqa: E402  pylint: disable=wrong-import-position

NN, F, H = 6, 12, 256  # 256 x 256: a 2 x 2 bottleneck, as in the real model
TINY = dict(config_lib.base_config().model.to_dict(),
            node_feature_dim=F, node_hidden=32, embed_dim=16, gat_heads=2, gat_head_dim=4,
            edgeconv_dim=8, num_slots=3, unet_width_mult=0.125, num_classes=5,
            num_direction_classes=10, dir_window_cols=40, dir_window_stride=40,
            num_dir_windows=6, cls_width=4, cls_blocks=(1, 1), graph_mode="asmp",
            dtype="float32")
LAMBDAS = dict(cons=0.05, cyc=1.0, ortho=1.0, dir=0.05)


def _batch(seed, b=2, u=2):
  """Padded random graphs with some invalid slots, spectrogram inputs and labels."""
  rng = np.random.default_rng(seed)
  n_valid = rng.integers(3, NN + 1, size=(b, u))
  n_aud = rng.integers(1, 3, size=(b, u))
  idx = np.arange(NN)
  node_mask = idx < n_valid[..., None]
  node_type = np.where(idx < n_aud[..., None], 0, 1)
  node_type = np.where(idx == n_valid[..., None] - 1, 2, node_type)
  snd, rcv = np.nonzero(~np.eye(NN, dtype=bool))
  ne = len(snd)
  source_mask = np.stack([np.ones((b, u), bool), n_aud == 2, np.ones((b, u), bool)], -1)
  mags = rng.gamma(1.0, size=(b, u, H, H)).astype(np.float32)
  return {
      "node_features": rng.normal(size=(b, u, NN, F)).astype(np.float32),
      "node_mask": node_mask,
      "node_type": np.where(node_mask, node_type, 1).astype(np.int32),
      "senders": np.broadcast_to(snd, (b, u, ne)).astype(np.int32),
      "receivers": np.broadcast_to(rcv, (b, u, ne)).astype(np.int32),
      "edge_weight": rng.uniform(0.05, 1.0, size=(b, u, ne)).astype(np.float32),
      "edge_mask": node_mask[..., snd] & node_mask[..., rcv] & (rng.random((b, u, ne)) < 0.8),
      "source_mask": source_mask,
      "mix_log_mag": np.log(mags.sum(1) + 1e-4).astype(np.float32),
      "video_mag_warped": mags,
      "class_labels": np.where(np.arange(3) == 2, 4, rng.integers(0, 4, size=(b, u, 3))).astype(
          np.int32),
      "dir_labels": rng.integers(0, 10, size=(b, u, 3, 6)).astype(np.int32),
      "dir_valid": source_mask[..., None] & (rng.random((b, u, 3, 6)) < 0.9),
  }


def _perturbed_variables(model, batch):
  """Random init, with BatchNorm scales/biases and running statistics moved off 1/0."""
  shapes = {k: jnp.asarray(v) for k, v in batch.items() if k in models.BATCH_DTYPES}
  variables = dict(models.init_variables(model, jax.random.key(0), shapes))
  rng = np.random.default_rng(7)

  def jitter(x):
    return x + 0.1 * rng.normal(size=x.shape).astype(x.dtype) if x.ndim == 1 else x

  variables["params"] = jax.tree.map(jitter, variables["params"])
  variables["batch_stats"] = jax.tree.map(lambda x: jnp.abs(jitter(x)) + 0.05,
                                          variables["batch_stats"])
  return variables


def _fast_jit(fn, *args):
  """Runs ``fn`` jitted with XLA's backend optimisations off (compiles faster, same values)."""
  compiled = jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  return compiled(*args)


@pytest.fixture(scope="module")
def flax_and_twin():
  model = models.create_model(TINY)
  batch = _batch(3)
  variables = _perturbed_variables(model, batch)
  loss_cfg = ml_collections.ConfigDict(dict(mask_target="ibm", mask_weight="", mask_loss="l1",
                                            share_direction_permutation=False,
                                            **{f"lambda_{k}": v for k, v in LAMBDAS.items()}))

  def step(params, stats, b):
    def loss_fn(p):
      out, upd = model.apply({"params": p, "batch_stats": stats}, b, train=True,
                             mutable=["batch_stats"])
      loss, metrics = losses.total_loss(out, b, loss_cfg)
      return loss, (metrics, out, upd["batch_stats"])
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  jb = {k: jnp.asarray(v) for k, v in batch.items()}
  (loss, (metrics, out, new_stats)), grads = _fast_jit(step, variables["params"],
                                                       variables["batch_stats"], jb)
  eval_out = _fast_jit(lambda v, b: model.apply(v, b, train=False), variables, jb)

  twin = tt.ASMPTwin(TINY).double()
  tt.port_flax_variables(twin, variables)
  tb = tt.to_torch(batch, dtype=torch.float64)
  with torch.no_grad():  # before the training pass, which updates the running statistics
    twin.eval()
    t_eval = twin(tb)
  twin.train()
  t_out = twin(tb)
  t_loss, t_terms = tt.total_loss(t_out, tb, LAMBDAS, "ibm")
  t_loss.backward()
  return dict(model=model, batch=batch, variables=variables, loss=loss, metrics=metrics, out=out,
              grads=grads, new_stats=new_stats, eval_out=eval_out, twin=twin, t_out=t_out,
              t_loss=t_loss, t_terms=t_terms, t_eval=t_eval)


def _check_outputs(ours, theirs):
  for key in ("embeddings", "graph_embedding", "masks"):
    a, b = np.asarray(ours[key], np.float64), theirs[key].detach().numpy()
    assert a.shape == b.shape, key
    assert np.max(np.abs(a - b)) <= 2e-5, (key, np.max(np.abs(a - b)))
  for key in ("sep_log_mag", "cons_logits", "dir_logits"):
    a, b = np.asarray(ours[key], np.float64), theirs[key].detach().numpy()
    assert a.shape == b.shape, key
    assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(b)), (key, np.max(np.abs(a - b)))


def test_training_mode_outputs_agree(flax_and_twin):
  r = flax_and_twin
  _check_outputs(r["out"], r["t_out"])
  # Not a trivial agreement: masks vary and some slots are invalid.
  assert float(np.std(np.asarray(r["out"]["masks"]))) > 1e-3
  assert not np.all(r["batch"]["source_mask"])


def test_inference_mode_outputs_agree_with_ported_running_statistics(flax_and_twin):
  r = flax_and_twin
  _check_outputs(r["eval_out"], r["t_eval"])
  # Running statistics matter: inference and training outputs differ.
  diff = np.abs(np.asarray(r["eval_out"]["masks"]) - np.asarray(r["out"]["masks"]))
  assert diff.max() > 1e-2


def test_loss_terms_agree(flax_and_twin):
  r = flax_and_twin
  assert abs(float(r["t_loss"].detach()) - float(r["loss"])) <= 1e-5 * abs(float(r["loss"]))
  for k, v in r["t_terms"].items():
    ours = float(r["metrics"][f"loss_{k}"])
    assert ours > 0
    assert abs(float(v.detach()) - ours) <= 1e-5 * ours, k


def test_every_gradient_agrees(flax_and_twin):
  """Our gradient tree, ported like parameters, equals the twin's autograd gradients."""
  r = flax_and_twin
  grad_twin = tt.ASMPTwin(TINY).double()
  tt.port_flax_variables(grad_twin, {"params": r["grads"], "batch_stats": r["new_stats"]})
  hidden = TINY["embed_dim"]
  checked = 0
  for (name, p), (_, g) in zip(r["twin"].named_parameters(), grad_twin.named_parameters()):
    ours, theirs = g.detach(), p.grad
    if name == "slot_gru.gru.bias_hh":   # Flax's GRU has no hidden bias on the r, z gates
      ours, theirs = ours[2 * hidden:], theirs[2 * hidden:]
    err = float(torch.linalg.norm(ours - theirs))
    assert err <= 2e-3 * float(torch.linalg.norm(theirs)) + 1e-6, (name, err)
    checked += 1
  assert checked == len(list(r["twin"].parameters())) > 100


def test_running_means_update_alike(flax_and_twin):
  r = flax_and_twin
  flax_means = {}

  def collect(tree, path):
    for k, v in tree.items():
      if isinstance(v, dict) or hasattr(v, "items"):
        collect(v, f"{path}.{k}")
      elif k == "mean":
        flax_means[path] = np.asarray(v)

  collect(r["new_stats"], "twin")
  modules = dict(r["twin"].named_modules(prefix="twin"))
  assert len(flax_means) > 20
  for path, mean in flax_means.items():
    np.testing.assert_allclose(modules[path].running_mean.numpy(), mean, rtol=1e-4, atol=1e-5,
                               err_msg=path)


def test_encoder_once_twin_equals_public_style_twin(flax_and_twin):
  r = flax_and_twin
  once = tt.ASMPTwin(TINY, encoder_once=True).double()
  tt.port_flax_variables(once, r["variables"])
  tb = tt.to_torch(r["batch"], dtype=torch.float64)
  once.train()
  out = once(tb)
  np.testing.assert_allclose(out["masks"].detach().numpy(), r["t_out"]["masks"].detach().numpy(),
                             rtol=0, atol=1e-12)


def test_audio_front_end_agrees():
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.normal(size=(2, 2, 65535))).astype(np.float32)
  ours = train.audio_inputs({"audio": jnp.asarray(audio)})
  theirs = tt.audio_inputs(torch.from_numpy(audio).double())
  assert theirs["mix_log_mag"].shape == (2, 256, 256)
  assert theirs["video_mag_warped"].shape == (2, 2, 256, 256)
  np.testing.assert_allclose(np.asarray(ours["video_mag_warped"]),
                             theirs["video_mag_warped"].numpy(), rtol=1e-4, atol=1e-5)
  # Log magnitude: compare where the magnitude is not vanishingly small.
  mix_mag = np.exp(theirs["mix_log_mag"].numpy())
  big = mix_mag > 1e-3 * mix_mag.max()
  np.testing.assert_allclose(np.asarray(ours["mix_log_mag"])[big],
                             theirs["mix_log_mag"].numpy()[big], rtol=0, atol=1e-4)


def test_train_step_lowers_the_loss_and_port_errors_are_clear(flax_and_twin):
  r = flax_and_twin
  twin = tt.ASMPTwin(TINY)
  tt.port_flax_variables(twin, r["variables"])
  cfg = ml_collections.ConfigDict(dict(
      train=dict(learning_rate=1e-3, b1=0.9, b2=0.999, weight_decay=1e-4),
      data=dict(normalise_mix=False), loss=dict(mask_target="ibm",
                                                **{f"lambda_{k}": v for k, v in LAMBDAS.items()})))
  opt = tt.make_optimizer(twin, cfg.train)
  tb = tt.to_torch(r["batch"])
  twin.train()
  first = float(tt.total_loss(twin(tb), tb, LAMBDAS)[0].detach())
  for _ in range(3):
    opt.zero_grad()
    loss, _ = tt.total_loss(twin(tb), tb, LAMBDAS)
    loss.backward()
    opt.step()
  assert float(tt.total_loss(twin(tb), tb, LAMBDAS)[0].detach()) < first

  bad = dict(r["variables"])
  bad["params"] = dict(bad["params"], extra={"kernel": np.zeros((2, 2))})
  with pytest.raises(ValueError, match="twin has no module twin.extra"):
    tt.port_flax_variables(tt.ASMPTwin(TINY), bad)
  wrong = tt.ASMPTwin(dict(TINY, cls_width=8))
  with pytest.raises(ValueError, match="shape"):
    tt.port_flax_variables(wrong, r["variables"])


def test_twinned_graph_modes_come_from_the_conditioner_registry():
  assert tt.ASMPTwin(dict(TINY, graph_mode="equal")).graph_encoder.equal_weights
  assert not tt.ASMPTwin(TINY).graph_encoder.equal_weights
  for mode in ("multiscale", "single_node", "no_vision", "class_label"):
    with pytest.raises(ValueError, match=f"{mode!r} is not twinned \\['asmp', 'equal'\\]"):
      tt.ASMPTwin(dict(TINY, graph_mode=mode))
