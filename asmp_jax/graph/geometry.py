"""Pseudo-3D geometry: back-projection, Chamfer distances, RBF edge weights, similarity fitting.

Conventions used throughout :mod:`asmp_jax.graph`:

* A frame is ``H x W`` pixels; pixel ``(u, v)`` is column ``u``, row ``v`` (integer indices; a
  sub-pixel position ``(x, y)`` uses the same axes).
* Boxes are ``(x0, y0, x1, y1)`` in pixels. The pixels of a box are the columns
  ``floor(x0) <= u < ceil(x1)`` and rows ``floor(y0) <= v < ceil(y1)``, clipped to the frame.
* The pseudo-3D point of pixel ``(u, v)`` with depth ``z`` is ``(u / W, v / H, z)`` (paper §3.3:
  pixel-normalised xy and pseudo-depth). ``+x`` is right, ``+y`` is down in the image and ``+z`` is
  away from the camera (depth providers return "larger = farther").
* A similarity transform ``(s, R, t)`` maps a point ``x`` to ``s * R @ x + t``.

Everything here is plain numpy / scipy and works on float64 internally; outputs are float32 unless
stated otherwise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import spatial

# Above this many points per side, nearest neighbours come from a k-d tree instead of a dense
# distance matrix (both exact).
_DENSE_NN_LIMIT = 2048

Similarity = tuple[float, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Sampling and back-projection.
# ---------------------------------------------------------------------------------------------


def _check_depth(depth: np.ndarray, name: str = "depth") -> np.ndarray:
  depth = np.asarray(depth)
  if depth.ndim != 2 or depth.shape[0] == 0 or depth.shape[1] == 0:
    raise ValueError(f"{name}: expected a non-empty [H, W] array, got shape {depth.shape}")
  return depth


def _check_box(box: np.ndarray | Sequence[float], name: str = "box") -> np.ndarray:
  box = np.asarray(box, np.float64)
  if box.shape != (4,):
    raise ValueError(f"{name}: expected (x0, y0, x1, y1), got shape {box.shape}")
  return box


def box_pixel_range(box: np.ndarray | Sequence[float], height: int,
                    width: int) -> tuple[int, int, int, int]:
  """Integer pixel range ``(c0, r0, c1, r1)`` (half-open) covered by ``box``, clipped to the frame.

  Columns ``c0 <= u < c1`` with ``c0 = floor(x0)``, ``c1 = ceil(x1)``, rows likewise, all clipped
  to ``[0, W]`` / ``[0, H]``. The range is empty (``c1 <= c0`` or ``r1 <= r0``) when the box lies
  outside the frame, has zero area, or is inverted.
  """
  box = _check_box(box)
  if not np.all(np.isfinite(box)):
    return 0, 0, 0, 0
  c0 = int(np.clip(np.floor(box[0]), 0, width))
  r0 = int(np.clip(np.floor(box[1]), 0, height))
  c1 = int(np.clip(np.ceil(box[2]), 0, width))
  r1 = int(np.clip(np.ceil(box[3]), 0, height))
  if box[2] <= box[0] or box[3] <= box[1]:
    return c0, r0, c0, r0
  return c0, r0, c1, r1


def _grid_indices(n: int, k: int) -> np.ndarray:
  """``k`` (<= n) distinct, evenly spread integer indices in ``[0, n)``."""
  if k >= n:
    return np.arange(n)
  return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def box_points(depth: np.ndarray, box: np.ndarray | Sequence[float], max_points: int | None = 256,
               rng: np.random.Generator | None = None) -> np.ndarray:
  """Back-projects the pixels of ``box`` to pseudo-3D points ``(u / W, v / H, depth[v, u])``.

  Args:
    depth: float [H, W] pseudo-depth (larger = farther).
    box: (x0, y0, x1, y1) in pixels; clipped to the frame (see :func:`box_pixel_range`).
    max_points: upper bound on the number of returned points (``None``: every pixel). When the box
      holds more pixels, they are subsampled: with ``rng=None`` deterministically on a regular
      ``ky x kx`` grid spread evenly over the box (``ky * kx <= max_points``, aspect ratio kept);
      with a ``numpy.random.Generator``, a uniformly random subset without replacement.
    rng: optional generator for random subsampling.

  Returns:
    float32 [P, 3] points, row-major over the box (grid mode). Pixels with non-finite depth are
    dropped. A box entirely outside the frame, of zero area, or inverted gives an empty ``[0, 3]``
    array (never an exception); :func:`pairwise_chamfer` treats such a cloud as "no geometry".
  """
  depth = _check_depth(depth)
  if max_points is not None and max_points < 1:
    raise ValueError(f"max_points: expected >= 1 or None, got {max_points}")
  height, width = depth.shape
  c0, r0, c1, r1 = box_pixel_range(box, height, width)
  nr, nc = r1 - r0, c1 - c0
  if nr <= 0 or nc <= 0:
    return np.zeros((0, 3), np.float32)
  if max_points is None or nr * nc <= max_points:
    rows, cols = np.arange(r0, r1), np.arange(c0, c1)
    vv, uu = np.meshgrid(rows, cols, indexing="ij")
  elif rng is None:
    ky = int(np.clip(np.round(np.sqrt(max_points * nr / nc)), 1, nr))
    kx = int(np.clip(max_points // ky, 1, nc))
    rows, cols = r0 + _grid_indices(nr, ky), c0 + _grid_indices(nc, kx)
    vv, uu = np.meshgrid(rows, cols, indexing="ij")
  else:
    flat = np.sort(rng.choice(nr * nc, size=max_points, replace=False))
    vv, uu = r0 + flat // nc, c0 + flat % nc
  vv, uu = vv.reshape(-1), uu.reshape(-1)
  z = np.asarray(depth[vv, uu], np.float64)
  keep = np.isfinite(z)
  pts = np.stack([uu / width, vv / height, z], axis=-1)[keep]
  return pts.astype(np.float32)


def bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Samples ``image`` at sub-pixel positions with bilinear interpolation and edge clamping.

  Args:
    image: [H, W] or [H, W, C] array (any real dtype).
    x: float [...] column positions in pixels.
    y: float [...] row positions in pixels (same shape as ``x``).

  Returns:
    float64 [...] (or [..., C]) values. Positions outside the frame read the nearest border pixel;
    non-finite positions give NaN. Bilinear interpolation reproduces affine functions of (x, y)
    exactly inside the frame.
  """
  image = np.asarray(image)
  if image.ndim not in (2, 3):
    raise ValueError(f"image: expected [H, W] or [H, W, C], got shape {image.shape}")
  height, width = image.shape[:2]
  x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
  bad = ~(np.isfinite(x) & np.isfinite(y))
  x = np.clip(np.where(bad, 0.0, x), 0.0, width - 1.0)
  y = np.clip(np.where(bad, 0.0, y), 0.0, height - 1.0)
  x0 = np.clip(np.floor(x).astype(np.int64), 0, max(width - 2, 0))
  y0 = np.clip(np.floor(y).astype(np.int64), 0, max(height - 2, 0))
  x1 = np.minimum(x0 + 1, width - 1)
  y1 = np.minimum(y0 + 1, height - 1)
  fx, fy = x - x0, y - y0
  if image.ndim == 3:
    fx, fy = fx[..., None], fy[..., None]
  img = image.astype(np.float64, copy=False)
  top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
  bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
  out = top * (1 - fy) + bottom * fy
  if np.any(bad):
    out[bad] = np.nan
  return out


