"""One clip (frames + audio + a provider) -> one training example: per-window scene graphs,
per-window motion labels and the audio, as fixed-size numpy arrays (paper §3.2–3.3).

For every window of ``l`` frames (1 s at 8 fps), its first frame is the reference frame F_r:

1. **Sources.** The clip's auditory sources are the (at most 2) auditory classes with the highest
   summed detection confidence over the clip (Co-Separation's "top two detected categories",
   supp. §B). In each window a source's box is its best detection in the reference frame, or in
   the nearest frame of the window when the detector missed it there.
2. **Graph.** Auditory nodes, context nodes (non-auditory detections of the reference frame with
   IoU > gamma and score > 0.4 with an auditory box), a background node (a crop that overlaps no
   box); node features from the configured extractor on the decoded reference-frame pixels; edges
   from the Chamfer distances of the boxes' pseudo-3D point clouds (graph.build).
3. **Motion.** Frames of the window are rectified to F_r (LK tracks + ICP on pseudo-depth), the
   flow of the reference pixels is chained to the window's last frame, lifted to pseudo-3D and
   summarised by its median per source box: the displacement d_i, then its 10- and 28-way class.

Every window's graph uses a fixed node layout so that batches have static shapes: slots
``0..A-1`` are the auditory sources in source order (masked out in a window where that source was
not detected), ``A..A+C-1`` context nodes, and the last slot the background node.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

# The static graph sizes (one definition, beside the config that builds on them).
from asmp_jax.config_lib import (  # pylint: disable=unused-import
    MAX_AUDITORY, MAX_CONTEXT, MAX_NODES)
from asmp_jax.graph import build as graph_build
from asmp_jax.graph import features as graph_features
from asmp_jax.graph import motion as graph_motion
from asmp_jax.graph import rectify as graph_rectify
from asmp_jax.graph.providers import Detections

AUDITORY, CONTEXT, BACKGROUND = 0, 1, 2


class PreprocessError(ValueError):
  """A clip cannot become a training example (the reason is in the message)."""


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Settings of the graph and label construction (mirrors ``config.graph``)."""
  window_frames: int = 8
  num_windows: int = 10
  feature_extractor: str = graph_features.HOG_COLOR
  iou_threshold: float = 0.1
  min_context_score: float = 0.4
  min_auditory_score: float = 0.0
  edge_mode: str = "chamfer"
  rbf_percentile: float = 25.0
  rectify: bool = True
  no_motion_thresholds: tuple[float, float, float] = (0.02, 0.02, 0.1)
  # Background-node feature with feature_extractor="precomputed" (see precomputed_features).
  background_feature: str = "zeros"
  # Weight file of the feature extractor (feature_extractor="resnet18_crops": a ResNet-18 .pth).
  crop_encoder_weights: str = ""

  def __post_init__(self):
    if self.feature_extractor == graph_features.RESNET18_CROPS:
      # The torch-based extractor (torch is optional) registers itself when its module loads.
      from asmp_jax.vision import crops  # pylint: disable=g-import-not-at-top,unused-import

  @classmethod
  def from_config(cls, config) -> "PreprocessConfig":
    """From the ``graph`` and ``data`` sections of an experiment config."""
    g = config.graph
    return cls(window_frames=config.data.window_frames,
               num_windows=config.data.get("num_windows", 10),
               feature_extractor=g.feature_extractor, iou_threshold=g.iou_threshold,
               min_context_score=g.min_context_score, edge_mode=g.edge_mode,
               rbf_percentile=g.rbf_percentile, rectify=g.rectify,
               no_motion_thresholds=tuple(g.no_motion_thresholds),
               background_feature=g.get("background_feature", "zeros"),
               crop_encoder_weights=g.get("crop_encoder_weights", ""))


