"""Pseudo-3D scene graph of one window's reference frame (paper §3.3).

Nodes, in this order: the auditory objects (up to 2), their context objects (non-auditory
detections overlapping an auditory object, up to 20) and one background node (a crop that overlaps
no box). Each node's point cloud is its box back-projected with the reference depth
(:func:`asmp_jax.graph.geometry.box_points`); edges connect every ordered pair of distinct nodes
(both directions, no self-loops) and carry a weight from the nodes' symmetric Chamfer distance.

Node features (detector region features, background crop features) are not computed here; they
are attached by the caller in the same node order.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from asmp_jax.graph import geometry

NODE_AUDITORY = 0
NODE_CONTEXT = 1
NODE_BACKGROUND = 2

EDGE_MODES = ("chamfer", "equal", "multiscale")

# 2 auditory + 20 context + 1 background.
DEFAULT_MAX_NODES = 23


def _as_boxes(boxes: Any, name: str) -> np.ndarray:
  boxes = np.asarray(boxes, np.float64)
  if boxes.size == 0:
    return np.zeros((0, 4))
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"{name}: expected [N, 4] boxes (x0, y0, x1, y1), got shape {boxes.shape}")
  return boxes


def box_area(boxes: np.ndarray) -> np.ndarray:
  """float64 [...] areas of [..., 4] boxes; inverted/degenerate boxes have area 0."""
  boxes = np.asarray(boxes, np.float64)
  return (np.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
          * np.maximum(boxes[..., 3] - boxes[..., 1], 0.0))


def intersection_area(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """float64 [A, B] intersection areas of [A, 4] and [B, 4] boxes (continuous coordinates)."""
  a = _as_boxes(boxes_a, "boxes_a")[:, None, :]
  b = _as_boxes(boxes_b, "boxes_b")[None, :, :]
  w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
  h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
  return np.maximum(w, 0.0) * np.maximum(h, 0.0)


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """Intersection over union of every pair of boxes.

  Boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates (area ``(x1-x0)*(y1-y0)``, no
  ``+1``). Pairs whose union has zero area have IoU 0.

  Args:
    boxes_a: float [A, 4].
    boxes_b: float [B, 4].

  Returns:
    float64 [A, B] in [0, 1].
  """
  a = _as_boxes(boxes_a, "boxes_a")
  b = _as_boxes(boxes_b, "boxes_b")
  inter = intersection_area(a, b)
  union = box_area(a)[:, None] + box_area(b)[None, :] - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def select_context(auditory_boxes: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                   det_is_auditory: np.ndarray, iou_threshold: float = 0.1,
                   min_score: float = 0.4, max_context: int = 20) -> np.ndarray:
  """Indices of the context detections of a frame (paper §3.3, public code's score filter).

  A detection is a context object when it is not auditory, its score is ``> min_score`` and its
  IoU with at least one auditory box is ``> iou_threshold`` (both strict). Candidates are ordered
  best first (score descending, ties by index) and at most ``max_context`` are kept. No auditory
  box -> no context.

  Args:
    auditory_boxes: float [A, 4].
    det_boxes: float [D, 4] all detections of the frame.
    det_scores: float [D] detector confidences.
    det_is_auditory: bool [D] whether each detection is (one of) the auditory objects' class.
    iou_threshold: the paper's gamma (0.1).
    min_score: detector confidence threshold (0.4 in the public code; use -inf to disable).
    max_context: maximum number of context nodes (20).

  Returns:
    int64 [C] indices into the detections, ``C <= max_context``.
  """
  aud = _as_boxes(auditory_boxes, "auditory_boxes")
  det = _as_boxes(det_boxes, "det_boxes")
  scores = np.asarray(det_scores, np.float64).reshape(-1)
  is_aud = np.asarray(det_is_auditory, bool).reshape(-1)
  if len(scores) != len(det) or len(is_aud) != len(det):
    raise ValueError(f"det_boxes, det_scores, det_is_auditory: expected {len(det)} rows each, "
                     f"got {len(det)}, {len(scores)}, {len(is_aud)}")
  if max_context < 0:
    raise ValueError(f"max_context: expected >= 0, got {max_context}")
  if len(aud) == 0 or len(det) == 0:
    return np.zeros(0, np.int64)
  overlaps = np.any(iou(det, aud) > iou_threshold, axis=1)
  cand = np.flatnonzero(~is_aud & (scores > min_score) & overlaps)
  order = np.argsort(-scores[cand], kind="stable")
  return cand[order][:max_context].astype(np.int64)


def _rect_gap(cands: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """[N, K] Euclidean gap between rectangles (0 when they touch or overlap)."""
  a, b = cands[:, None, :], boxes[None, :, :]
  dx = np.maximum(0.0, np.maximum(b[..., 0] - a[..., 2], a[..., 0] - b[..., 2]))
  dy = np.maximum(0.0, np.maximum(b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]))
  return np.hypot(dx, dy)


def background_box(boxes: np.ndarray, height: int, width: int, size_frac: float = 0.25,
                   rng: np.random.Generator | None = None, grid: int = 16) -> np.ndarray:
  """A crop of the frame that overlaps none of ``boxes`` (the background node's region).

  The crop is ``round(size_frac * H) x round(size_frac * W)`` pixels (at least 1). Candidates are
  the crops whose top-left corners lie on a ``grid x grid`` lattice spanning the frame (crops never
  leave the frame). A candidate is free when its intersection area with every box is 0 (touching
  edges is allowed).

  * ``rng=None`` (deterministic): the free candidate farthest from the boxes (largest minimum
    rectangle gap; ties -> closest to the frame centre, then lowest index).
  * ``rng`` given: a uniformly random free candidate (the paper's "random crop").
  * No free candidate (frame covered): the candidate with the smallest total intersection area
    with the boxes (ties -> closest to the frame centre). This fallback is the only case where the
    crop overlaps a box.

  Args:
    boxes: float [K, 4] boxes to avoid (K may be 0; then the centre crop is returned, or a random
      one with ``rng``).
    height, width: frame size in pixels.
    size_frac: crop side as a fraction of each frame side, in (0, 1].
    rng: optional generator.
    grid: lattice size per axis (>= 1).

  Returns:
    float32 [4] crop (x0, y0, x1, y1) in pixels.
  """
  if height < 1 or width < 1:
    raise ValueError(f"height, width: expected >= 1, got {height}, {width}")
  if not 0.0 < size_frac <= 1.0:
    raise ValueError(f"size_frac: expected a value in (0, 1], got {size_frac}")
  if grid < 1:
    raise ValueError(f"grid: expected >= 1, got {grid}")
  boxes = _as_boxes(boxes, "boxes")
  ch = max(1, int(round(size_frac * height)))
  cw = max(1, int(round(size_frac * width)))
  ys = np.unique(np.round(np.linspace(0, height - ch, grid)))
  xs = np.unique(np.round(np.linspace(0, width - cw, grid)))
  yy, xx = np.meshgrid(ys, xs, indexing="ij")
  cands = np.stack([xx.ravel(), yy.ravel(), xx.ravel() + cw, yy.ravel() + ch], axis=-1)
  centre = np.array([width / 2.0, height / 2.0])
  cand_centre = np.stack([cands[:, 0] + cw / 2.0, cands[:, 1] + ch / 2.0], axis=-1)
  off_centre = np.linalg.norm(cand_centre - centre, axis=-1)
  if len(boxes) == 0:
    overlap = np.zeros(len(cands))
    gap = np.full(len(cands), np.inf)
  else:
    overlap = intersection_area(cands, boxes).sum(axis=1)
    gap = _rect_gap(cands, boxes).min(axis=1)
  free = np.flatnonzero(overlap == 0)
  if len(free) > 0:
    if rng is not None:
      pick = free[rng.integers(len(free))]
    else:
      # lexsort: last key is primary -> max gap, then min distance to centre, then index.
      pick = free[np.lexsort((free, off_centre[free], -gap[free]))[0]]
  else:
    pick = np.lexsort((np.arange(len(cands)), off_centre, overlap))[0]
  return cands[pick].astype(np.float32)


def _complete_edges(k: int) -> tuple[np.ndarray, np.ndarray]:
  """All ordered pairs (i, j), i != j, row-major: senders i, receivers j."""
  ii, jj = np.nonzero(~np.eye(k, dtype=bool))
  return ii.astype(np.int32), jj.astype(np.int32)


def build_window_graph(depth_ref: np.ndarray, auditory_boxes: np.ndarray,
                       context_boxes: np.ndarray, background_box: np.ndarray | Sequence[float],
                       edge_mode: str = "chamfer", percentile: float = 25.0,
                       rbf_mode: str = "paper", min_edge_weight: float = 0.0,
                       max_points: int | None = 256) -> dict[str, Any]:
  """Builds the pseudo-3D scene graph of one reference frame.

  Node order: ``[auditory (A) ..., context (C) ..., background (1)]``, K = A + C + 1 nodes.
  With no auditory object (A = 0) the graph is the background node only — any context boxes are
  ignored, since context is defined relative to auditory objects — with no edges; it is a valid
  graph (the model then sees the background slot only).

  Edge modes (edges are directed and listed both ways, i -> j and j -> i; no self-loops):

  * ``"chamfer"`` (ASMP): every ordered pair, weight
    :func:`asmp_jax.graph.geometry.rbf_edge_weights` of the pairwise Chamfer distances
    (``percentile``, ``rbf_mode``). ``edge_type`` is 0.
  * ``"equal"`` (AVSGS): dense graph, every weight 1, ``edge_type`` 0.
  * ``"multiscale"`` (paper's ablation, a "forest of graphs"): with ``Dn`` the max-normalised
    Chamfer matrix, scale 0 keeps the pairs with ``Dn <= median`` of the off-diagonal entries and
    scale 1 the pairs with ``Dn <= 100th percentile`` (i.e. all pairs). Both edge sets are listed
    (scale 0 first, so a pair may appear twice) and ``edge_type`` holds the scale index; a kept
    edge's weight is the RBF of its scale, ``exp(-Dn / tau^2)`` (``rbf_mode="paper"``) or
    ``exp(-Dn / tau)`` (``"public"``) with ``tau`` the scale's threshold (1 if ``tau`` is 0).
    Consumers can one-hot ``edge_type`` into an extra edge-feature column.

  Edges with weight ``< min_edge_weight`` are dropped (pairwise, so the graph stays symmetric).
  Nodes whose box has no pixel in the frame have an empty point cloud; their Chamfer distances are
  ``inf`` and their edges get the normalised distance 1 (as far as the farthest observed pair),
  so they stay connected with the weakest weight.

  Args:
    depth_ref: float [H, W] reference-frame pseudo-depth.
    auditory_boxes: float [A, 4].
    context_boxes: float [C, 4].
    background_box: float [4].
    edge_mode: "chamfer", "equal" or "multiscale".
    percentile: RBF scale percentile (chamfer mode).
    rbf_mode: "paper" or "public" (see :func:`asmp_jax.graph.geometry.rbf_edge_weights`).
    min_edge_weight: weak-edge pruning threshold (0 keeps every edge).
    max_points: per-node point cap for the Chamfer distances.

  Returns:
    dict of numpy arrays:
      ``node_type`` int32 [K] (0 auditory, 1 context, 2 background), ``boxes`` float32 [K, 4],
      ``num_points`` int32 [K] (cloud sizes), ``senders``/``receivers`` int32 [E],
      ``edge_weight`` float32 [E] in (0, 1], ``edge_type`` int32 [E], ``chamfer`` float32 [K, K]
      (inspection only), ``n_node`` and ``n_edge`` int32 scalars, ``num_edge_types`` int
      (1, or 2 for multiscale).
  """
  if edge_mode not in EDGE_MODES:
    raise ValueError(f"edge_mode: expected one of {EDGE_MODES}, got {edge_mode!r}")
  if rbf_mode not in ("paper", "public"):
    raise ValueError(f"rbf_mode: expected 'paper' or 'public', got {rbf_mode!r}")
  depth_ref = np.asarray(depth_ref)
  if depth_ref.ndim != 2:
    raise ValueError(f"depth_ref: expected [H, W], got shape {depth_ref.shape}")
  aud = _as_boxes(auditory_boxes, "auditory_boxes")
  ctx = _as_boxes(context_boxes, "context_boxes") if len(aud) else np.zeros((0, 4))
  bg = np.asarray(background_box, np.float64).reshape(1, 4)
  boxes = np.concatenate([aud, ctx, bg], axis=0)
  node_type = np.concatenate([np.full(len(aud), NODE_AUDITORY), np.full(len(ctx), NODE_CONTEXT),
                              [NODE_BACKGROUND]]).astype(np.int32)
  k = len(boxes)
  clouds = [geometry.box_points(depth_ref, b, max_points=max_points) for b in boxes]
  num_points = np.array([len(c) for c in clouds], np.int32)
  valid = num_points > 0
  chamfer = geometry.pairwise_chamfer(clouds)
  senders, receivers = _complete_edges(k) if len(aud) else (np.zeros(0, np.int32),) * 2
  edge_type = np.zeros(len(senders), np.int32)
  num_edge_types = 1
  if edge_mode == "equal":
    weight = np.ones(len(senders), np.float32)
  elif edge_mode == "chamfer":
    weight = geometry.rbf_edge_weights(chamfer, valid, percentile, rbf_mode)[senders, receivers]
  else:
    num_edge_types = 2
    dn = geometry.normalized_distances(chamfer, valid)[senders, receivers]
    s_all, r_all, w_all, t_all = [], [], [], []
    taus = (np.median(dn), np.max(dn)) if len(dn) else (0.0, 0.0)
    for scale_idx, tau in enumerate(taus):
      keep = dn <= tau
      denom = (tau * tau if rbf_mode == "paper" else tau) if tau > 0 else 1.0
      s_all.append(senders[keep])
      r_all.append(receivers[keep])
      w_all.append(np.maximum(np.exp(-dn[keep] / denom), geometry.MIN_EDGE_WEIGHT))
      t_all.append(np.full(int(keep.sum()), scale_idx, np.int32))
    senders, receivers = np.concatenate(s_all), np.concatenate(r_all)
    weight, edge_type = np.concatenate(w_all).astype(np.float32), np.concatenate(t_all)
  keep = weight >= min_edge_weight
  senders, receivers = senders[keep], receivers[keep]
  weight, edge_type = weight[keep].astype(np.float32), edge_type[keep]
  return {
      "node_type": node_type,
      "boxes": boxes.astype(np.float32),
      "num_points": num_points,
      "senders": senders.astype(np.int32),
      "receivers": receivers.astype(np.int32),
      "edge_weight": weight,
      "edge_type": edge_type.astype(np.int32),
      "chamfer": chamfer.astype(np.float32),
      "n_node": np.int32(k),
      "n_edge": np.int32(len(senders)),
      "num_edge_types": num_edge_types,
  }


def default_max_edges(max_nodes: int = DEFAULT_MAX_NODES, num_edge_types: int = 1) -> int:
  """Edges of a complete directed graph without self-loops, per edge type."""
  return max_nodes * (max_nodes - 1) * num_edge_types


def pad_graph(graph: dict[str, Any], max_nodes: int = DEFAULT_MAX_NODES,
              max_edges: int | None = None) -> dict[str, np.ndarray]:
  """Pads a :func:`build_window_graph` graph to static sizes.

  Node arrays are padded to ``max_nodes`` (``node_type`` with -1, ``boxes`` and ``num_points``
  with 0) and edge arrays to ``max_edges`` (``senders``/``receivers`` with 0, ``edge_weight`` 0,
  ``edge_type`` -1). Padding carries no meaning: use ``node_mask`` / ``edge_mask`` (e.g. mask
  attention logits and segment sums). The Chamfer matrix is not carried over.

  Args:
    graph: output of :func:`build_window_graph`.
    max_nodes: static node count (23 = 2 auditory + 20 context + 1 background).
    max_edges: static edge count; default :func:`default_max_edges` for ``max_nodes`` and the
      graph's ``num_edge_types``.

  Returns:
    dict with ``node_type`` int32 [max_nodes], ``boxes`` float32 [max_nodes, 4], ``num_points``
    int32 [max_nodes], ``node_mask`` bool [max_nodes], ``senders``/``receivers``/``edge_type``
    int32 [max_edges], ``edge_weight`` float32 [max_edges], ``edge_mask`` bool [max_edges],
    ``n_node``/``n_edge`` int32 scalars (real counts).

  Raises:
    ValueError: if the graph has more nodes or edges than the static sizes.
  """
  if max_edges is None:
    max_edges = default_max_edges(max_nodes, int(graph.get("num_edge_types", 1)))
  k = len(graph["node_type"])
  e = len(graph["senders"])
  if k > max_nodes:
    raise ValueError(f"pad_graph: graph has {k} nodes, more than max_nodes={max_nodes}")
  if e > max_edges:
    raise ValueError(f"pad_graph: graph has {e} edges, more than max_edges={max_edges}")

  def pad(x, n, fill, dtype):
    x = np.asarray(x, dtype)
    out = np.full((n,) + x.shape[1:], fill, dtype)
    out[:len(x)] = x
    return out

  return {
      "node_type": pad(graph["node_type"], max_nodes, -1, np.int32),
      "boxes": pad(graph["boxes"], max_nodes, 0.0, np.float32),
      "num_points": pad(graph["num_points"], max_nodes, 0, np.int32),
      "node_mask": np.arange(max_nodes) < k,
      "senders": pad(graph["senders"], max_edges, 0, np.int32),
      "receivers": pad(graph["receivers"], max_edges, 0, np.int32),
      "edge_weight": pad(graph["edge_weight"], max_edges, 0.0, np.float32),
      "edge_type": pad(graph["edge_type"], max_edges, -1, np.int32),
      "edge_mask": np.arange(max_edges) < e,
      "n_node": np.int32(k),
      "n_edge": np.int32(e),
  }