def lift_points(xy: np.ndarray, depth: np.ndarray) -> np.ndarray:
  """Lifts sub-pixel image positions to pseudo-3D ``(x / W, y / H, depth(x, y))``.

  Args:
    xy: float [..., 2] positions (x = column, y = row) in pixels.
    depth: float [H, W] pseudo-depth, sampled bilinearly (edge-clamped).

  Returns:
    float64 [..., 3] points.
  """
  depth = _check_depth(depth)
  xy = np.asarray(xy, np.float64)
  if xy.shape[-1:] != (2,):
    raise ValueError(f"xy: expected [..., 2], got shape {xy.shape}")
  height, width = depth.shape
  z = bilinear_sample(depth, xy[..., 0], xy[..., 1])
  return np.stack([xy[..., 0] / width, xy[..., 1] / height, z], axis=-1)


# ---------------------------------------------------------------------------------------------
# Chamfer distances.
# ---------------------------------------------------------------------------------------------


def _check_cloud(p: np.ndarray, name: str) -> np.ndarray:
  p = np.asarray(p, np.float64)
  if p.ndim != 2 or p.shape[1] != 3:
    raise ValueError(f"{name}: expected a [N, 3] point cloud, got shape {p.shape}")
  if not np.all(np.isfinite(p)):
    raise ValueError(f"{name}: point cloud holds non-finite coordinates")
  return p


