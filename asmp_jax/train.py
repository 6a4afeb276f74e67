"""Training and periodic evaluation of ASMP: explicit state, one jitted data-parallel step.

Structure (flax/examples style):
  * :class:`TrainState` holds step, params, BatchNorm statistics and optimizer state.
  * :func:`audio_inputs` turns waveform crops into the model's spectrogram inputs on the device.
  * :func:`train_step` / :func:`eval_step` are pure functions of (state, batch); they are jitted
    once with static shapes, the batch sharded over the ``data`` axis of a device mesh and the
    state replicated. Written for the global batch, XLA partitions them: gradients and BatchNorm
    statistics are reduced across devices, so 1 device and N devices compute the same update.
  * :func:`train_and_evaluate` sets up the data (:func:`setup_data`), initialises or restores
    the state (:func:`init_or_restore`, run folder in asmp_jax.run_folder) and runs
    :func:`asmp_jax.train_loop.train_loop`: data from grain, metrics to TensorBoard and the
    console, Orbax checkpoints of the train state *and* the data-iterator position, automatic
    resume from the newest intact checkpoint in the workdir, a clean stop on SIGTERM at any
    stage (asmp_jax.stopping), and a refusal to continue on a non-finite step. A checkpoint
    holds only a state whose next step was finite (the last good checkpoint is good).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
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
from jax.sharding import NamedSharding, PartitionSpec as P

from asmp_jax import audio as audio_lib
from asmp_jax import config_lib
from asmp_jax import datasets
from asmp_jax import input_pipeline
from asmp_jax import losses
from asmp_jax import optimizer
from asmp_jax import run_folder
from asmp_jax import stopping
from asmp_jax import summary
from asmp_jax import train_loop
from asmp_jax.models import asmp as asmp_model
from asmp_jax.models import layers


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


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


def all_finite(tree: Any) -> jax.Array:
  """Whether every element of every leaf of ``tree`` is finite (a scalar bool)."""
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, config
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on a global batch. A non-finite loss or updated state (parameters,
  optimizer state, BatchNorm statistics; non-finite gradients reach the optimizer state) leaves
  the state as it was and reports ``finite = 0`` (the host then stops training)."""
  mb = _model_batch(batch, config.data.normalise_mix)

  def loss_fn(params):
    outputs, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, mb,
                                    train=True, mutable=["batch_stats"])
    loss, metrics = losses.total_loss(outputs, mb, config.loss)
    return loss, (metrics, new_vars["batch_stats"])

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & all_finite((params, opt_state, batch_stats))
  new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state)
  new_state = keep_if_finite(finite, new_state, state)
  metrics = dict(metrics)
  metrics["loss"] = loss
  metrics["finite"] = finite.astype(jnp.float32)
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["learning_rate"] = optimizer.learning_rate_schedule(config.train)(state.step)
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
  """Fresh state (params, BatchNorm statistics, optimizer state) for ``example_batch``."""
  mb = _model_batch(example_batch, config.data.normalise_mix)
  variables = asmp_model.init_variables(model, rng, mb)
  params = variables["params"]
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def abstract_state(config, model, tx, example_batch) -> TrainState:
  """Shapes/dtypes of the train state without allocating it (for restoring)."""
  return jax.eval_shape(lambda b: create_train_state(config, model, tx, b, jax.random.key(0)),
                        example_batch)


def zeros_batch(spec: dict[str, tuple[tuple[int, ...], Any]]) -> dict[str, np.ndarray]:
  return {k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}


@dataclasses.dataclass
class Data:
  """The data of a run: the built data set, its splits and the training iterator."""
  builder: Any
  meta: dict[str, Any]
  pair_cfg: input_pipeline.PairConfig
  train_src: Any
  val_src: Any
  train_iter: Any  # grain iterator over local batches; its position is checkpointed
  example_batch: dict[str, np.ndarray]  # zeros shaped as a global batch


def setup_data(config) -> Data:
  """Builds the data set if needed (process 0), fills the data-dependent config sizes and opens
  the training iterator."""
  stopping.stage("preparing the data set")
  n_proc, proc = jax.process_count(), jax.process_index()
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
  train_ds = input_pipeline.batched(
      input_pipeline.pair_dataset(train_src, pair_cfg, seed=config.seed, train=True,
                                  process_index=proc, process_count=n_proc),
      config.train.batch_size // n_proc, worker_count=config.data.worker_count,
      prefetch_buffer=config.data.prefetch_buffer)
  example = input_pipeline.make_pair([train_src[0], train_src[1 % len(train_src)]], None, pair_cfg)
  spec = {k: ((config.train.batch_size,) + np.shape(v), np.asarray(v).dtype)
          for k, v in example.items()}
  return Data(builder, meta, pair_cfg, train_src, datasets.data_source(builder, "validation"),
              iter(train_ds), zeros_batch(spec))


