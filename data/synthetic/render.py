"""Rasteriser of the synthetic scenes: RGB frames with EXACT depth, optical flow and boxes.

The scene is a textured back wall (world plane Z = wall_depth, bricks) and floor (world plane
Y = floor_height, tiles), seen by the pinhole camera of :mod:`geometry`, plus flat objects
("billboards") that always face the camera: object ``o`` at camera-frame centre
``(X_t, Y_t, Z_t)`` covers the points ``(X_t + a, Y_t + b, Z_t)`` with ``(a / sx, b / sy)``
inside its shape (normalised coordinates in ``[-1, 1]^2``, ``sx, sy`` its half-extents). A surface
point keeps its ``(a, b)`` from frame to frame, so

  * depth at an object pixel is exactly ``Z_t`` and at a background pixel the ray's distance along
    the optical axis to the wall or floor,
  * forward flow at an object pixel (u, v) is ``f_{t+1} (X_{t+1} + a) / Z_{t+1} + cx - u`` with
    ``a = (u - cx) Z_t / f_t - X_t`` (and likewise for v); it includes the scale change of an
    approaching object and the camera's pan/zoom. At a background pixel it is the reprojection of
    the static wall/floor point into the next camera.

Occlusion is resolved with a depth buffer, which for constant-depth billboards is the painter's
order by depth. Colours are smooth functions of the surface coordinates (shading, patterns) so they
move with the flow; a bright marker on the side of the object's current 2D motion direction (the
heading cue) fades in with the lateral speed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from asmp_data.synthetic import geometry


# ------------------------------------------------------------------------------------- shapes
def _circle(lx, ly):
  return lx * lx + ly * ly <= 1.0


def _box(lx, ly):
  qx = np.maximum(np.abs(lx) - 0.75, 0.0)
  qy = np.maximum(np.abs(ly) - 0.75, 0.0)
  return (np.abs(lx) <= 1.0) & (np.abs(ly) <= 1.0) & (qx * qx + qy * qy <= 0.0625)


def _capsule(lx, ly):
  q = np.maximum(np.abs(lx) - 0.7, 0.0) / 0.3
  return (np.abs(lx) <= 1.0) & (q * q + ly * ly <= 1.0)


def _diamond(lx, ly):
  return np.abs(lx) + np.abs(ly) <= 1.0


def _hexagon(lx, ly):
  return (np.abs(ly) <= 1.0) & (np.abs(lx) + 0.5 * np.abs(ly) <= 1.0)


def _ring(lx, ly):
  r2 = lx * lx + ly * ly
  return ((r2 <= 1.0) & (r2 >= 0.55 ** 2)) | (r2 <= 0.2 ** 2)


def _bell(lx, ly):
  return (np.abs(ly) <= 1.0) & (np.abs(lx) <= 0.45 + 0.55 * (0.5 * (ly + 1.0)) ** 2)


def _person(lx, ly):
  head = (lx / 0.55) ** 2 + ((ly + 0.68) / 0.32) ** 2 <= 1.0
  body = (np.abs(lx) <= 1.0) & (ly <= 1.0) & (ly >= -0.36 + 0.5 * np.maximum(np.abs(lx) - 0.5,
                                                                              0.0))
  return head | body


def _table(lx, ly):
  top = (np.abs(lx) <= 1.0) & (ly >= -1.0) & (ly <= -0.55)
  legs = (np.abs(lx) >= 0.72) & (np.abs(lx) <= 0.92) & (ly >= -1.0) & (ly <= 1.0)
  return top | legs


def _cross(lx, ly):
  foliage = lx * lx + ((ly + 0.3) / 0.7) ** 2 <= 1.0
  pot = (ly >= 0.4) & (ly <= 1.0) & (np.abs(lx) <= 0.35 + 0.25 * (1.0 - ly) / 0.6)
  return foliage | pot


def _triangle(lx, ly):
  return (ly <= 1.0) & (2.0 * np.abs(lx) - 1.0 <= ly)


SHAPES = {
    "circle": _circle, "ellipse": _circle, "box": _box, "capsule": _capsule,
    "diamond": _diamond, "hexagon": _hexagon, "ring": _ring, "bell": _bell,
    "person": _person, "table": _table, "cross": _cross, "triangle": _triangle,
}


# ------------------------------------------------------------------------------- descriptions
@dataclasses.dataclass(frozen=True)
class Appearance:
  """How one object looks.

  Attributes:
    shape: key of :data:`SHAPES`.
    color: ``[3]`` RGB in [0, 1].
    half_extent: (sx, sy) half-width and half-height in scene units.
    pattern: "plain", "stripes" (varies with lx), "bands" (with ly) or "rings" (with radius).
    pattern_freq: pattern cycles across the object.
    pattern_amp: relative contrast of the pattern.
  """

  shape: str
  color: tuple[float, float, float]
  half_extent: tuple[float, float]
  pattern: str = "plain"
  pattern_freq: float = 2.0
  pattern_amp: float = 0.15


@dataclasses.dataclass(frozen=True)
class ObjectTrack:
  """An object's per-frame state for rendering.

  Attributes:
    appearance: its :class:`Appearance`.
    position: ``[T, 3]`` centre in the camera frame (X, Y, Z).
    heading: ``[T]`` image-plane direction of lateral motion (radians, atan2(dv, du)).
    marker: ``[T]`` heading-marker strength in [0, 1] (0 when the object does not move laterally).
  """

  appearance: Appearance
  position: np.ndarray
  heading: np.ndarray
  marker: np.ndarray


@dataclasses.dataclass(frozen=True)
class BackgroundStyle:
  """Colours and texture scales of the wall and floor.

  Attributes:
    wall_color, mortar_color: RGB in [0, 1].
    floor_colors: ``[2, 3]`` the two tile colours.
    brick_size: (width, height) of a brick, scene units.
    tile_size: floor tile side, scene units.
    shades: ``[16, 16]`` per-brick/per-tile brightness factors.
  """

  wall_color: tuple[float, float, float]
  mortar_color: tuple[float, float, float]
  floor_colors: tuple[tuple[float, float, float], tuple[float, float, float]]
  brick_size: tuple[float, float]
  tile_size: float
  shades: np.ndarray


def sample_background_style(rng: np.random.Generator) -> BackgroundStyle:
  """Draws muted wall/floor colours, texture sizes and the brick/tile shade table."""
  hue = rng.uniform(0.35, 0.75, 3)
  wall = tuple(float(x) for x in np.clip(hue * rng.uniform(0.6, 0.9), 0, 1))
  mortar = tuple(float(x) for x in np.clip(np.array(wall) * 0.45, 0, 1))
  f1 = rng.uniform(0.25, 0.55, 3)
  f2 = np.clip(f1 * rng.uniform(1.3, 1.7), 0, 1)
  return BackgroundStyle(
      wall_color=wall, mortar_color=mortar,
      floor_colors=(tuple(float(x) for x in f1), tuple(float(x) for x in f2)),
      brick_size=(float(rng.uniform(1.0, 1.5)), float(rng.uniform(0.45, 0.65))),
      tile_size=float(rng.uniform(0.6, 1.0)),
      shades=rng.uniform(0.78, 1.15, (16, 16)))


@dataclasses.dataclass(frozen=True)
class Rendering:
  """Output of :func:`render` (T frames of H x W pixels, O objects).

  Attributes:
    frames: uint8 ``[T, H, W, 3]`` RGB.
    depth: float32 ``[T, H, W]`` camera-frame Z of the visible surface.
    flow: float32 ``[T, H, W, 2]`` forward flow t -> t+1 in pixels (dx, dy); zeros at t = T-1.
    segmentation: int16 ``[T, H, W]`` index of the visible object, -1 for the background.
    boxes: float32 ``[T, O, 4]`` (x0, y0, x1, y1) projected extent clipped to ``[0, W] x [0, H]``.
    visible: bool ``[T, O]``, whether any pixel of the object is visible.
  """

  frames: np.ndarray
  depth: np.ndarray
  flow: np.ndarray
  segmentation: np.ndarray
  boxes: np.ndarray
  visible: np.ndarray


def _smoothstep(e0, e1, x):
  s = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
  return s * s * (3.0 - 2.0 * s)


def _square_wave(x: np.ndarray, period: float, footprint: np.ndarray) -> np.ndarray:
  """Antialiased +-1 square wave: a steep clipped sine whose contrast fades with the footprint."""
  steep = period / (np.pi * np.maximum(footprint, 1e-6))
  contrast = np.clip(1.5 - footprint / (0.5 * period), 0.0, 1.0)
  return np.clip(np.sin(np.pi * x / (0.5 * period)) * steep, -1.0, 1.0) * contrast


def render_background(camera: geometry.CameraPath, width: int, height: int, wall_depth: float,
                      floor_height: float, style: BackgroundStyle,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Ray-casts the wall and floor for every frame.

  A static camera sees the same background in every frame, so it is rendered once and repeated.

  Returns:
    (rgb float32 ``[T, H, W, 3]`` in [0, 1], depth float32 ``[T, H, W]``,
    flow float32 ``[T, H, W, 2]``).
  """
  num_frames = camera.pan.shape[0]
  if not camera.moving:
    one = geometry.CameraPath(camera.pan[:1], camera.focal[:1], True)
    rgb, depth, _ = render_background(one, width, height, wall_depth, floor_height, style)
    return (np.repeat(rgb, num_frames, axis=0), np.repeat(depth, num_frames, axis=0),
            np.zeros((num_frames, height, width, 2), np.float32))
  cx, cy = width / 2.0, height / 2.0
  u = np.arange(width) + 0.5
  v = np.arange(height) + 0.5
  f = camera.focal[:, None, None]
  c, s = np.cos(camera.pan)[:, None, None], np.sin(camera.pan)[:, None, None]
  dx = (u[None, None, :] - cx) / f  # camera ray (dx, dy, 1): [T, 1, W] and [T, H, 1]
  dy = (v[None, :, None] - cy) / f
  wx = (c * dx + s).astype(np.float32)  # world ray, [T, 1, W]
  wz = (-s * dx + c).astype(np.float32)
  wy = dy.astype(np.float32)  # [T, H, 1]
  t_wall = wall_depth / wz  # ray parameter = camera depth, since the camera ray has z = 1
  t_floor = np.where(wy > 0, floor_height / np.where(wy > 0, wy, 1.0), np.inf).astype(np.float32)
  depth = np.minimum(t_wall, t_floor)  # [T, H, W]
  floor = t_floor < t_wall
  px, py, pz = depth * wx, depth * wy, depth * wz
  ray2 = (1.0 + dx * dx + dy * dy).astype(np.float32)
  # World size of one pixel on the surface (for antialiasing): depth |d|^2 / (f |n . d|).
  f32 = f.astype(np.float32)
  footprint = depth * ray2 / (f32 * np.where(floor, np.maximum(np.abs(wy), 1e-6), np.abs(wz)))

  # Wall: staggered bricks with mortar lines and a per-brick shade.
  bw, bh = style.brick_size
  row = np.floor(py / bh)
  xo = px + 0.5 * bw * np.mod(row, 2)
  col = np.floor(xo / bw)
  fx, fy = xo / bw - col, py / bh - row
  edge = np.minimum(np.minimum(fx, 1 - fx) * bw, np.minimum(fy, 1 - fy) * bh)
  fade = np.clip(1.5 - footprint / bh, 0.0, 1.0)
  mortar = (1.0 - _smoothstep(0.03 - 0.5 * footprint, 0.03 + 0.5 * footprint, edge)) * fade
  shades = style.shades.astype(np.float32)
  brick = 1.0 + (shades[np.mod(row, 16).astype(np.int64), np.mod(col, 16).astype(np.int64)]
                 - 1.0) * fade
  wall_rgb = (np.asarray(style.wall_color, np.float32) * (brick * (1 - mortar))[..., None]
              + np.asarray(style.mortar_color, np.float32) * mortar[..., None])

  # Floor: antialiased checkerboard with a per-tile shade.
  ts = style.tile_size
  checker = _square_wave(px, 2 * ts, footprint) * _square_wave(pz, 2 * ts, footprint)
  tile = shades[np.mod(np.floor(px / ts), 16).astype(np.int64),
                np.mod(np.floor(pz / ts), 16).astype(np.int64)]
  tile = 1.0 + 0.5 * (tile - 1.0) * np.clip(1.5 - footprint / ts, 0.0, 1.0)
  f1 = np.asarray(style.floor_colors[0], np.float32)
  f2 = np.asarray(style.floor_colors[1], np.float32)
  floor_rgb = (0.5 * (f1 + f2) + 0.5 * (f2 - f1) * checker[..., None]) * tile[..., None]
  rgb = np.where(floor[..., None], floor_rgb, wall_rgb).astype(np.float32)

  # Flow: the static world point seen at t, reprojected into the camera of t + 1.
  flow = np.zeros((num_frames, height, width, 2), np.float32)
  if num_frames > 1:
    c1, s1 = c[1:].astype(np.float32), s[1:].astype(np.float32)
    f1n = f32[1:]
    x, y, z = px[:-1], py[:-1], pz[:-1]
    xc = c1 * x - s1 * z
    zc = s1 * x + c1 * z
    flow[:-1, ..., 0] = f1n * xc / zc + cx - u[None, None, :].astype(np.float32)
    flow[:-1, ..., 1] = f1n * y / zc + cy - v[None, :, None].astype(np.float32)
  return rgb, depth, flow


