"""Rectifying the frames of a window to its reference frame (paper §3.2, "Rectifying Frames").

Corners of the reference frame (frame 0 of the window) are tracked through the window with
pyramidal Lucas–Kanade; the tracks are lifted to pseudo-3D with each frame's depth
(:func:`asmp_jax.graph.geometry.lift_points`), and for every frame ``f`` a similarity ("a 3D
transformation accurate up to a scale") mapping frame ``f``'s pseudo-3D points into the reference
frame's is fitted: a robust closed-form fit on the tracked correspondences initialises a trimmed
ICP over the same lifted tracks. Too few surviving tracks (textureless frames, shot cuts) give the
identity with ``valid = False`` instead of an exception.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from asmp_jax.graph import geometry


@dataclasses.dataclass(frozen=True)
class WindowRectification:
  """Per-frame similarities ``x_ref = scale[f] * rotation[f] @ x_f + translation[f]``.

  Attributes:
    scale: float64 [l] scales (1 for frame 0 and for fallbacks).
    rotation: float64 [l, 3, 3] rotations.
    translation: float64 [l, 3] translations in pseudo-3D units ((u/W, v/H, depth)).
    valid: bool [l]; False where too few tracks survived and the identity was used instead.
      Frame 0 is always valid.
    num_tracks: int32 [l] number of reference corners still tracked in each frame.
    rmse: float64 [l] ICP residual (trimmed RMSE in pseudo-3D units); 0 for frame 0, NaN for
      fallbacks.
  """
  scale: np.ndarray
  rotation: np.ndarray
  translation: np.ndarray
  valid: np.ndarray
  num_tracks: np.ndarray
  rmse: np.ndarray

  def __len__(self) -> int:
    return len(self.scale)

  def transform(self, f: int) -> geometry.Similarity:
    """``(s, R, t)`` of frame ``f``."""
    return float(self.scale[f]), self.rotation[f], self.translation[f]

  def apply(self, f: int, points: np.ndarray) -> np.ndarray:
    """Maps float [..., 3] pseudo-3D points of frame ``f`` into the reference frame."""
    return geometry.apply_similarity(points, *self.transform(f))


def _to_gray(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    raise ValueError(f"frames: expected uint8, got {frames.dtype}")
  if frames.ndim == 4 and frames.shape[-1] == 3:
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
  if frames.ndim == 3:
    return frames
  raise ValueError(f"frames: expected [l, H, W, 3] RGB or [l, H, W] gray, got {frames.shape}")


def track_points(frames: np.ndarray, max_corners: int = 200, quality_level: float = 0.01,
                 min_distance: float = 5.0, win_size: int = 21, max_level: int = 3,
                 fb_threshold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Tracks corners of frame 0 through the window with pyramidal Lucas–Kanade.

  Shi–Tomasi corners (``cv2.goodFeaturesToTrack``) of frame 0 are tracked frame to frame
  (``cv2.calcOpticalFlowPyrLK``). A track is kept only while LK reports success, the
  forward-backward error (track ``f-1 -> f -> f-1``) is below ``fb_threshold`` pixels and the
  point stays inside the frame; once lost it stays lost.

  Args:
    frames: uint8 [l, H, W, 3] RGB (or [l, H, W] gray) frames of one window, frame 0 = reference.
    max_corners: maximum number of corners.
    quality_level: Shi–Tomasi quality relative to the best corner.
    min_distance: minimum corner spacing in pixels.
    win_size: LK window size in pixels.
    max_level: LK pyramid levels above the base.
    fb_threshold: forward-backward consistency threshold in pixels.

  Returns:
    ``(pts, ok)``: float32 [l, P, 2] positions (x = column, y = row, pixels; NaN where lost) and
    bool [l, P] track status (``ok[0]`` all True). ``P = 0`` when frame 0 has no corners (e.g. a
    textureless frame).
  """
  gray = _to_gray(frames)
  num = len(gray)
  if num == 0:
    raise ValueError("frames: expected at least one frame")
  height, width = gray.shape[1:]
  corners = cv2.goodFeaturesToTrack(gray[0], maxCorners=max_corners, qualityLevel=quality_level,
                                    minDistance=min_distance, blockSize=7)
  if corners is None:
    return np.zeros((num, 0, 2), np.float32), np.zeros((num, 0), bool)
  p0 = corners.reshape(-1, 2).astype(np.float32)
  pts = np.full((num, len(p0), 2), np.nan, np.float32)
  ok = np.zeros((num, len(p0)), bool)
  pts[0], ok[0] = p0, True
  lk = dict(winSize=(win_size, win_size), maxLevel=max_level,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
  for f in range(1, num):
    alive = np.flatnonzero(ok[f - 1])
    if alive.size == 0:
      break
    prev = pts[f - 1, alive].reshape(-1, 1, 2)
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(gray[f - 1], gray[f], prev, None, **lk)
    back, st_b, _ = cv2.calcOpticalFlowPyrLK(gray[f], gray[f - 1], nxt, None, **lk)
    nxt, back, prev = nxt.reshape(-1, 2), back.reshape(-1, 2), prev.reshape(-1, 2)
    fb = np.linalg.norm(back - prev, axis=1)
    inside = ((nxt[:, 0] >= 0) & (nxt[:, 0] <= width - 1) & (nxt[:, 1] >= 0)
              & (nxt[:, 1] <= height - 1))
    good = (st.reshape(-1) == 1) & (st_b.reshape(-1) == 1) & (fb < fb_threshold) & inside
    pts[f, alive[good]] = nxt[good]
    ok[f, alive[good]] = True
  return pts, ok


def _robust_correspondence_fit(src: np.ndarray, dst: np.ndarray, rounds: int = 3,
                               k_mad: float = 3.0) -> tuple[geometry.Similarity, np.ndarray]:
  """Similarity from known correspondences with iterative residual-based outlier rejection.

  Each round refits on the points whose residual is at most ``median + k_mad * 1.4826 * MAD`` of
  the current residuals (moving objects' tracks are rejected as outliers). Returns the transform
  and the final inlier mask.
  """
  inl = np.ones(len(src), bool)
  sim = geometry.fit_similarity(src, dst)
  for _ in range(rounds):
    res = np.linalg.norm(geometry.apply_similarity(src, *sim) - dst, axis=1)
    med = np.median(res[inl])
    mad = np.median(np.abs(res[inl] - med))
    new = res <= med + k_mad * 1.4826 * mad + 1e-12
    if new.sum() < 3 or np.array_equal(new, inl):
      break
    inl = new
    sim = geometry.fit_similarity(src[inl], dst[inl])
  return sim, inl


def rectify_window(frames: np.ndarray, depths: np.ndarray, min_tracks: int = 8,
                   max_corners: int = 200, icp_iters: int = 30,
                   icp_trim_fraction: float = 0.8,
                   identity_tolerance: float = 1e-3) -> WindowRectification:
  """Fits one similarity per frame mapping its pseudo-3D points into frame 0's (paper §3.2).

  For frame ``f``: the corners of frame 0 still tracked in ``f`` (:func:`track_points`) are lifted
  to pseudo-3D with ``depths[0]`` at their reference positions and ``depths[f]`` at their tracked
  positions (bilinear). A robust closed-form fit on these correspondences initialises a trimmed ICP
  (:func:`asmp_jax.graph.geometry.icp`) of frame ``f``'s lifted tracks onto the reference's.
  Frame 0 gets the identity. When fewer than ``min_tracks`` tracks survive, or the fit is not
  finite, the frame gets the identity with ``valid[f] = False`` (never an exception).

  Args:
    frames: uint8 [l, H, W, 3] RGB frames of one window.
    depths: float [l, H, W] pseudo-depth per frame (larger = farther).
    min_tracks: minimum number of surviving tracks (>= 3) to fit a transform.
    max_corners: corners detected in frame 0.
    icp_iters: ICP iterations.
    icp_trim_fraction: fraction of ICP correspondences kept per iteration.
    identity_tolerance: the identity is kept (``valid`` True) when its median track residual is
      within this much (pseudo-3D units) of the fitted transform's.

  Returns:
    A :class:`WindowRectification`.
  """
  frames = np.asarray(frames)
  depths = np.asarray(depths, np.float64)
  if frames.ndim != 4 or depths.shape != frames.shape[:3]:
    raise ValueError(f"frames [l, H, W, 3] and depths [l, H, W] must agree, got {frames.shape} "
                     f"and {depths.shape}")
  if min_tracks < 3:
    raise ValueError(f"min_tracks: expected >= 3, got {min_tracks}")
  num = len(frames)
  scale = np.ones(num)
  rot = np.tile(np.eye(3), (num, 1, 1))
  trans = np.zeros((num, 3))
  valid = np.zeros(num, bool)
  rmse = np.full(num, np.nan)
  valid[0], rmse[0] = True, 0.0
  pts, ok = track_points(frames, max_corners=max_corners)
  num_tracks = ok.sum(axis=1).astype(np.int32)
  if pts.shape[1] == 0:
    return WindowRectification(scale, rot, trans, valid, num_tracks, rmse)
  x_ref = geometry.lift_points(pts[0], depths[0])
  for f in range(1, num):
    sel = ok[f] & np.all(np.isfinite(x_ref), axis=1)
    if sel.sum() < min_tracks:
      continue
    x_f = geometry.lift_points(pts[f, sel], depths[f])
    fin = np.all(np.isfinite(x_f), axis=1)
    if fin.sum() < min_tracks:
      continue
    src, dst = x_f[fin], x_ref[sel][fin]
    init, inl = _robust_correspondence_fit(src, dst)
    if inl.sum() < min_tracks:
      continue
    s, r, t, err = geometry.icp(src[inl], dst[inl], init=init, iters=icp_iters,
                                trim_fraction=icp_trim_fraction)
    if not (np.isfinite(s) and s > 0 and np.all(np.isfinite(r)) and np.all(np.isfinite(t))
            and np.isfinite(err)):
      continue
    # Model selection: keep the identity when it explains the tracks at least as well (median
    # residual, robust to tracks on moving objects). A static camera then gets no spurious
    # rotation, which would couple depth noise into the image axes.
    fitted_res = np.median(np.linalg.norm(geometry.apply_similarity(src, s, r, t) - dst, axis=1))
    identity_res = np.median(np.linalg.norm(src - dst, axis=1))
    if identity_res <= fitted_res + identity_tolerance:
      valid[f], rmse[f] = True, float(identity_res)
      continue
    scale[f], rot[f], trans[f], rmse[f], valid[f] = s, r, t, err, True
  return WindowRectification(scale, rot, trans, valid, num_tracks, rmse)
