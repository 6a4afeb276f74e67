"""Converts the ASMP authors' released PyTorch weights into a workdir of this project.

  python -m asmp_jax.convert_authors --checkpoint_dir=DIR --workdir=OUT [--config=configs/asiw.py]

``DIR`` holds the release's ``state_dict`` files (``metro-smiles/asmp``):

=========================  ==========================================  ==========================
file                       network                                     needed
=========================  ==========================================  ==========================
unet_final.pth             7-layer audio-visual U-Net                  always
graph_net_final.pth        GraphNet_3 (GAT + EdgeConv)                 always
map_net_final.pth          node MLP 2048 -> 1024 -> 512                always
rnn_final.pth              nn.GRU(512, 512)                            always
fusion_enc_final.pth       ResNet-18 on the separated spectrogram      for direction (with the
dir_classifier_final.pth   Linear/BatchNorm direction classifier       next one, or neither)
classifier_final.pth       ResNet-18 consistency classifier            optional
=========================  ==========================================  ==========================

Each file is read with ``torch.load(weights_only=True)`` on the CPU (`asmp_jax.safe_io`), so a
file can hold tensors only, never code. Every tensor is mapped to one parameter or BatchNorm
statistic of `asmp_jax.models.authors.AuthorsASMP` (``config.model.graph_mode = "authors"``):
linear kernels transposed, convolution kernels to HWIO, transposed-convolution kernels flipped
to Flax's layout, the GRU's stacked r, z, n gates split into one Dense layer each, tensors that
the release stores under two names (a ResNet's ``conv1.weight`` / ``feature_extraction.0.weight``,
the GAT's ``lin_src.weight`` / ``lin_dst.weight``, called ``lin.weight`` by newer
torch_geometric) checked equal and stored once. Values are carried over unchanged. BatchNorm's
``num_batches_tracked`` counters (unused at inference) are recorded in ``authors_release.json``,
not in the checkpoint.

The network sizes (feature size, widths, number of classes and direction classes) are read from
the tensors' shapes; the rest of the config comes from ``--config``. A missing file, an unknown
key, a missing key or a tensor of the wrong shape stops the conversion with one line naming the
file, the key and both shapes, before anything is written; the workdir is written under a
temporary name and renamed at the end, so a failed run leaves nothing behind.

The result restores like a training run: ``Separator.from_checkpoint(OUT)``, ``python -m
asmp_jax.evaluate --workdir=OUT``, ``python -m asmp_jax.separate --workdir=OUT ...`` and the
notebook.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

REQUIRED = ("unet_final.pth", "graph_net_final.pth", "map_net_final.pth", "rnn_final.pth")
DIRECTION = ("fusion_enc_final.pth", "dir_classifier_final.pth")
CLASSIFIER = "classifier_final.pth"
RELEASE_NOTE = "authors_release.json"
# The public test scripts' class counts, used when no file fixes them: 14 ASIW classes plus the
# additional scene (background) node; 28 direction classes.
DEFAULT_NUM_CLASSES = 15
DEFAULT_NUM_DIRECTIONS = 28
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "asiw.py")


class ConversionError(ValueError):
  """The release files cannot be converted; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """Where one release tensor goes: ``(collection, path)`` and how it is rearranged."""
  collection: str
  path: tuple[str, ...]
  transform: Callable[[np.ndarray], np.ndarray]
  want: Callable[[tuple[int, ...]], tuple[int, ...]]  # target shape -> expected source shape


def _same(a):
  return a


def _linear_kernel(a):
  return a.T


def _conv_kernel(a):          # torch [O, I, kh, kw] -> HWIO
  return a.transpose(2, 3, 1, 0)


def _convt_kernel(a):         # torch ConvTranspose [I, O, kh, kw] -> flipped [kh, kw, I, O]
  return a.transpose(2, 3, 0, 1)[::-1, ::-1]


def _rev(perm):
  inv = np.argsort(perm)
  return lambda shape: tuple(shape[i] for i in inv)


def _rules_linear(prefix: str, path: tuple[str, ...], bias: bool = True) -> dict[str, Rule]:
  out = {f"{prefix}weight": Rule("params", path + ("kernel",), _linear_kernel,
                                 lambda s: tuple(reversed(s)))}
  if bias:
    out[f"{prefix}bias"] = Rule("params", path + ("bias",), _same, tuple)
  return out


