"""Tests for asmp_jax.losses against brute-force numpy references."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmp_jax import losses


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _brute_perm_min(logits, labels, valid):
  """Eq. 2 for one video: min over permutations of the valid slots only."""
  logp = _log_softmax(np.asarray(logits, np.float64))
  idx = [i for i in range(len(labels)) if valid[i]]
  best = np.inf
  for perm in itertools.permutations(idx):
    best = min(best, -sum(logp[i, labels[j]] for i, j in zip(idx, perm)))
  return best


def _rand_problem(rng, lead, s, c):
  logits = rng.normal(size=lead + (s, c)).astype(np.float32) * 2
  labels = rng.integers(0, c, size=lead + (s,)).astype(np.int32)
  return logits, labels


@pytest.mark.parametrize("s", [2, 3, 4])
def test_perm_min_ce_matches_brute_force_all_valid(s):
  rng = np.random.default_rng(s)
  logits, labels = _rand_problem(rng, (5, 2), s, 6)
  got = np.asarray(losses.permutation_min_cross_entropy(logits, labels))
  assert got.shape == (5, 2)
  want = np.array([[_brute_perm_min(logits[b, u], labels[b, u], [True] * s) for u in range(2)]
                   for b in range(5)])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_perm_min_ce_valid_mask_equals_eq2_over_valid_slots():
  rng = np.random.default_rng(7)
  logits, labels = _rand_problem(rng, (16,), 3, 5)
  valid = rng.random((16, 3)) < 0.6
  valid[:, 2] = True  # background slot always valid
  labels_garbage = np.where(valid, labels, -1)  # invalid labels may hold anything
  got = np.asarray(losses.permutation_min_cross_entropy(logits, labels_garbage, valid))
  want = np.array([_brute_perm_min(logits[b], labels[b], valid[b]) for b in range(16)])
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # [True, False, True] is eq. 2 with N_u + 1 = 2: exactly the two 2-permutations.
  v = np.array([True, False, True])
  lp = _log_softmax(logits[0].astype(np.float64))
  two = min(-(lp[0, labels[0, 0]] + lp[2, labels[0, 2]]),
            -(lp[0, labels[0, 2]] + lp[2, labels[0, 0]]))
  np.testing.assert_allclose(
      float(losses.permutation_min_cross_entropy(logits[0], labels[0], v)), two, rtol=1e-5)


def test_perm_min_ce_invariances():
  rng = np.random.default_rng(3)
  logits, labels = _rand_problem(rng, (8,), 4, 7)
  valid = np.array([True, False, True, True])
  base = np.asarray(losses.permutation_min_cross_entropy(logits, labels, valid))
  for perm in itertools.permutations(range(4)):
    p = list(perm)
    # Consistent permutation of slots (logits, labels and validity).
    got = losses.permutation_min_cross_entropy(logits[:, p], labels[:, p], valid[p])
    np.testing.assert_allclose(np.asarray(got), base, rtol=1e-5)
  # Labels alone, all slots valid: any permutation of the labels.
  base_all = np.asarray(losses.permutation_min_cross_entropy(logits, labels))
  for perm in itertools.permutations(range(4)):
    got = losses.permutation_min_cross_entropy(logits, labels[:, list(perm)])
    np.testing.assert_allclose(np.asarray(got), base_all, rtol=1e-5)
  # Labels alone among the valid slots only (slot 1 stays put).
  for perm in itertools.permutations([0, 2, 3]):
    p = [perm[0], 1, perm[1], perm[2]]
    got = losses.permutation_min_cross_entropy(logits, labels[:, p], valid)
    np.testing.assert_allclose(np.asarray(got), base, rtol=1e-5)
  # ...but not in general when a valid label is swapped with an invalid one.
  swapped = losses.permutation_min_cross_entropy(logits, labels[:, [1, 0, 2, 3]], valid)
  assert not np.allclose(np.asarray(swapped), base)


def test_permutation_match_assignment_attains_minimum_and_recovers_order():
  rng = np.random.default_rng(4)
  labels = np.array([[3, 1, 4], [0, 2, 2]], np.int32)
  true_perm = np.array([[2, 0, 1], [1, 2, 0]])  # prediction i shows label slot true_perm[i]
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  logits += 10 * np.eye(5, dtype=np.float32)[np.take_along_axis(labels, true_perm, -1)]
  cost, assign = losses.permutation_match(logits, labels)
  np.testing.assert_array_equal(np.asarray(assign), true_perm)
  assert np.all(np.asarray(cost) < 0.05)
  identity = np.asarray(losses.pairwise_cross_entropy(logits, labels)).diagonal(0, -2, -1).sum(-1)
  assert np.all(identity > 10)


def test_perm_min_ce_gradient_is_finite_and_flows_to_valid_slots_only():
  rng = np.random.default_rng(5)
  logits, labels = _rand_problem(rng, (3,), 3, 4)
  valid = np.array([True, False, True])
  g = jax.grad(lambda x: jnp.sum(losses.permutation_min_cross_entropy(x, labels, valid)))(
      jnp.asarray(logits))
  g = np.asarray(g)
  assert np.all(np.isfinite(g))
  assert np.all(g[:, 1] == 0)
  assert np.all(np.abs(g[:, [0, 2]]).sum(-1) > 0)


def test_consistency_loss_sums_videos_and_means_batch():
  rng = np.random.default_rng(6)
  logits, labels = _rand_problem(rng, (4, 2), 3, 5)
  mask = np.ones((4, 2, 3), bool)
  mask[:, 1, 1] = False
  loss, per_ex = losses.consistency_loss(logits, labels, mask)
  want = np.array([sum(_brute_perm_min(logits[b, u], labels[b, u], mask[b, u]) for u in range(2))
                   for b in range(4)])
  np.testing.assert_allclose(np.asarray(per_ex), want, rtol=1e-5)
  np.testing.assert_allclose(float(loss), want.mean(), rtol=1e-5)


def _dir_problem(seed, b=3, u=2, s=3, w=4, d=6):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, u, s, w, d)).astype(np.float32) * 2
  labels = rng.integers(0, d, size=(b, u, s, w)).astype(np.int32)
  source_mask = np.ones((b, u, s), bool)
  source_mask[0, 0, 1] = False
  source_mask[2, 1, 0] = False
  dir_valid = (rng.random((b, u, s, w)) < 0.8) & source_mask[..., None]
  return logits, labels, dir_valid, source_mask


def test_direction_loss_per_window_matches_brute_force():
  logits, labels, dir_valid, source_mask = _dir_problem(8)
  b, u, s, w, _ = logits.shape
  _, per_ex = losses.direction_loss(logits, labels, dir_valid, source_mask=source_mask)
  want = np.zeros(b)
  for bi, ui, wi in itertools.product(range(b), range(u), range(w)):
    lp = _log_softmax(logits[bi, ui, :, wi].astype(np.float64))
    idx = [i for i in range(s) if source_mask[bi, ui, i]]
    want[bi] += min(
        -sum(lp[i, labels[bi, ui, j, wi]] * dir_valid[bi, ui, j, wi] for i, j in zip(idx, p))
        for p in itertools.permutations(idx))
  np.testing.assert_allclose(np.asarray(per_ex), want, rtol=1e-5)
  # Without source_mask, dir_valid defines the permuted slots per window (eq. 3 literally).
  _, per_ex2 = losses.direction_loss(logits, labels, dir_valid)
  want2 = np.zeros(b)
  for bi, ui, wi in itertools.product(range(b), range(u), range(w)):
    want2[bi] += _brute_perm_min(logits[bi, ui, :, wi], labels[bi, ui, :, wi],
                                 dir_valid[bi, ui, :, wi])
  np.testing.assert_allclose(np.asarray(per_ex2), want2, rtol=1e-5)


def test_direction_loss_shared_permutation():
  logits, labels, dir_valid, _ = _dir_problem(9)
  assign = np.array([[[1, 0, 2], [0, 1, 2]]] * 3)
  _, per_ex = losses.direction_loss(logits, labels, dir_valid, share_permutation=True,
                                    assignment=assign)
  lp = _log_softmax(logits.astype(np.float64))
  want = np.zeros(3)
  for bi, ui, i, wi in itertools.product(range(3), range(2), range(3), range(4)):
    j = assign[bi, ui, i]
    if dir_valid[bi, ui, j, wi]:
      want[bi] -= lp[bi, ui, i, wi, labels[bi, ui, j, wi]]
  np.testing.assert_allclose(np.asarray(per_ex), want, rtol=1e-5)
  with pytest.raises(ValueError, match="assignment"):
    losses.direction_loss(logits, labels, dir_valid, share_permutation=True)


def test_orthogonality_loss():
  rng = np.random.default_rng(10)
  q, _ = np.linalg.qr(rng.normal(size=(8, 3)))
  emb = np.broadcast_to(q.T, (2, 2, 3, 8)).astype(np.float32)
  mask = np.ones((2, 2, 3), bool)
  loss, per_ex = losses.orthogonality_loss(emb, mask)
  assert float(loss) < 1e-10
  # Non-orthogonal: y1 = y0 in one video -> 2 * 1^2 (both orders), others unchanged.
  emb2 = emb.copy()
  emb2[1, 0, 1] = emb2[1, 0, 0]
  loss2, per_ex2 = losses.orthogonality_loss(emb2, mask)
  np.testing.assert_allclose(np.asarray(per_ex2), [0.0, 2.0], atol=1e-6)
  # The duplicated slot is ignored once it is invalid.
  mask[1, 0, 1] = False
  _, per_ex3 = losses.orthogonality_loss(emb2, mask)
  np.testing.assert_allclose(np.asarray(per_ex3), [0.0, 0.0], atol=1e-6)
  # Random unit vectors: positive, equals the brute-force sum.
  e = rng.normal(size=(1, 1, 3, 8))
  e /= np.linalg.norm(e, axis=-1, keepdims=True)
  want = sum((e[0, 0, i] @ e[0, 0, j]) ** 2 for i in range(3) for j in range(3) if i != j)
  _, pe = losses.orthogonality_loss(e.astype(np.float32), np.ones((1, 1, 3), bool))
  np.testing.assert_allclose(float(pe[0]), want, rtol=1e-5)
  assert want > 0


def test_cyclic_mask_loss_and_targets():
  rng = np.random.default_rng(11)
  mags = rng.random((2, 2, 8, 8)).astype(np.float32)
  ibm = np.asarray(losses.ibm_target(mags))
  np.testing.assert_array_equal(ibm[:, 0], (mags[:, 0] > mags[:, 1]).astype(np.float32))
  np.testing.assert_array_equal(ibm[:, 1], (mags[:, 1] > mags[:, 0]).astype(np.float32))
  # Masks that split each target over the valid slots -> zero loss, whatever the invalid slot.
  mask = np.array([[True, False, True], [True, True, True]])[None].repeat(2, 0)
  frac = rng.random((2, 2, 3, 8, 8)).astype(np.float32)
  masks = np.empty((2, 2, 3, 8, 8), np.float32)
  masks[:, 0, 0] = ibm[:, 0] * 0.3
  masks[:, 0, 2] = ibm[:, 0] * 0.7
  masks[:, 0, 1] = frac[:, 0, 1]  # invalid slot: ignored
  masks[:, 1] = ibm[:, 1, None] / 3
  loss, per_ex = losses.cyclic_mask_loss(masks, mask, ibm)
  assert float(loss) < 1e-6
  # Perturbing a valid slot by +0.25 everywhere costs mean |0.25| for that video.
  masks[0, 1, 0] += 0.25
  _, per_ex = losses.cyclic_mask_loss(masks, mask, ibm)
  np.testing.assert_allclose(np.asarray(per_ex), [0.25, 0.0], atol=1e-6)
  # Weighted: the weight multiplies the per-bin error before the mean.
  weight = np.full((2, 1, 8, 8), 2.0, np.float32)
  _, per_ex_w = losses.cyclic_mask_loss(masks, mask, ibm, weight)
  np.testing.assert_allclose(np.asarray(per_ex_w), [0.5, 0.0], atol=1e-6)
  # Ratio target and weight follow the public code.
  mix = mags.sum(1)
  rt = np.asarray(losses.ratio_target(mags, mix))
  np.testing.assert_allclose(rt, np.clip(mags / mix[:, None], 0, 5), rtol=1e-6)
  assert rt.max() <= 5.0
  np.testing.assert_allclose(np.asarray(losses.ratio_weight(mix))[:, 0],
                             np.clip(np.log1p(mix), 1e-3, 10), rtol=1e-6)


def _fake_outputs_and_batch(seed, perfect=False):
  rng = np.random.default_rng(seed)
  b, u, s, k, w, d, h = 2, 2, 3, 5, 6, 10, 16
  source_mask = np.ones((b, u, s), bool)
  source_mask[0, 1, 1] = False
  class_labels = rng.integers(0, k - 1, size=(b, u, s)).astype(np.int32)
  class_labels[..., -1] = k - 1
  dir_labels = rng.integers(0, d, size=(b, u, s, w)).astype(np.int32)
  dir_valid = source_mask[..., None] & (rng.random((b, u, s, w)) < 0.9)
  cons_logits = rng.normal(size=(b, u, s, k)).astype(np.float32)
  dir_logits = rng.normal(size=(b, u, s, w, d)).astype(np.float32)
  if perfect:  # predictions equal to labels in a permuted slot order
    perm = [2, 0, 1]
    cons_logits = 20 * np.eye(k, dtype=np.float32)[class_labels[:, :, perm]]
    dir_logits = 20 * np.eye(d, dtype=np.float32)[dir_labels[:, :, perm]]
    source_mask[:] = True
    dir_valid = np.ones_like(dir_valid)
  emb = rng.normal(size=(b, u, s, 8)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  outputs = {"embeddings": emb, "masks": rng.random((b, u, s, h, h)).astype(np.float32),
             "cons_logits": cons_logits, "dir_logits": dir_logits}
  mags = rng.random((b, u, h, h)).astype(np.float32)
  batch = {"class_labels": class_labels, "source_mask": source_mask, "dir_labels": dir_labels,
           "dir_valid": dir_valid, "video_mag_warped": mags,
           "mix_log_mag": np.log(mags.sum(1) + 1e-4)}
  return outputs, batch


LOSS_CFG = {"lambda_cons": 0.05, "lambda_cyc": 1.0, "lambda_ortho": 1.0, "lambda_dir": 0.05,
            "mask_target": "ibm", "mask_weight": "", "mask_loss": "l1",
            "share_direction_permutation": False}


@pytest.mark.parametrize("target", ["ibm", "ratio"])
def test_total_loss_combines_terms(target):
  outputs, batch = _fake_outputs_and_batch(12)
  cfg = dict(LOSS_CFG, mask_target=target)
  loss, m = jax.jit(lambda o, b: losses.total_loss(o, b, cfg))(outputs, batch)
  cons, _ = losses.consistency_loss(outputs["cons_logits"], batch["class_labels"],
                                    batch["source_mask"])
  dirl, _ = losses.direction_loss(outputs["dir_logits"], batch["dir_labels"], batch["dir_valid"],
                                  source_mask=batch["source_mask"])
  ortho, _ = losses.orthogonality_loss(outputs["embeddings"], batch["source_mask"])
  if target == "ibm":
    cyc, _ = losses.cyclic_mask_loss(outputs["masks"], batch["source_mask"],
                                     losses.ibm_target(batch["video_mag_warped"]))
  else:
    mix = np.exp(batch["mix_log_mag"])
    cyc, _ = losses.cyclic_mask_loss(outputs["masks"], batch["source_mask"],
                                     losses.ratio_target(batch["video_mag_warped"], mix),
                                     losses.ratio_weight(mix))
  for key, val in (("loss_cons", cons), ("loss_dir", dirl), ("loss_ortho", ortho),
                   ("loss_cyc", cyc)):
    np.testing.assert_allclose(float(m[key]), float(val), rtol=1e-5)
  want = 0.05 * cons + cyc + ortho + 0.05 * dirl
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  np.testing.assert_allclose(float(m["loss"]), float(want), rtol=1e-5)
  for key in ("acc_cons", "acc_dir", "acc_mask"):
    assert 0.0 <= float(m[key]) <= 1.0


@pytest.mark.parametrize("target,weight", [("ibm", "log1p"), ("ibm", "mag"), ("ratio", "none"),
                                           ("ratio", "mag")])
def test_total_loss_mask_weight(target, weight):
  outputs, batch = _fake_outputs_and_batch(15)
  _, m = losses.total_loss(outputs, batch, dict(LOSS_CFG, mask_target=target, mask_weight=weight))
  mix = np.exp(batch["mix_log_mag"]).astype(np.float64)
  mags = batch["video_mag_warped"].astype(np.float64)
  if target == "ibm":
    tgt = (mags > mags[:, ::-1]).astype(np.float64)          # U = 2: the other video is [::-1]
  else:
    tgt = np.clip(mags / np.maximum(mix, 1e-10)[:, None], 0, 5)
  w = {"none": np.ones_like(mix), "log1p": np.clip(np.log1p(mix), 1e-3, 10),
       "mag": mix / mix.mean(axis=(1, 2), keepdims=True)}[weight][:, None]
  summed = (outputs["masks"] * batch["source_mask"][..., None, None]).sum(2)
  want = (np.abs(summed - tgt) * w).mean(axis=(2, 3)).sum(1).mean()
  np.testing.assert_allclose(float(m["loss_cyc"]), want, rtol=1e-5)
  with pytest.raises(ValueError, match="mask_weight"):
    losses.total_loss(outputs, batch, dict(LOSS_CFG, mask_weight="energy"))


def test_total_loss_accuracies_are_permutation_matched():
  outputs, batch = _fake_outputs_and_batch(13, perfect=True)
  for share in (False, True):
    cfg = dict(LOSS_CFG, share_direction_permutation=share)
    _, m = losses.total_loss(outputs, batch, cfg)
    assert float(m["acc_cons"]) == 1.0
    assert float(m["acc_dir"]) == 1.0
    assert float(m["loss_cons"]) < 1e-3
    assert float(m["loss_dir"]) < 1e-3


def test_total_loss_config_errors():
  outputs, batch = _fake_outputs_and_batch(14)
  cfg = dict(LOSS_CFG)
  del cfg["lambda_dir"]
  with pytest.raises(ValueError, match="lambda_dir"):
    losses.total_loss(outputs, batch, cfg)
  with pytest.raises(ValueError, match="mask_target"):
    losses.total_loss(outputs, batch, dict(LOSS_CFG, mask_target="soft"))
  # Every key is required (base_config holds the defaults): a missing one is named.
  for key in ("mask_weight", "mask_loss", "share_direction_permutation"):
    with pytest.raises(ValueError, match=f"config.loss.{key} is missing"):
      losses.total_loss(outputs, batch, {k: v for k, v in LOSS_CFG.items() if k != key})


def _bce_reference(logits, source_mask, target, weight):
  """float64 numpy: BCE of the union 1 - prod(1 - sigmoid(z)) of the valid slots, per example."""
  sig = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  m = source_mask[..., None, None].astype(np.float64)
  p = 1.0 - np.prod(1.0 - sig * m, axis=2)
  bce = -(target * np.log(p) + (1.0 - target) * np.log1p(-p)) * weight
  return bce.mean(axis=(2, 3)).sum(1)


def test_cyclic_bce_loss_is_the_cross_entropy_of_the_slots_union():
  rng = np.random.default_rng(21)
  logits = rng.normal(0, 2, (2, 2, 3, 8, 8)).astype(np.float32)
  source_mask = np.array([[[True, False, True], [True, True, True]],
                          [[False, True, False], [True, False, False]]])
  target = (rng.random((2, 2, 8, 8)) > 0.5).astype(np.float32)
  weight = rng.random((2, 1, 8, 8)).astype(np.float32) + 0.5
  loss, per_ex = losses.cyclic_bce_loss(logits, source_mask, target, weight)
  want = _bce_reference(logits, source_mask, target, weight)
  np.testing.assert_allclose(np.asarray(per_ex), want, rtol=1e-5)
  np.testing.assert_allclose(float(loss), want.mean(), rtol=1e-5)
  # One valid slot: the usual sigmoid cross-entropy of that slot's logits.
  one = np.array([[[True, False, False]] * 2] * 2)
  _, per_ex = losses.cyclic_bce_loss(logits, one, target)
  z = logits[:, :, 0].astype(np.float64)
  ref = (np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))).mean(axis=(2, 3)).sum(1)
  np.testing.assert_allclose(np.asarray(per_ex), ref, rtol=1e-5)


def test_cyclic_bce_loss_keeps_the_gradient_of_saturated_wrong_bins():
  # Confidently wrong bins (|z| = 40, where a float32 sigmoid is exactly 0 or 1) keep a gradient
  # of about -+1 per bin, where the L1 of the sigmoid masks has none; the loss stays finite.
  z = np.array([40.0, -40.0, 40.0, -40.0], np.float32).reshape(1, 1, 1, 1, 4)
  target = np.array([0.0, 1.0, 1.0, 0.0], np.float32).reshape(1, 1, 1, 4)
  mask = np.ones((1, 1, 1), bool)
  bce = lambda x: losses.cyclic_bce_loss(x, mask, target)[0]
  l1 = lambda x: losses.cyclic_mask_loss(jax.nn.sigmoid(x), mask, target)[0]
  g = np.asarray(jax.grad(bce)(z)).ravel() * 4          # per bin, undoing the mean over 4 bins
  np.testing.assert_allclose(g, [1.0, -1.0, 0.0, 0.0], atol=1e-6)
  assert np.isfinite(float(bce(z)))
  np.testing.assert_allclose(float(bce(z)), 40.0 / 2, rtol=1e-3)   # two bins at 40 nats, mean
  assert np.abs(np.asarray(jax.grad(l1)(z))).max() < 1e-12


def test_total_loss_with_the_bce_mask_loss_and_its_refusals():
  outputs, batch = _fake_outputs_and_batch(16)
  rng = np.random.default_rng(16)
  logits = rng.normal(0, 1, outputs["masks"].shape).astype(np.float32)
  outputs = dict(outputs, mask_logits=logits, masks=np.asarray(jax.nn.sigmoid(logits)))
  cfg = dict(LOSS_CFG, mask_loss="bce", mask_weight="mag")
  _, m = losses.total_loss(outputs, batch, cfg)
  mags = batch["video_mag_warped"].astype(np.float64)
  mix = np.exp(batch["mix_log_mag"]).astype(np.float64)
  tgt = (mags > mags[:, ::-1]).astype(np.float64)
  w = (mix / mix.mean(axis=(1, 2), keepdims=True))[:, None]
  want = _bce_reference(logits, batch["source_mask"], tgt, w).mean()
  np.testing.assert_allclose(float(m["loss_cyc"]), want, rtol=1e-5)
  with pytest.raises(ValueError, match="mask_loss='bce' needs config.loss.mask_target='ibm'"):
    losses.total_loss(outputs, batch, dict(cfg, mask_target="ratio"))
  with pytest.raises(ValueError, match="mask logits"):
    losses.total_loss({k: v for k, v in outputs.items() if k != "mask_logits"}, batch, cfg)
  with pytest.raises(ValueError, match="config.loss.mask_loss must be one of"):
    losses.total_loss(outputs, batch, dict(cfg, mask_loss="l2"))
