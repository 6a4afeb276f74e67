"""Training and periodic evaluation of ASMP: explicit state, one jitted data-parallel step.

Structure (flax/examples style):
  * :class:`TrainState` holds step, params, BatchNorm statistics, optimizer state and the RNG key.
  * :func:`audio_inputs` turns waveform crops into the model's spectrogram inputs on the device.
  * :func:`train_step` / :func:`eval_step` are pure functions of (state, batch); they are jitted
    once with static shapes, the batch sharded over the ``data`` axis of a device mesh and the
    state replicated. Written for the global batch, XLA partitions them: gradients and BatchNorm
    statistics are reduced across devices, so 1 device and N devices compute the same update.
  * :func:`train_and_evaluate` runs the loop: data from grain, metrics to TensorBoard and the
    console, Orbax checkpoints of the train state *and* the data-iterator position, automatic
    resume from the latest checkpoint in the workdir, a clean stop on SIGTERM, and a refusal to
    continue on a non-finite loss (the last good checkpoint stays untouched).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from asmp_jax import audio as audio_lib
from asmp_jax import config_lib
from asmp_jax import datasets
from asmp_jax import input_pipeline
from asmp_jax import losses
from asmp_jax import schema
from asmp_jax import summary
from asmp_jax.models import asmp as asmp_model

CONFIG_FILE = "config.json"
DATASET_META_FILE = "dataset_meta.json"


class TrainingError(RuntimeError):
  """Training cannot go on (non-finite loss, incompatible checkpoint...)."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key data, so the state is a plain array pytree for Orbax


# ----------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config_train) -> optax.Schedule:
  """The learning rate as a function of the step.

  ``learning_rate`` x ``lr_decay_factor`` every ``lr_decay_every`` steps (paper: 1e-4, x0.1
  every 15k), or, when ``lr_values`` is set, the piecewise-constant rate it and
  ``lr_boundaries`` give (config_lib). Raises ValueError, naming the keys, on a malformed
  piecewise schedule.
  """
  values = tuple(config_train.get("lr_values", ()) or ())
  if not values:
    return optax.exponential_decay(config_train.learning_rate, config_train.lr_decay_every,
                                   config_train.lr_decay_factor, staircase=True)
  bounds = tuple(config_train.get("lr_boundaries", ()) or ())
  if (len(values) != len(bounds) + 1 or any(int(b) != b or b <= 0 for b in bounds)
      or any(b <= a for a, b in zip(bounds, bounds[1:])) or any(not v >= 0 for v in values)):
    raise ValueError(
        f"config.train.lr_boundaries={bounds} and lr_values={values}: need increasing positive "
        "integer step boundaries, one value more than boundaries, and non-negative rates")
  values_np, bounds_np = np.asarray(values, np.float32), np.asarray(bounds, np.int32)

  def schedule(step):
    return jnp.asarray(values_np)[jnp.searchsorted(bounds_np, step, side="right")]
  return schedule


def create_optimizer(config_train) -> optax.GradientTransformation:
  """Adam with L2 weight decay added to the gradient, as PyTorch's ``Adam(weight_decay=...)``

  that the paper used (not AdamW's decoupled decay).
  """
  return optax.chain(
      optax.add_decayed_weights(config_train.weight_decay),
      optax.scale_by_adam(b1=config_train.b1, b2=config_train.b2),
      optax.scale_by_learning_rate(learning_rate_schedule(config_train)),
  )


# ----------------------------------------------------------------------------- audio on device


def audio_inputs(batch: dict[str, jax.Array], normalise_mix: bool = False) -> dict[str, jax.Array]:
  """Spectrogram inputs and targets from waveform crops (runs inside the jitted step).

  Args:
    batch: needs ``audio [B, U, L]`` (gains already applied).
  Returns:
    ``mix_log_mag [B, 256, 256]`` (log of the warped mixture magnitude, the U-Net input) and
    ``video_mag_warped [B, U, 256, 256]`` (each video's warped magnitude, for the mask targets).
  """
  feats = audio_lib.mixture_features(batch["audio"], normalise_mix)
  return {k: feats[k] for k in ("mix_log_mag", "video_mag_warped")}


def _model_batch(batch, normalise_mix):
  out = dict(batch)
  out.update(audio_inputs(batch, normalise_mix))
  return out


