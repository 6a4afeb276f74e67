"""A training run's folder: its files, its saved config and its checkpoints.

A run folder (``--workdir`` of launch.py) holds ``config.json`` (the run's settings),
``dataset_meta.json`` (class names, feature extractor... of the data set it was trained on) and
``checkpoints/<step>`` (Orbax: the train state and the data iterator's position). Training writes
it; evaluation and inference read it. This module imports neither TFDS, grain nor optax at import
time, so reading a run stays light.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import jax
import ml_collections
from etils import epath

from asmp_jax import config_lib

CONFIG_FILE = "config.json"
DATASET_META_FILE = "dataset_meta.json"
CHECKPOINTS = "checkpoints"


class RunFolderError(RuntimeError):
  """A run folder cannot be used as asked (incompatible config, no intact checkpoint...)."""


# ----------------------------------------------------------------------------- files


def workdir_path(workdir: str | os.PathLike[str]) -> epath.Path:
  """The workdir as a path object: local (made absolute) or remote (``gs://...``)."""
  if "://" in str(workdir):
    return epath.Path(workdir)
  return epath.Path(os.path.abspath(workdir))


def checkpoints_path(workdir: str | os.PathLike[str]) -> epath.Path:
  return workdir_path(workdir) / CHECKPOINTS


def write_text_atomic(path: epath.Path, text: str) -> None:
  """Writes ``text`` to a temporary name and renames it (local or remote paths)."""
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def write_new_record(path: epath.Path, text: str) -> epath.Path:
  """Writes ``text`` at ``path``, or, when a file is there already, beside it as
  ``<stem>.2<suffix>``, ``.3``... (nothing is overwritten); returns the path written."""
  target, n = path, 1
  while target.exists():
    n += 1
    target = path.parent / f"{path.stem}.{n}{path.suffix}"
  write_text_atomic(target, text)
  return target


def save_config(workdir: str, config) -> None:
  """Writes the run's config beside the checkpoints (read by inference and by resumes)."""
  if jax.process_index() == 0:
    write_text_atomic(workdir_path(workdir) / CONFIG_FILE, config.to_json(indent=2))


def save_dataset_meta(workdir: str, meta: dict[str, Any]) -> None:
  """Writes the data set's metadata beside the checkpoints (class names, feature extractor...),
  so that inference names classes without the data set."""
  if jax.process_index() == 0:
    keep = {k: v for k, v in meta.items() if k != "skipped"}
    write_text_atomic(workdir_path(workdir) / DATASET_META_FILE, json.dumps(keep, indent=2))


def with_defaults(saved) -> ml_collections.ConfigDict:
  """``saved`` with the keys it lacks (added to the code since it was written) at their
  ``config_lib.base_config()`` defaults, and without the keys the code has retired."""
  merged = json.loads(config_lib.base_config().to_json())

  def merge(into, new):
    for k, v in new.items():
      if isinstance(v, dict) and isinstance(into.get(k), dict):
        merge(into[k], v)
      else:
        into[k] = v
  merge(merged, saved.to_dict())
  return config_lib.drop_retired_keys(ml_collections.ConfigDict(merged))


def load_saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The run's config.json (None if there is none), with the keys added to the code since it was
  written at their defaults, so that evaluating or restoring an older run works."""
  path = workdir_path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  return with_defaults(ml_collections.ConfigDict(json.loads(path.read_text())))


def load_dataset_meta(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``<workdir>/dataset_meta.json`` (written by training), else the TFDS builder's metadata if
  the data set is on this machine, else {}."""
  path = workdir_path(workdir) / DATASET_META_FILE
  if path.exists():
    return json.loads(path.read_text())
  try:
    from asmp_jax import datasets  # pylint: disable=g-import-not-at-top  # TFDS only if needed
    builder = datasets.get_builder(config.data)
    if builder.is_prepared():
      return {k: v for k, v in datasets.metadata(builder).items() if k != "skipped"}
  except Exception as e:  # pylint: disable=broad-except  # any failure just means "not here"
    logging.info("No data set metadata from TFDS (%s).", e)
  return {}


# ----------------------------------------------------------------------------- saved vs current

# Config sections whose values decide the shapes or the meaning of the saved state.
_STATE_DEFINING = ("model", "graph.feature_extractor", "data.name", "train.weight_decay")
# Model settings that change only how the same parameters are used, not what is saved: a run
# may be resumed, or started with init_from, with them switched (reported by resume_changes).
# dtype: compute precision (params, optimizer state and batch stats stay float32).
# dir_window_graphs: which window's graph the direction head reads (same encoder and GRU), e.g.
# fine-tuning a trained separator's direction head on each window's own graph.
# kernels: which implementation of the same convolutions runs (models/layers.py).
_NOT_STATE_DEFINING = ("model.dtype", "model.dir_window_graphs", "model.kernels")
_SCHEDULE_KEYS = ("train.learning_rate", "train.lr_decay_every", "train.lr_decay_factor",
                  "train.lr_boundaries", "train.lr_values", "train.lr_schedule",
                  "train.lr_end_fraction", "train.warmup_steps")


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = tuple(v) if isinstance(v, list) else v
  return out


class _NotASetting:
  """Stands for the current value of a saved key this code no longer has."""

  def __repr__(self):
    return "<not a setting of this code>"


NOT_A_SETTING = _NotASetting()


def config_differences(saved, current) -> dict[str, tuple[Any, Any]]:
  """{flattened key: (saved value, current value)} for every setting that differs.

  A key the saved config lacks (written before the key existed) counts as holding its
  ``config_lib.base_config()`` default, which by convention keeps the behaviour from before the
  key: resuming such a run with the key at its default is no change. A saved key the current
  config lacks (removed from the code since) has ``NOT_A_SETTING`` as its current value.
  """
  saved_flat = _flatten(with_defaults(saved).to_dict())
  cur_flat = _flatten(json.loads(current.to_json()))
  return {key: (saved_flat.get(key), cur_flat.get(key, NOT_A_SETTING))
          for key in sorted(set(saved_flat) | set(cur_flat))
          if saved_flat.get(key) != cur_flat.get(key, NOT_A_SETTING)}


def _state_defining(key: str) -> bool:
  return key not in _NOT_STATE_DEFINING and any(key == p or key.startswith(p + ".")
                                                for p in _STATE_DEFINING)


def check_compatible(saved, current, source: str = "") -> None:
  """Refuses (RunFolderError) to resume a run whose model/data settings differ from the saved
  ones. ``source``, when given, is the run ``config.train.init_from`` names."""
  state_diffs = {key: ab for key, ab in config_differences(saved, current).items()
                 if _state_defining(key)}
  diffs = [f"{key}: checkpoint {a!r} vs now {b!r}" for key, (a, b) in state_diffs.items()]
  if diffs:
    where = (f"--config.train.init_from={source} names a run with an incompatible config"
             if source else "the workdir holds a checkpoint from an incompatible config; use "
             "another --workdir or the same settings")
    removed = any(b is NOT_A_SETTING for _, b in state_diffs.values())
    hint = ("\nA setting this code no longer has cannot be honoured; if the saved value is the "
            "behaviour the code now always has, delete the key from the run's config.json."
            if removed else "")
    raise RunFolderError(f"{where}. Differences:\n  " + "\n  ".join(diffs) + hint)


def resume_changes(saved, current, step: int,
                   schedule: Callable[[Any], Callable[[int], Any]]) -> list[str]:
  """The settings a resume at ``step`` changes, one line each ("key: saved -> now").

  Settings that decide the saved state's shapes or meaning are left to ``check_compatible``,
  which refuses them. The learning-rate schedule (``schedule(config.train)`` gives the rate at a
  step) is not part of the saved state but a function of the config, so when its settings change
  a last line gives the rate at ``step`` under the saved and the current schedule. A saved key
  this code no longer has is named as ignored.
  """
  changed = {k: v for k, v in config_differences(saved, current).items()
             if not _state_defining(k)}
  lines = [f"{key}: {a!r} (no longer a setting; ignored)" if b is NOT_A_SETTING
           else f"{key}: {a!r} -> {b!r}" for key, (a, b) in changed.items()]
  # A cosine schedule ends at num_train_steps, so a longer run changes its rate too.
  schedule_keys = set(_SCHEDULE_KEYS) | (
      {"train.num_train_steps"} if "cosine" in (saved.train.get("lr_schedule"),
                                                current.train.get("lr_schedule")) else set())
  if changed.keys() & schedule_keys:
    try:
      before = f"{float(schedule(with_defaults(saved).train)(step)):.3g}"
    except (TypeError, ValueError):  # a saved schedule setting this code cannot evaluate
      before = "unknown"
    now = float(schedule(current.train)(step))
    lines.append(f"learning rate at step {step}: {before} -> {now:.3g}")
  return lines


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_manager(workdir: str, config):
  """The run's checkpoint manager for training (writes ``checkpoints/<step>``)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoints_path(workdir), options=options)


def read_only_checkpoints(ckpt_dir, state_handler=None):
  """A read-only manager of a run's checkpoints directory (evaluation, inference, init_from).

  Both items a checkpoint holds are registered, the train state and the data iterator's
  position, so that reading the state alone does not make Orbax warn that the "data" item
  "could not be restored"; the options a read-only manager forces are set here for the same
  reason. ``state_handler`` reads the state (default: the StandardCheckpointHandler that wrote
  it; inference's partial restore passes a PyTreeCheckpointHandler).
  """
  import grain  # pylint: disable=g-import-not-at-top  # only when a run is read
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
  return ocp.CheckpointManager(ckpt_dir, options=options, item_handlers={
      "state": state_handler or ocp.StandardCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler()})


def latest_intact_step(mngr, restore: Callable[[int], Any], where: str) -> tuple[int, Any]:
  """(step, ``restore(step)``) of the newest checkpoint of ``mngr`` that restores.

  A checkpoint that fails to restore (corrupt or truncated files) is named in a warning and the
  one before it is tried. Raises RunFolderError, one line naming every checkpoint tried, when none
  restores.
  """
  failures = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      result = restore(step)
    except Exception as e:  # pylint: disable=broad-except  # any failure: try the previous one
      reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
      failures.append(f"{step} ({reason})")
      logging.warning("Checkpoint %s/%d cannot be restored (%s); trying the previous one.",
                      where, step, reason)
      continue
    if failures:
      logging.warning("Resuming from checkpoint %d, the newest intact one in %s (unreadable: "
                      "%s).", step, where, ", ".join(f.split(" ")[0] for f in failures))
    return step, result
  raise RunFolderError(f"no intact checkpoint in {where}: " + "; ".join(failures))


def check_init_source(source: str, config) -> tuple[ml_collections.ConfigDict, int]:
  """(saved config, latest step) of the run ``config.train.init_from`` names, once checked.

  Refuses (RunFolderError) a directory without config.json or checkpoints, a run whose settings
  that define the state differ from ``config`` (``check_compatible``), and one whose latest
  checkpoint is not before ``num_train_steps``. Called before the new workdir's config.json is
  written, so a refused start leaves no config behind to refuse the next attempt.
  """
  saved = load_saved_config(source)
  if saved is None:
    raise RunFolderError(f"--config.train.init_from={source}: no {CONFIG_FILE} there (expected "
                         "the workdir of a launch.py run)")
  check_compatible(saved, config, source=source)
  ckpt_dir = checkpoints_path(source)
  step = None
  if ckpt_dir.exists():
    src = read_only_checkpoints(ckpt_dir)
    step = src.latest_step()
    src.close()
  if step is None:
    raise RunFolderError(f"--config.train.init_from={source}: no checkpoint in {ckpt_dir}")
  if step >= config.train.num_train_steps:
    raise RunFolderError(f"--config.train.init_from={source}: its checkpoint is at step {step}, "
                         f"not before num_train_steps={config.train.num_train_steps}; raise "
                         "--config.train.num_train_steps")
  return saved, step
