"""Slot matching: the permutation of source slots that best pairs one set with another.

The model's source slots are not tied to particular sources (the GRU does not separate them in a
known order), so every comparison of slots with labels or detected sources goes through one
assignment problem: given ``cost[..., r, c]`` of pairing row ``r`` with column ``c`` (``S`` of
each), find the permutation ``sigma`` minimising ``sum_r cost[..., r, sigma(r)]`` over the rows
that count. The training losses (eq. 2 and 3, rows = predicted slots, columns = label slots), the
evaluation's slot-to-label assignment and its direction upper bound (rows = label slots, columns =
predicted slots) and inference's slot-to-source assignment all call `best_permutation`.

Permutations are enumerated (``S! <= 720``; at trace time under `jax.jit`), which is exact and,
for the handful of slots the model has, cheaper than the Hungarian algorithm. Functions take and
return NumPy arrays on NumPy input and JAX arrays on JAX input (traceable, differentiable
through the minimum).
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MAX_SLOTS = 6


def _xp(*arrays: Any) -> Any:
  """NumPy if every array given is a NumPy array (or None), else jax.numpy."""
  return np if all(a is None or isinstance(a, (np.ndarray, np.generic)) for a in arrays) else jnp


@lru_cache(maxsize=None)
def permutations(num_slots: int) -> np.ndarray:
  """All permutations of ``range(num_slots)`` in lexicographic order, int32 ``[S!, S]``."""
  if num_slots > MAX_SLOTS:
    raise ValueError(f"slot matching over S={num_slots} slots is limited to {MAX_SLOTS} "
                     f"({num_slots}! permutations)")
  return np.asarray(list(itertools.permutations(range(num_slots))), np.int32).reshape(
      -1, num_slots)


def pairwise_cross_entropy(logits: Any, labels: Any) -> Any:
  """``cost[..., i, j] = -log softmax(logits[..., i, :])[labels[..., j]]`` (float32 for JAX).

  Args:
    logits: ``[..., S, C]``.
    labels: ``[..., S]`` int (out-of-range values are clipped; mask them out with the matching's
      ``row_valid`` / ``col_weight``).

  Returns:
    ``[..., S, S]``: row ``i`` a prediction, column ``j`` a label.
  """
  xp = _xp(logits, labels)
  if xp is np:
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  else:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  s, c = labels.shape[-1], logits.shape[-1]
  lab = xp.clip(labels.astype(xp.int32), 0, c - 1)
  # idx[..., i, j] = labels[..., j]; gather along the class axis of row i.
  idx = xp.broadcast_to(lab[..., None, :], lab.shape[:-1] + (s, s))
  return -xp.take_along_axis(logp, idx, axis=-1)


def best_permutation(cost: Any, row_valid: Any = None, col_weight: Any = None,
                     admissible: bool = False) -> tuple[Any, Any]:
  """The permutation of minimum total cost over the rows that count.

  Args:
    cost: ``[..., S, S]``, ``cost[..., r, c]`` the cost of pairing row ``r`` with column ``c``.
    row_valid: ``[..., S]`` bool, the rows that count (None: all).
    col_weight: ``[..., S]`` weight of each column's cost (None: 1).
    admissible: consider only the permutations that pair valid rows with valid columns, for a
      validity shared by rows and columns (``row_valid[sigma(r)] == row_valid[r]``: the identity
      always qualifies); otherwise every permutation.

  Returns:
    ``(total [...], assignment [..., S])``: the minimum of
    ``sum_{r valid} col_weight[sigma(r)] * cost[r, sigma(r)]`` and the minimising
    ``assignment[..., r] = sigma(r)`` (ties: the first permutation in lexicographic order).
  """
  xp = _xp(cost, row_valid, col_weight)
  s = cost.shape[-1]
  if cost.shape[-2] != s:
    raise ValueError(f"slot matching needs a square cost [..., S, S], got {cost.shape}")
  perms = permutations(s)                                        # [P, S]
  rows = np.broadcast_to(np.arange(s, dtype=np.int32), perms.shape)
  matched = cost[..., rows, perms]                               # [..., P, S]
  if col_weight is not None:
    matched = matched * xp.broadcast_to(col_weight, cost.shape[:-1])[..., perms]
  if row_valid is None:
    total = xp.sum(matched, axis=-1)
  else:
    valid = xp.broadcast_to(row_valid.astype(bool), cost.shape[:-1])
    total = xp.sum(xp.where(valid[..., None, :], matched, 0), axis=-1)
    if admissible:
      ok = xp.all(valid[..., None, :] == valid[..., perms], axis=-1)       # [..., P]
      total = xp.where(ok, total, xp.inf)
  best = xp.argmin(total, axis=-1)
  return xp.min(total, axis=-1), xp.asarray(perms)[best]
