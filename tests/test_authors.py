"""The public code's networks (graph_mode="authors") and the converter of the released weights.

A small PyTorch re-implementation of the released networks (tests/helpers/authors_torch.py) is
saved in the release's format at a seeded random initialisation, converted with
``asmp_jax.convert_authors`` and compared with `AuthorsASMP` on the same inputs.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from asmp_jax import convert_authors  # noqa: E402
from asmp_jax import inference  # noqa: E402
from asmp_jax import run_folder  # noqa: E402
from asmp_jax.models import asmp as asmp_model  # noqa: E402
from asmp_jax.models import authors  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import authors_torch  # noqa: E402  # pylint: disable=g-import-not-at-top

# Small networks of the released structure: node features 32 -> 16 -> 64 (= 8 * ngf), GAT 4 x 8,
# EdgeConv 32, ResNet-18 width 8, 5 classes, 28 direction classes.
SIZES = dict(feat_dim=32, ngf=8, heads=4, nhid=32, res_width=8, num_classes=5, num_dir=28)
H, T = 128, 256           # spectrogram (T: six 46-column direction windows every 42 columns)
NODES = 4                 # node slots per graph (padding included)
# float32, one forward pass through ~40 layers: the two implementations agree to this.
ATOL = 2e-5
RTOL = 2e-4


def _release(seed=0):
  torch.manual_seed(seed)
  net = authors_torch.Release(**SIZES)
  with torch.no_grad():
    gen = torch.Generator().manual_seed(seed + 1)
    net.randomize_statistics(gen)
    for name, p in net.named_parameters():
      if name.endswith("bias") and "bn" not in name:
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    # At PyTorch's default initialisation the conditioning barely moves the mask (~1e-5); a
    # stronger visual half of the first decoder kernel makes the masks depend on the graphs.
    net.unet.audionet_upconvlayer1[0].weight[:8 * SIZES["ngf"]] *= 3000.0
  return net.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp("authors")
  net = _release()
  net.save(str(root / "release"))
  record = convert_authors.convert(str(root / "release"), str(root / "run"))
  return net, root, record


def _graphs(rng):
  """Two videos: 3 valid nodes (complete graph, one NaN weight) and a single node."""
  nf = rng.normal(size=(1, 2, NODES, SIZES["feat_dim"])).astype(np.float32)
  node_mask = np.array([[[1, 1, 1, 0], [1, 0, 0, 0]]], bool)
  pairs = [(i, j) for i in range(NODES) for j in range(NODES) if i != j]
  senders = np.array([[p[0] for p in pairs]] * 2, np.int32)[None]
  receivers = np.array([[p[1] for p in pairs]] * 2, np.int32)[None]
  sym = rng.uniform(0.1, 1.0, size=(NODES, NODES)).astype(np.float32)
  sym = (sym + sym.T) / 2
  sym[0, 2] = sym[2, 0] = np.nan
  weight = np.array([[sym[i, j] for i, j in pairs]] * 2, np.float32)[None]
  edge_mask = node_mask[0][:, senders[0, 0]] & node_mask[0][:, receivers[0, 0]]
  batch = {"node_features": nf, "node_mask": node_mask,
           "node_type": np.zeros((1, 2, NODES), np.int32),
           "senders": senders, "receivers": receivers, "edge_weight": weight,
           "edge_mask": edge_mask[None], "source_mask": np.ones((1, 2, 3), bool)}
  return batch, sym


def _torch_graph(batch, sym, u):
  """The public test script's graph of video ``u``: complete, self loops of weight 1."""
  n = int(batch["node_mask"][0, u].sum())
  x = torch.from_numpy(batch["node_features"][0, u, :n])
  if n == 1:
    return x, torch.tensor([[0], [0]]), torch.tensor([1.0])
  src = [i for i in range(n) for _ in range(n)]
  dst = [j for _ in range(n) for j in range(n)]
  attr = [1.0 if i == j else float(sym[i, j]) for i, j in zip(src, dst)]
  return x, torch.tensor([src, dst]), torch.tensor(attr)


