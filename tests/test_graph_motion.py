"""Tests for asmp_jax.graph.motion: flow composition, displacements and direction classes."""

import itertools

import cv2
import numpy as np
import pytest

from asmp_jax import graph
from asmp_jax.graph import motion

# ------------------------------------------------------------------------------ compose_flow


def test_compose_flow_constant():
  flows = np.broadcast_to(np.array([1.5, -0.25], np.float32), (3, 10, 12, 2))
  out = graph.compose_flow(flows)
  assert out.shape == (10, 12, 2) and out.dtype == np.float32
  np.testing.assert_allclose(out[..., 0], 4.5, atol=1e-6)
  np.testing.assert_allclose(out[..., 1], -0.75, atol=1e-6)


def test_compose_flow_affine_matches_closed_form():
  h, w, steps = 40, 50, 3
  a = np.array([[0.02, -0.01], [0.015, 0.03]])
  b = np.array([0.7, -0.4])
  vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
  pos = np.stack([uu, vv], -1)
  flow = pos @ a.T + b  # flow(x) = A x + b, the same for every step
  out = graph.compose_flow(np.stack([flow] * steps))
  # x_{k+1} = (I + A) x_k + b  =>  closed form after `steps` steps.
  m = np.eye(2) + a
  x = pos.copy()
  inside = np.ones((h, w), bool)
  for _ in range(steps):
    inside &= (x[..., 0] >= 0) & (x[..., 0] <= w - 1) & (x[..., 1] >= 0) & (x[..., 1] <= h - 1)
    x = x @ m.T + b
  expected = x - pos
  assert inside.mean() > 0.5
  np.testing.assert_allclose(out[inside], expected[inside], atol=1e-4)


def test_compose_flow_zero_steps_and_bad_shape():
  np.testing.assert_array_equal(graph.compose_flow(np.zeros((0, 4, 5, 2))), 0.0)
  with pytest.raises(ValueError, match="flows"):
    graph.compose_flow(np.zeros((4, 5, 2)))


# ------------------------------------------------------------------------------ displacement


def _moving_box_scene(h=48, w=64, box=(20, 10, 36, 26), du=5, dv=-3, z0=2.0, z1=2.3, pan=0):
  """Object of constant depth z0 moving by (du, dv) px and to depth z1; camera pans by ``pan`` px
  to the right (the whole image content moves left by ``pan``)."""
  x0, y0, x1, y1 = box
  depth_ref = np.full((h, w), 5.0)
  depth_ref[y0:y1, x0:x1] = z0
  depth_f = np.full((h, w), 5.0)
  depth_f[y0 + dv:y1 + dv, x0 + du - pan:x1 + du - pan] = z1
  flow = np.zeros((h, w, 2))
  flow[..., 0] = -pan
  flow[y0:y1, x0:x1] = (du - pan, dv)
  return depth_ref, depth_f, flow


def test_object_displacement_known_motion():
  h, w = 48, 64
  depth_ref, depth_f, flow = _moving_box_scene(h, w)
  d = graph.object_displacement((20, 10, 36, 26), flow, depth_ref, depth_f)
  np.testing.assert_allclose(d, [5 / w, -3 / h, 0.3], atol=1e-9)


def test_object_displacement_rectifies_camera_pan():
  h, w, pan = 48, 64, 4
  depth_ref, depth_f, flow = _moving_box_scene(h, w, pan=pan)
  # Frame f's points map into the reference by a shift of +pan px in x.
  transform = (1.0, np.eye(3), np.array([pan / w, 0.0, 0.0]))
  d = graph.object_displacement((20, 10, 36, 26), flow, depth_ref, depth_f, transform)
  np.testing.assert_allclose(d, [5 / w, -3 / h, 0.3], atol=1e-9)
  d_raw = graph.object_displacement((20, 10, 36, 26), flow, depth_ref, depth_f)
  assert d_raw[0] == pytest.approx((5 - pan) / w)


def test_object_displacement_empty_and_lost_boxes_are_nan():
  depth_ref, depth_f, flow = _moving_box_scene()
  assert np.isnan(graph.object_displacement((100, 100, 120, 120), flow, depth_ref, depth_f)).all()
  assert np.isnan(graph.object_displacement((5, 5, 5, 9), flow, depth_ref, depth_f)).all()
  far = np.full_like(flow, 500.0)  # every pixel leaves the frame
  assert np.isnan(graph.object_displacement((20, 10, 36, 26), far, depth_ref, depth_f)).all()