def _rules_conv(prefix, path, bias=True, transposed=False):
  if transposed:
    rule = Rule("params", path + ("kernel",), _convt_kernel, _rev((2, 3, 0, 1)))
  else:
    rule = Rule("params", path + ("kernel",), _conv_kernel, _rev((2, 3, 1, 0)))
  out = {f"{prefix}weight": rule}
  if bias:
    out[f"{prefix}bias"] = Rule("params", path + ("bias",), _same, tuple)
  return out


def _rules_bn(prefix, path):
  return {f"{prefix}weight": Rule("params", path + ("scale",), _same, tuple),
          f"{prefix}bias": Rule("params", path + ("bias",), _same, tuple),
          f"{prefix}running_mean": Rule("batch_stats", path + ("mean",), _same, tuple),
          f"{prefix}running_var": Rule("batch_stats", path + ("var",), _same, tuple)}


def _rules_resnet(root: str) -> dict[str, Rule]:
  rules = _rules_conv("feature_extraction.0.", (root, "stem"), bias=False)
  rules |= _rules_bn("feature_extraction.1.", (root, "stem_bn"))
  for stage in range(4):
    for j in range(2):
      p, q = f"feature_extraction.{4 + stage}.{j}.", (root, f"stage{stage + 1}_block{j + 1}")
      rules |= _rules_conv(p + "conv1.", q + ("conv1",), bias=False)
      rules |= _rules_bn(p + "bn1.", q + ("bn1",))
      rules |= _rules_conv(p + "conv2.", q + ("conv2",), bias=False)
      rules |= _rules_bn(p + "bn2.", q + ("bn2",))
      if stage > 0 and j == 0:
        rules |= _rules_conv(p + "downsample.0.", q + ("proj",), bias=False)
        rules |= _rules_bn(p + "downsample.1.", q + ("proj_bn",))
  return rules | _rules_linear("fc.", (root, "fc"))


def _rules_unet() -> dict[str, Rule]:
  rules = {}
  for i in range(1, 8):
    rules |= _rules_conv(f"audionet_convlayer{i}.0.", ("unet", f"down{i}"))
    rules |= _rules_bn(f"audionet_convlayer{i}.1.", ("unet", f"down{i}_bn"))
    rules |= _rules_conv(f"audionet_upconvlayer{i}.0.", ("unet", f"up{i}"), transposed=True)
    if i < 7:
      rules |= _rules_bn(f"audionet_upconvlayer{i}.1.", ("unet", f"up{i}_bn"))
  return rules


def _rules_graph() -> dict[str, Rule]:
  g = ("graph_encoder",)
  rules = {f"node_conv.{k}": Rule("params", g + ("gat", k), _same, tuple)
           for k in ("att_src", "att_dst", "att_edge", "bias")}
  rules |= _rules_linear("node_conv.lin_src.", g + ("gat", "lin"), bias=False)
  rules |= _rules_linear("node_conv.lin_edge.", g + ("gat", "lin_edge"), bias=False)
  rules |= _rules_linear("edge_conv.nn.0.0.", g + ("edgeconv", "fc"))
  return rules | _rules_bn("edge_conv.nn.0.2.", g + ("edgeconv", "bn"))


def _rules_dir_classifier() -> dict[str, Rule]:
  return (_rules_linear("0.", ("dir_classifier", "fc1")) | _rules_bn("1.", ("dir_classifier", "bn1"))
          | _rules_linear("3.", ("dir_classifier", "fc2"))
          | _rules_bn("4.", ("dir_classifier", "bn2")))


def _rules_map_net() -> dict[str, Rule]:
  g = ("graph_encoder", "map_net")
  return _rules_linear("0.", g + ("fc1",)) | _rules_linear("2.", g + ("fc2",))


# Release key aliases: the same tensor under another name (checked equal, stored once).
ALIASES = {
    "graph_net_final.pth": {"node_conv.lin_dst.weight": "node_conv.lin_src.weight",
                            "node_conv.lin.weight": "node_conv.lin_src.weight"},
    "fusion_enc_final.pth": {"conv1.weight": "feature_extraction.0.weight"},
    "classifier_final.pth": {"conv1.weight": "feature_extraction.0.weight"},
}
GRU_GATES = ("r", "z", "n")


def rules_for(name: str) -> dict[str, Rule]:
  """Release key -> `Rule` for one file (the GRU is handled by `_gru_tensors`)."""
  table = {"unet_final.pth": _rules_unet, "graph_net_final.pth": _rules_graph,
           "map_net_final.pth": _rules_map_net,
           "fusion_enc_final.pth": lambda: _rules_resnet("fusion_enc"),
           "classifier_final.pth": lambda: _rules_resnet("classifier"),
           "dir_classifier_final.pth": _rules_dir_classifier}
  return table[name]()