# ----------------------------------------------------------------------------- steps


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """``new`` if the scalar ``finite`` holds, else ``old`` (pytrees of the same structure).

  One conditional rather than an elementwise ``jnp.where`` per leaf: with the select form,
  XLA:CPU repeats the scalar all-leaves-finite reduction inside every select fusion (86k extra
  `and` ops in the tiny train step), which doubles its compile time (bench/nan_guard_bench.py,
  docs/RESULTS.md "Compile time of the train step").
  """
  return jax.lax.cond(finite, lambda: new, lambda: old)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, config
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on a global batch. Non-finite loss or gradients leave the state as it
  was and report ``finite = 0`` (the host then stops training)."""
  mb = _model_batch(batch, config.data.normalise_mix)

  def loss_fn(params):
    outputs, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, mb,
                                    train=True, mutable=["batch_stats"])
    loss, metrics = losses.total_loss(outputs, mb, config.loss)
    return loss, (metrics, new_vars["batch_stats"])

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, rng=state.rng)
  new_state = keep_if_finite(finite, new_state, state)
  metrics = dict(metrics)
  metrics["loss"] = loss
  metrics["finite"] = finite.astype(jnp.float32)
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["learning_rate"] = learning_rate_schedule(config.train)(state.step)
  return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model, config
              ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Losses/accuracies and the model outputs on a batch, BatchNorm in inference mode."""
  mb = _model_batch(batch, config.data.normalise_mix)
  outputs = model.apply({"params": state.params, "batch_stats": state.batch_stats}, mb, train=False)
  loss, metrics = losses.total_loss(outputs, mb, config.loss)
  metrics = dict(metrics)
  metrics["loss"] = loss
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics), outputs