def test_window_displacements_end_to_end_with_static_camera():
  rng = np.random.default_rng(0)
  l, h, w = 4, 48, 64
  frames = rng.integers(0, 256, (l, h, w, 3), dtype=np.uint8)
  frames[:] = frames[0]  # static textured scene -> identity rectification
  step = (2, 1)
  depths, flows = [], []
  for f in range(l):
    d = np.full((h, w), 5.0)
    d[10 + f:26 + f, 20 + 2 * f:36 + 2 * f] = 2.0 + 0.1 * f
    depths.append(d)
  for f in range(l - 1):
    fl = np.zeros((h, w, 2))
    fl[10 + f:26 + f, 20 + 2 * f:36 + 2 * f] = step
    flows.append(fl)
  boxes = np.array([[20, 10, 36, 26], [0, 40, 10, 48], [-30, -30, -5, -5]], np.float64)
  out = graph.window_displacements(frames, np.stack(depths), np.stack(flows), boxes)
  assert out.shape == (3, 3)
  np.testing.assert_allclose(out[0], [6 / w, 3 / h, 0.3], atol=1e-6)
  np.testing.assert_allclose(out[1], 0.0, atol=1e-6)
  assert np.isnan(out[2]).all()
  labels = graph.direction_class(out, 10)
  assert labels.tolist() == [7, 8, graph.INVALID_CLASS]


def test_window_displacements_removes_camera_pan():
  """Textured frames panned by the camera plus a box moving in 3D: with rectification the
  displacement is the object's own motion, without it the pan leaks into x."""
  l, h, w, shift, du, dv, dz = 4, 60, 80, 2, 1, 1, 0.2
  rng = np.random.default_rng(3)
  tex = cv2.GaussianBlur(rng.random((h, w + shift * l)), (0, 0), 1.5)
  tex = (255 * (tex - tex.min()) / (tex.max() - tex.min())).astype(np.uint8)
  frames = np.stack([np.repeat(tex[:, f * shift:f * shift + w, None], 3, -1) for f in range(l)])
  rows = np.arange(h, dtype=np.float64)[:, None] * np.ones((1, w))
  background = 4.0 + np.cos(np.pi * rows / h)
  box = np.array([30, 20, 46, 36])
  depths, flows = [], []
  for f in range(l):
    d = background.copy()
    x0, y0 = box[0] + f * (du - shift), box[1] + f * dv
    d[y0:y0 + 16, x0:x0 + 16] = 2.0 + dz * f
    depths.append(d)
    if f < l - 1:
      fl = np.zeros((h, w, 2))
      fl[..., 0] = -shift
      fl[y0:y0 + 16, x0:x0 + 16] = (du - shift, dv)
      flows.append(fl)
  depths, flows = np.stack(depths), np.stack(flows)
  steps = l - 1
  out = graph.window_displacements(frames, depths, flows, box[None].astype(float))
  np.testing.assert_allclose(out[0], [du * steps / w, dv * steps / h, dz * steps], atol=2e-3)
  raw = graph.window_displacements(frames, depths, flows, box[None].astype(float), rectify=False)
  np.testing.assert_allclose(raw[0], [(du - shift) * steps / w, dv * steps / h, dz * steps],
                             atol=1e-9)
  # Pan removed: the object moves right; without rectification it seems to move left.
  assert graph.direction_names(10)[graph.direction_class(out, 10)[0]] == "right-down-away"
  assert graph.direction_names(10)[graph.direction_class(raw, 10)[0]] == "left-down-away"


# ------------------------------------------------------------------------------ direction_class


def test_direction_class_28_cube_directions_map_to_themselves():
  dirs = motion.cube_directions()
  assert dirs.shape == (26, 3)
  assert [tuple(d) for d in dirs] == [d for d in itertools.product((-1, 0, 1), repeat=3)
                                      if d != (0, 0, 0)]
  np.testing.assert_array_equal(graph.direction_class(dirs.astype(float), 28), np.arange(26))
  # Scaled and slightly perturbed vectors keep their class.
  rng = np.random.default_rng(0)
  noisy = 0.5 * dirs + 0.02 * rng.normal(size=dirs.shape)
  np.testing.assert_array_equal(graph.direction_class(noisy, 28), np.arange(26))


def test_direction_class_28_is_nearest_by_cosine():
  rng = np.random.default_rng(1)
  d = rng.normal(size=(200, 3))
  dirs = motion.cube_directions().astype(float)
  unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
  cos = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ unit.T
  expected = np.argmax(cos, axis=1)
  np.testing.assert_array_equal(graph.direction_class(d, 28, thresholds=(0, 0, 0)), expected)


