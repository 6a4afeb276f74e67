"""Where each tensor of the ASMP authors' released state_dicts goes in `AuthorsASMP`'s variables.

Pure functions over numpy arrays (no file access; `asmp_jax.convert_authors` reads and writes):
`rules_for` gives, per release file, each key's destination (``params`` or ``batch_stats`` path)
and rearrangement (linear kernels transposed, convolution kernels to HWIO, transposed-convolution
kernels flipped to Flax's layout); `ALIASES` lists the tensors the release stores under two names
(checked equal, stored once); the GRU's stacked r, z, n gates are split into one Dense layer each;
`map_release` fills the model's abstract variables and refuses, in one line naming the file, the
key and both shapes, any unknown, missing or mis-shaped tensor.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

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
  d = "dir_classifier"
  return (_rules_linear("0.", (d, "fc1")) | _rules_bn("1.", (d, "bn1"))
          | _rules_linear("3.", (d, "fc2")) | _rules_bn("4.", (d, "bn2")))


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


def refuse(path: str, msg: str) -> ConversionError:
  """The error to raise: ``"<path>: <msg>"``."""
  return ConversionError(f"{path}: {msg}")


def shape_text(a) -> str:
  """``(2, 3)``: a shape as the error lines print it."""
  return "(" + ", ".join(str(int(d)) for d in a) + ")"


def _resolve_aliases(name: str, path: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(tensors)
  for alias, canonical in ALIASES.get(name, {}).items():
    if alias not in out:
      continue
    value = out.pop(alias)
    if canonical not in out:
      out[canonical] = value
    elif value.shape != out[canonical].shape or not np.array_equal(value, out[canonical]):
      raise refuse(path, f"key {alias!r} {shape_text(value.shape)} should be the same tensor as "
                  f"{canonical!r} {shape_text(out[canonical].shape)} but differs")
  return out


GRU_KEYS = (("weight_ih_l0", "i", "kernel"), ("weight_hh_l0", "h", "kernel"),
            ("bias_ih_l0", "i", "bias"), ("bias_hh_l0", "h", "bias"))


def _gru_tensors(path: str, t: dict[str, np.ndarray], targets: Mapping[tuple[str, ...], Any]
                 ) -> dict[tuple[str, str], tuple[str, np.ndarray]]:
  """``nn.GRU`` (one layer) -> ``{(gate module, param): (release key, array)}``."""
  unknown = sorted(set(t) - {k for k, _, _ in GRU_KEYS})
  if unknown:
    raise refuse(path, f"unknown key {unknown[0]!r} {shape_text(t[unknown[0]].shape)} (a one-layer "
                "nn.GRU has weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0)")
  out = {}
  for key, side, param in GRU_KEYS:
    gate = targets.get(("params", "slot_gru", "gru", f"{side}r", param))
    want = (3 * gate.shape[-1],) + tuple(reversed(gate.shape[:-1])) if gate is not None else None
    if key not in t:
      raise refuse(path, f"missing key {key!r} (the model expects {shape_text(want or ())})")
    a = t[key]
    if want is not None and tuple(a.shape) != want:
      raise refuse(path, f"key {key!r} has shape {shape_text(a.shape)}, the model expects "
                  f"{shape_text(want)} (gates r, z, n stacked)")
    for g, part in zip(GRU_GATES, np.split(a, 3, axis=0)):
      out[(f"{side}{g}", param)] = (f"{key}[{g}]", part.T if param == "kernel" else part)
  return out


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
      raise refuse(path, f"key {key!r} {shape_text(value.shape)} has no place in the model "
                  f"({'/'.join(dest)})")
    if tuple(value.shape) != tuple(want.shape):
      raise refuse(path, f"key {key!r} has shape {shape_text(value.shape)}, the model expects "
                  f"{shape_text(want.shape)} ({'/'.join(dest)})")
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
        raise refuse(path, f"unknown key {key!r} {shape_text(value.shape)}")
      dest = (rule.collection,) + rule.path
      want = targets.get(dest)
      if want is not None and tuple(value.shape) != rule.want(tuple(want.shape)):
        raise refuse(path, f"key {key!r} has shape {shape_text(value.shape)}, the model expects "
                    f"{shape_text(rule.want(tuple(want.shape)))} ({'/'.join(dest)})")
      put(path, key, dest, rule.transform(value))
    missing = sorted(k for k, r in rules.items() if k not in tensors
                     and (r.collection,) + r.path in targets)
    if missing:
      dest = (rules[missing[0]].collection,) + rules[missing[0]].path
      raise refuse(path, f"missing key {missing[0]!r} (the model expects "
                  f"{shape_text(rules[missing[0]].want(tuple(targets[dest].shape)))})")
  left = sorted(set(targets) - set(filled))
  if left:
    raise ConversionError(f"no release tensor for {'/'.join(left[0])} "
                          f"{shape_text(targets[left[0]].shape)} ({len(left)} model variables "
                          "unfilled)")
  nested = _nest(filled)
  return {"params": nested.get("params", {}), "batch_stats": nested.get("batch_stats", {})}, record