def _fail(path: str, msg: str) -> ConversionError:
  return ConversionError(f"{path}: {msg}")


def _shape(a) -> str:
  return "(" + ", ".join(str(int(d)) for d in a) + ")"


def _read(path: str) -> dict[str, np.ndarray]:
  """One release file as ``{key: float32/int numpy array}`` (weights only)."""
  from asmp_jax import safe_io  # pylint: disable=g-import-not-at-top
  try:
    state = safe_io.load_torch_state_dict(path)
  except FileNotFoundError:
    raise _fail(path, "file not found") from None
  except safe_io.SafeLoadError as e:
    raise ConversionError(str(e)) from None
  out = {}
  for k, v in state.items():
    if not hasattr(v, "detach"):
      raise _fail(path, f"key {k!r} holds a {type(v).__name__}, not a tensor")
    out[str(k)] = v.detach().cpu().numpy()
  return out


def _resolve_aliases(name: str, path: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(tensors)
  for alias, canonical in ALIASES.get(name, {}).items():
    if alias not in out:
      continue
    value = out.pop(alias)
    if canonical not in out:
      out[canonical] = value
    elif value.shape != out[canonical].shape or not np.array_equal(value, out[canonical]):
      raise _fail(path, f"key {alias!r} {_shape(value.shape)} should be the same tensor as "
                  f"{canonical!r} {_shape(out[canonical].shape)} but differs")
  return out


GRU_KEYS = (("weight_ih_l0", "i", "kernel"), ("weight_hh_l0", "h", "kernel"),
            ("bias_ih_l0", "i", "bias"), ("bias_hh_l0", "h", "bias"))


def _gru_tensors(path: str, t: dict[str, np.ndarray], targets: Mapping[tuple[str, ...], Any]
                 ) -> dict[tuple[str, str], tuple[str, np.ndarray]]:
  """``nn.GRU`` (one layer) -> ``{(gate module, param): (release key, array)}``."""
  unknown = sorted(set(t) - {k for k, _, _ in GRU_KEYS})
  if unknown:
    raise _fail(path, f"unknown key {unknown[0]!r} {_shape(t[unknown[0]].shape)} (a one-layer "
                "nn.GRU has weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0)")
  out = {}
  for key, side, param in GRU_KEYS:
    gate = targets.get(("params", "slot_gru", "gru", f"{side}r", param))
    want = (3 * gate.shape[-1],) + tuple(reversed(gate.shape[:-1])) if gate is not None else None
    if key not in t:
      raise _fail(path, f"missing key {key!r} (the model expects {_shape(want or ())})")
    a = t[key]
    if want is not None and tuple(a.shape) != want:
      raise _fail(path, f"key {key!r} has shape {_shape(a.shape)}, the model expects "
                  f"{_shape(want)} (gates r, z, n stacked)")
    for g, part in zip(GRU_GATES, np.split(a, 3, axis=0)):
      out[(f"{side}{g}", param)] = (f"{key}[{g}]", part.T if param == "kernel" else part)
  return out


def _first(t: dict[str, np.ndarray], path: str, key: str, ndim: int) -> tuple[int, ...]:
  if key not in t:
    raise _fail(path, f"missing key {key!r}")
  if t[key].ndim != ndim:
    raise _fail(path, f"key {key!r} has shape {_shape(t[key].shape)}, expected {ndim} axes")
  return tuple(int(d) for d in t[key].shape)


def sizes_from_release(files: Mapping[str, tuple[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
  """``config.model`` values fixed by the tensors' shapes."""
  p, t = files["map_net_final.pth"]
  hidden, feat = _first(t, p, "0.weight", 2)
  embed = _first(t, p, "2.weight", 2)[0]
  p, t = files["graph_net_final.pth"]
  _, heads, head_dim = _first(t, p, "node_conv.att_src", 3)
  edgeconv = _first(t, p, "edge_conv.nn.0.0.weight", 2)[0]
  p, t = files["unet_final.pth"]
  ngf = _first(t, p, "audionet_convlayer1.0.weight", 4)[0]
  out = {"node_feature_dim": feat, "node_hidden": hidden, "embed_dim": embed,
         "gat_heads": heads, "gat_head_dim": head_dim, "edgeconv_dim": edgeconv,
         "unet_width_mult": ngf / 64.0}
  for name in (DIRECTION[0], CLASSIFIER):
    if name in files:
      p, t = files[name]
      key = "feature_extraction.0.weight" if "feature_extraction.0.weight" in t else "conv1.weight"
      out["cls_width"] = _first(t, p, key, 4)[0]
  if CLASSIFIER in files:
    p, t = files[CLASSIFIER]
    out["num_classes"] = _first(t, p, "fc.weight", 2)[0]
  if DIRECTION[1] in files:
    p, t = files[DIRECTION[1]]
    out["num_direction_classes"] = _first(t, p, "3.weight", 2)[0]
  return out


def _authors_config(config, sizes: dict[str, Any], has_direction: bool, has_classifier: bool):
  from asmp_jax.models import authors  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  m = config.model
  with config.unlocked():
    for k, v in sizes.items():
      m[k] = v
    if "num_classes" not in sizes and not m.get("num_classes"):
      m.num_classes = DEFAULT_NUM_CLASSES
    if "num_direction_classes" not in sizes:
      m.num_direction_classes = DEFAULT_NUM_DIRECTIONS
    m.cls_blocks = (2, 2, 2, 2)   # ResNet-18
    m.graph_mode = authors.GRAPH_MODE
    m.sep_log_eps = authors.SEP_LOG_EPS
    m.unet_first_layer_norm = True
    m.unet_norm = "batch"
    m.unet_cond_scale = 1.0
    m.node_batch_norm = False
    m.dir_window_graphs = False
    m.compact_slots = True
    m.dtype = "float32"
    m.authors_direction = has_direction
    m.authors_classifier = has_classifier
  return config


def _abstract_variables(config) -> dict[str, Any]:
  from asmp_jax.models import asmp as asmp_model  # pylint: disable=g-import-not-at-top
  model = asmp_model.create_model(config.model)
  shapes = asmp_model.batch_shapes(config.model, 1, 3, 6, (128, 256))
  return jax.eval_shape(lambda: asmp_model.init_variables(model, jax.random.key(0), shapes))


def _flat(tree, prefix=()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out |= _flat(v, prefix + (k,))
    else:
      out[prefix + (k,)] = v
  return out


def _nest(flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, Any]:
  root: dict[str, Any] = {}
  for path, v in flat.items():
    node = root
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return root


def map_release(files: Mapping[str, tuple[str, dict[str, np.ndarray]]], abstract: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Release tensors -> ``{"params", "batch_stats"}`` of the abstract variables' shapes.

  Args:
    files: file name -> (path, tensors) for the files present (aliases not yet resolved).
    abstract: the model's abstract variables (shapes and dtypes).

  Returns:
    (variables as numpy arrays, a record ``{file: {key: "collection/path"}, "counters": ...}``).

  Raises:
    ConversionError: an unknown, missing or mis-shaped tensor (one line naming file and key).
  """
  targets = {(c,) + p: v for c in ("params", "batch_stats")
             for p, v in _flat(abstract.get(c, {})).items()}
  filled: dict[tuple[str, ...], np.ndarray] = {}
  owner: dict[tuple[str, ...], tuple[str, str]] = {}
  record: dict[str, Any] = {"counters": {}}

  def put(path, key, dest, value):
    want = targets.get(dest)
    if want is None:
      raise _fail(path, f"key {key!r} {_shape(value.shape)} has no place in the model "
                  f"({'/'.join(dest)})")
    if tuple(value.shape) != tuple(want.shape):
      raise _fail(path, f"key {key!r} has shape {_shape(value.shape)}, the model expects "
                  f"{_shape(want.shape)} ({'/'.join(dest)})")
    filled[dest] = np.ascontiguousarray(value, dtype=want.dtype)
    owner[dest] = (path, key)
    record.setdefault(os.path.basename(path), {})[key] = "/".join(dest)

  for name, (path, raw) in files.items():
    if name == "rnn_final.pth":
      for (module, param), (key, value) in _gru_tensors(path, raw, targets).items():
        put(path, key, ("params", "slot_gru", "gru", module, param), value)
      continue
    tensors = _resolve_aliases(name, path, raw)
    rules = rules_for(name)
    for key, value in tensors.items():
      if key.endswith("num_batches_tracked"):
        record["counters"][f"{name}:{key}"] = int(np.asarray(value).reshape(-1)[0])
        continue
      rule = rules.get(key)
      if rule is None:
        raise _fail(path, f"unknown key {key!r} {_shape(value.shape)}")
      dest = (rule.collection,) + rule.path
      want = targets.get(dest)
      if want is not None and tuple(value.shape) != rule.want(tuple(want.shape)):
        raise _fail(path, f"key {key!r} has shape {_shape(value.shape)}, the model expects "
                    f"{_shape(rule.want(tuple(want.shape)))} ({'/'.join(dest)})")
      put(path, key, dest, rule.transform(value))
    missing = sorted(k for k, r in rules.items() if k not in tensors
                     and (r.collection,) + r.path in targets)
    if missing:
      dest = (rules[missing[0]].collection,) + rules[missing[0]].path
      raise _fail(path, f"missing key {missing[0]!r} (the model expects "
                  f"{_shape(rules[missing[0]].want(tuple(targets[dest].shape)))})")
  left = sorted(set(targets) - set(filled))
  if left:
    raise ConversionError(f"no release tensor for {'/'.join(left[0])} "
                          f"{_shape(targets[left[0]].shape)} ({len(left)} model variables "
                          "unfilled)")
  nested = _nest(filled)
  return {"params": nested.get("params", {}), "batch_stats": nested.get("batch_stats", {})}, record


def _gather_files(checkpoint_dir: str) -> dict[str, str]:
  if not os.path.isdir(checkpoint_dir):
    raise _fail(checkpoint_dir, "checkpoint directory not found")
  missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(checkpoint_dir, f))]
  if missing:
    raise _fail(os.path.join(checkpoint_dir, missing[0]),
                f"file not found (separation needs {', '.join(REQUIRED)})")
  found = {f: os.path.join(checkpoint_dir, f) for f in (*REQUIRED, *DIRECTION, CLASSIFIER)
           if os.path.isfile(os.path.join(checkpoint_dir, f))}
  have = [f for f in DIRECTION if f in found]
  if len(have) == 1:
    other = DIRECTION[1 - DIRECTION.index(have[0])]
    raise _fail(os.path.join(checkpoint_dir, other),
                f"file not found (direction prediction needs it beside {have[0]})")
  return found


def _save_workdir(out: str, config, variables: dict[str, Any], record: dict[str, Any]) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".converting-", dir=parent)
  try:
    with open(os.path.join(tmp, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))
    with open(os.path.join(tmp, RELEASE_NOTE), "w") as f:
      json.dump(record, f, indent=2, sort_keys=True)
    state = {"step": np.asarray(0, np.int32), "params": variables["params"],
             "batch_stats": variables["batch_stats"]}
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(os.path.join(tmp, "checkpoints"), options=options) as mngr:
      mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
      mngr.wait_until_finished()
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def convert(checkpoint_dir: str, workdir: str, config_path: str = DEFAULT_CONFIG
            ) -> dict[str, Any]:
  """Converts the release in ``checkpoint_dir`` into a new ``workdir`` (module docstring).

  Returns:
    The record written to ``<workdir>/authors_release.json``.

  Raises:
    ConversionError: one line naming the file (and key) at fault; nothing is written.
  """
  from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
  if os.path.exists(workdir):
    raise _fail(workdir, "already exists; choose a new workdir")
  if not os.path.isfile(config_path):
    raise _fail(config_path, "config file not found")
  paths = _gather_files(checkpoint_dir)
  files = {name: (p, _read(p)) for name, p in paths.items()}
  sizes = sizes_from_release(files)
  config = _authors_config(config_lib.config_from_file(config_path), sizes,
                           has_direction=DIRECTION[0] in files,
                           has_classifier=CLASSIFIER in files)
  try:
    abstract = _abstract_variables(config)
  except ValueError as e:
    raise ConversionError(f"{checkpoint_dir}: the release's sizes {sizes} make no valid model "
                          f"({e})") from None
  variables, record = map_release(files, abstract)
  record["files"] = sorted(paths)
  _save_workdir(workdir, config, variables, record)
  return record


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Convert the ASMP authors' released PyTorch "
                                   "weights into a workdir (config + Orbax checkpoint).")
  parser.add_argument("--checkpoint_dir", required=True, help="folder of the *_final.pth files")
  parser.add_argument("--workdir", required=True, help="new workdir to write")
  parser.add_argument("--config", default=DEFAULT_CONFIG,
                      help="config the data/eval settings come from (default configs/asiw.py)")
  args = parser.parse_args(argv)
  try:
    record = convert(args.checkpoint_dir, args.workdir, args.config)
  except ConversionError as e:
    raise SystemExit(f"error: {e}") from None
  n = sum(len(v) for k, v in record.items() if k.endswith(".pth"))
  print(f"{args.workdir}: {n} tensors from {', '.join(record['files'])}")


if __name__ == "__main__":
  main()