def _restore_target(abstract: TrainState, shardings, saved_tree) -> Any:
  """What to restore a checkpoint's state into: ``abstract`` placed on ``shardings``, as a dict
  holding also the RNG key that checkpoints written before it was dropped from the state have."""
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  if not (isinstance(saved_tree, dict) and "rng" in saved_tree):
    return target
  old = {f.name: getattr(target, f.name) for f in dataclasses.fields(TrainState)}
  rng = saved_tree["rng"]
  old["rng"] = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=shardings.step)
  return old


def restore_checkpoint(mngr, step: int, abstract: TrainState, shardings: TrainState,
                       data_iter=None) -> TrainState:
  """The train state of checkpoint ``step`` of ``mngr`` on ``shardings``, and the data position
  into ``data_iter`` when given (checkpoints from before the state lost its RNG key included)."""
  meta = mngr.item_metadata(step)
  tree = getattr(meta["state"], "tree", None) if meta and "state" in meta else None
  items = {"state": ocp.args.StandardRestore(_restore_target(abstract, shardings, tree))}
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  return _as_state(mngr.restore(step, args=ocp.args.Composite(**items))["state"])


def _as_state(restored: Any) -> TrainState:
  if isinstance(restored, TrainState):
    return restored
  return TrainState(**{f.name: restored[f.name] for f in dataclasses.fields(TrainState)})


def _move_aside(workdir: str, steps: list[int]) -> None:
  """Moves unreadable checkpoints out of ``checkpoints/`` into ``corrupt_checkpoints/`` (kept for
  inspection; the run then writes those steps afresh)."""
  if jax.process_index() != 0 or not steps:
    return
  aside = run_folder.workdir_path(workdir) / "corrupt_checkpoints"
  aside.mkdir(parents=True, exist_ok=True)
  for step in steps:
    (run_folder.checkpoints_path(workdir) / str(step)).rename(aside / f"{step}.{time.time():.0f}")
  logging.warning("Moved the unreadable checkpoints %s to %s.", steps, aside)


def init_or_restore(config, workdir: str, model, tx, data: Data, shardings: TrainState,
                    batch_sharding) -> tuple[TrainState, Any, bool]:
  """(state, checkpoint manager, resumed) for the run in ``workdir``.

  The newest intact checkpoint of the workdir is restored (train state and data position; an
  unreadable newer one is named and moved aside); else, with ``config.train.init_from``, the
  latest checkpoint of that run (train state only); else a fresh initialisation. ``config.json``
  and ``dataset_meta.json`` are written only once the state is there, so a failed start leaves
  the workdir as it was.
  """
  stopping.stage("restoring the latest checkpoint")
  abstract = abstract_state(config, model, tx, data.example_batch)
  saved_config = run_folder.load_saved_config(workdir)
  if saved_config is not None:
    run_folder.check_compatible(saved_config, config)
  mngr = run_folder.checkpoint_manager(workdir, config)
  resumed = bool(mngr.all_steps())
  if resumed:
    newest = mngr.latest_step()
    step, state = run_folder.latest_intact_step(
        mngr, lambda at: restore_checkpoint(mngr, at, abstract, shardings, data.train_iter),
        str(mngr.directory))
    _move_aside(workdir, [s for s in mngr.all_steps() if s > step])
    mngr.reload()
    logging.info("Resuming from the checkpoint of step %d in %s%s.", step, workdir,
                 "" if step == newest else f" (the newest, {newest}, is unreadable)")
    changes = (run_folder.resume_changes(saved_config, config, step,
                                         optimizer.learning_rate_schedule)
               if saved_config is not None else [])
    if changes:
      logging.warning("Resuming with settings changed since the checkpoint's run "
                      "(config.json now holds the new ones):\n  %s", "\n  ".join(changes))
    if config.train.init_from:
      logging.info("The workdir has a checkpoint; --config.train.init_from=%s is not used.",
                   config.train.init_from)
  elif config.train.init_from:
    source = config.train.init_from
    saved, step = run_folder.check_init_source(source, config)
    src = run_folder.read_only_checkpoints(run_folder.checkpoints_path(source))
    try:
      state = restore_checkpoint(src, step, abstract, shardings)
    except (ValueError, KeyError) as e:
      raise run_folder.RunFolderError(f"checkpoint {step} in {source} does not match this config "
                                      f"({type(e).__name__}: {e})") from e
    finally:
      src.close()
    changes = run_folder.resume_changes(saved, config, step, optimizer.learning_rate_schedule)
    logging.info("Initialised from the checkpoint of step %d in %s (model, optimizer state and "
                 "step; the data iterator starts afresh).%s", step, source,
                 "".join(f"\n  {line}" for line in changes))
  else:
    stopping.stage("initialising the model")
    init = jax.jit(lambda b, r: create_train_state(config, model, tx, b, r),
                   out_shardings=shardings)
    state = init(jax.device_put(data.example_batch, batch_sharding), jax.random.key(config.seed))
  run_folder.save_config(workdir, config)
  run_folder.save_dataset_meta(workdir, data.meta)
  return state, mngr, resumed


