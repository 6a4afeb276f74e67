"""The learned detector inside a separation: detections of the model's frames, relabelled to the
checkpoint's classes, and the sounding-object candidates when no auditory class is detected."""

from __future__ import annotations

from typing import Any

import numpy as np

from asmp_jax.graph import features as graph_features
from asmp_jax.graph import providers as graph_providers
from asmp_jax.vision import labels as labels_lib

MAX_UNKNOWN_CANDIDATES = 2


class FeatureMismatch(ValueError):
  """The checkpoint's node features and the detector's region features differ in size."""


def check_feature_dim(extractor: str, checkpoint_dim: int, detector) -> None:
  """Refuses a 'precomputed'-feature checkpoint whose feature size is not the detector's."""
  if extractor != graph_features.PRECOMPUTED or detector is None:
    return
  if int(checkpoint_dim) != int(detector.feature_dim):
    raise FeatureMismatch(
        f"the checkpoint's node features are {int(checkpoint_dim)}-d ('precomputed') but the "
        f"detector {detector.name} ({detector.path}) gives {detector.feature_dim}-d region "
        "features")


def learned_detections(detector, frames: np.ndarray, dataset_names: list[str],
                       auditory_ids: np.ndarray, max_candidates: int = MAX_UNKNOWN_CANDIDATES,
                       label: str = "") -> tuple[graph_providers.Detections, np.ndarray,
                                                 dict[int, str], dict[str, Any], list[str]]:
  """Runs the detector on the model's frames and maps its classes to the checkpoint's.

  Returns:
    (detections with checkpoint class ids, auditory ids to use, names by id, provider record(s)
    for the summary, warnings): see :func:`mapped_detections`.
  """
  empty = (f"the detector {detector.name} found no object above score "
           f"{detector.score_threshold:g} in any frame: the graphs hold the background node "
           "only (lower --detector_score_threshold to keep weaker detections)")
  return mapped_detections(detector.detect(frames, label), list(detector.class_names),
                           dataset_names, auditory_ids, {"detections": detector.record()},
                           empty, max_candidates)


def mapped_detections(raw: graph_providers.Detections, detector_names: list[str],
                      dataset_names: list[str], auditory_ids: np.ndarray,
                      used: dict[str, Any], empty_warning: str,
                      max_candidates: int = MAX_UNKNOWN_CANDIDATES
                      ) -> tuple[graph_providers.Detections, np.ndarray, dict[int, str],
                                 dict[str, Any], list[str]]:
  """A detector's detections (its class ids) mapped to the checkpoint's classes.

  Returns:
    (detections with checkpoint class ids, auditory ids to use, names by id, ``used`` (the
    provider record(s) for the summary), warnings). When no detection has an auditory class, the
    ``max_candidates`` unmapped detector classes with the largest summed score become the
    auditory candidates (named "detector: <label>"; ``used`` then holds
    ``auditory_candidates``); when there is no detection at all, the warning is
    ``empty_warning`` and the graphs hold the background node only.
  """
  dets, names = labels_lib.relabel(raw, detector_names, dataset_names)
  warns: list[str] = []
  if not len(dets):
    warns.append(empty_warning)
    return dets, np.asarray(auditory_ids, np.int32), names, used, warns
  unknown = np.unique(dets.label[dets.label >= len(dataset_names)])
  if not np.isin(dets.label, auditory_ids).any() and len(unknown):
    totals = {int(c): float(dets.score[dets.label == c].sum()) for c in unknown}
    ranked = sorted(totals, key=lambda c: -totals[c])[:max_candidates]
    used["auditory_candidates"] = [names[c] for c in ranked]
    warns.append("no detection of a class the checkpoint knows: the best-scoring detector "
                 f"classes ({', '.join(names[c] for c in ranked)}) are used as the sounding "
                 "objects (their sound class is unknown to the model)")
    return dets, np.asarray(ranked, np.int32), names, used, warns
  return dets, np.asarray(auditory_ids, np.int32), names, used, warns
