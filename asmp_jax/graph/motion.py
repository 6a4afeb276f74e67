"""Ground-truth object motion per window and its direction classes (paper §3.2 and §3.4).

Pipeline for one window of ``l`` frames (reference = frame 0, target = frame ``l - 1``):

1. :func:`compose_flow` chains the frame-to-frame optical flows into one reference -> target flow.
2. :func:`object_displacement` lifts each box pixel to pseudo-3D in the reference frame and at its
   flowed position in the target frame, rectifies the target point into the reference frame with
   the target frame's similarity (:mod:`asmp_jax.graph.rectify`) and takes the per-axis median of
   the displacements: the paper's ``d_i``.
3. :func:`direction_class` quantises ``d_i`` into 10 or 28 classes.

Axis conventions (all of :mod:`asmp_jax.graph`): ``+x`` right, ``+y`` down in the image, ``+z``
away from the camera (larger depth). Displacements are in pseudo-3D units: x as a fraction of the
frame width, y as a fraction of the frame height, z in the depth provider's units.
Flows are ``[..., H, W, 2]`` with channel 0 the x (column) and channel 1 the y (row) displacement in
pixels, defined on the pixels of the earlier frame (OpenCV/RAFT convention).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from asmp_jax.graph import geometry
from asmp_jax.graph import rectify as rectify_lib

# Label for a displacement that could not be measured (NaN: empty box, box left the frame).
INVALID_CLASS = -1

# Default "no motion" thresholds on |d| per axis (x, y, z), the same as the default of
# ``config.graph.no_motion_thresholds`` (asmp_jax.preprocess). x and y are fractions of the frame
# width/height: 0.02 is ~4.5 px at 224 px over one 1-s window, around the error of an optical flow
# chained over 7 frame pairs, so slower image motion cannot be told from a static object. z is in
# the depth provider's units: 0.1 is small against real depth motion in the synthetic scenes
# (objects at 2-8 scene units moving 1-3 units/s in depth) yet above the median noise of a
# monocular depth map normalised to a few units. The public code's 0.6/0.6/0.3 were in its own,
# un-normalised units and do not transfer; raw MiDaS inverse depth needs its own z threshold.
DEFAULT_THRESHOLDS = (0.02, 0.02, 0.1)

_VALID_NUM_CLASSES = (10, 28)


def _check_num_classes(num_classes: int) -> int:
  if num_classes not in _VALID_NUM_CLASSES:
    raise ValueError(f"num_classes: expected 10 or 28, got {num_classes!r}")
  return int(num_classes)


def NO_MOTION_CLASS(num_classes: int) -> int:  # pylint: disable=invalid-name
  """Index of the "little/no motion" class: 8 for 10 classes, 26 for 28 classes."""
  return _check_num_classes(num_classes) - 2


def BACKGROUND_CLASS(num_classes: int) -> int:  # pylint: disable=invalid-name
  """Index of the "background" class: 9 for 10 classes, 27 for 28 classes."""
  return _check_num_classes(num_classes) - 1


def cube_directions() -> np.ndarray:
  """int32 [26, 3]: all ``(a, b, c)`` in ``{-1, 0, 1}^3`` except 0, in lexicographic order."""
  dirs = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.int32)
  return dirs[np.any(dirs != 0, axis=1)]


_AXIS_WORDS = (("left", "right"), ("up", "down"), ("toward", "away"))


def direction_names(num_classes: int) -> list[str]:
  """Human-readable class names, index-aligned with :func:`direction_class`.

  Words: x ``left``/``right``, y ``up``/``down`` (image rows grow downwards), z ``toward``/``away``
  (from the camera). 10 classes: octant ``i`` is named by its three signs, e.g. index 0 is
  ``"left-up-toward"`` and 7 is ``"right-down-away"`` (a zero component counts as negative, see
  :func:`direction_class`). 28 classes: a direction names only its non-zero axes, e.g.
  ``(1, 0, 0) -> "right"``, ``(0, 1, 1) -> "down-away"``. Then ``"no motion"`` and
  ``"background"``.
  """
  num_classes = _check_num_classes(num_classes)
  if num_classes == 10:
    names = ["-".join(_AXIS_WORDS[a][(i >> (2 - a)) & 1] for a in range(3)) for i in range(8)]
  else:
    names = ["-".join(_AXIS_WORDS[a][(c + 1) // 2] for a, c in enumerate(d) if c != 0)
             for d in cube_directions()]
  return names + ["no motion", "background"]


def direction_class(displacement: np.ndarray, num_classes: int, *,
                    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    background: np.ndarray | bool | None = None) -> np.ndarray:
  """Quantises 3D displacements ``[..., 3]`` into direction classes (paper §3.4).

  Class indices, ``num_classes = 10``:
    * 0–7: octants, ``index = 4 * [dx > 0] + 2 * [dy > 0] + [dz > 0]`` (so 0 = left-up-toward,
      7 = right-down-away; a zero component falls on the negative side);
    * 8: little/no motion; 9: background.

  Class indices, ``num_classes = 28``:
    * 0–25: the 26 directions to the corners, face centres and edge midpoints of a cube,
      ``(a, b, c) in {-1, 0, 1}^3 \\ {0}`` in lexicographic order (:func:`cube_directions`:
      0 = (-1,-1,-1), 12 = (0,0,-1), 13 = (0,0,1), 25 = (1,1,1)); a displacement goes to the
      direction with the highest cosine similarity (ties: lowest index);
    * 26: no motion; 27: background.

  "No motion" when ``|d_k| < thresholds[k]`` on all three axes (strict: a component exactly at
  its threshold counts as motion), or when ``d`` is exactly zero. The comparison is done in
  float64. ``NaN``/``inf`` displacements (unknown motion) get :data:`INVALID_CLASS` (-1), never
  "no motion", so that losses can mask them; all finite inputs map into ``[0, num_classes)``.
  Where ``background`` is True the label is the background class whatever the displacement.

  Args:
    displacement: float [..., 3] displacements (x right, y down, z away) in pseudo-3D units.
    num_classes: 10 or 28; anything else raises ValueError.
    thresholds: per-axis no-motion thresholds ``(t_x, t_y, t_z) >= 0``; default
      :data:`DEFAULT_THRESHOLDS` (see its comment for the choice).
    background: optional bool broadcastable to ``displacement.shape[:-1]``.

  Returns:
    int32 [...] class indices.
  """
  num_classes = _check_num_classes(num_classes)
  d = np.asarray(displacement, np.float64)
  if d.shape[-1:] != (3,):
    raise ValueError(f"displacement: expected [..., 3], got shape {d.shape}")
  thr = np.asarray(thresholds, np.float64)
  if thr.shape != (3,) or np.any(~(thr >= 0)):
    raise ValueError(f"thresholds: expected three non-negative values, got {thresholds!r}")
  finite = np.all(np.isfinite(d), axis=-1)
  d0 = np.where(finite[..., None], d, 0.0)
  still = np.all(np.abs(d0) < thr, axis=-1) | np.all(d0 == 0, axis=-1)
  if num_classes == 10:
    pos = (d0 > 0).astype(np.int32)
    cls = 4 * pos[..., 0] + 2 * pos[..., 1] + pos[..., 2]
  else:
    dirs = cube_directions().astype(np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # argmax of cosine similarity = argmax of d . u (the positive norm of d does not change it).
    cls = np.argmax(d0 @ dirs.T, axis=-1).astype(np.int32)
  cls = np.where(still, NO_MOTION_CLASS(num_classes), cls)
  cls = np.where(finite, cls, INVALID_CLASS)
  if background is not None:
    cls = np.where(np.broadcast_to(np.asarray(background, bool), cls.shape),
                   BACKGROUND_CLASS(num_classes), cls)
  return np.asarray(cls, np.int32)


def compose_flow(flows: np.ndarray) -> np.ndarray:
  """Chains frame-to-frame flows into the displacement of every reference pixel to the last frame.

  A reference pixel ``p_0 = (u, v)`` moves to ``p_{k+1} = p_k + flows[k](p_k)``, with ``flows[k]``
  sampled bilinearly at the (sub-pixel) position ``p_k`` (positions outside the frame read the
  border flow). Vectorised over all pixels; the only loop is over the ``l - 1`` flows.

  Args:
    flows: float [l-1, H, W, 2] flows from frame k to k+1 (x, y in pixels).

  Returns:
    float32 [H, W, 2]: ``p_{l-1} - p_0`` for every pixel of frame 0 (zeros when ``l - 1 = 0``).
  """
  flows = np.asarray(flows)
  if flows.ndim != 4 or flows.shape[-1] != 2:
    raise ValueError(f"flows: expected [l-1, H, W, 2], got shape {flows.shape}")
  height, width = flows.shape[1:3]
  vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
  x, y = uu.copy(), vv.copy()
  for flow in flows:
    step = geometry.bilinear_sample(flow, x, y)
    x, y = x + step[..., 0], y + step[..., 1]
  return np.stack([x - uu, y - vv], axis=-1).astype(np.float32)


def object_displacement(box: np.ndarray | Sequence[float], flow_ref_to_f: np.ndarray,
                        depth_ref: np.ndarray, depth_f: np.ndarray,
                        transform_f: geometry.Similarity | None = None) -> np.ndarray:
  """Median pseudo-3D displacement of a box's pixels from the reference to frame ``f``.

  Every pixel ``(u, v)`` of ``box`` (clipped to the frame) is lifted to
  ``x_r = (u/W, v/H, depth_ref[v, u])`` and its flowed position ``(u', v') = (u, v) + flow`` to
  ``x_f = (u'/W, v'/H, depth_f(u', v'))`` (bilinear); ``x_f`` is rectified into the reference
  frame with ``transform_f`` (``x_f -> s R x_f + t``; identity if None) and ``d`` is the per-axis
  median of ``rect(x_f) - x_r``. Pixels whose flowed position leaves the frame or whose depth is
  not finite are ignored.

  Args:
    box: (x0, y0, x1, y1) in reference-frame pixels.
    flow_ref_to_f: float [H, W, 2] flow from the reference to frame f (e.g. :func:`compose_flow`).
    depth_ref: float [H, W] reference depth.
    depth_f: float [H, W] frame-f depth.
    transform_f: frame f's similarity into the reference frame.

  Returns:
    float64 [3] ``d = (dx, dy, dz)``; all NaN ("unknown motion", labelled
    :data:`INVALID_CLASS` by :func:`direction_class`) when the box has no pixel inside the frame or
    none of its pixels can be followed.
  """
  depth_ref = np.asarray(depth_ref)
  depth_f = np.asarray(depth_f)
  flow = np.asarray(flow_ref_to_f)
  if (depth_ref.ndim != 2 or depth_f.shape != depth_ref.shape
      or flow.shape != depth_ref.shape + (2,)):
    raise ValueError(f"flow_ref_to_f [H, W, 2], depth_ref and depth_f [H, W] must agree, got "
                     f"{flow.shape}, {depth_ref.shape}, {depth_f.shape}")
  height, width = depth_ref.shape
  c0, r0, c1, r1 = geometry.box_pixel_range(box, height, width)
  if c1 <= c0 or r1 <= r0:
    return np.full(3, np.nan)
  vv, uu = np.mgrid[r0:r1, c0:c1]
  vv, uu = vv.reshape(-1), uu.reshape(-1)
  fl = flow[vv, uu].astype(np.float64)
  xt, yt = uu + fl[:, 0], vv + fl[:, 1]
  inside = (xt >= 0) & (xt <= width - 1) & (yt >= 0) & (yt <= height - 1)
  x_r = np.stack([uu / width, vv / height, depth_ref[vv, uu].astype(np.float64)], axis=-1)
  x_f = geometry.lift_points(np.stack([xt, yt], axis=-1), depth_f)
  if transform_f is not None:
    x_f = geometry.apply_similarity(x_f, *transform_f)
  disp = x_f - x_r
  keep = inside & np.all(np.isfinite(disp), axis=1)
  if not np.any(keep):
    return np.full(3, np.nan)
  return np.median(disp[keep], axis=0)


def window_displacements(frames: np.ndarray, depths: np.ndarray, flows: np.ndarray,
                         boxes_per_object: np.ndarray,
                         rectification: rectify_lib.WindowRectification | None = None,
                         rectify: bool = True) -> np.ndarray:
  """Per-object displacement ``d_i`` over one window (reference = frame 0, target = last frame).

  Args:
    frames: uint8 [l, H, W, 3] frames of the window.
    depths: float [l, H, W] pseudo-depth per frame.
    flows: float [l-1, H, W, 2] frame-to-frame flows.
    boxes_per_object: float [O, 4] boxes in the reference frame.
    rectification: precomputed :func:`asmp_jax.graph.rectify.rectify_window` result; computed
      from ``frames`` and ``depths`` when None (and ``rectify``). Frames where it fell back
      (``valid = False``) use the identity.
    rectify: False skips rectification (identity transform: the camera is assumed static).

  Returns:
    float64 [O, 3] displacements (NaN rows: unknown, see :func:`object_displacement`).
  """
  frames = np.asarray(frames)
  depths = np.asarray(depths)
  flows = np.asarray(flows)
  boxes = np.asarray(boxes_per_object, np.float64).reshape(-1, 4)
  num = len(frames)
  if num < 2:
    raise ValueError(f"frames: a window needs at least 2 frames, got {num}")
  if depths.shape != frames.shape[:3] or flows.shape != (num - 1,) + frames.shape[1:3] + (2,):
    raise ValueError(f"expected frames [l, H, W, 3], depths [l, H, W], flows [l-1, H, W, 2]; got "
                     f"{frames.shape}, {depths.shape}, {flows.shape}")
  if not rectify:
    transform = None
  else:
    if rectification is None:
      rectification = rectify_lib.rectify_window(frames, depths)
    transform = rectification.transform(num - 1)
  flow = compose_flow(flows)
  return np.stack([object_displacement(b, flow, depths[0], depths[-1], transform)
                   for b in boxes]).reshape(-1, 3)