# ----------------------------------------------------------------------------- setup


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over every device of every process.

  Axis type Auto: the step is written for the global batch and jit propagates the input
  shardings (batch split on ``data``, state replicated), inserting the cross-device reductions.
  """
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def fill_data_dependent_config(config: ml_collections.ConfigDict, meta: dict[str, Any]) -> None:
  """Sets the sizes that come from the data set (feature size, number of classes)."""
  feat_dim = int(meta["feature_dim"])
  num_classes = len(meta["auditory_classes"]) + 1
  for key, value in (("node_feature_dim", feat_dim), ("num_classes", num_classes)):
    current = config.model[key]
    if current and current != value:
      raise ValueError(f"config.model.{key}={current} but the data set has {value}")
    config.model[key] = value
  extractor = meta.get("feature_extractor")
  if extractor and extractor != config.graph.feature_extractor:
    raise ValueError(f"config.graph.feature_extractor={config.graph.feature_extractor!r} but the "
                     f"data set was built with {extractor!r}")


def create_train_state(config, model, tx, example_batch, rng) -> TrainState:
  """Fresh state (params, BatchNorm statistics, optimizer state, RNG) for ``example_batch``."""
  init_rng, state_rng = jax.random.split(rng)
  mb = _model_batch(example_batch, config.data.normalise_mix)
  variables = asmp_model.init_variables(model, init_rng, mb)
  params = variables["params"]
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=jax.random.key_data(state_rng))


def abstract_state(config, model, tx, example_batch) -> TrainState:
  """Shapes/dtypes of the train state without allocating it (for restoring)."""
  return jax.eval_shape(lambda b: create_train_state(config, model, tx, b, jax.random.key(0)),
                        example_batch)


def zeros_batch(spec: dict[str, tuple[tuple[int, ...], Any]]) -> dict[str, np.ndarray]:
  return {k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}


def workdir_path(workdir: str) -> epath.Path:
  """The workdir as a path object: local (made absolute) or remote (``gs://...``)."""
  if "://" in str(workdir):
    return epath.Path(workdir)
  return epath.Path(os.path.abspath(workdir))


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(workdir_path(workdir) / "checkpoints", options=options)


def read_only_checkpoints(ckpt_dir, state_handler=None) -> ocp.CheckpointManager:
  """A read-only manager of a run's checkpoints directory (evaluation, inference, init_from).

  Both items a checkpoint holds are registered, the train state and the data iterator's
  position, so that reading the state alone does not make Orbax warn that the "data" item
  "could not be restored"; the options a read-only manager forces are set here for the same
  reason. ``state_handler`` reads the state (default: the StandardCheckpointHandler that wrote
  it; inference's partial restore passes a PyTreeCheckpointHandler).
  """
  options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
  return ocp.CheckpointManager(ckpt_dir, options=options, item_handlers={
      "state": state_handler or ocp.StandardCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler()})


def write_text_atomic(path: epath.Path, text: str) -> None:
  """Writes ``text`` to a temporary name and renames it (local or remote paths)."""
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def save_config(workdir: str, config) -> None:
  """Writes the run's config beside the checkpoints (read by inference and by resumes)."""
  if jax.process_index() == 0:
    write_text_atomic(workdir_path(workdir) / CONFIG_FILE, config.to_json(indent=2))


def save_dataset_meta(workdir: str, meta: dict[str, Any]) -> None:
  """Writes the data set's metadata beside the checkpoints (class names, feature extractor...).

  Inference (asmp_jax.inference) reads it to name classes without the data set.
  """
  if jax.process_index() == 0:
    keep = {k: v for k, v in meta.items() if k != "skipped"}
    write_text_atomic(workdir_path(workdir) / DATASET_META_FILE, json.dumps(keep, indent=2))


def load_saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The run's config.json (None if there is none), with the keys added to the code since it was
  written at their defaults, so that evaluating or restoring an older run works."""
  path = workdir_path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  return _with_defaults(ml_collections.ConfigDict(json.loads(path.read_text())))


# Config sections whose values decide the shapes or the meaning of the saved state.
_STATE_DEFINING = ("model", "graph.feature_extractor", "data.name", "train.weight_decay")
# Model settings that change only how the same parameters are used, not what is saved: a run
# may be resumed, or started with init_from, with them switched (reported by resume_changes).
# dtype: compute precision (params, optimizer state and batch stats stay float32).
# dir_window_graphs: which window's graph the direction head reads (same encoder and GRU), e.g.
# fine-tuning a trained separator's direction head on each window's own graph.
_NOT_STATE_DEFINING = ("model.dtype", "model.dir_window_graphs")


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = tuple(v) if isinstance(v, list) else v
  return out


def _with_defaults(saved) -> ml_collections.ConfigDict:
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


class _NotASetting:
  """Stands for the current value of a saved key this code no longer has."""

  def __repr__(self):
    return "<not a setting of this code>"


NOT_A_SETTING = _NotASetting()


def _config_differences(saved, current) -> dict[str, tuple[Any, Any]]:
  """{flattened key: (saved value, current value)} for every setting that differs.

  A key the saved config lacks (written before the key existed) counts as holding its
  ``config_lib.base_config()`` default, which by convention keeps the behaviour from before the
  key: resuming such a run with the key at its default is no change. A saved key the current
  config lacks (removed from the code since) has ``NOT_A_SETTING`` as its current value.
  """
  saved_flat = _flatten(_with_defaults(saved).to_dict())
  cur_flat = _flatten(json.loads(current.to_json()))
  return {key: (saved_flat.get(key), cur_flat.get(key, NOT_A_SETTING))
          for key in sorted(set(saved_flat) | set(cur_flat))
          if saved_flat.get(key) != cur_flat.get(key, NOT_A_SETTING)}


def _state_defining(key: str) -> bool:
  return key not in _NOT_STATE_DEFINING and any(key == p or key.startswith(p + ".")
                                                for p in _STATE_DEFINING)


def check_compatible(saved, current, source: str = "") -> None:
  """Refuses to resume a run whose model/data settings differ from the saved ones.

  ``source``, when given, is the run ``config.train.init_from`` names (the message then says so).
  """
  state_diffs = {key: ab for key, ab in _config_differences(saved, current).items()
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
    raise TrainingError(f"{where}. Differences:\n  " + "\n  ".join(diffs) + hint)


def resume_changes(saved, current, step: int) -> list[str]:
  """The settings a resume at ``step`` changes, one line each ("key: saved -> now").

  Settings that decide the saved state's shapes or meaning are left to ``check_compatible``,
  which refuses them. The learning-rate schedule is not part of the saved state but a function
  of the config, so when its settings change a last line gives the rate at ``step`` under the
  saved and the current schedule. A saved key this code no longer has is named as ignored.
  """
  changed = {k: v for k, v in _config_differences(saved, current).items()
             if not _state_defining(k)}
  lines = [f"{key}: {a!r} (no longer a setting; ignored)" if b is NOT_A_SETTING
           else f"{key}: {a!r} -> {b!r}" for key, (a, b) in changed.items()]
  if changed.keys() & {"train.learning_rate", "train.lr_decay_every", "train.lr_decay_factor",
                       "train.lr_boundaries", "train.lr_values"}:
    try:
      before = f"{float(learning_rate_schedule(_with_defaults(saved).train)(step)):.3g}"
    except (TypeError, ValueError):  # a saved schedule setting this code cannot evaluate
      before = "unknown"
    now = float(learning_rate_schedule(current.train)(step))
    lines.append(f"learning rate at step {step}: {before} -> {now:.3g}")
  return lines


def check_init_source(source: str, config) -> tuple[ml_collections.ConfigDict, int]:
  """(saved config, latest step) of the run ``config.train.init_from`` names, once checked.

  Refuses (TrainingError) a directory without config.json or checkpoints, a run whose settings
  that define the state differ from ``config`` (``check_compatible``), and one whose latest
  checkpoint is not before ``num_train_steps``. Called before the new workdir's config.json is
  written, so a refused start leaves no config behind to refuse the next attempt.
  """
  saved = load_saved_config(source)
  if saved is None:
    raise TrainingError(f"--config.train.init_from={source}: no {CONFIG_FILE} there (expected "
                        "the workdir of a launch.py run)")
  check_compatible(saved, config, source=source)
  ckpt_dir = workdir_path(source) / "checkpoints"
  step = None
  if ckpt_dir.exists():
    src = read_only_checkpoints(ckpt_dir)
    step = src.latest_step()
    src.close()
  if step is None:
    raise TrainingError(f"--config.train.init_from={source}: no checkpoint in {ckpt_dir}")
  if step >= config.train.num_train_steps:
    raise TrainingError(f"--config.train.init_from={source}: its checkpoint is at step {step}, "
                        f"not before num_train_steps={config.train.num_train_steps}; raise "
                        "--config.train.num_train_steps")
  return saved, step


def restore_init_state(source: str, step: int, saved, config, target) -> Any:
  """The train state of checkpoint ``step`` of the run in ``source`` (``config.train.init_from``).

  Model, BatchNorm statistics, optimizer state and step are restored (the learning-rate schedule
  continues from that step); the data-iterator position is not, so the new run may read another
  build of the data (more clips) from its start. The settings that differ from ``saved`` (the
  source's config) are logged as a resume logs them.
  """
  src = read_only_checkpoints(workdir_path(source) / "checkpoints")
  try:
    restored = src.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except (ValueError, KeyError) as e:
    raise TrainingError(f"checkpoint {step} in {source} does not match this config "
                        f"({type(e).__name__}: {e})") from e
  finally:
    src.close()
  changes = resume_changes(saved, config, step)
  logging.info("Initialised from the checkpoint of step %d in %s (model, optimizer state and "
               "step; the data iterator starts afresh).%s", step, source,
               "".join(f"\n  {line}" for line in changes))
  return restored["state"]


class _StopFlag:
  """Set by SIGTERM (preemption): the loop saves at the next step boundary and exits cleanly."""

  def __init__(self):
    self.requested = False

  def install(self):
    if threading_is_main():
      signal.signal(signal.SIGTERM, self._handler)

  def agreed(self, process_count: int) -> bool:
    """True on every process once any process got SIGTERM (so all save the same step)."""
    if process_count == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.any(flags))

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint at the next step boundary.")
    self.requested = True


def threading_is_main() -> bool:
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------- loop


def _global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  keys = history[0].keys()
  return {k: float(np.mean([float(h[k]) for h in history])) for k in keys}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint; evaluates periodically.

  Returns the final train state.
  """
  learning_rate_schedule(config.train)  # a malformed schedule is refused before any work
  workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  mesh = make_mesh()
  batch_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  n_proc, proc = jax.process_count(), jax.process_index()
  if config.train.batch_size % jax.device_count():
    raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by the "
                     f"{jax.device_count()} devices")
  local_batch = config.train.batch_size // n_proc

  # Data.
  builder = datasets.get_builder(config.data)
  if proc == 0:
    datasets.prepare(builder, config.data.manual_dir)
  if n_proc > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("dataset prepared")
    builder = datasets.get_builder(config.data)
  meta = datasets.metadata(builder)
  fill_data_dependent_config(config, meta)
  pair_cfg = input_pipeline.PairConfig.from_config(config)
  train_src = datasets.data_source(builder, "train")
  val_src = datasets.data_source(builder, "validation")
  train_ds = input_pipeline.batched(
      input_pipeline.pair_dataset(train_src, pair_cfg, seed=config.seed, train=True,
                                  process_index=proc, process_count=n_proc),
      local_batch, worker_count=config.data.worker_count,
      prefetch_buffer=config.data.prefetch_buffer)
  train_iter = iter(train_ds)

  # Model, optimizer, state.
  model = asmp_model.create_model(config.model)
  tx = create_optimizer(config.train)
  example = input_pipeline.make_pair([train_src[0], train_src[1 % len(train_src)]], None, pair_cfg)
  spec = {k: ((config.train.batch_size,) + np.shape(v), np.asarray(v).dtype)
          for k, v in example.items()}
  example_batch = zeros_batch(spec)
  abstract = abstract_state(config, model, tx, example_batch)
  state_shardings = jax.tree.map(lambda _: replicated, abstract)

  saved_config = load_saved_config(workdir)
  if saved_config is not None:
    check_compatible(saved_config, config)
  mngr = checkpoint_manager(workdir, config)
  latest = mngr.latest_step()
  init_source = None  # (saved config, step) of the run config.train.init_from names
  if latest is None and config.train.init_from:
    init_source = check_init_source(config.train.init_from, config)
  save_config(workdir, config)
  save_dataset_meta(workdir, meta)
  if latest is not None:
    logging.info("Resuming from the checkpoint of step %d in %s.", latest, workdir)
    changes = resume_changes(saved_config, config, latest) if saved_config is not None else []
    if changes:
      logging.warning("Resuming with settings changed since the checkpoint's run "
                      "(config.json now holds the new ones):\n  %s", "\n  ".join(changes))
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_shardings)
    try:
      restored = mngr.restore(latest, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          data=grain.checkpoint.CheckpointRestore(train_iter)))
    except (ValueError, KeyError) as e:
      raise TrainingError(f"checkpoint {latest} in {workdir} does not match this config "
                          f"({type(e).__name__}: {e})") from e
    state = restored["state"]
    if config.train.init_from:
      logging.info("The workdir has a checkpoint; --config.train.init_from=%s is not used.",
                   config.train.init_from)
  elif init_source is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_shardings)
    state = restore_init_state(config.train.init_from, init_source[1], init_source[0],
                               config, target)
  else:
    init = jax.jit(lambda b, r: create_train_state(config, model, tx, b, r),
                   out_shardings=state_shardings)
    state = init(jax.device_put(example_batch, batch_sharding), jax.random.key(config.seed))
  start_step = int(state.step)

  p_train = jax.jit(functools.partial(train_step, model=model, tx=tx, config=config),
                    in_shardings=(state_shardings, batch_sharding),
                    out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  p_eval = jax.jit(functools.partial(eval_step, model=model, config=config),
                   in_shardings=(state_shardings, batch_sharding))

  writer = summary.Writer(workdir, enabled=proc == 0)
  if latest is None:
    writer.hparams(config)
  stop = _StopFlag()
  stop.install()
  num_steps = config.train.num_train_steps
  logging.info("Training %s for %d steps (from step %d), global batch %d on %d devices "
               "(%d processes).", config.data.name, num_steps, start_step,
               config.train.batch_size, jax.device_count(), n_proc)

  def save(step):
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            data=grain.checkpoint.CheckpointSave(train_iter)),
              force=True)
    mngr.wait_until_finished()

  history: list[dict[str, Any]] = []
  t_last, steps_since = time.time(), 0
  pending = None  # metrics of the previous step, checked one step late to keep dispatch async
  step = start_step
  stopping = False
  record = (workdir_path(workdir) / "examples_seen.jsonl"
            if config.train.record_examples and proc == 0 else None)
  while step < num_steps:
    local = next(train_iter)
    if record is not None:
      with record.open("a") as f:
        f.write(json.dumps({"step": step + 1, "clip_index": local["clip_index"].tolist()}) + "\n")
    batch = _global_batch(local, batch_sharding)
    prev_state_step = step
    state, metrics = p_train(state, batch)
    step += 1
    steps_since += 1
    if pending is not None:
      _check_finite(pending, prev_state_step, workdir)
      history.append(pending)
    pending = metrics
    if step % config.train.log_every == 0 or step == num_steps:
      _check_finite(pending, step, workdir)
      history.append(pending)
      pending = None
      jax.block_until_ready(state.step)
      now = time.time()
      rate = steps_since / max(now - t_last, 1e-9)
      scalars = _mean_metrics(history)
      scalars["steps_per_sec"] = rate
      scalars["examples_per_sec"] = rate * config.train.batch_size
      writer.scalars(step, {f"train/{k}": v for k, v in scalars.items()})
      eta = (num_steps - step) / max(rate, 1e-9)
      logging.info("step %d/%d  loss %.4f  cyc %.4f  cons %.4f  dir %.4f  lr %.3g  %.2f steps/s"
                   "  ETA %s", step, num_steps, scalars["loss"], scalars.get("loss_cyc", np.nan),
                   scalars.get("loss_cons", np.nan), scalars.get("loss_dir", np.nan),
                   float(history[-1]["learning_rate"]), rate,
                   time.strftime("%H:%M:%S", time.gmtime(eta)))
      history, t_last, steps_since = [], now, 0
    if step % config.train.eval_every == 0 or step == num_steps:
      val = evaluate_validation(p_eval, state, val_src, pair_cfg, config, batch_sharding)
      writer.scalars(step, {f"val/{k}": v for k, v in val.items()})
      logging.info("validation at step %d: %s", step,
                   "  ".join(f"{k} {v:.4f}" for k, v in sorted(val.items())))
    stopping = stop.agreed(n_proc)
    if step % config.train.checkpoint_every == 0 or step == num_steps or stopping:
      if pending is not None:
        _check_finite(pending, step, workdir)
      save(step)
      logging.info("Saved checkpoint at step %d.", step)
    if stopping:
      logging.warning("Stopped by SIGTERM at step %d after saving; rerun the same command to "
                      "resume.", step)
      break
  if not stopping and config.eval.num_pairs > 0:
    from asmp_jax import evaluate  # pylint: disable=g-import-not-at-top
    test_src = datasets.data_source(builder, config.eval.split)
    evaluate.evaluate(state, model, config, test_src, config.eval.split, workdir,
                      train_labels=training_direction_labels(train_src, config), writer=writer,
                      step=int(state.step))
  writer.close()
  mngr.close()
  return state