def _nn_distances(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Euclidean distance from every row of ``p`` [N,3] to its nearest row of ``q`` [M,3]."""
  if max(len(p), len(q)) > _DENSE_NN_LIMIT:
    dist, _ = spatial.cKDTree(q).query(p, k=1)
    return dist
  d2 = np.sum(p**2, 1)[:, None] + np.sum(q**2, 1)[None, :] - 2.0 * (p @ q.T)
  return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def chamfer_distance(p: np.ndarray, q: np.ndarray) -> float:
  """Symmetric Chamfer distance between two point sets.

  Definition: ``mean_{a in p} min_{b in q} ||a - b||_2 + mean_{b in q} min_{a in p} ||a - b||_2``
  (Euclidean, not squared; the sum of the two directed mean nearest-neighbour distances).
  It is symmetric, non-negative, and zero exactly when the two sets contain the same points.

  Args:
    p: float [N, 3] finite points.
    q: float [M, 3] finite points.

  Returns:
    The distance as a Python float; ``inf`` when either set is empty (no geometry to compare).
  """
  p, q = _check_cloud(p, "p"), _check_cloud(q, "q")
  if len(p) == 0 or len(q) == 0:
    return float("inf")
  # Centring keeps the expanded squared distances accurate far from the origin.
  centre = np.concatenate([p, q]).mean(axis=0)
  p, q = p - centre, q - centre
  return float(_nn_distances(p, q).mean() + _nn_distances(q, p).mean())


def pairwise_chamfer(clouds: Sequence[np.ndarray]) -> np.ndarray:
  """Symmetric Chamfer distance (as :func:`chamfer_distance`) between every pair of clouds.

  All points are concatenated; for each cloud one exact k-d tree query of *all* points gives the
  nearest-neighbour distance of every point to that cloud (a loop over the K clouds, vectorised over
  points), and segment means (``np.add.reduceat``) turn these into the K x K directed means. For
  23 clouds of 256 points this is ~4x faster than a dense distance matrix.

  Args:
    clouds: K float [P_i, 3] finite point clouds (P_i may be 0).

  Returns:
    float64 [K, K] symmetric matrix with a zero diagonal. Off-diagonal entries involving an empty
    cloud are ``inf`` (unknown geometry; :func:`rbf_edge_weights` treats them as maximally distant).
  """
  clouds = [_check_cloud(c, f"clouds[{i}]") for i, c in enumerate(clouds)]
  k = len(clouds)
  out = np.full((k, k), np.inf)
  np.fill_diagonal(out, 0.0)
  sizes = np.array([len(c) for c in clouds], np.int64)
  nonempty = np.flatnonzero(sizes > 0)
  if len(nonempty) < 2:
    return out
  pts = np.concatenate([clouds[i] for i in nonempty], axis=0)
  seg_sizes = sizes[nonempty]
  starts = np.concatenate([[0], np.cumsum(seg_sizes)[:-1]])
  # nn[n, j]: distance from point n to its nearest neighbour in (non-empty) cloud j.
  nn = np.stack([spatial.cKDTree(pts[a:a + n]).query(pts, k=1)[0]
                 for a, n in zip(starts, seg_sizes)], axis=1)
  # directed[i, j]: mean over the points of cloud i of their distance to cloud j.
  directed = np.add.reduceat(nn, starts, axis=0) / seg_sizes[:, None]
  sym = directed + directed.T
  np.fill_diagonal(sym, 0.0)
  out[np.ix_(nonempty, nonempty)] = sym
  return out


# ---------------------------------------------------------------------------------------------
# Edge weights.
# ---------------------------------------------------------------------------------------------

# Smallest edge weight returned by rbf_edge_weights: exp(-D / sigma^2) underflows for small sigma;
# the floor keeps every edge weight strictly positive (prune weak edges explicitly instead).
MIN_EDGE_WEIGHT = float(np.finfo(np.float32).tiny)


def normalized_distances(dist: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
  """Divides a distance matrix by its maximum over valid edges; unknown entries become 1.

  Args:
    dist: float [K, K] non-negative distances (``inf``/``NaN`` allowed for unknown pairs).
    valid: optional bool [K]; edges touching an invalid node count as unknown.

  Returns:
    float64 [K, K] in [0, 1] with a zero diagonal. "Unknown" entries (invalid node, non-finite
    distance) are set to 1, i.e. as far apart as the farthest observed pair. If no observed edge has
    a positive distance, all observed entries are 0.
  """
  dist = np.asarray(dist, np.float64)
  if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
    raise ValueError(f"dist: expected a square [K, K] matrix, got shape {dist.shape}")
  k = dist.shape[0]
  if valid is None:
    valid = np.ones(k, bool)
  valid = np.asarray(valid, bool)
  if valid.shape != (k,):
    raise ValueError(f"valid: expected shape ({k},), got {valid.shape}")
  if np.any(dist[np.isfinite(dist)] < 0):
    raise ValueError("dist: distances must be non-negative")
  off = ~np.eye(k, dtype=bool)
  known = off & valid[:, None] & valid[None, :] & np.isfinite(dist)
  dmax = dist[known].max() if np.any(known) else 0.0
  out = np.ones((k, k))
  out[known] = dist[known] / dmax if dmax > 0 else 0.0
  np.fill_diagonal(out, 0.0)
  return out


def rbf_scale(dn: np.ndarray, percentile: float = 25.0) -> float:
  """Percentile of the positive off-diagonal entries of a normalised distance matrix.

  Returns 1.0 when there is no positive off-diagonal entry (one node, all distances zero), so
  that the RBF stays finite. Used as ``sigma`` (paper) or ``P`` (public code).
  """
  if not 0.0 <= percentile <= 100.0:
    raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
  dn = np.asarray(dn, np.float64)
  off = ~np.eye(dn.shape[0], dtype=bool)
  pos = dn[off & (dn > 0)]
  if pos.size == 0:
    return 1.0
  return float(np.percentile(pos, percentile))


def rbf_edge_weights(dist: np.ndarray, valid: np.ndarray | None = None, percentile: float = 25.0,
                     mode: str = "paper") -> np.ndarray:
  """Radial-basis edge weights from a (Chamfer) distance matrix (paper §3.3).

  Distances are first normalised by their maximum over the observed edges
  (:func:`normalized_distances`: edges touching an invalid node, or with a non-finite distance,
  get the normalised distance 1). With ``Dn`` the normalised matrix and ``p`` the ``percentile``-th
  percentile of its strictly positive off-diagonal entries (1.0 if there are none):

  * ``mode="paper"``:  ``w = exp(-Dn / sigma^2)`` with ``sigma = p`` (the paper's formula).
  * ``mode="public"``: ``w = exp(-Dn / p)`` (the authors' public code).

  Zero distances are excluded from the percentile in both modes so that coincident boxes cannot
  drive the scale to zero; with a single node or all-equal distances every weight is finite
  (``exp(-1/p^2)`` / ``exp(-1/p)`` for equal positive distances, 1 for all-zero distances).

  Args:
    dist: float [K, K] symmetric non-negative distances (``inf``/``NaN`` = unknown).
    valid: optional bool [K] node validity (e.g. non-empty point cloud).
    percentile: in [0, 100].
    mode: "paper" or "public".

  Returns:
    float32 [K, K] symmetric weights in ``[MIN_EDGE_WEIGHT, 1]`` off the diagonal (underflow is
    floored at ``MIN_EDGE_WEIGHT`` so that no edge weight is exactly zero); the diagonal is 0
    (there are no self-edges).
  """
  if mode not in ("paper", "public"):
    raise ValueError(f"mode: expected 'paper' or 'public', got {mode!r}")
  dn = normalized_distances(dist, valid)
  p = rbf_scale(dn, percentile)
  scale = p * p if mode == "paper" else p
  w = np.exp(-dn / scale)
  w = np.maximum(w, MIN_EDGE_WEIGHT)
  np.fill_diagonal(w, 0.0)
  return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Similarity transforms.
# ---------------------------------------------------------------------------------------------


def apply_similarity(points: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Applies ``x -> s * R @ x + t`` to float [..., 3] points; returns float64 [..., 3]."""
  points = np.asarray(points, np.float64)
  if points.shape[-1:] != (3,):
    raise ValueError(f"points: expected [..., 3], got shape {points.shape}")
  return s * points @ np.asarray(rot, np.float64).T + np.asarray(t, np.float64)


def identity_similarity() -> Similarity:
  """The identity ``(1.0, I_3, 0)``."""
  return 1.0, np.eye(3), np.zeros(3)


def fit_similarity(src: np.ndarray, dst: np.ndarray, with_scale: bool = True,
                   weights: np.ndarray | None = None) -> Similarity:
  """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991), optionally weighted.

  Minimises ``sum_n w_n ||dst_n - (s R src_n + t)||^2`` over rotations ``R`` (det +1, reflections
  excluded), ``s > 0`` (or ``s = 1`` when ``with_scale=False``) and ``t``. Needs three
  non-collinear points with positive weight for a unique rotation; with fewer the returned
  rotation is one of the minimisers. If the weighted source spread is zero, ``s = 1``.

  Args:
    src: float [N, 3].
    dst: float [N, 3], corresponding rows.
    with_scale: fit the scale (similarity) or not (rigid).
    weights: optional non-negative float [N].

  Returns:
    ``(s, R, t)``: float scale, float64 [3, 3] rotation, float64 [3] translation.
  """
  src, dst = _check_cloud(src, "src"), _check_cloud(dst, "dst")
  if src.shape != dst.shape:
    raise ValueError(f"src and dst: expected equal shapes, got {src.shape} and {dst.shape}")
  if len(src) == 0:
    raise ValueError("src: need at least one correspondence")
  w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  if w.shape != (len(src),) or np.any(w < 0) or not np.all(np.isfinite(w)):
    raise ValueError(f"weights: expected {len(src)} finite non-negative values")
  wsum = w.sum()
  if wsum <= 0:
    raise ValueError("weights: all weights are zero")
  w = w / wsum
  mu_s, mu_d = w @ src, w @ dst
  xs, xd = src - mu_s, dst - mu_d
  cov = (xd * w[:, None]).T @ xs
  u, sv, vt = np.linalg.svd(cov)
  sign = np.ones(3)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sign[-1] = -1.0
  rot = (u * sign) @ vt
  var_s = float(w @ np.sum(xs**2, axis=1))
  s = float(np.sum(sv * sign) / var_s) if (with_scale and var_s > 0) else 1.0
  t = mu_d - s * rot @ mu_s
  return s, rot, t


def icp(src: np.ndarray, dst: np.ndarray, init: Similarity | None = None, iters: int = 30,
        tol: float = 1e-7, trim_fraction: float = 0.9, with_scale: bool = True,
        max_distance: float | None = None) -> tuple[float, np.ndarray, np.ndarray, float]:
  """Trimmed iterative closest point: similarity mapping ``src`` onto ``dst``.

  Each iteration transforms ``src`` with the current estimate, pairs every point with its nearest
  neighbour in ``dst`` (exact k-d tree), keeps the ``trim_fraction`` closest pairs (and only pairs
  closer than ``max_distance`` if given) — trimmed ICP, robust to outliers and partial overlap as
  long as ``trim_fraction`` does not exceed the overlapping fraction — and refits with
  :func:`fit_similarity`. Stops after ``iters`` iterations or when the trimmed RMSE improves by
  less than ``tol``.

  Args:
    src: float [N, 3] moving points.
    dst: float [M, 3] fixed points.
    init: initial ``(s, R, t)``; identity if None.
    iters: maximum number of iterations (>= 1).
    tol: convergence threshold on the RMSE change.
    trim_fraction: fraction in (0, 1] of correspondences kept per iteration.
    with_scale: similarity (True) or rigid (False).
    max_distance: optional hard gate on correspondence distance.

  Returns:
    ``(s, R, t, rmse)`` with ``rmse`` the root-mean-square distance of the kept correspondences
    under the returned transform (``inf`` if ``max_distance`` left fewer than 3 pairs before the
    first fit, in which case ``init`` is returned unchanged).
  """
  src, dst = _check_cloud(src, "src"), _check_cloud(dst, "dst")
  if len(src) == 0 or len(dst) == 0:
    raise ValueError(f"icp: src and dst must be non-empty, got {len(src)} and {len(dst)} points")
  if not 0.0 < trim_fraction <= 1.0:
    raise ValueError(f"trim_fraction: expected a value in (0, 1], got {trim_fraction}")
  if iters < 1:
    raise ValueError(f"iters: expected >= 1, got {iters}")
  s, rot, t = identity_similarity() if init is None else init
  rot, t = np.asarray(rot, np.float64), np.asarray(t, np.float64)
  tree = spatial.cKDTree(dst)
  n_keep = max(1, int(np.ceil(trim_fraction * len(src))))
  prev = np.inf
  rmse = np.inf
  for _ in range(iters):
    dist, idx = tree.query(apply_similarity(src, s, rot, t), k=1)
    keep = np.argsort(dist, kind="stable")[:n_keep]
    if max_distance is not None:
      keep = keep[dist[keep] <= max_distance]
      if len(keep) < 3:
        break
    s, rot, t = fit_similarity(src[keep], dst[idx[keep]], with_scale=with_scale)
    resid = apply_similarity(src[keep], s, rot, t) - dst[idx[keep]]
    rmse = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    if prev - rmse < tol:
      break
    prev = rmse
  return s, rot, t, rmse