def test_converted_release_gives_the_public_networks_outputs(converted):
  net, root, _ = converted
  config = run_folder.load_saved_config(str(root / "run"))
  variables, step = inference.restore_variables(str(root / "run"), config)
  assert step == 0
  model = asmp_model.create_model(config.model)
  assert isinstance(model, authors.AuthorsASMP)
  rng = np.random.default_rng(0)
  batch, sym = _graphs(rng)
  batch["mix_log_mag"] = rng.normal(-2.0, 1.0, size=(1, H, T)).astype(np.float32)
  out = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  mix = torch.from_numpy(batch["mix_log_mag"])[:, None]
  # The two videos' masks differ far beyond the tolerance, so the comparison below sees the
  # conditioning path (graph encoder, GRU, tiling order) and not only the audio path.
  assert float(jnp.max(jnp.abs(out["masks"][0, 0, 0] - out["masks"][0, 1, 0]))) > 100 * ATOL
  for u in range(2):
    window = 3 + u
    with torch.no_grad():
      emb = net.embedding(*_torch_graph(batch, sym, u))
      mask, logits, dirs = net(mix, *_torch_graph(batch, sym, u), window)
    np.testing.assert_allclose(out["embeddings"][0, u, 0], emb[0].numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["masks"][0, u, 0], mask[0, 0].numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["cons_logits"][0, u, 0], logits[0].numpy(), rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(out["dir_logits"][0, u, 0, window], dirs[0].numpy(), rtol=RTOL,
                               atol=ATOL)


def test_every_release_value_lands_once_unchanged(converted):
  net, root, record = converted
  config = run_folder.load_saved_config(str(root / "run"))
  variables, _ = inference.restore_variables(str(root / "run"), config)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  # Every model value came from the release: as many numbers as the release's distinct tensors.
  distinct = 0
  for f in authors_torch.RELEASE_FILES:
    sd = torch.load(root / "release" / f, weights_only=True)
    seen = set()
    for k, v in sd.items():
      if k.endswith("num_batches_tracked") or v.data_ptr() in seen:
        continue
      seen.add(v.data_ptr())
      distinct += v.numel()
  assert sum(v.size for v in flat.values()) == distinct
  # Spot checks of each kind of mapping against the saved tensors.
  sd = torch.load(root / "release" / "unet_final.pth", weights_only=True)
  w = sd["audionet_upconvlayer2.0.weight"].numpy()
  np.testing.assert_array_equal(flat["params/unet/up2/kernel"][::-1, ::-1].transpose(2, 3, 0, 1), w)
  np.testing.assert_array_equal(flat["batch_stats/unet/down3_bn/var"],
                                sd["audionet_convlayer3.1.running_var"].numpy())
  sd = torch.load(root / "release" / "rnn_final.pth", weights_only=True)
  hid = sd["weight_hh_l0"].shape[1]
  np.testing.assert_array_equal(flat["params/slot_gru/gru/hz/bias"],
                                sd["bias_hh_l0"].numpy()[hid:2 * hid])
  np.testing.assert_array_equal(flat["params/slot_gru/gru/in/kernel"],
                                sd["weight_ih_l0"].numpy()[2 * hid:].T)
  sd = torch.load(root / "release" / "graph_net_final.pth", weights_only=True)
  assert "node_conv.lin_dst.weight" in sd and "node_conv.lin_src.weight" in sd
  np.testing.assert_array_equal(flat["params/graph_encoder/gat/lin/kernel"],
                                sd["node_conv.lin_src.weight"].numpy().T)
  note = json.loads((root / "run" / convert_authors.RELEASE_NOTE).read_text())
  kernel = note["classifier_final.pth"]["feature_extraction.0.weight"]
  assert kernel == "params/classifier/stem/kernel"
  assert "conv1.weight" not in note["classifier_final.pth"]   # one tensor under two names
  assert note["counters"]["unet_final.pth:audionet_convlayer1.1.num_batches_tracked"] == 7
  assert record["files"] == sorted(authors_torch.RELEASE_FILES)


def test_separator_restores_the_converted_workdir(converted):
  _, root, _ = converted
  sep = inference.Separator.from_checkpoint(str(root / "run"))
  assert isinstance(sep.model, authors.AuthorsASMP) and sep.step == 0
  assert sep.config.model.num_classes == SIZES["num_classes"]
  assert sep.config.model.num_direction_classes == SIZES["num_dir"]


def test_separation_only_release(tmp_path):
  net = _release(seed=3)
  net.save(str(tmp_path / "rel"), files=convert_authors.REQUIRED)
  convert_authors.convert(str(tmp_path / "rel"), str(tmp_path / "run"))
  config = run_folder.load_saved_config(str(tmp_path / "run"))
  assert not config.model.authors_direction and not config.model.authors_classifier
  variables, _ = inference.restore_variables(str(tmp_path / "run"), config)
  assert set(variables["params"]) == {"graph_encoder", "slot_gru", "unet"}
  model = asmp_model.create_model(config.model)
  sep = jnp.zeros((2, H, T))
  dirs = model.apply(variables, sep, None, False, method=authors.AuthorsASMP.direction)
  cons = model.apply(variables, sep, False, method=authors.AuthorsASMP.consistency)
  assert dirs.shape == (2, 6, 28) and bool(jnp.all(jnp.isnan(dirs)))
  assert cons.shape == (2, config.model.num_classes) and bool(jnp.all(cons == 0))


def _bad_release(tmp_path, edit):
  """The release at a tiny size with ``edit(dir)`` applied; returns (dir, workdir)."""
  net = _release(seed=5)
  rel = tmp_path / "rel"
  net.save(str(rel), files=convert_authors.REQUIRED)
  edit(rel)
  return rel, tmp_path / "run"


def _edit_file(name, fn):
  def edit(rel):
    sd = torch.load(rel / name, weights_only=True)
    fn(sd)
    torch.save(sd, rel / name)
  return edit


@pytest.mark.parametrize("edit, words", [
    (lambda rel: os.remove(rel / "rnn_final.pth"), ["rnn_final.pth", "file not found"]),
    (_edit_file("map_net_final.pth", lambda sd: sd.update({"2.bias": torch.zeros(7)})),
     ["map_net_final.pth", "'2.bias'", "(7)", "(64)"]),
    (_edit_file("unet_final.pth", lambda sd: sd.update({"extra.weight": torch.zeros(2, 3)})),
     ["unet_final.pth", "unknown key 'extra.weight'", "(2, 3)"]),
    (_edit_file("unet_final.pth", lambda sd: sd.pop("audionet_upconvlayer3.1.running_var")),
     ["unet_final.pth", "missing key 'audionet_upconvlayer3.1.running_var'", "(64)"]),
    (_edit_file("rnn_final.pth", lambda sd: sd.update({"weight_hh_l0": torch.zeros(192, 60)})),
     ["rnn_final.pth", "'weight_hh_l0'", "(192, 60)", "(192, 64)"]),
    (_edit_file("graph_net_final.pth",
                lambda sd: sd.update({"node_conv.lin_dst.weight": torch.zeros(32, 64)})),
     ["graph_net_final.pth", "node_conv.lin_dst.weight", "differs"]),
    (lambda rel: torch.save(torch.nn.Linear(2, 2).state_dict(), rel / "fusion_enc_final.pth"),
     ["dir_classifier_final.pth", "file not found"]),
])
def test_bad_release_is_refused_in_one_line_with_no_workdir(tmp_path, edit, words, capsys):
  rel, run = _bad_release(tmp_path, edit)
  with pytest.raises(SystemExit) as e:
    convert_authors.main([f"--checkpoint_dir={rel}", f"--workdir={run}"])
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("error: ")
  for w in words:
    assert w in msg, msg
  assert not run.exists()
  assert sorted(os.listdir(tmp_path)) == ["rel"]


def test_existing_workdir_is_refused(tmp_path):
  (tmp_path / "run").mkdir()
  with pytest.raises(convert_authors.ConversionError, match="already exists"):
    convert_authors.convert(str(tmp_path / "none"), str(tmp_path / "run"))


def test_resnet_keys_are_torchvisions():
  """The re-implementation's ResNet-18 has the keys and shapes of the public wrapper around
  torchvision's."""
  torchvision = pytest.importorskip("torchvision")
  body = torchvision.models.resnet18()
  wrapper = torch.nn.Module()
  wrapper.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
  wrapper.feature_extraction = torch.nn.Sequential(wrapper.conv1, *list(body.children())[1:-2])
  wrapper.fc = torch.nn.Linear(512, 28)
  want = {k: tuple(v.shape) for k, v in wrapper.state_dict().items()}
  got = {k: tuple(v.shape) for k, v in authors_torch.Resnet18(28).state_dict().items()}
  assert got == want


@pytest.mark.slow
def test_full_size_release(tmp_path):
  """The released sizes (2048-d nodes, ngf 64, ResNet-18 width 64, 15 classes, 28 directions) at
  a 256 x 256 spectrogram, one video."""
  torch.manual_seed(1)
  net = authors_torch.Release().eval()
  with torch.no_grad():
    net.randomize_statistics(torch.Generator().manual_seed(2))
  net.save(str(tmp_path / "rel"))
  convert_authors.convert(str(tmp_path / "rel"), str(tmp_path / "run"))
  config = run_folder.load_saved_config(str(tmp_path / "run"))
  m = config.model
  assert (m.node_feature_dim, m.node_hidden, m.embed_dim, m.gat_heads, m.gat_head_dim,
          m.edgeconv_dim, m.unet_width_mult, m.cls_width, m.num_classes,
          m.num_direction_classes) == (2048, 1024, 512, 4, 64, 256, 1.0, 64, 15, 28)
  variables, _ = inference.restore_variables(str(tmp_path / "run"), config)
  model = asmp_model.create_model(config.model)
  rng = np.random.default_rng(1)
  n = 3
  pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
  sym = rng.uniform(0.1, 1.0, size=(n, n)).astype(np.float32)
  sym = (sym + sym.T) / 2
  batch = {"node_features": rng.normal(size=(1, 1, n, 2048)).astype(np.float32),
           "node_mask": np.ones((1, 1, n), bool), "node_type": np.zeros((1, 1, n), np.int32),
           "senders": np.array([[[i for i, _ in pairs]]], np.int32),
           "receivers": np.array([[[j for _, j in pairs]]], np.int32),
           "edge_weight": np.array([[[sym[i, j] for i, j in pairs]]], np.float32),
           "edge_mask": np.ones((1, 1, len(pairs)), bool), "source_mask": np.ones((1, 1, 3), bool),
           "mix_log_mag": rng.normal(-2.0, 1.0, size=(1, 256, 256)).astype(np.float32)}
  out = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  graph = _torch_graph(batch, sym, 0)
  with torch.no_grad():
    emb = net.embedding(*graph)
    mask, logits, dirs = net(torch.from_numpy(batch["mix_log_mag"])[:, None], *graph, 5)
  np.testing.assert_allclose(out["embeddings"][0, 0, 0], emb[0].numpy(), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out["masks"][0, 0, 0], mask[0, 0].numpy(), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out["cons_logits"][0, 0, 0], logits[0].numpy(), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out["dir_logits"][0, 0, 0, 5], dirs[0].numpy(), rtol=RTOL, atol=ATOL)


def test_authors_variant_trains(converted):
  """One training step of the public networks: finite loss, a finite gradient for every
  parameter, updated BatchNorm statistics (the variant is trainable, not only a loader)."""
  from asmp_jax import losses  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  _, root, _ = converted
  config = run_folder.load_saved_config(str(root / "run"))
  variables, _ = inference.restore_variables(str(root / "run"), config)
  model = asmp_model.create_model(config.model)
  rng = np.random.default_rng(2)
  batch, _ = _graphs(rng)
  mags = rng.gamma(1.0, size=(1, 2, H, T)).astype(np.float32)
  batch.update(mix_log_mag=np.log(mags.sum(1) + 1e-4).astype(np.float32), video_mag_warped=mags,
               class_labels=np.array([[[0, 1, 4], [2, 3, 4]]], np.int32),
               dir_labels=rng.integers(0, 28, size=(1, 2, 3, 6)).astype(np.int32),
               dir_valid=np.ones((1, 2, 3, 6), bool))
  loss_cfg = ml_collections.ConfigDict(dict(lambda_cons=0.05, lambda_cyc=1.0, lambda_ortho=1.0,
                                            lambda_dir=0.05, mask_target="ibm", mask_weight="",
                                            mask_loss="l1", share_direction_permutation=False))

  def loss_fn(p):
    out, upd = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, batch,
                           train=True, mutable=["batch_stats"])
    return losses.total_loss(out, batch, loss_cfg)[0], upd["batch_stats"]

  (loss, stats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
  assert np.isfinite(float(loss))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.max(jnp.abs(grads["graph_encoder"]["gat"]["att_edge"]))) > 0
  assert not np.allclose(stats["unet"]["up1_bn"]["mean"],
                         variables["batch_stats"]["unet"]["up1_bn"]["mean"])