def test_direction_class_10_octants():
  signs = np.array(list(itertools.product((-1, 1), repeat=3)), float)
  expected = 4 * (signs[:, 0] > 0) + 2 * (signs[:, 1] > 0) + (signs[:, 2] > 0)
  np.testing.assert_array_equal(graph.direction_class(0.3 * signs, 10), expected)
  assert graph.direction_class(np.array([1.0, 1.0, 1.0]), 10) == 7
  assert graph.direction_class(np.array([-1.0, -1.0, -1.0]), 10) == 0
  # A zero component falls on the negative side of its axis.
  assert graph.direction_class(np.array([0.5, 0.0, 0.0]), 10) == 4


@pytest.mark.parametrize("num_classes", [10, 28])
def test_direction_class_thresholds_are_strict_at_the_boundary(num_classes):
  thr = (0.25, 0.5, 0.125)  # exactly representable
  still = graph.NO_MOTION_CLASS(num_classes)
  below = np.array([[0.2499, 0.0, 0.0], [0.0, -0.4999, 0.0], [0.0, 0.0, 0.1249],
                    [-0.2499, 0.4999, -0.1249], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(graph.direction_class(below, num_classes, thresholds=thr), still)
  at = np.array([[0.25, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 0.125]])
  got = graph.direction_class(at, num_classes, thresholds=thr)
  assert np.all(got != still) and np.all(got >= 0)
  if num_classes == 28:
    names = graph.direction_names(28)
    assert [names[c] for c in got] == ["right", "up", "away"]
  # Zero thresholds: only an exactly zero displacement is "no motion".
  assert graph.direction_class(np.zeros(3), num_classes, thresholds=(0, 0, 0)) == still
  assert graph.direction_class(np.array([0, 0, 1e-12]), num_classes, thresholds=(0, 0, 0)) != still


@pytest.mark.parametrize("num_classes", [10, 28])
def test_direction_class_nan_background_and_shapes(num_classes):
  d = np.array([[[np.nan, 0, 0], [1.0, 1.0, 1.0]], [[0.0, np.inf, 0.0], [0.0, 0.0, 0.0]]])
  out = graph.direction_class(d, num_classes)
  assert out.shape == (2, 2) and out.dtype == np.int32
  assert out[0, 0] == graph.INVALID_CLASS and out[1, 0] == graph.INVALID_CLASS
  assert out[1, 1] == graph.NO_MOTION_CLASS(num_classes)
  bg = np.array([[True, False], [False, True]])
  out_bg = graph.direction_class(d, num_classes, background=bg)
  assert out_bg[0, 0] == out_bg[1, 1] == graph.BACKGROUND_CLASS(num_classes)
  assert out_bg[0, 1] == out[0, 1]
  finite = graph.direction_class(np.random.default_rng(2).normal(size=(50, 3)), num_classes)
  assert finite.min() >= 0 and finite.max() < num_classes


@pytest.mark.parametrize("bad", [0, 8, 9, 26, 27, 29, "10"])
def test_direction_class_invalid_num_classes_raises(bad):
  with pytest.raises(ValueError, match="num_classes"):
    graph.direction_class(np.zeros(3), bad)
  with pytest.raises(ValueError, match="num_classes"):
    graph.direction_names(bad)


def test_direction_class_bad_inputs_raise():
  with pytest.raises(ValueError, match="displacement"):
    graph.direction_class(np.zeros((4, 2)), 10)
  with pytest.raises(ValueError, match="thresholds"):
    graph.direction_class(np.zeros(3), 10, thresholds=(0.1, -0.1, 0.1))


def test_class_constants_and_names():
  assert graph.NO_MOTION_CLASS(10) == 8 and graph.BACKGROUND_CLASS(10) == 9
  assert graph.NO_MOTION_CLASS(28) == 26 and graph.BACKGROUND_CLASS(28) == 27
  n10, n28 = graph.direction_names(10), graph.direction_names(28)
  assert len(n10) == 10 and len(n28) == 28
  assert len(set(n10)) == 10 and len(set(n28)) == 28
  assert n10[7] == "right-down-away" and n10[0] == "left-up-toward"
  assert n10[8] == n28[26] == "no motion" and n10[9] == n28[27] == "background"
  assert n28[0] == "left-up-toward" and n28[13] == "away" and n28[25] == "right-down-away"
