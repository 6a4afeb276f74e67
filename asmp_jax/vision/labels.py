"""From the detector's classes to a data set's classes.

The shipped maps name, for each data set, the COCO categories (torchvision's 91-entry list) that
correspond to one of its classes: ``COCO_MAPS[set][coco_name] = data-set class name``. The
class names are those of ``data/synthetic/classes.py`` (auditory then context classes) and the
``name`` column of ``data/asiw/classes.tsv`` and ``data/ave/classes.tsv``. Where COCO has no
category for a class (ASIW baby, bell, camera, water; AVE bell, helicopter, violin, flute, guitar,
banjo, baby; synthetic violin, flute, bell, drum, siren, bee, lamp) there is no entry; AVE's goat
is reached through COCO's sheep and ASIW's telephone through COCO's cell phone.

:func:`relabel` turns detector class ids into the ids a checkpoint reads (position in its
auditory + context class list). A detection whose class has no entry keeps a distinct id past the
data set's classes (``len(dataset classes) + detector id``) and is named by the detector's label
("detector: <name>"): it can become a context node, and, when a video holds no detection of an
auditory class, the best-scoring such classes become the sounding-object candidates (see
docs/inference.md, "Your own video with learned vision").
"""

from __future__ import annotations

import numpy as np

from asmp_jax.graph import providers as graph_providers

UNKNOWN_PREFIX = "detector: "

COCO_MAPS: dict[str, dict[str, str]] = {
    "synthetic": {
        "car": "car", "truck": "car", "bus": "car", "bird": "bird", "clock": "clock",
        "person": "person", "dining table": "table", "potted plant": "plant",
    },
    "asiw": {
        "person": "people", "bird": "bird", "clock": "clock", "dog": "dog", "toilet": "toilet",
        "horse": "horse", "sheep": "sheep_goat", "cell phone": "telephone", "train": "train",
        "car": "vehicle", "truck": "vehicle", "bus": "vehicle",
    },
    "ave": {
        "dog": "Bark", "airplane": "Fixed-wing aircraft, airplane",
        "car": "Race car, auto racing", "truck": "Truck", "motorcycle": "Motorcycle",
        "train": "Train horn", "clock": "Clock", "bus": "Bus", "cat": "Cat", "horse": "Horse",
        "sheep": "Goat",
    },
}


def choose_map(class_names: list[str]) -> dict[str, str]:
  """The shipped map whose target classes best cover ``class_names`` (a checkpoint's classes)."""
  names = set(class_names)
  best = max(COCO_MAPS, key=lambda k: len(set(COCO_MAPS[k].values()) & names))
  return {c: t for c, t in COCO_MAPS[best].items() if t in names}


def relabel(dets: graph_providers.Detections, detector_names: list[str],
            dataset_names: list[str], coco_map: dict[str, str] | None = None
            ) -> tuple[graph_providers.Detections, dict[int, str]]:
  """Detector class ids -> data-set class ids (module docstring).

  Args:
    dets: detections with the detector's class ids.
    detector_names: the detector's class names by id.
    dataset_names: the checkpoint's classes (auditory then context).
    coco_map: detector class name -> data-set class name (default: :func:`choose_map`).

  Returns:
    (detections with data-set ids, name of every id that occurs).
  """
  coco_map = choose_map(dataset_names) if coco_map is None else coco_map
  index = {n: i for i, n in enumerate(dataset_names)}
  k = len(dataset_names)
  lut = np.array([index.get(coco_map.get(n, ""), k + d) for d, n in enumerate(detector_names)],
                 np.int32)
  if len(dets) and (dets.label.min() < 0 or dets.label.max() >= len(lut)):
    raise ValueError(f"detector class id outside 0..{len(lut) - 1}")
  labels = lut[dets.label] if len(dets) else dets.label
  names = {}
  for new, old in zip(labels.tolist(), dets.label.tolist()):
    names[new] = dataset_names[new] if new < k else UNKNOWN_PREFIX + detector_names[old]
  out = graph_providers.Detections(dets.frame, dets.box, labels, dets.score, dets.feature,
                                   dets.track)
  return out, names


def vocabulary_lines(detector_names: list[str], dataset: str | None,
                     detector_names_of: dict[str, list[str]] | None = None) -> list[str]:
  """Lines of a ``detector_classes.txt`` for the raw ASIW/AVE builders: line i = the detector's
  class i, followed (comma-separated synonyms) by the data set's auditory-object names of the class
  it maps to, so that the builders' vocabulary lookup finds it.

  Args:
    detector_names: the detector's class names by id.
    dataset: a key of :data:`COCO_MAPS` (None: the detector's names only).
    detector_names_of: data-set class name -> its auditory-object names (classes.tsv column
      ``detector_names``).
  """
  cmap = COCO_MAPS.get(dataset or "", {})
  lines = []
  for n in detector_names:
    syn = [n] + list((detector_names_of or {}).get(cmap.get(n, ""), []))
    lines.append(",".join(s.replace(",", " ") for s in syn))
  return lines