def select_sources(dets: Detections, auditory_class_ids: np.ndarray,
                   max_sources: int = MAX_AUDITORY, min_score: float = 0.0) -> np.ndarray:
  """Class ids of the clip's auditory sources, most confident first (at most ``max_sources``)."""
  is_aud = np.isin(dets.label, auditory_class_ids) & (dets.score >= min_score)
  if not is_aud.any():
    return np.zeros((0,), np.int32)
  labels = dets.label[is_aud]
  classes = np.unique(labels)
  total = np.array([dets.score[is_aud][labels == c].sum() for c in classes])
  order = np.argsort(-total, kind="stable")
  return classes[order[:max_sources]].astype(np.int32)


def _source_index(dets: Detections, class_id: int, ref: int, last: int) -> int | None:
  """Index of the best detection of ``class_id`` in the reference frame, else in the nearest
  frame of the window (None when the window has none)."""
  sel = (dets.label == class_id) & (dets.frame >= ref) & (dets.frame <= last)
  if not sel.any():
    return None
  idx = np.nonzero(sel)[0]
  # Nearest frame first, then highest score.
  key = np.lexsort((-dets.score[idx], np.abs(dets.frame[idx] - ref)))
  return int(idx[key[0]])


BACKGROUND_FEATURES = ("zeros", "mean")


def precomputed_features(dets: Detections, node_det: np.ndarray, ref_dets: np.ndarray,
                         background: str = "zeros",
                         background_feature: np.ndarray | None = None) -> np.ndarray:
  """Node features of one window from the detector's own region features.

  The paper embeds the background node with the detector's feature of a crop that overlaps no box;
  a file of region features only has the detected boxes, so the background node gets, in order of
  preference: ``background_feature`` when the data provides one for this frame; else
  ``background="zeros"`` (an all-zero vector: an uninformative node whose embedding the model
  learns as a constant, the deterministic counterpart of the authors' public code, which feeds
  Gaussian noise) or ``"mean"`` (the mean region feature of the reference frame's detections, a
  summary of the scene; zeros when the frame has none).

  Args:
    dets: the clip's detections, with ``feature [D, F]``.
    node_det: int [K - 1] detection index of each non-background node (builder order).
    ref_dets: int [R] indices of the reference frame's detections (for ``"mean"``).
    background: "zeros" or "mean".
    background_feature: optional float [F] dedicated background feature.

  Returns:
    float32 [K, F]: the nodes' features, background last.
  """
  if dets.feature is None:
    raise PreprocessError("feature_extractor 'precomputed' needs detections with region features")
  if background not in BACKGROUND_FEATURES:
    raise ValueError(f"background_feature: expected one of {BACKGROUND_FEATURES}, "
                     f"got {background!r}")
  feats = dets.feature
  node_det = np.asarray(node_det, np.int64).reshape(-1)
  ref_dets = np.asarray(ref_dets, np.int64).reshape(-1)
  if background_feature is not None:
    bg = np.asarray(background_feature, np.float32).reshape(-1)
    if bg.shape != (feats.shape[1],):
      raise PreprocessError(f"background feature has shape {bg.shape}, "
                            f"expected ({feats.shape[1]},)")
  elif background == "mean" and len(ref_dets):
    bg = feats[ref_dets].mean(0)
  else:
    bg = np.zeros((feats.shape[1],), np.float32)
  return np.concatenate([feats[node_det], bg[None]], 0).astype(np.float32)


def _identity_rectification(num: int) -> graph_rectify.WindowRectification:
  return graph_rectify.WindowRectification(
      scale=np.ones(num), rotation=np.tile(np.eye(3), (num, 1, 1)), translation=np.zeros((num, 3)),
      valid=np.ones(num, bool), num_tracks=np.zeros(num, np.int32), rmse=np.zeros(num))


def dense_edges(max_nodes: int = MAX_NODES) -> tuple[np.ndarray, np.ndarray]:
  """Senders and receivers of all ordered node pairs without self-loops (the static edge list)."""
  s, r = np.nonzero(~np.eye(max_nodes, dtype=bool))
  return s.astype(np.int32), r.astype(np.int32)


