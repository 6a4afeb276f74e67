"""ASMP training losses (paper §3.4, eq. 1-4). Pure functions; per-example values, then the mean.

Shapes: ``B`` examples (mixtures), ``U`` videos per mixture, ``S`` source slots per video
(``S - 1`` auditory + background), ``K`` sound classes (background included), ``Wd`` direction
windows, ``D`` direction classes, ``H x W`` the (warped) spectrogram grid.

Permutation-invariant cross-entropy (eq. 2 and 3)
-------------------------------------------------
The GRU does not separate sources in a known order, so predictions are matched to labels by the
permutation of minimum summed cross-entropy. With a validity mask ``valid [..., S]`` (shared by the
predictions and the labels of a video: slot ``i`` is used iff ``valid[i]``):

* a permutation ``sigma`` of the ``S`` slots is *admissible* iff it maps valid slots to valid slots
  (``valid[sigma(i)] == valid[i]`` for all ``i``), i.e. valid predictions are matched only with
  valid labels and invalid slots only among themselves;
* its cost is ``sum_{i valid} w[sigma(i)] * CE(logits_i, labels_sigma(i))`` (invalid slots cost
  nothing; ``w`` is an optional per-label weight, 1 by default);
* the loss is the minimum cost over admissible permutations (the identity always is one).

Restricted to the valid slots this is exactly the minimum over ``S_{N_u + 1}`` of eq. 2, whatever
the positions of the ``N_u + 1`` valid slots (`asmp_jax.slot_matching`, which enumerates the
permutations at trace time, ``S! <= 720``). The gradient flows through the minimising permutation.

Direction loss (eq. 3): by default one permutation *per window* (as the paper writes it); the slots'
validity is ``source_mask`` and a window whose label is unknown (``dir_valid`` False for a valid
source) only drops that label's cross-entropy (weight 0), it does not change which slots permute.
``share_permutation=True`` instead reuses, for every window, the assignment that minimised the
consistency loss (one identity per source for the whole clip; the per-window minimum lets the
direction head swap identities between windows).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from asmp_jax import slot_matching

Array = jax.Array

MASK_TARGETS = ("ibm", "ratio")
# Weight of each time-frequency bin in L_cyc: "" = the target's own (ibm: none, as the paper;
# ratio: log1p, as the public code), "none", "log1p" (``clip(log1p(X_mix), 1e-3, 10)``, the public
# code's and Sound of Pixels' weight) or "mag" (``X_mix`` over its mean per example: the L1 of the
# masked magnitudes, which is what SDR scores). `mask_weight_map` computes them.
MASK_WEIGHTS = ("", "none", "log1p", "mag")
# How L_cyc compares a video's slot masks with its ideal binary mask: "l1" (the paper's L1 of the
# masks' sum) or "bce" (`cyclic_bce_loss`, binary cross-entropy of their union, from the logits).
MASK_LOSSES = ("l1", "bce")


def pairwise_cross_entropy(logits: Array, labels: Array) -> Array:
  """``cost[..., i, j] = -log softmax(logits[..., i, :])[labels[..., j]]``, ``[..., S, S]`` float32
  (`asmp_jax.slot_matching.pairwise_cross_entropy` on JAX arrays)."""
  return slot_matching.pairwise_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))


def permutation_match(logits: Array, labels: Array, valid: Array | None = None,
                      label_weight: Array | None = None) -> tuple[Array, Array]:
  """Minimum-cost matching of prediction slots to label slots (module docstring).

  Args:
    logits: ``[..., S, C]``.
    labels: ``[..., S]`` int.
    valid: ``[..., S]`` bool or None (all valid).
    label_weight: ``[..., S]`` float/bool weight of each label's cross-entropy, or None (1).

  Returns:
    ``(cost [...], assignment [..., S])``: the minimum summed cross-entropy and, for each
    prediction slot ``i``, the label slot ``assignment[..., i] = sigma(i)`` it was matched with.
  """
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels shape {labels.shape} must equal logits.shape[:-1] "
                     f"{logits.shape[:-1]}")
  cost = pairwise_cross_entropy(logits, labels)                # [..., S, S]
  valid = jnp.ones(labels.shape, bool) if valid is None else jnp.asarray(valid)
  weight = None if label_weight is None else jnp.asarray(label_weight).astype(jnp.float32)
  return slot_matching.best_permutation(cost, valid, weight, admissible=True)


def permutation_min_cross_entropy(logits: Array, labels: Array,
                                  valid: Array | None = None) -> Array:
  """Minimum over permutations of the S label slots of the summed cross-entropy.

  Args:
    logits: ``[..., S, C]`` unnormalised scores.
    labels: ``[..., S]`` int class indices.
    valid: optional ``[..., S]`` bool; invalid slots contribute nothing and are matched only
      among themselves (module docstring), which equals eq. 2 over the valid slots.

  Returns:
    ``[...]`` float32.
  """
  return permutation_match(logits, labels, valid)[0]


def _mean(per_example: Array) -> Array:
  return jnp.mean(per_example)


def consistency_loss(cons_logits: Array, class_labels: Array,
                     source_mask: Array) -> tuple[Array, Array]:
  """Eq. 2: per video the permutation-minimum CE over its valid slots, summed over videos.

  Args:
    cons_logits: ``[B, U, S, K]``.
    class_labels: ``[B, U, S]`` int.
    source_mask: ``[B, U, S]`` bool.

  Returns:
    ``(loss, per_example [B])`` with ``loss = mean(per_example)``.
  """
  cost, _ = permutation_match(cons_logits, class_labels, source_mask)
  per_example = jnp.sum(cost, axis=-1)
  return _mean(per_example), per_example


def direction_loss(dir_logits: Array, dir_labels: Array, dir_valid: Array, *,
                   source_mask: Array | None = None, share_permutation: bool = False,
                   assignment: Array | None = None) -> tuple[Array, Array]:
  """Eq. 3: per window the permutation-minimum CE, summed over windows and videos.

  Args:
    dir_logits: ``[B, U, S, Wd, D]``.
    dir_labels: ``[B, U, S, Wd]`` int.
    dir_valid: ``[B, U, S, Wd]`` bool: the label of that slot and window is known.
    source_mask: ``[B, U, S]`` bool. When given, it defines which slots permute and ``dir_valid``
      only weights labels; when None, ``dir_valid`` of each window defines both.
    share_permutation: use ``assignment`` (``[B, U, S]``, prediction slot -> label slot, e.g. the
      consistency assignment) for every window instead of a per-window minimum.
    assignment: required when ``share_permutation``.

  Returns:
    ``(loss, per_example [B])``.
  """
  if dir_logits.shape[:-1] != dir_labels.shape or dir_labels.shape != dir_valid.shape:
    raise ValueError(f"direction_loss: dir_logits {dir_logits.shape} must be labels "
                     f"{dir_labels.shape} + [D] and dir_valid {dir_valid.shape} like the labels")
  if share_permutation:
    if assignment is None:
      raise ValueError("direction_loss: share_permutation=True needs `assignment` [B, U, S]")
    idx = assignment[..., None].astype(jnp.int32)
    lab = jnp.take_along_axis(dir_labels, idx, axis=2)        # label of the matched slot
    val = jnp.take_along_axis(dir_valid, idx, axis=2)
    logp = jax.nn.log_softmax(dir_logits.astype(jnp.float32), axis=-1)
    d = dir_logits.shape[-1]
    ce = -jnp.take_along_axis(logp, jnp.clip(lab, 0, d - 1)[..., None].astype(jnp.int32),
                              axis=-1)[..., 0]
    per_example = jnp.sum(jnp.where(val, ce, 0.0), axis=(1, 2, 3))
    return _mean(per_example), per_example
  cost, _ = _direction_per_window(dir_logits, dir_labels, dir_valid, source_mask)
  per_example = jnp.sum(cost, axis=(1, 2))
  return _mean(per_example), per_example


def _direction_per_window(dir_logits: Array, dir_labels: Array, dir_valid: Array,
                          source_mask: Array | None) -> tuple[Array, Array]:
  """Per-window matching: ``(cost [B, U, Wd], assignment [B, U, Wd, S])``."""
  logits = jnp.moveaxis(dir_logits, 3, 2)                      # [B, U, Wd, S, D]
  labels = jnp.moveaxis(dir_labels, 3, 2)                      # [B, U, Wd, S]
  lvalid = jnp.moveaxis(dir_valid, 3, 2)
  if source_mask is None:
    return permutation_match(logits, labels, lvalid)
  slots = jnp.broadcast_to(source_mask[:, :, None, :], labels.shape)
  return permutation_match(logits, labels, slots, label_weight=lvalid & slots)


def cyclic_mask_loss(masks: Array, source_mask: Array, target: Array,
                     weight: Array | None = None) -> tuple[Array, Array]:
  """L_cyc: mean (optionally weighted) L1 between the sum of a video's valid masks and its target.

  Args:
    masks: ``[B, U, S, H, W]`` in [0, 1].
    source_mask: ``[B, U, S]`` bool (invalid slots are left out of the sum).
    target: ``[B, U, H, W]`` (`ibm_target` or `ratio_target`).
    weight: optional, broadcastable to ``[B, U, H, W]`` (e.g. `ratio_weight` ``[B, 1, H, W]``).

  Returns:
    ``(loss, per_example [B])``: per video ``mean_{H,W}(weight * |sum_i M_i - target|)``, summed
    over the videos of an example.
  """
  m = source_mask.astype(masks.dtype)[..., None, None]
  return _per_video_mean(jnp.abs(jnp.sum(masks * m, axis=2) - target), weight)


def cyclic_bce_loss(mask_logits: Array, source_mask: Array, target: Array,
                    weight: Array | None = None) -> tuple[Array, Array]:
  """L_cyc as binary cross-entropy: a video's valid slot masks against its ideal binary mask.

  A video's mask is the union of its slots' masks, ``p = 1 - prod_i (1 - M_i)`` (for one valid
  slot, ``p = M``), computed from the logits in log space: ``log(1 - p) = -sum_i softplus(z_i)``
  and ``log p = log(-expm1(log(1 - p)))``. Unlike the L1 of sigmoid masks, whose gradient in the
  logits vanishes as a wrong bin saturates, a wrong bin's gradient here is ``p - target``.

  Args:
    mask_logits: ``[B, U, S, H, W]``, the masks before their sigmoid.
    source_mask: ``[B, U, S]`` bool (invalid slots are left out of the union).
    target: ``[B, U, H, W]`` in [0, 1] (`ibm_target`).
    weight: optional, broadcastable to ``[B, U, H, W]``.

  Returns:
    ``(loss, per_example [B])``: per video ``mean_{H,W}(weight * bce)``, summed over the videos.
  """
  m = source_mask.astype(jnp.float32)[..., None, None]
  log_not_p = -jnp.sum(jax.nn.softplus(mask_logits.astype(jnp.float32)) * m, axis=2)
  # Clamped only where every valid logit is below about -69 (float32 softplus near underflow).
  log_p = jnp.log(-jnp.expm1(jnp.minimum(log_not_p, -1e-30)))
  return _per_video_mean(-(target * log_p + (1.0 - target) * log_not_p), weight)


def _per_video_mean(per_bin: Array, weight: Array | None) -> tuple[Array, Array]:
  """``(loss, per_example [B])`` from per-bin losses ``[B, U, H, W]``: each video's (weighted) mean
  over its bins, summed over the videos of an example; the loss is the mean over examples."""
  if weight is not None:
    per_bin = per_bin * weight
  per_example = jnp.sum(jnp.mean(per_bin, axis=(-2, -1)), axis=-1)
  return _mean(per_example), per_example


def ibm_target(video_mags: Array) -> Array:
  """Ideal binary mask of each video in the mixture (paper): ``1[X_u > max_{v != u} X_v]``.

  Args:
    video_mags: ``[B, U, H, W]`` linear magnitudes (warped domain). For U = 2 this is the
      paper's ``1[X_u > X_{-u}]``.

  Returns:
    ``[B, U, H, W]`` float32 in {0, 1}.
  """
  x = video_mags.astype(jnp.float32)
  u = x.shape[1]
  others = jnp.where(jnp.eye(u, dtype=bool)[None, :, :, None, None], -jnp.inf,
                     x[:, None, :, :, :])                      # [B, U(self), U(other), H, W]
  return (x > jnp.max(others, axis=2)).astype(jnp.float32)


def ratio_target(video_mags: Array, mix_mag: Array) -> Array:
  """Ratio mask of the public code: ``clip(X_u / X_mix, 0, 5)``.

  Args:
    video_mags: ``[B, U, H, W]``; mix_mag: ``[B, H, W]`` linear magnitudes (warped domain).

  Returns:
    ``[B, U, H, W]`` float32.
  """
  mix = jnp.maximum(mix_mag.astype(jnp.float32), 1e-10)[:, None]
  return jnp.clip(video_mags.astype(jnp.float32) / mix, 0.0, 5.0)


def ratio_weight(mix_mag: Array) -> Array:
  """Public-code L1 weight for the ratio target: ``clip(log1p(X_mix), 1e-3, 10)``, ``[B, 1, H, W]``.
  """
  return jnp.clip(jnp.log1p(mix_mag.astype(jnp.float32)), 1e-3, 10.0)[:, None]


def magnitude_weight(mix_mag: Array) -> Array:
  """``X_mix / mean(X_mix)`` per example, ``[B, 1, H, W]``: weights bins by their magnitude.

  With it the L1 of the masks is (up to the per-example scale) the L1 of the masked magnitudes
  ``|sum_i M_i X_mix - T X_mix|``, so the few loud bins that carry the signal dominate, not the
  many near-silent bins whose ideal binary mask is set by noise.
  """
  m = mix_mag.astype(jnp.float32)
  return (m / jnp.maximum(jnp.mean(m, axis=(-2, -1), keepdims=True), 1e-10))[:, None]


def mask_weight_map(weight_kind: str, mix_mag: Array) -> Array | None:
  """The per-bin weight of L_cyc named by ``weight_kind`` (a resolved `MASK_WEIGHTS` entry other
  than ""), ``[B, 1, H, W]``, or None for "none"."""
  return {"none": lambda m: None, "log1p": ratio_weight,
          "mag": magnitude_weight}[weight_kind](mix_mag)


def orthogonality_loss(embeddings: Array, source_mask: Array) -> tuple[Array, Array]:
  """Eq. 1: ``sum_{i != j, both valid} (y_i . y_j)^2`` per video, summed over videos.

  Args:
    embeddings: ``[B, U, S, E]`` (unit-normalised by the model).
    source_mask: ``[B, U, S]`` bool.

  Returns:
    ``(loss, per_example [B])``.
  """
  e = embeddings.astype(jnp.float32)
  gram = jnp.einsum("buie,buje->buij", e, e)
  v = source_mask.astype(bool)
  s = v.shape[-1]
  pair = v[..., :, None] & v[..., None, :] & ~jnp.eye(s, dtype=bool)
  per_example = jnp.sum(jnp.where(pair, jnp.square(gram), 0.0), axis=(1, 2, 3))
  return _mean(per_example), per_example


def _cfg(loss_config: Any, key: str) -> Any:
  """``loss_config[key]`` for a mapping or ConfigDict; a clear error naming a missing key."""
  try:
    return loss_config[key]
  except (KeyError, AttributeError, TypeError):
    raise ValueError(f"config.loss.{key} is missing") from None


def mask_settings(loss_config: Any) -> tuple[str, str, str]:
  """``(mask_target, mask_weight, mask_loss)`` of ``loss_config``, the weight's "" resolved to the
  target's own; a ValueError naming the key for a value outside its registry or a BCE on a
  target that is not binary."""
  target = _cfg(loss_config, "mask_target")
  if target not in MASK_TARGETS:
    raise ValueError(f"config.loss.mask_target must be one of {MASK_TARGETS}, got {target!r}")
  weight = _cfg(loss_config, "mask_weight")
  if weight not in MASK_WEIGHTS:
    raise ValueError(f"config.loss.mask_weight must be one of {MASK_WEIGHTS}, got {weight!r}")
  mask_loss = _cfg(loss_config, "mask_loss")
  if mask_loss not in MASK_LOSSES:
    raise ValueError(f"config.loss.mask_loss must be one of {MASK_LOSSES}, got {mask_loss!r}")
  if mask_loss == "bce" and target != "ibm":
    raise ValueError("config.loss.mask_loss='bce' needs config.loss.mask_target='ibm' (a binary "
                     f"target), got {target!r}")
  return target, weight or ("none" if target == "ibm" else "log1p"), mask_loss


def _matched_accuracy(logits: Array, labels: Array, assignment: Array,
                      valid: Array) -> tuple[Array, Array]:
  """Correct and counted predictions after matching: returns ``(num_correct, num_valid)``."""
  lab = jnp.take_along_axis(labels, assignment, axis=-1)
  val = jnp.take_along_axis(valid, assignment, axis=-1)
  correct = (jnp.argmax(logits, axis=-1) == lab) & val
  return jnp.sum(correct), jnp.sum(val)


def total_loss(outputs: Mapping[str, Array], batch: Mapping[str, Array],
               loss_config: Any) -> tuple[Array, dict[str, Array]]:
  """Eq. 4: ``lambda_cons L_cons + lambda_cyc L_cyc + lambda_ortho L_ortho + lambda_dir L_dir``.

  Args:
    outputs: the model's outputs (``embeddings``, ``masks``, ``cons_logits``, ``dir_logits``).
    batch: ``class_labels [B, U, S]``, ``source_mask [B, U, S]``, ``dir_labels`` and
      ``dir_valid [B, U, S, Wd]``, ``video_mag_warped [B, U, H, W]`` (linear, warped domain),
      ``mix_log_mag [B, H, W]``.
    loss_config: ``lambda_cons``, ``lambda_cyc``, ``lambda_ortho``, ``lambda_dir``,
      ``mask_target`` ("ibm" | "ratio"), ``mask_weight``, ``mask_loss`` ("l1" | "bce", which
      reads ``outputs["mask_logits"]``), ``share_direction_permutation``
      (every key required: `asmp_jax.config_lib.base_config` holds their defaults).

  Returns:
    ``(loss, metrics)``; metrics (float32 scalars): ``loss``, ``loss_cons``, ``loss_cyc``,
    ``loss_ortho``, ``loss_dir`` (unweighted means over the batch), ``acc_cons`` and ``acc_dir``
    (accuracy of the permutation-matched predictions over valid slots / windows), ``acc_mask``
    (fraction of bins where ``sum_i M_i > 0.5`` agrees with the ideal binary mask).
  """
  lam = {k: float(_cfg(loss_config, f"lambda_{k}")) for k in ("cons", "cyc", "ortho", "dir")}
  target_kind, weight_kind, mask_loss = mask_settings(loss_config)
  share = bool(_cfg(loss_config, "share_direction_permutation"))
  if mask_loss == "bce" and "mask_logits" not in outputs:
    raise ValueError("config.loss.mask_loss='bce' needs the model's mask logits; this model "
                     f"(outputs {sorted(outputs)}) gives only its masks: use mask_loss='l1'")

  source_mask = batch["source_mask"].astype(bool)
  cons_logits = outputs["cons_logits"].astype(jnp.float32)
  cons_cost, cons_assign = permutation_match(cons_logits, batch["class_labels"], source_mask)
  cons_per_ex = jnp.sum(cons_cost, axis=-1)

  dir_logits = outputs["dir_logits"].astype(jnp.float32)
  dir_valid = batch["dir_valid"].astype(bool) & source_mask[..., None]
  if share:
    _, dir_per_ex = direction_loss(dir_logits, batch["dir_labels"], dir_valid,
                                   share_permutation=True, assignment=cons_assign)
    dir_assign = jnp.broadcast_to(cons_assign[:, :, None, :],
                                  dir_logits.shape[:2] + (dir_logits.shape[3],)
                                  + cons_assign.shape[-1:])
  else:
    dir_cost, dir_assign = _direction_per_window(dir_logits, batch["dir_labels"], dir_valid,
                                                 source_mask)
    dir_per_ex = jnp.sum(dir_cost, axis=(1, 2))

  video_mags = batch["video_mag_warped"]
  ibm = ibm_target(video_mags)
  masks = outputs["masks"].astype(jnp.float32)
  mix_mag = jnp.exp(batch["mix_log_mag"].astype(jnp.float32))
  target = ibm if target_kind == "ibm" else ratio_target(video_mags, mix_mag)
  weight = mask_weight_map(weight_kind, mix_mag)
  if mask_loss == "bce":
    _, cyc_per_ex = cyclic_bce_loss(outputs["mask_logits"], source_mask, target, weight)
  else:
    _, cyc_per_ex = cyclic_mask_loss(masks, source_mask, target, weight)
  _, ortho_per_ex = orthogonality_loss(outputs["embeddings"], source_mask)

  terms = {"cons": jnp.mean(cons_per_ex), "cyc": jnp.mean(cyc_per_ex),
           "ortho": jnp.mean(ortho_per_ex), "dir": jnp.mean(dir_per_ex)}
  loss = sum(lam[k] * terms[k] for k in terms)

  # Accuracies of the matched predictions (no gradient).
  c_ok, c_n = _matched_accuracy(cons_logits, batch["class_labels"], cons_assign, source_mask)
  d_ok, d_n = _matched_accuracy(jnp.moveaxis(dir_logits, 3, 2),
                                jnp.moveaxis(batch["dir_labels"], 3, 2), dir_assign,
                                jnp.moveaxis(dir_valid, 3, 2))
  summed = jnp.sum(masks * source_mask[..., None, None].astype(jnp.float32), axis=2)
  acc_mask = jnp.mean(((summed > 0.5) == (ibm > 0.5)).astype(jnp.float32))

  metrics = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()},
             "acc_cons": c_ok / jnp.maximum(c_n, 1), "acc_dir": d_ok / jnp.maximum(d_n, 1),
             "acc_mask": acc_mask}
  metrics = {k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32)) for k, v in metrics.items()}
  return loss, metrics
