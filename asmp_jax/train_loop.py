"""The training loop: steps, console and TensorBoard logs, periodic validation, checkpoints that
hold only states whose next step was finite, and the stop on SIGTERM (asmp_jax.stopping)."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from asmp_jax import input_pipeline
from asmp_jax import run_folder
from asmp_jax import stopping
from asmp_jax import summary


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite step)."""


def _global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  keys = history[0].keys()
  return {k: float(np.mean([float(h[k]) for h in history])) for k in keys}


class _DataPosition:
  """A data iterator's position captured at one step, saved later as grain saves an iterator."""

  def __init__(self, iterator):
    self._state = copy.deepcopy(iterator.get_state())

  def get_state(self) -> bytes:
    return json.dumps(self._state, indent=4).encode()


def train_loop(config, workdir, state, step_fn, p_eval, data, mngr, writer,
               batch_sharding) -> tuple[Any, bool]:
  """Runs ``step_fn`` (the compiled train step) from ``state.step`` to
  ``config.train.num_train_steps``: logs, periodic validation, checkpoints in ``mngr`` with the
  position of ``data`` (asmp_jax.train.Data). Returns (final state, whether SIGTERM stopped it).

  The step's ``finite`` flag is read one step late (dispatch stays asynchronous). A checkpoint
  due at step s is therefore written after step s + 1 has been seen finite, from a copy of the
  state and the data position of step s; the last step's (and a SIGTERM stop's) is written once
  that step itself is seen finite.
  """
  n_proc = jax.process_count()
  num_steps = config.train.num_train_steps
  step = start_step = int(state.step)
  logging.info("Training %s for %d steps (from step %d), global batch %d on %d devices "
               "(%d processes).", config.data.name, num_steps, start_step,
               config.train.batch_size, jax.device_count(), n_proc)
  copy_state = jax.jit(lambda s: jax.tree.map(jnp.copy, s))

  def save(at, st, position):
    mngr.save(at, args=ocp.args.Composite(state=ocp.args.StandardSave(st),
                                          data=grain.checkpoint.CheckpointSave(position)),
              force=True)
    mngr.wait_until_finished()
    logging.info("Saved checkpoint at step %d.", at)

  progress = summary.Progress(num_steps, start_step, config.train.batch_size)
  history: list[dict[str, Any]] = []
  pending = None  # metrics of the previous step, checked one step late to keep dispatch async
  held = None  # (step, state copy, data position) of a checkpoint waiting for the next step
  stopped = False
  record = (run_folder.workdir_path(workdir) / "examples_seen.jsonl"
            if config.train.record_examples and jax.process_index() == 0 else None)
  while step < num_steps:
    local = next(data.train_iter)
    if record is not None:
      with record.open("a") as f:
        f.write(json.dumps({"step": step + 1, "clip_index": local["clip_index"].tolist()}) + "\n")
    state, metrics = step_fn(state, _global_batch(local, batch_sharding))
    step += 1
    if pending is not None:
      _check_finite(pending, step - 1, workdir)
      history.append(pending)
    pending = metrics
    if step % config.train.log_every == 0 or step == num_steps:
      _check_finite(pending, step, workdir)
      history.append(pending)
      pending = None
      jax.block_until_ready(state.step)
      scalars = _mean_metrics(history)
      scalars.update(progress.rates(step))
      writer.scalars(step, {f"train/{k}": v for k, v in scalars.items()})
      logging.info("%s", progress.line(step, scalars, float(history[-1]["learning_rate"])))
      history = []
    if step % config.train.eval_every == 0 or step == num_steps:
      val = evaluate_validation(p_eval, state, data.val_src, data.pair_cfg, config,
                                batch_sharding)
      writer.scalars(step, {f"val/{k}": v for k, v in val.items()})
      logging.info("validation at step %d: %s", step,
                   "  ".join(f"{k} {v:.4f}" for k, v in sorted(val.items())))
    if held is not None:  # this step, from the held state, was finite: the held state is good
      _check_finite(metrics, step, workdir)
      save(*held)
      held = None
    stopped = stopping.requested(n_proc)
    if step == num_steps or stopped:
      _check_finite(metrics, step, workdir)
      save(step, state, data.train_iter)
    elif step % config.train.checkpoint_every == 0:
      held = (step, copy_state(state), _DataPosition(data.train_iter))
    if stopped:
      logging.warning("Stopped by SIGTERM at step %d after saving; rerun the same command to "
                      "resume.", step)
      break
  return state, stopped


def _check_finite(metrics, step, workdir):
  if float(metrics["finite"]) < 0.5:
    raise TrainingError(
        f"non-finite loss or state at step {step} (loss={float(metrics['loss'])}); the update "
        f"was not applied and no state from step {step - 1} on was saved: the latest checkpoint "
        f"in {workdir} is good. Lower config.train.learning_rate or check the input data.")


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
