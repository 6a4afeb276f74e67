"""Tests for asmp_jax.slot_matching and the matchings built on it (losses, evaluate, inference)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmp_jax import evaluate, inference, losses, slot_matching


def _brute_force(cost, row_valid=None, col_weight=None, admissible=False):
  """Every permutation tried in lexicographic order; the first strict minimum wins."""
  s = cost.shape[-1]
  valid = np.ones(s, bool) if row_valid is None else row_valid
  weight = np.ones(s) if col_weight is None else col_weight
  best, best_total = None, np.inf
  for perm in itertools.permutations(range(s)):
    if admissible and any(valid[r] != valid[c] for r, c in enumerate(perm)):
      continue
    total = sum(weight[c] * cost[r, c] for r, c in enumerate(perm) if valid[r])
    if total < best_total - 1e-9:
      best, best_total = perm, total
  return best_total, np.array(best)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_best_permutation_is_the_brute_force_minimum_on_numpy_and_jax(s):
  rng = np.random.default_rng(s)
  cost = rng.normal(size=(5, s, s))
  valid = rng.random((5, s)) < 0.7
  weight = rng.uniform(0.5, 2.0, size=(5, s))
  for kwargs in (dict(), dict(row_valid=valid), dict(row_valid=valid, admissible=True),
                 dict(row_valid=valid, col_weight=weight, admissible=True)):
    total, assign = slot_matching.best_permutation(cost, **kwargs)
    assert isinstance(total, np.ndarray) and isinstance(assign, np.ndarray)
    jtotal, jassign = slot_matching.best_permutation(
        jnp.asarray(cost, jnp.float32), **{k: v if isinstance(v, bool) else jnp.asarray(v)
                                           for k, v in kwargs.items()})
    assert isinstance(jassign, jax.Array)
    for b in range(5):
      want_total, want = _brute_force(cost[b], **{k: v if isinstance(v, bool) else v[b]
                                                  for k, v in kwargs.items()})
      np.testing.assert_allclose(total[b], want_total, rtol=1e-12)
      np.testing.assert_array_equal(assign[b], want)
      np.testing.assert_allclose(float(jtotal[b]), want_total, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(np.asarray(jassign[b]), want)


def test_ties_go_to_the_first_permutation_and_bad_sizes_are_refused():
  total, assign = slot_matching.best_permutation(np.zeros((3, 3)))
  assert total == 0 and assign.tolist() == [0, 1, 2]
  with pytest.raises(ValueError, match="square"):
    slot_matching.best_permutation(np.zeros((2, 3)))
  with pytest.raises(ValueError, match="limited to 6"):
    slot_matching.best_permutation(np.zeros((7, 7)))


def test_pairwise_cross_entropy_agrees_on_numpy_and_jax():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 3, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=(4, 3))
  got = slot_matching.pairwise_cross_entropy(logits, labels)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  for i, j in itertools.product(range(3), range(3)):
    np.testing.assert_allclose(got[:, i, j], -logp[np.arange(4), i, labels[:, j]], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(losses.pairwise_cross_entropy(logits, labels)), got,
                             rtol=1e-5, atol=1e-6)


def test_evaluation_matchings_equal_their_definitions():
  rng = np.random.default_rng(1)
  # match_slots: label slot j is served by slot sigma(j), over the valid label slots.
  cons = rng.normal(size=(6, 3, 4)).astype(np.float32)
  labels = np.stack([rng.permutation(4)[:3] for _ in range(6)])  # distinct: no tied matchings
  mask = rng.random((6, 3)) < 0.7
  got = evaluate.match_slots(cons, labels, mask)
  for b in range(6):
    ce = np.asarray(slot_matching.pairwise_cross_entropy(cons[b], labels[b]))   # [slot, label]
    np.testing.assert_array_equal(got[b], _brute_force(ce.T, mask[b])[1])
  # direction_any_order: the best permutation of slots per window, background label not counted.
  logits = rng.normal(size=(4, 3, 5, 6))
  dlab = rng.integers(0, 6, size=(4, 3, 5))
  dval = rng.random((4, 3, 5)) < 0.8
  pred = logits.argmax(-1)
  want = 0
  for b, w in itertools.product(range(4), range(5)):
    want += max(sum(int(pred[b, perm[j], w] == dlab[b, j, w] and dval[b, j, w]) for j in range(2))
                for perm in itertools.permutations(range(3)))
  assert evaluate.direction_any_order(logits, dlab, dval) == (want, int(dval[:, :2].sum()))


def test_inference_assigns_detected_sources_to_slots_by_lowest_cross_entropy():
  rng = np.random.default_rng(2)
  for n_known in (0, 1, 2, 3):
    probs = rng.dirichlet(np.ones(5), size=2)
    classes = np.full(3, -1)
    classes[:n_known] = rng.integers(0, 5, size=n_known)
    rng.shuffle(classes)
    got = inference._match_slots_to_sources(probs, classes)  # pylint: disable=protected-access
    known = np.flatnonzero(classes >= 0)[:2]
    best, best_cost = None, np.inf
    for perm in itertools.permutations(range(2), len(known)):
      cost = -sum(np.log(probs[slot, classes[src]]) for slot, src in zip(perm, known))
      if cost < best_cost:
        best, best_cost = perm, cost
    want = np.full(2, -1)
    for slot, src in zip(best or (), known):
      want[slot] = src
    np.testing.assert_array_equal(got, want)
