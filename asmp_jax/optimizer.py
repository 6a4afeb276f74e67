"""The optimizer and its learning-rate schedule (paper: Adam, 1e-4, x0.1 every 15k steps)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax


def learning_rate_schedule(config_train) -> optax.Schedule:
  """The learning rate as a function of the step.

  ``learning_rate`` x ``lr_decay_factor`` every ``lr_decay_every`` steps (paper: 1e-4, x0.1
  every 15k), or, when ``lr_values`` is set, the piecewise-constant rate it and
  ``lr_boundaries`` give (config_lib). Raises ValueError, naming the keys, on a malformed
  piecewise schedule.
  """
  values = tuple(config_train.lr_values)
  if not values:
    return optax.exponential_decay(config_train.learning_rate, config_train.lr_decay_every,
                                   config_train.lr_decay_factor, staircase=True)
  bounds = tuple(config_train.lr_boundaries)
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
