"""Restoring a trained ASMP's variables for inference, on one local device, from any training mesh."""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from asmp_jax import preprocess
from asmp_jax import run_folder
from asmp_jax.models import asmp as asmp_model


class InferenceError(ValueError):
  """Inference cannot run (missing checkpoint, mismatched config, bad argument...)."""


def _abstract_variables(model: asmp_model.ASMP, config) -> dict[str, Any]:
  n = preprocess.MAX_NODES
  shapes = asmp_model.batch_shapes(config.model, 1, n, n * (n - 1))
  return jax.eval_shape(lambda: asmp_model.init_variables(model, jax.random.key(0), shapes))


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in leaves}


def restore_variables(workdir: str, config: ml_collections.ConfigDict, step: int | None = None,
                      device: jax.Device | None = None) -> tuple[dict[str, Any], int]:
  """Restores ``params`` and ``batch_stats`` of a training checkpoint onto one local device.

  Only the ``state`` item is read, and of it only params and BatchNorm statistics (the optimizer
  state and the data-iterator position are skipped). The targets carry an explicit
  ``SingleDeviceSharding``, so a checkpoint written by any number of devices or hosts restores in
  a 1-device process.

  Returns:
    (``{"params", "batch_stats"}``, the restored step).

  Raises:
    InferenceError: no checkpoint, unknown step, or a checkpoint that does not match ``config``.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = run_folder.workdir_path(workdir) / "checkpoints"
  if not ckpt_dir.exists():
    raise InferenceError(f"{workdir}: no checkpoints directory (train with launch.py first)")
  mngr = run_folder.read_only_checkpoints(ckpt_dir, state_handler=ocp.PyTreeCheckpointHandler())
  try:
    steps = list(mngr.all_steps())
    if not steps:
      raise InferenceError(f"{ckpt_dir}: no checkpoint found")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise InferenceError(
          f"{ckpt_dir}: no checkpoint for step {step}; available: {sorted(steps)}")
    model = asmp_model.create_model(config.model)
    abstract = _abstract_variables(model, config)
    sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    target = {k: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                              abstract.get(k, {})) for k in ("params", "batch_stats")}
    # Shapes are compared on the checkpoint's metadata before any array is read: a mismatch is
    # named parameter by parameter, and no restore is started only to fail half way. (Without
    # metadata the restore below still refuses mismatched shapes, less legibly.)
    try:
      saved = getattr(mngr.item_metadata(step)["state"], "tree", None)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise InferenceError(f"{ckpt_dir}/{step}: unreadable checkpoint metadata "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
    if saved is not None:
      got = {jax.tree_util.keystr(p): tuple(m.shape) for p, m in
             jax.tree_util.tree_flatten_with_path({k: saved.get(k, {}) for k in target},
                                                  is_leaf=lambda x: hasattr(x, "shape"))[0]}
      diffs = [f"{k}: checkpoint {got.get(k)} vs config {v}"
               for k, v in _flat_shapes(target).items() if got.get(k) != v]
      if diffs:
        raise InferenceError(f"{ckpt_dir}/{step} does not match {run_folder.CONFIG_FILE} "
                             f"({len(diffs)} parameters differ): " + "; ".join(diffs[:3]))
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True)))["state"]
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise InferenceError(f"{ckpt_dir}/{step} does not match {run_folder.CONFIG_FILE} "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
  finally:
    mngr.close()
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}, step


def restore_run(workdir, step: int | None = None
                ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """``<workdir>/config.json`` and the latest (or ``step``) checkpoint's variables on the first
  local device (:func:`restore_variables`): ``(config, variables, step)``."""
  workdir = os.fspath(workdir)
  if not run_folder.workdir_path(workdir).exists():
    raise InferenceError(f"{workdir}: workdir not found")
  config = run_folder.load_saved_config(workdir)
  if config is None:
    raise InferenceError(f"{workdir}: no {run_folder.CONFIG_FILE} (not a training workdir)")
  try:
    asmp_model.spec_from_config(config.model)
  except ValueError as e:
    raise InferenceError(f"{workdir}/{run_folder.CONFIG_FILE}: {e}") from e
  variables, restored_step = restore_variables(workdir, config, step)
  return config, variables, restored_step