def compile_train_step(p_train, state: TrainState, data: Data, batch_sharding):
  """The train step compiled for ``state`` and the batch shapes, timed on the console."""
  stopping.stage("compiling the train step")
  logging.info("Compiling the train step...")
  t0 = time.time()
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
           for k, v in data.example_batch.items()}
  compiled = p_train.lower(state, batch).compile()
  logging.info("Compiled the train step in %.1f s.", time.time() - t0)
  return compiled


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       outcome: dict[str, Any] | None = None) -> TrainState | None:
  """Trains ``config`` in ``workdir``, resuming from its newest intact checkpoint; evaluates
  periodically and, at the end, on ``config.eval.split``.

  Args:
    config: the experiment config.
    workdir: the run folder.
    outcome: if given, filled with this invocation's wall seconds (``wall_s``: ``build``,
      ``train``, ``eval``), ``start_step``, ``steps``, ``stopped`` and the final evaluation's
      ``results`` (None without one), for asmp_jax.run_record.

  Returns the final train state, or None when SIGTERM stopped the run before its loop.
  """
  stopping.install()
  outcome = {} if outcome is None else outcome
  outcome.update(wall_s={}, start_step=0, steps=0, stopped=True, results=None)
  try:
    return _train_and_evaluate(config, workdir, outcome)
  except stopping.Stopped as stop:
    outcome.update(stopped=True, results=None)
    logging.warning("Stopped by SIGTERM while %s; nothing was lost: rerun the same command to "
                    "continue.", stop.args[0] if stop.args else "starting")
    return None
  finally:
    stopping.reset()


def _train_and_evaluate(config, workdir, outcome):
  wall, t0 = outcome["wall_s"], time.time()
  stopping.stage("checking the config")
  config_lib.validate(config)
  optimizer.learning_rate_schedule(config.train)  # a malformed schedule is refused here too
  if config.train.batch_size % jax.device_count():
    raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by the "
                     f"{jax.device_count()} devices")
  run_folder.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  mesh = make_mesh()
  batch_sharding = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  data = setup_data(config)
  wall["build"], t0 = time.time() - t0, time.time()
  model = asmp_model.create_model(config.model)
  logging.info("Convolution kernels: %s (config.model.kernels=%r, backend %s).",
               layers.resolve_kernels(config.model.kernels), config.model.kernels,
               jax.default_backend())
  tx = optimizer.create_optimizer(config.train)
  shardings = jax.tree.map(lambda _: replicated,
                           abstract_state(config, model, tx, data.example_batch))
  state, mngr, resumed = init_or_restore(config, workdir, model, tx, data, shardings,
                                         batch_sharding)
  p_train = jax.jit(functools.partial(train_step, model=model, tx=tx, config=config),
                    in_shardings=(shardings, batch_sharding),
                    out_shardings=(shardings, replicated), donate_argnums=(0,))
  p_eval = jax.jit(functools.partial(eval_step, model=model, config=config),
                   in_shardings=(shardings, batch_sharding))
  step_fn = compile_train_step(p_train, state, data, batch_sharding)
  writer = summary.Writer(workdir, enabled=jax.process_index() == 0)
  if not resumed:
    writer.hparams(config)
  stopping.defer()
  outcome["start_step"] = int(state.step)
  state, stopped = train_loop.train_loop(config, workdir, state, step_fn, p_eval, data, mngr,
                                         writer, batch_sharding)
  mngr.close()
  wall["train"], t0 = time.time() - t0, time.time()
  outcome.update(steps=int(state.step), stopped=bool(stopped))
  try:  # the writer is flushed also when SIGTERM stops the final evaluation
    if not stopped and config.eval.num_pairs > 0:
      stopping.undefer(f"evaluating the {config.eval.split} split (the final checkpoint is saved)")
      from asmp_jax import evaluate  # pylint: disable=g-import-not-at-top
      results = evaluate.evaluate(
          state, model, config, datasets.data_source(data.builder, config.eval.split),
          config.eval.split, workdir,
          train_labels=datasets.direction_labels(data.train_src, config.model),
          writer=writer, step=int(state.step))
      wall["eval"], outcome["results"] = time.time() - t0, results
      logging.info("Result at step %d: %s", int(state.step), summary.final_line(results))
  finally:
    writer.close()
  return state