def training_direction_labels(source, config) -> np.ndarray:
  """Every valid auditory-source window label of the training split (for the majority vote)."""
  key = schema.direction_key(config.model.num_direction_classes)
  labels = [np.asarray(source[i][key]).reshape(-1) for i in range(len(source))]
  labels = np.concatenate(labels)
  return labels[labels >= 0]


def _check_finite(metrics, step, workdir):
  if float(metrics["finite"]) < 0.5:
    raise TrainingError(
        f"non-finite loss or gradient at step {step} (loss={float(metrics['loss'])}); the update "
        f"was not applied and nothing was saved after the last good checkpoint in {workdir}. "
        "Lower config.train.learning_rate or check the input data.")


def evaluate_validation(p_eval, state, val_src, pair_cfg, config, batch_sharding
                        ) -> dict[str, float]:
  """Mean losses/accuracies over a fixed, seeded set of validation pairs."""
  bs = config.train.batch_size
  n_pairs = bs * max(1, config.eval.val_batches)
  ds = input_pipeline.pair_dataset(val_src, pair_cfg, seed=config.eval.seed, train=False,
                                   num_pairs=n_pairs, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  history = []
  for local in input_pipeline.batched(ds, bs // jax.process_count(), drop_remainder=True):
    metrics, _ = p_eval(state, _global_batch(local, batch_sharding))
    history.append(jax.device_get(metrics))
  if not history:
    raise ValueError(f"the validation split has too few clips for one batch of {bs} pairs")
  return _mean_metrics(history)
