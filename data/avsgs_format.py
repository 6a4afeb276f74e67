"""Readers of the preprocessed files that the AVSGS/ASMP authors distribute, and the conversion of
one video's released graph into our fixed-layout example.

Layout of the released ASIW data (unzipped ``Audiocaps_Dataset/``; ``<sub>`` is ``train`` or
``test``, ``<id>`` a YouTube id). Provenance: read by ``data/audioVisual_dataset.py`` and
``test_batch_noaug_varcontxt_dirpred_fin28class.py`` of github.com/metro-smiles/asmp (ASMP) and
``final_audiocaps_graphcomb_context/data/audioVisual_dataset.py`` of github.com/merlresearch/AVSGS;
"assumed" marks what their code does not pin down.

``Extracted_Frames/<sub>/<id>/Vision_Text_Labels.csv``
  No header; one row per detection of an auditory object: ``auditory class index`` (0-based; the
  public code adds 1 because its label 0 is the background), ``detector class id``, ``image index``
  (row of ``Image_info_20obj.json``), ``box index`` (within that image). Extra columns are ignored.
``Extracted_Frames/<sub>/<id>/Image_info_20obj.json``
  A list with one entry per detected image: ``{"image": "0001.png", "objects": [detector class
  ids], "objects_conf": [confidences], ...}`` (other keys ignored). Images are the video's frames at
  8 fps named ``%04d.png`` from 1, so window ``w`` starts at image ``8 w + 1`` (the public code's
  ``img_obj_wind``).
``Extracted_Frames/<sub>/<id>/Image_feature_20obj.h5``
  ``boxes [I, 20, 4]`` (x0, y0, x1, y1 pixels, assumed) and ``features [I, 20, 2048]`` (the
  Faster R-CNN region features), indexed ``[image index, box index]``.
``Extracted_Audio/<sub>/<id>.aac``
  The video's sound track (the loaders resample it to 11025 Hz).
``Rectified_Frames/<sub>/<id>/Chamfer_Info.pickle`` (ASMP's second download)
  ``{"object_context": [(image index, box index, is_principal), ...], "object_wind":
  [(detector class id, window), ...], "dist_mat": float [n, n]}``. ``object_context`` lists the
  graph's nodes in ``dist_mat`` order: the context nodes of a principal (auditory) object come
  right before it, and the last entry is the background node; ``object_wind[p]`` names the p-th
  principal object and the window its box was taken from (-1: no displacement). ``dist_mat``
  holds pairwise Chamfer distances in its upper triangle (``i < j``); NaN where unknown.
``Rectified_Frames/<sub>/<id>/Comb_RAFTFlow_Displacement_Vectors_New.pickle``
  ``{detector class id: {window: (u, v, d)}}`` (a list indexed by window is accepted too): the
  median RAFT-flow displacement of that object in each window, in the units of the authors'
  pipeline, classified by the public code with no-motion thresholds (0.6, 0.6, 0.3) on
  ``(|u|, |v|, |d|)``. Axis signs are assumed to match ours (x right, y down, z away).
Split lists (``dataset/Multiple_Valid_RAFTFlow_Seq.pickle`` of ASMP,
  ``audiocaps/dataset/Valid_Videos_Vis_Text.pickle`` of AVSGS): a pickled
  ``(train_ids, val_ids, test_ids)`` triple. The public loaders read every non-training video from
  the ``test`` folders; we look in the split's own folder first, then the others.

Pickles are read with :func:`asmp_jax.safe_io.load_pickle`, which reconstructs plain data only
and refuses a pickle that names any other callable before calling it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from asmp_jax import preprocess, safe_io
from asmp_jax.graph import geometry as graph_geometry
from asmp_jax.graph import motion as graph_motion
from asmp_jax.graph.providers import Detections

LABELS_CSV = "Vision_Text_Labels.csv"
IMAGE_INFO_JSON = "Image_info_20obj.json"
REGION_FEATURES_H5 = "Image_feature_20obj.h5"
CHAMFER_PICKLE = "Chamfer_Info.pickle"
DISPLACEMENT_PICKLE = "Comb_RAFTFlow_Displacement_Vectors_New.pickle"
SPLIT_PICKLES = ("Multiple_Valid_RAFTFlow_Seq.pickle", "Valid_Videos_Vis_Text.pickle")
FRAMES_PER_WINDOW = 8
# The public code's no-motion thresholds on the released displacements (|u|, |v|, |d|).
PUBLIC_CODE_THRESHOLDS = (0.6, 0.6, 0.3)


class FormatError(ValueError):
  """A released file is missing or not in the expected format (the message names the file)."""

  def __init__(self, path: str, expected: str):
    super().__init__(f"{path}: {expected}")
    self.path = path


def _load_pickle(path: str, expected: str) -> Any:
  """The file's data through the restricted unpickler (containers, numbers, strings, numpy
  arrays; Python 2 pickles too): a pickle naming anything else is refused before it runs."""
  if not os.path.isfile(path):
    raise FormatError(path, f"file not found (expected {expected})")
  try:
    return safe_io.load_pickle(path)
  except safe_io.SafeLoadError as e:
    raise FormatError(path, f"{e.reason}; expected {expected}") from None


# --------------------------------------------------------------------------- split lists


def read_split_pickle(path: str) -> dict[str, list[str]]:
  """``(train_ids, val_ids, test_ids)`` pickle -> ``{"train": [...], "validation": [...],
  "test": [...]}`` (a dict with those keys, or ``val``, is accepted too)."""
  expected = "a pickled (train_ids, val_ids, test_ids) triple of YouTube-id lists"
  obj = _load_pickle(path, expected)
  if isinstance(obj, Mapping):
    keys = {"train": "train", "validation": "val" if "val" in obj else "validation",
            "test": "test"}
    if not all(k in obj for k in keys.values()):
      raise FormatError(path, f"{expected}; found a dict with keys {sorted(obj)[:6]}")
    lists = [obj[keys[s]] for s in ("train", "validation", "test")]
  elif isinstance(obj, (tuple, list)) and len(obj) >= 3:
    lists = list(obj[:3])
  else:
    raise FormatError(path, f"{expected}; found {type(obj).__name__}")
  out = {}
  for split, ids in zip(("train", "validation", "test"), lists):
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
      raise FormatError(path, f"{expected}; the {split} entry is a {type(ids).__name__}")
    out[split] = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
  return out


# --------------------------------------------------------------------------- per-video files


def read_labels_csv(path: str) -> np.ndarray:
  """``Vision_Text_Labels.csv`` -> int64 [R, 4]: (auditory class, detector class, image, box);
  -1 where a row has fewer columns (the ASMP loader only reads the first two)."""
  if not os.path.isfile(path):
    raise FormatError(path, "file not found (expected the auditory-object rows of the video)")
  rows = []
  try:
    with open(path, newline="") as f:
      for n, row in enumerate(csv.reader(f), start=1):
        if not row or not "".join(row).strip():
          continue
        if len(row) < 2:
          raise FormatError(path, f"row {n} has {len(row)} column(s); expected at least "
                            "'auditory class, detector class[, image, box]'")
        vals = [int(float(v)) for v in row[:4]]
        rows.append(vals + [-1] * (4 - len(vals)))
  except (ValueError, UnicodeDecodeError) as e:
    if isinstance(e, FormatError):
      raise
    raise FormatError(path, f"non-integer entry ({e}); expected rows of integers 'auditory "
                      "class, detector class, image, box'") from e
  return np.asarray(rows, np.int64).reshape(-1, 4)


def read_image_info(path: str) -> list[dict[str, Any]]:
  """``Image_info_20obj.json`` -> list of ``{"image", "objects", "objects_conf"}`` per image."""
  expected = 'a JSON list of {"image": "0001.png", "objects": [...], "objects_conf": [...]}'
  if not os.path.isfile(path):
    raise FormatError(path, f"file not found (expected {expected})")
  try:
    with open(path) as f:
      info = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise FormatError(path, f"not valid JSON ({e}); expected {expected}") from e
  if not isinstance(info, list) or not all(isinstance(e, dict) for e in info):
    raise FormatError(path, f"expected {expected}; found {type(info).__name__}")
  for n, entry in enumerate(info):
    if "image" not in entry or "objects" not in entry:
      raise FormatError(path, f"entry {n} lacks 'image' or 'objects'; expected {expected}")
    conf = entry.get("objects_conf", [1.0] * len(entry["objects"]))
    if len(conf) != len(entry["objects"]):
      raise FormatError(path, f"entry {n}: {len(entry['objects'])} objects but {len(conf)} "
                        "confidences")
  return info


def image_frame_index(name: str) -> int:
  """0-based frame index of a released image name (``0001.png`` -> 0)."""
  stem = os.path.splitext(os.path.basename(str(name)))[0]
  if not stem.isdigit():
    raise ValueError(f"image name {name!r} is not a frame number like '0001.png'")
  return int(stem) - 1


def read_region_features(path: str) -> tuple[np.ndarray, np.ndarray]:
  """``Image_feature_20obj.h5`` -> (boxes float32 [I, M, 4], features float32 [I, M, F])."""
  expected = "HDF5 datasets 'boxes' [I, M, 4] and 'features' [I, M, F]"
  if not os.path.isfile(path):
    raise FormatError(path, f"file not found (expected {expected})")
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    with h5py.File(path, "r") as f:
      if "boxes" not in f or "features" not in f:
        raise FormatError(path, f"expected {expected}; found {sorted(f.keys())}")
      boxes = np.asarray(f["boxes"], np.float32)
      feats = np.asarray(f["features"], np.float32)
  except FormatError:
    raise
  except Exception as e:  # h5py raises OSError/KeyError/... for corrupt files
    raise FormatError(path, f"unreadable HDF5 ({e}); expected {expected}") from e
  if (boxes.ndim != 3 or boxes.shape[-1] != 4 or feats.ndim != 3
      or feats.shape[:2] != boxes.shape[:2]):
    raise FormatError(path, f"expected {expected}; found boxes {boxes.shape}, features "
                      f"{feats.shape}")
  return boxes, feats


@dataclasses.dataclass
class ReleasedDetections:
  """A video's released detections, flat, with their position in the released arrays.

  Attributes:
    dets: Detections (labels = detector class ids, frames from the image names, features).
    image: int32 [D] image index (row of the JSON / first axis of the HDF5).
    slot: int32 [D] box index within the image.
    features: float32 [I, M, F] all region features (for released-graph lookups).
  """
  dets: Detections
  image: np.ndarray
  slot: np.ndarray
  features: np.ndarray


def released_detections(info: Sequence[Mapping[str, Any]], boxes: np.ndarray,
                        features: np.ndarray, info_path: str = IMAGE_INFO_JSON
                        ) -> ReleasedDetections:
  """Flattens the JSON + HDF5 pair: one detection per listed object of each image."""
  if len(info) != boxes.shape[0]:
    raise FormatError(info_path, f"{len(info)} images listed but the region-feature file has "
                      f"{boxes.shape[0]}")
  frame, image, slot, label, score = [], [], [], [], []
  for i, entry in enumerate(info):
    objs = list(entry["objects"])
    if len(objs) > boxes.shape[1]:
      raise FormatError(info_path, f"image {i} lists {len(objs)} objects; the HDF5 has "
                        f"{boxes.shape[1]} boxes per image")
    try:
      f_idx = image_frame_index(entry["image"])
    except ValueError as e:
      raise FormatError(info_path, str(e)) from e
    conf = entry.get("objects_conf", [1.0] * len(objs))
    frame += [f_idx] * len(objs)
    image += [i] * len(objs)
    slot += list(range(len(objs)))
    label += [int(o) for o in objs]
    score += [float(c) for c in conf]
  image_a, slot_a = np.asarray(image, np.int64), np.asarray(slot, np.int64)
  dets = Detections(np.asarray(frame), boxes[image_a, slot_a].reshape(-1, 4), np.asarray(label),
                    np.asarray(score), features[image_a, slot_a].reshape(len(image_a), -1))
  return ReleasedDetections(dets, image_a.astype(np.int32), slot_a.astype(np.int32), features)


@dataclasses.dataclass
class ChamferInfo:
  """Contents of ``Chamfer_Info.pickle`` (see the module docstring).

  Attributes:
    context: int64 [n, 3] (image index, box index, is_principal) per node, background last.
    principals: list of (detector class id, window) per principal object.
    dist: float64 [n, n] symmetric Chamfer distances (NaN unknown), zero diagonal.
  """
  context: np.ndarray
  principals: list[tuple[int, int]]
  dist: np.ndarray


def symmetric_distances(dist_mat: np.ndarray) -> np.ndarray:
  """Upper-triangular released distances -> symmetric matrix (the lower triangle where the upper
  one is missing), zero diagonal."""
  d = np.asarray(dist_mat, np.float64)
  upper = np.triu(d, 1)
  lower_t = np.triu(d.T, 1)
  use_lower = ~np.isfinite(upper) | ((upper == 0) & np.isfinite(lower_t) & (lower_t != 0))
  u = np.where(use_lower, lower_t, upper)
  u = np.triu(u, 1)
  return u + u.T


def read_chamfer_info(path: str) -> ChamferInfo:
  expected = ("a pickled dict with 'object_context' [(image, box, is_principal), ...], "
              "'object_wind' [(detector class, window), ...] and 'dist_mat' [n, n]")
  obj = _load_pickle(path, expected)
  if not isinstance(obj, Mapping) or not all(k in obj for k in ("object_context", "object_wind",
                                                                 "dist_mat")):
    found = sorted(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
    raise FormatError(path, f"expected {expected}; found {found}")
  try:
    ctx = np.asarray([[int(v) for v in c[:3]] for c in obj["object_context"]], np.int64)
    principals = [(int(v), int(w)) for v, w in obj["object_wind"]]
    dist = np.asarray(obj["dist_mat"], np.float64)
  except (TypeError, ValueError) as e:
    raise FormatError(path, f"malformed entries ({e}); expected {expected}") from e
  n = len(ctx)
  if n == 0 or dist.shape != (n, n):
    raise FormatError(path, f"'dist_mat' has shape {dist.shape} for {n} nodes in "
                      "'object_context'; expected [n, n]")
  if int((ctx[:-1, 2] == 1).sum()) != len(principals):
    raise FormatError(path, f"{int((ctx[:-1, 2] == 1).sum())} principal nodes in "
                      f"'object_context' but {len(principals)} entries in 'object_wind'")
  return ChamferInfo(ctx, principals, symmetric_distances(dist))


def read_displacements(path: str, num_windows: int) -> dict[int, np.ndarray]:
  """Displacement pickle -> ``{detector class id: float32 [num_windows, 3]}`` (NaN = none)."""
  expected = "a pickled dict {detector class id: {window: (u, v, d)}}"
  obj = _load_pickle(path, expected)
  if not isinstance(obj, Mapping):
    raise FormatError(path, f"expected {expected}; found {type(obj).__name__}")
  out = {}
  for key, per_window in obj.items():
    arr = np.full((num_windows, 3), np.nan, np.float32)
    items = (per_window.items() if isinstance(per_window, Mapping)
             else enumerate(per_window) if per_window is not None else ())
    try:
      for w, vec in items:
        w = int(w)
        if 0 <= w < num_windows and vec is not None:
          v = np.asarray(vec, np.float32).reshape(-1)
          if v.shape != (3,):
            raise ValueError(f"window {w} of object {key} has {v.size} values")
          arr[w] = v
      out[int(key)] = arr
    except (TypeError, ValueError) as e:
      raise FormatError(path, f"malformed displacement ({e}); expected {expected}") from e
  return out


# --------------------------------------------------------------------------- released graph


@dataclasses.dataclass(frozen=True)
class ReleasedGraphConfig:
  """How a released graph becomes our example.

  Attributes:
    num_windows: W, the example's windows (10 for 10 s videos).
    thresholds: no-motion thresholds for the released displacements (public code: 0.6/0.6/0.3).
    rbf_percentile: percentile of the RBF scale (25, the public code's ``--sigma``).
    rbf_mode: "paper" (``exp(-Dn/p^2)``, as our own preprocessing), "public" (``exp(-Dn/p)``)
      or "public_code" (the authors' exact ``exp(-(D/max D)/P)`` with ``P`` the percentile of
      the raw non-zero distances).
    background_feature: "zeros", "mean" (mean feature of the graph's detected nodes) or
      "first_box" (AVSGS public code: the first box of the first image).
  """
  num_windows: int = 10
  thresholds: tuple[float, float, float] = PUBLIC_CODE_THRESHOLDS
  rbf_percentile: float = 25.0
  rbf_mode: str = "paper"
  background_feature: str = "zeros"


def released_edge_weights(dist: np.ndarray, percentile: float, mode: str) -> np.ndarray:
  """[n, n] edge weights (0 on the diagonal and where the distance is unknown)."""
  d = np.asarray(dist, np.float64)
  known = np.isfinite(d)
  if mode == "public_code":
    off = known & ~np.eye(len(d), dtype=bool)
    vals = d[off]
    max_d = vals.max() if vals.size else 0.0
    nz = vals[vals != 0]
    if max_d > 0 and nz.size:
      p = np.percentile(nz, percentile) or 1.0
      w = np.exp(-(np.where(known, d, 0.0) / max_d) / p)
    else:
      w = np.ones_like(d)
  else:
    w = graph_geometry.rbf_edge_weights(np.where(known, d, np.inf), percentile=percentile,
                                        mode=mode).astype(np.float64)
  w = np.where(known, w, 0.0)
  np.fill_diagonal(w, 0.0)
  return w.astype(np.float32)


def released_graph_example(chamfer: ChamferInfo, features: np.ndarray,
                           principal_class: Mapping[int, int],
                           displacements: Mapping[int, np.ndarray] | None,
                           num_valid_windows: int, cfg: ReleasedGraphConfig,
                           path: str = CHAMFER_PICKLE) -> dict[str, np.ndarray]:
  """One video's released scene graph -> the graph and label arrays of our example.

  The released files hold one graph per video (each principal object's box from the window named
  in ``object_wind``), so every valid window gets the same graph, as in the public code; motion
  labels are per window from the displacement file.

  Principal objects are kept in ``object_wind`` order when their detector class has an auditory
  class in ``principal_class``, at most one per auditory class and at most ``MAX_AUDITORY``; each
  keeps the context nodes listed before it (``MAX_CONTEXT`` in all).

  Args:
    chamfer: the video's Chamfer_Info.
    features: float32 [I, M, F] region features of the video.
    principal_class: detector class id -> auditory class index.
    displacements: released displacements (None: motion labels unknown, -1).
    num_valid_windows: windows covered by the video's audio.
    cfg: conversion settings.

  Returns:
    node_features, node_mask, node_type, adjacency, window_valid, source_class, source_present,
    displacement, dir10, dir28 with the shapes of :func:`asmp_jax.preprocess.preprocess_clip`.

  Raises:
    FormatError: node indices outside the region-feature array.
    ValueError: no principal object with an auditory class (the caller skips the video).
  """
  a_max, c_max, n_max = preprocess.MAX_AUDITORY, preprocess.MAX_CONTEXT, preprocess.MAX_NODES
  nw, fdim = cfg.num_windows, features.shape[-1]
  ctx = chamfer.context
  n = len(ctx)
  # Group the nodes: contexts preceding principal p belong to it.
  groups, pending, p = [], [], 0
  for i in range(n - 1):
    if ctx[i, 2] == 1:
      groups.append((p, i, pending))
      pending, p = [], p + 1
    elif ctx[i, 0] >= 0 and ctx[i, 1] >= 0:
      pending.append(i)
  kept_aud, kept_ctx, classes, det_ids = [], [], [], []
  for p, node, ctx_nodes in groups:
    det_id = chamfer.principals[p][0]
    k = principal_class.get(det_id)
    if k is None or k in classes or len(kept_aud) == a_max:
      continue
    kept_aud.append(node)
    classes.append(k)
    det_ids.append(det_id)
    kept_ctx += ctx_nodes[:c_max - len(kept_ctx)]
  if not kept_aud:
    raise ValueError("no principal object of the released graph has an auditory class "
                     f"(detector classes {[d for d, _ in chamfer.principals]})")
  nodes = np.asarray(kept_aud + kept_ctx, np.int64)
  im, bx = ctx[nodes, 0], ctx[nodes, 1]
  if (im < 0).any() or (im >= features.shape[0]).any() or (bx < 0).any() or \
      (bx >= features.shape[1]).any():
    raise FormatError(path, f"node (image, box) indices {list(zip(im.tolist(), bx.tolist()))} "
                      f"outside the region features {features.shape[:2]}")
  node_feats = features[im, bx]
  if cfg.background_feature == "zeros":
    bg = np.zeros((fdim,), np.float32)
  elif cfg.background_feature == "mean":
    bg = node_feats.mean(0)
  elif cfg.background_feature == "first_box":
    bg = features[0, 0]
  else:
    raise ValueError(f"background_feature: expected zeros, mean or first_box, got "
                     f"{cfg.background_feature!r}")
  slots = np.concatenate([np.arange(len(kept_aud)), a_max + np.arange(len(kept_ctx)),
                          [n_max - 1]]).astype(np.int64)
  all_nodes = np.concatenate([nodes, [n - 1]])
  weights = released_edge_weights(chamfer.dist, cfg.rbf_percentile, cfg.rbf_mode)
  graph_feats = np.zeros((n_max, fdim), np.float32)
  graph_feats[slots] = np.concatenate([node_feats, bg[None]], 0)
  mask = np.zeros((n_max,), bool)
  mask[slots] = True
  node_type = np.full((n_max,), preprocess.CONTEXT, np.int8)
  node_type[:a_max] = preprocess.AUDITORY
  node_type[-1] = preprocess.BACKGROUND
  adj = np.zeros((n_max, n_max), np.float32)
  adj[np.ix_(slots, slots)] = weights[np.ix_(all_nodes, all_nodes)]

  valid = np.arange(nw) < min(num_valid_windows, nw)
  source_class = np.full((a_max,), -1, np.int32)
  source_class[:len(classes)] = classes
  disp = np.full((nw, a_max, 3), np.nan, np.float32)
  for a, det_id in enumerate(det_ids):
    if displacements is not None and det_id in displacements:
      disp[:, a] = displacements[det_id][:nw]
  disp[~valid] = np.nan
  dir10 = graph_motion.direction_class(disp, 10, thresholds=cfg.thresholds)
  dir28 = graph_motion.direction_class(disp, 28, thresholds=cfg.thresholds)
  present = np.zeros((nw, a_max), bool)
  present[:, :len(classes)] = valid[:, None]
  return {
      "node_features": np.where(valid[:, None, None], graph_feats[None], 0).astype(np.float16),
      "node_mask": valid[:, None] & mask[None],
      "node_type": np.broadcast_to(node_type, (nw, n_max)).copy(),
      "adjacency": np.where(valid[:, None, None], adj[None], 0).astype(np.float16),
      "window_valid": valid,
      "source_class": source_class,
      "source_present": present,
      "displacement": disp,
      "dir10": dir10.astype(np.int32),
      "dir28": dir28.astype(np.int32),
  }
