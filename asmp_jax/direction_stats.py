"""Direction statistics: accuracy, the majority-vote baseline, clustered standard errors.

Pure NumPy functions over predicted and true direction classes (the evaluation's per-window
labels); `asmp_jax.metrics` re-exports them beside the separation scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def direction_accuracy(pred: Any, label: Any, valid: Any | None = None) -> float:
  """Fraction of valid windows whose predicted direction class equals the label.

  Args:
    pred: int [...] predicted classes (e.g. argmax of the direction logits).
    label: int [...] ground-truth classes, same shape.
    valid: optional bool [...] (broadcastable), False for padding windows/absent sources.

  Returns:
    Accuracy in [0, 1] as a Python float; NaN if no entry is valid.
  """
  pred = np.asarray(pred)
  label = np.asarray(label)
  if pred.shape != label.shape:
    raise ValueError(f"pred shape {pred.shape} != label shape {label.shape}.")
  valid = np.ones(label.shape, bool) if valid is None else np.broadcast_to(
      np.asarray(valid, bool), label.shape)
  count = int(valid.sum())
  if count == 0:
    return float("nan")
  return float(np.sum((pred == label) & valid) / count)


def majority_vote_accuracy(train_labels: Any, test_labels: Any, valid: Any | None = None,
                           *, train_valid: Any | None = None) -> float:
  """Accuracy of always predicting the most frequent training class (the paper's baseline).

  Args:
    train_labels: int [...] non-negative direction classes seen in training.
    test_labels: int [...] classes to score.
    valid: optional bool mask for ``test_labels`` (broadcastable).
    train_valid: optional bool mask for ``train_labels``.

  Returns:
    ``direction_accuracy(majority, test_labels, valid)``; ties go to the smallest class index.
    NaN if no valid test entry.

  Raises:
    ValueError: if there is no valid training label or a label is negative.
  """
  train = np.asarray(train_labels)
  if train_valid is not None:
    train = train[np.broadcast_to(np.asarray(train_valid, bool), train.shape)]
  train = train.ravel()
  if train.size == 0:
    raise ValueError("majority_vote_accuracy needs at least one valid training label.")
  if np.any(train < 0):
    raise ValueError("train_labels must be non-negative class indices.")
  majority = int(np.argmax(np.bincount(train.astype(np.int64))))
  test = np.asarray(test_labels)
  return direction_accuracy(np.full(test.shape, majority), test, valid)


def clustered_mean_se(values: Any, clusters: Any) -> tuple[float, float]:
  """Mean of per-item ``values`` and its standard error with items correlated within clusters.

  Direction accuracy counts many (source, window) labels of the same test clip, once for every
  crop that covers the window and every evaluation pair that holds the clip; those answers are
  not independent, so the binomial error of the count understates the uncertainty. This is the
  cluster-robust (sandwich) standard error of a mean over clusters ``g`` of sizes ``n_g``:
  ``se^2 = G / (G - 1) * sum_g (sum_{i in g} (v_i - mean))^2 / N^2``. With one item per cluster
  it is the usual ``std(v, ddof=1) / sqrt(N)``.

  Args:
    values: float [N] per-item values (1/0 for correct/wrong, or a difference of two such).
    clusters: [N] hashable cluster ids (e.g. the test clip of each label).

  Returns:
    ``(mean, se)``; ``se`` is NaN with fewer than two clusters, both NaN with no item.
  """
  v = np.asarray(values, np.float64).ravel()
  c = np.asarray(clusters).ravel()
  if v.shape != c.shape:
    raise ValueError(f"values {np.shape(values)} and clusters {np.shape(clusters)} differ in size.")
  if v.size == 0:
    return float("nan"), float("nan")
  mean = float(v.mean())
  _, inverse = np.unique(c, return_inverse=True)
  residuals = np.bincount(inverse, weights=v - mean)
  g = len(residuals)
  if g < 2:
    return mean, float("nan")
  return mean, float(np.sqrt(g / (g - 1) * np.sum(residuals ** 2)) / v.size)