def _object_colour(app: Appearance, lx: np.ndarray, ly: np.ndarray, heading: np.ndarray,
                   marker: np.ndarray) -> np.ndarray:
  """RGB ``[N, 3]`` of object surface points at normalised coordinates ``lx, ly [N]``."""
  r = np.sqrt(lx * lx + ly * ly)
  light = np.clip(0.82 - 0.12 * lx - 0.16 * ly - 0.1 * r * r, 0.45, 1.05)
  if app.pattern == "stripes":
    pat = np.sin(np.pi * app.pattern_freq * lx)
  elif app.pattern == "bands":
    pat = np.sin(np.pi * app.pattern_freq * ly)
  elif app.pattern == "rings":
    pat = np.cos(np.pi * app.pattern_freq * r)
  else:
    pat = np.zeros_like(lx)
  base = np.asarray(app.color)[None, :] * (light * (1.0 + app.pattern_amp * pat))[:, None]
  # Heading cue: the leading side brightens and a marker dot sits at 0.62 along the heading.
  hx, hy = np.cos(heading), np.sin(heading)
  lead = _smoothstep(0.1, 1.0, lx * hx + ly * hy) * 0.3 * marker
  rgb = base + (1.0 - base) * lead[:, None]
  luminance = float(np.dot(app.color, [0.299, 0.587, 0.114]))
  dot_colour = np.array([0.05, 0.05, 0.05]) if luminance > 0.55 else np.array([1.0, 1.0, 1.0])
  d2 = (lx - 0.62 * hx) ** 2 + (ly - 0.62 * hy) ** 2
  dot = (d2 <= 0.2 ** 2) * marker
  return rgb * (1.0 - dot[:, None]) + dot_colour[None, :] * dot[:, None]


