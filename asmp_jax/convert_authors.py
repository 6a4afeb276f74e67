"""Converts the ASMP authors' released PyTorch weights into a workdir of this project.

  python -m asmp_jax.convert_authors --checkpoint_dir=DIR --workdir=OUT [--config=configs/asiw.py]
      [--data_dir=TFDS_DIR]

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
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from asmp_jax.authors_keys import ConversionError, map_release, refuse, shape_text

__all__ = ["ConversionError", "convert", "main", "sizes_from_release"]

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


def _read(path: str) -> dict[str, np.ndarray]:
  """One release file as ``{key: float32/int numpy array}`` (weights only)."""
  from asmp_jax import safe_io  # pylint: disable=g-import-not-at-top
  try:
    state = safe_io.load_torch_state_dict(path)
  except FileNotFoundError:
    raise refuse(path, "file not found") from None
  except safe_io.SafeLoadError as e:
    raise ConversionError(str(e)) from None
  out = {}
  for k, v in state.items():
    if not hasattr(v, "detach"):
      raise refuse(path, f"key {k!r} holds a {type(v).__name__}, not a tensor")
    out[str(k)] = v.detach().cpu().numpy()
  return out


def _first(t: dict[str, np.ndarray], path: str, key: str, ndim: int) -> tuple[int, ...]:
  if key not in t:
    raise refuse(path, f"missing key {key!r}")
  if t[key].ndim != ndim:
    raise refuse(path, f"key {key!r} has shape {shape_text(t[key].shape)}, expected {ndim} axes")
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
    m.unet_conditioning = "bottleneck"
    m.unet_pool = 1
    m.cls_freq_pool = 1
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


def _gather_files(checkpoint_dir: str) -> dict[str, str]:
  if not os.path.isdir(checkpoint_dir):
    raise refuse(checkpoint_dir, "checkpoint directory not found")
  missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(checkpoint_dir, f))]
  if missing:
    raise refuse(os.path.join(checkpoint_dir, missing[0]),
                f"file not found (separation needs {', '.join(REQUIRED)})")
  found = {f: os.path.join(checkpoint_dir, f) for f in (*REQUIRED, *DIRECTION, CLASSIFIER)
           if os.path.isfile(os.path.join(checkpoint_dir, f))}
  have = [f for f in DIRECTION if f in found]
  if len(have) == 1:
    other = DIRECTION[1 - DIRECTION.index(have[0])]
    raise refuse(os.path.join(checkpoint_dir, other),
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


def convert(checkpoint_dir: str, workdir: str, config_path: str = DEFAULT_CONFIG,
            data_dir: str | None = None) -> dict[str, Any]:
  """Converts the release in ``checkpoint_dir`` into a new ``workdir`` (module docstring).

  ``data_dir`` (optional) is written as ``config.data.data_dir``: where evaluation finds the
  built data set.

  Returns:
    The record written to ``<workdir>/authors_release.json``.

  Raises:
    ConversionError: one line naming the file (and key) at fault; nothing is written.
  """
  from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
  if os.path.exists(workdir):
    raise refuse(workdir, "already exists; choose a new workdir")
  if not os.path.isfile(config_path):
    raise refuse(config_path, "config file not found")
  paths = _gather_files(checkpoint_dir)
  files = {name: (p, _read(p)) for name, p in paths.items()}
  sizes = sizes_from_release(files)
  config = _authors_config(config_lib.config_from_file(config_path), sizes,
                           has_direction=DIRECTION[0] in files,
                           has_classifier=CLASSIFIER in files)
  if data_dir:
    config.data.data_dir = data_dir
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
  parser.add_argument("--data_dir", default=None,
                      help="config.data.data_dir of the workdir (where the built data set is)")
  args = parser.parse_args(argv)
  try:
    record = convert(args.checkpoint_dir, args.workdir, args.config, args.data_dir)
  except ConversionError as e:
    raise SystemExit(f"error: {e}") from None
  n = sum(len(v) for k, v in record.items() if k.endswith(".pth"))
  print(f"{args.workdir}: {n} tensors from {', '.join(record['files'])}")


if __name__ == "__main__":
  main()