def preprocess_clip(frames: np.ndarray, audio: np.ndarray, dets: Detections, depth: np.ndarray,
                    flow: np.ndarray, auditory_class_ids: np.ndarray, cfg: PreprocessConfig,
                    clip_id: str = "", num_samples: int | None = None,
                    background_features: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Builds the example of one clip (see module docstring).

  Args:
    frames: uint8 [T, H, W, 3] decoded RGB frames.
    audio: float32 [L] mono waveform at 11025 Hz.
    dets: the clip's detections (labels are data-set class ids).
    depth: float32 [T, H, W] pseudo-depth; flow: float32 [T, H, W, 2] forward flow.
    auditory_class_ids: data-set class ids that can sound, in consistency-classifier order
      (class index k of the classifier is ``auditory_class_ids[k]``; the background is index
      ``len(auditory_class_ids)``).
    cfg: preprocessing settings.
    num_samples: pad/crop the audio to this many samples (the data set's fixed clip length).
    background_features: optional float [T, F] dedicated background-node feature per frame
      (precomputed extractor only; see :func:`precomputed_features`).

  Returns:
    dict of numpy arrays (W = cfg.num_windows, N = MAX_NODES, F = feature size, A = 2):
      audio int16 [L]; node_features float16 [W, N, F]; node_mask bool [W, N]; node_type int8
      [W, N]; adjacency float16 [W, N, N] (edge weight, 0 = no edge); window_valid bool [W];
      source_class int32 [A] (classifier index, -1 = no source); source_present bool [W, A];
      displacement float32 [W, A, 3] (NaN = unknown); dir10, dir28 int32 [W, A] (-1 = unknown).

  Raises:
    PreprocessError: no frames, no audio, inconsistent array shapes, or the precomputed extractor
      without region features.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[0] == 0:
    raise PreprocessError(f"clip {clip_id}: no video frames (got shape {frames.shape})")
  audio = np.asarray(audio, np.float32).reshape(-1)
  if audio.size == 0:
    raise PreprocessError(f"clip {clip_id}: no audio samples")
  t, h, w = frames.shape[:3]
  if depth.shape != (t, h, w) or flow.shape != (t, h, w, 2):
    raise PreprocessError(f"clip {clip_id}: depth {depth.shape} / flow {flow.shape} do not match "
                          f"frames {frames.shape}")
  if cfg.edge_mode not in ("chamfer", "equal"):
    raise PreprocessError(f"edge_mode {cfg.edge_mode!r}: the stored dense adjacency holds one "
                          "weight per node pair ('chamfer' or 'equal'); the multiscale-Chamfer "
                          "ablation is config.model.graph_mode='multiscale' on chamfer data")
  l, nw, a_max = cfg.window_frames, cfg.num_windows, MAX_AUDITORY
  auditory_class_ids = np.asarray(auditory_class_ids, np.int32)
  sources = select_sources(dets, auditory_class_ids, a_max, cfg.min_auditory_score)
  # Consistency-classifier index of each source.
  class_index = {int(c): i for i, c in enumerate(auditory_class_ids)}
  source_class = np.full((a_max,), -1, np.int32)
  source_class[:len(sources)] = [class_index[int(c)] for c in sources]
  aud_set = set(int(c) for c in auditory_class_ids)
  is_auditory_det = np.array([int(c) in aud_set for c in dets.label], bool)

  precomputed = cfg.feature_extractor == graph_features.PRECOMPUTED
  if precomputed and dets.feature is None:
    raise PreprocessError(f"clip {clip_id}: feature_extractor 'precomputed' but the detections "
                          "carry no region features")
  feat_dim = dets.feature.shape[1] if precomputed else None
  fdim = graph_features.feature_dim(cfg.feature_extractor, feat_dim)
  out = {
      "node_features": np.zeros((nw, MAX_NODES, fdim), np.float16),
      "node_mask": np.zeros((nw, MAX_NODES), bool),
      "node_type": np.full((nw, MAX_NODES), CONTEXT, np.int8),
      "adjacency": np.zeros((nw, MAX_NODES, MAX_NODES), np.float16),
      "window_valid": np.zeros((nw,), bool),
      "source_class": source_class,
      "source_present": np.zeros((nw, a_max), bool),
      "displacement": np.full((nw, a_max, 3), np.nan, np.float32),
      "dir10": np.full((nw, a_max), -1, np.int32),
      "dir28": np.full((nw, a_max), -1, np.int32),
  }
  out["node_type"][:, :a_max] = AUDITORY
  out["node_type"][:, -1] = BACKGROUND
  for wi in range(nw):
    ref = wi * l
    if ref >= t:
      break
    last = min(ref + l, t) - 1
    out["window_valid"][wi] = True
    aud_det, aud_slots = [], []
    for a, c in enumerate(sources):
      k = _source_index(dets, int(c), ref, last)
      if k is not None:
        aud_det.append(k)
        aud_slots.append(a)
    aud_det = np.asarray(aud_det, np.int64)
    aud_boxes = dets.box[aud_det].reshape(-1, 4)
    in_ref = dets.frame == ref
    cand = np.nonzero(in_ref & ~is_auditory_det)[0]
    ctx_idx = np.zeros((0,), np.int64)
    if len(aud_boxes) and len(cand):
      ctx_local = graph_build.select_context(
          aud_boxes, dets.box[cand], dets.score[cand], np.zeros(len(cand), bool),
          iou_threshold=cfg.iou_threshold, min_score=cfg.min_context_score,
          max_context=MAX_CONTEXT)
      ctx_idx = cand[np.asarray(ctx_local, np.int64)]
    ctx_boxes = dets.box[ctx_idx].reshape(-1, 4)
    all_boxes = np.concatenate([aud_boxes, dets.box[in_ref]], 0)
    bg_box = np.asarray(graph_build.background_box(all_boxes, h, w), np.float32)
    graph = graph_build.build_window_graph(depth[ref], aud_boxes, ctx_boxes, bg_box,
                                           edge_mode=cfg.edge_mode, percentile=cfg.rbf_percentile)
    # Compact builder order [auditory..., context..., background] -> fixed slots.
    slots = np.array(list(aud_slots) + [a_max + i for i in range(len(ctx_boxes))] + [MAX_NODES - 1])
    boxes = np.concatenate([aud_boxes, ctx_boxes, bg_box[None]], 0)
    if precomputed:
      feats = precomputed_features(
          dets, np.concatenate([aud_det, ctx_idx]), np.nonzero(in_ref)[0], cfg.background_feature,
          None if background_features is None else background_features[ref])
    else:
      feats = graph_features.extract(cfg.feature_extractor, frames[ref], boxes,
                                     weights=cfg.crop_encoder_weights)
    out["node_features"][wi, slots] = feats.astype(np.float16)
    out["node_mask"][wi, slots] = True
    snd = slots[np.asarray(graph["senders"], np.int64)]
    rcv = slots[np.asarray(graph["receivers"], np.int64)]
    out["adjacency"][wi, snd, rcv] = np.asarray(graph["edge_weight"], np.float32)
    out["source_present"][wi, aud_slots] = True
    # Motion of each present source over the window.
    if last > ref and len(aud_boxes):
      rect = None if cfg.rectify else _identity_rectification(last + 1 - ref)
      disp = graph_motion.window_displacements(
          frames[ref:last + 1], depth[ref:last + 1], flow[ref:last], aud_boxes,
          rectification=rect)
      for k, a in enumerate(aud_slots):
        out["displacement"][wi, a] = disp[k]
        if np.isfinite(disp[k]).all():
          out["dir10"][wi, a] = graph_motion.direction_class(
              disp[k], 10, thresholds=cfg.no_motion_thresholds)
          out["dir28"][wi, a] = graph_motion.direction_class(
              disp[k], 28, thresholds=cfg.no_motion_thresholds)
  if num_samples is not None:
    audio = np.pad(audio[:num_samples], (0, max(0, num_samples - audio.size)))
  out["audio"] = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
  if not len(sources):
    logging.info("clip %s: no auditory object detected (graph holds the background node only)",
                 clip_id)
  return out
