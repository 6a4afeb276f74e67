"""The optimizer and its learning-rate schedule (paper: Adam, 1e-4, x0.1 every 15k steps)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax


def _staircase(t) -> optax.Schedule:
  """``learning_rate`` x ``lr_decay_factor`` every ``lr_decay_every`` steps (the paper's)."""
  return optax.exponential_decay(t.learning_rate, t.lr_decay_every, t.lr_decay_factor,
                                 staircase=True)


def _cosine(t) -> optax.Schedule:
  """Half a cosine from ``learning_rate`` at the end of the warm-up to
  ``learning_rate * lr_end_fraction`` at ``num_train_steps``, constant after it."""
  warmup = int(t.get("warmup_steps", 0))
  cosine = optax.cosine_decay_schedule(t.learning_rate, max(1, t.num_train_steps - warmup),
                                       alpha=float(t.get("lr_end_fraction", 0.0)))
  return lambda step: cosine(jnp.maximum(step - warmup, 0))


def _piecewise(t) -> optax.Schedule:
  """``lr_values[i]`` from step ``lr_boundaries[i-1]`` until ``lr_boundaries[i]``."""
  values, bounds = tuple(t.lr_values), tuple(t.lr_boundaries)
  if (len(values) != len(bounds) + 1 or any(int(b) != b or b <= 0 for b in bounds)
      or any(b <= a for a, b in zip(bounds, bounds[1:])) or any(not v >= 0 for v in values)):
    raise ValueError(
        f"config.train.lr_boundaries={bounds} and lr_values={values}: need increasing positive "
        "integer step boundaries, one value more than boundaries, and non-negative rates")
  values_np, bounds_np = np.asarray(values, np.float32), np.asarray(bounds, np.int32)

  def schedule(step):
    return jnp.asarray(values_np)[jnp.searchsorted(bounds_np, step, side="right")]
  return schedule


# config.train.lr_schedule -> the schedule it names (before the warm-up). A non-empty
# config.train.lr_values selects "piecewise" whatever lr_schedule says (configs/synthetic_wide.py).
SCHEDULES = {"staircase": _staircase, "cosine": _cosine, "piecewise": _piecewise}


def schedule_name(config_train) -> str:
  """Which entry of `SCHEDULES` the config selects; ValueError naming the key if none."""
  if tuple(config_train.get("lr_values", ())):
    return "piecewise"
  name = config_train.get("lr_schedule", "staircase")
  if name not in SCHEDULES:
    raise ValueError(f"config.train.lr_schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
  return name


def learning_rate_schedule(config_train) -> optax.Schedule:
  """The learning rate as a function of the step.

  The schedule `schedule_name` selects (paper: 1e-4, x0.1 every 15k steps), times a linear
  warm-up from 0 over the first ``warmup_steps`` steps when that is positive (the cosine starts
  decaying after it). Raises ValueError, naming the keys, on a malformed schedule.
  """
  base = SCHEDULES[schedule_name(config_train)](config_train)
  warmup = int(config_train.get("warmup_steps", 0))
  if warmup <= 0:
    return base

  def schedule(step):
    return jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / warmup) * base(step)
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
