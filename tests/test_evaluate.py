"""Slot matching and direction accuracy of the evaluation protocol (asmp_jax.evaluate)."""
import numpy as np

from asmp_jax import evaluate


def _onehot_logits(classes, num_classes):
  """Logits whose argmax is ``classes`` (confident one-hot, 10 vs 0)."""
  classes = np.asarray(classes)
  return 10.0 * np.eye(num_classes)[classes]


def test_match_slots_follows_the_consistency_classifier():
  # One video, 3 slots; slot 2 predicts label slot 0's class, slot 0 label 1's, slot 1 the
  # background's: label j is served by slot [2, 0, 1][j].
  labels = np.array([[3, 5, 9]])
  cons = _onehot_logits([[5, 9, 3]], 10)
  np.testing.assert_array_equal(evaluate.match_slots(cons, labels, np.ones((1, 3), bool)),
                                [[2, 0, 1]])


def test_direction_predictions_use_the_matched_slot_and_skip_background():
  # [video=1, slots=3, windows=2]; slot 1 answers for label slot 0 and slot 0 for label slot 1.
  pred = np.array([[[4, 4], [1, 2], [9, 9]]])
  labels = np.array([[[1, 2], [4, 0], [9, 9]]])
  valid = np.array([[[True, True], [True, False], [True, True]]])
  p, l, u = evaluate.direction_predictions(_onehot_logits(pred, 10), labels, valid,
                                           np.array([[1, 0, 2]]))
  np.testing.assert_array_equal(p, [1, 2, 4])  # label slot 0's two windows, label slot 1's first
  np.testing.assert_array_equal(l, [1, 2, 4])
  np.testing.assert_array_equal(u, [0, 0, 0])


def test_direction_predictions_name_each_entrys_video():
  # [crop=2, video=2, slots=2, windows=1]: one auditory slot per video; crop 1's video 0 is not
  # valid. Each entry is tagged with its video, so the evaluation can tell the clip.
  labels = np.array([[[[3], [9]], [[5], [9]]], [[[7], [9]], [[6], [9]]]])
  valid = np.ones(labels.shape, bool)
  valid[1, 0] = False
  logits = _onehot_logits(labels, 10)
  p, l, u = evaluate.direction_predictions(logits, labels, valid, np.tile([0, 1], (2, 2, 1)))
  np.testing.assert_array_equal(l, [3, 5, 6])
  np.testing.assert_array_equal(p, l)
  np.testing.assert_array_equal(u, [0, 1, 1])


def test_any_order_matches_each_window_separately():
  # Window 0: slots in label order; window 1: the two sources' answers swapped, and the
  # background slot holds source 0's label. A fixed matching gets at most 2 of the 4.
  pred = np.array([[[3, 6], [6, 9], [9, 3]]])  # [video, slot, window]
  labels = np.array([[[3, 3], [6, 6], [9, 9]]])
  valid = np.ones(labels.shape, bool)
  logits = _onehot_logits(pred, 10)
  correct, counted = evaluate.direction_any_order(logits, labels, valid)
  assert (correct, counted) == (4, 4)  # window 1: slot 2 -> label 0, slot 0 -> label 1
  p, l, _ = evaluate.direction_predictions(logits, labels, valid, np.array([[0, 1, 2]]))
  assert np.sum(p == l) == 2
  # Invalid windows are neither counted nor correct; background labels are never counted.
  valid[0, 1, 1] = False
  assert evaluate.direction_any_order(logits, labels, valid) == (3, 3)
  assert evaluate.direction_any_order(logits, labels, np.zeros_like(valid)) == (0, 0)
