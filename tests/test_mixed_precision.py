"""bfloat16 compute keeps float32 parameters, optimizer state and metrics."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import one_step  # noqa: E402

from asmp_jax import optimizer, train  # noqa: E402
from asmp_jax.models import asmp as asmp_model  # noqa: E402


@pytest.mark.slow
def test_bfloat16_step_keeps_float32_state_and_metrics():
  config = one_step.load_config()
  config.model.dtype = "bfloat16"
  model = asmp_model.create_model(config.model)
  tx = optimizer.create_optimizer(config.train)
  batch = one_step.fake_batch(2, config)
  state = train.create_train_state(config, model, tx, batch, jax.random.key(0))
  new_state, metrics = jax.jit(lambda s, b: train.train_step(s, b, model=model, tx=tx,
                                                             config=config))(state, batch)
  for leaf in jax.tree.leaves((new_state.params, new_state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  for k, v in metrics.items():
    assert v.dtype == jnp.float32, k
  assert float(metrics["finite"]) == 1.0 and np.isfinite(float(metrics["loss"]))
  # The update happened (bf16 gradients flow into float32 parameters).
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(new_state.params))]
  assert any(changed)