def render(camera: geometry.CameraPath, objects: list[ObjectTrack], width: int, height: int,
           wall_depth: float, floor_height: float, style: BackgroundStyle) -> Rendering:
  """Renders T frames of the scene with exact depth, flow, segmentation and boxes.

  Args:
    camera: per-frame pan and focal length.
    objects: O objects with camera-frame positions (Z > 0).
    width, height: image size in pixels.
    wall_depth, floor_height: background geometry (world Z of the wall, world Y of the floor).
    style: background colours and textures.

  Returns:
    A :class:`Rendering`.
  """
  num_frames = camera.pan.shape[0]
  cx, cy = width / 2.0, height / 2.0
  rgb, depth, flow = render_background(camera, width, height, wall_depth, floor_height, style)
  seg = np.full((num_frames, height, width), -1, np.int16)
  boxes = np.zeros((num_frames, len(objects), 4), np.float32)
  u = np.arange(width) + 0.5
  v = np.arange(height) + 0.5
  f = camera.focal
  for o, obj in enumerate(objects):
    pos = np.asarray(obj.position, np.float64)
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    if np.any(z <= 0):
      raise ValueError(f"render: object {o} has a non-positive depth (behind the camera)")
    sx, sy = obj.appearance.half_extent
    uc, vc = f * x / z + cx, f * y / z + cy
    kx, ky = f * sx / z, f * sy / z  # pixels per normalised unit
    boxes[:, o, 0] = np.clip(uc - kx, 0, width)
    boxes[:, o, 1] = np.clip(vc - ky, 0, height)
    boxes[:, o, 2] = np.clip(uc + kx, 0, width)
    boxes[:, o, 3] = np.clip(vc + ky, 0, height)
    lx = (u[None, None, :] - uc[:, None, None]) / kx[:, None, None]  # [T, 1, W]
    ly = (v[None, :, None] - vc[:, None, None]) / ky[:, None, None]  # [T, H, 1]
    # Only rows/columns inside the shape's square can be covered: test those.
    cols = np.abs(lx) <= 1.0
    rows = np.abs(ly) <= 1.0
    ti, ri, ci = np.nonzero(rows & cols)
    if ti.size == 0:
      continue
    lxs, lys = lx[ti, 0, ci], ly[ti, ri, 0]
    hit = SHAPES[obj.appearance.shape](lxs, lys) & (z[ti] < depth[ti, ri, ci])
    ti, ri, ci, lxs, lys = ti[hit], ri[hit], ci[hit], lxs[hit], lys[hit]
    depth[ti, ri, ci] = z[ti]
    seg[ti, ri, ci] = o
    rgb[ti, ri, ci] = _object_colour(obj.appearance, lxs, lys, obj.heading[ti], obj.marker[ti])
    # Forward flow of the surface point (a, b) = local offset in scene units.
    last = ti == num_frames - 1
    tn = np.minimum(ti + 1, num_frames - 1)
    a = (u[ci] - cx) * z[ti] / f[ti] - x[ti]
    b = (v[ri] - cy) * z[ti] / f[ti] - y[ti]
    un = f[tn] * (x[tn] + a) / z[tn] + cx
    vn = f[tn] * (y[tn] + b) / z[tn] + cy
    flow[ti, ri, ci, 0] = np.where(last, 0.0, un - u[ci])
    flow[ti, ri, ci, 1] = np.where(last, 0.0, vn - v[ri])
  n = len(objects) + 1
  keys = (np.arange(num_frames, dtype=np.int64)[:, None, None] * n + seg + 1).ravel()
  visible = np.bincount(keys, minlength=num_frames * n).reshape(num_frames, n)[:, 1:] > 0
  frames = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return Rendering(frames, depth.astype(np.float32), flow, seg, boxes, visible)
