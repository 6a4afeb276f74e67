"""Tests for asmp_jax.graph.geometry and asmp_jax.graph.rectify (tiny sizes, CPU only)."""

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from asmp_jax import graph
from asmp_jax.graph import geometry
from asmp_jax.graph import rectify


def brute_chamfer(p, q):
  """O(N M) reference with explicit loops."""
  def directed(a, b):
    total = 0.0
    for x in a:
      best = np.inf
      for y in b:
        best = min(best, float(np.sqrt(np.sum((x - y)**2))))
      total += best
    return total / len(a)
  return directed(p, q) + directed(q, p)


def random_similarity(rng, max_angle_deg=180.0, scale_range=(0.5, 2.0)):
  axis = rng.normal(size=3)
  axis /= np.linalg.norm(axis)
  angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
  rot = Rotation.from_rotvec(axis * angle).as_matrix()
  return float(rng.uniform(*scale_range)), rot, rng.normal(size=3)


# ------------------------------------------------------------------------------ box_points


def test_box_points_values_and_clipping():
  h, w = 6, 8
  depth = np.arange(h * w, dtype=np.float32).reshape(h, w)
  pts = geometry.box_points(depth, (6.5, 4.0, 20.0, 9.0), max_points=None)
  # Columns 6..7, rows 4..5 after clipping to the 8x6 frame.
  vv, uu = np.mgrid[4:6, 6:8]
  expected = np.stack([uu / w, vv / h, depth[vv, uu]], -1).reshape(-1, 3)
  np.testing.assert_allclose(pts, expected, rtol=1e-6)
  assert pts.dtype == np.float32


@pytest.mark.parametrize("box", [(-10, -10, -1, -1), (8, 0, 12, 6), (2, 2, 2, 5), (5, 5, 1, 1)])
def test_box_points_outside_or_empty_gives_empty(box):
  pts = geometry.box_points(np.ones((6, 8)), box)
  assert pts.shape == (0, 3)


def test_box_points_subsampling_is_bounded_deterministic_and_spread():
  depth = np.random.default_rng(0).random((60, 80))
  box = (3, 5, 73, 55)
  a = geometry.box_points(depth, box, max_points=50)
  b = geometry.box_points(depth, box, max_points=50)
  assert 0 < len(a) <= 50
  np.testing.assert_array_equal(a, b)
  # Spread over the whole box: first and last rows/columns of the box are hit.
  np.testing.assert_allclose([a[:, 0].min(), a[:, 0].max()], [3 / 80, 72 / 80])
  np.testing.assert_allclose([a[:, 1].min(), a[:, 1].max()], [5 / 60, 54 / 60])
  r = geometry.box_points(depth, box, max_points=50, rng=np.random.default_rng(1))
  assert len(r) == 50 and len(np.unique(r, axis=0)) == 50


def test_box_points_drops_nonfinite_depth():
  depth = np.ones((4, 4))
  depth[1, 1] = np.nan
  assert len(geometry.box_points(depth, (0, 0, 4, 4), max_points=None)) == 15


# ------------------------------------------------------------------------------ Chamfer


def test_chamfer_matches_brute_force_and_is_symmetric():
  rng = np.random.default_rng(0)
  for n, m in [(1, 1), (7, 13), (25, 4)]:
    p, q = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
    d = graph.chamfer_distance(p, q)
    assert d == pytest.approx(brute_chamfer(p, q), rel=1e-9, abs=1e-12)
    assert d == pytest.approx(graph.chamfer_distance(q, p), rel=1e-12)
  p = rng.normal(size=(10, 3))
  assert graph.chamfer_distance(p, p[::-1]) == pytest.approx(0.0, abs=1e-7)


def test_chamfer_kdtree_path_matches_dense_path():
  rng = np.random.default_rng(1)
  p, q = rng.random((geometry._DENSE_NN_LIMIT + 5, 3)), rng.random((40, 3))
  kd = graph.chamfer_distance(p, q)
  dense = (geometry._nn_distances(p[:2000], q).sum() + geometry._nn_distances(p[2000:], q).sum()
           ) / len(p)
  d2 = ((q[:, None, :] - p[None, :, :])**2).sum(-1)
  dense += np.sqrt(d2.min(1)).mean()
  assert kd == pytest.approx(dense, rel=1e-9)


def test_chamfer_is_translation_invariant_far_from_origin():
  rng = np.random.default_rng(8)
  p, q = rng.random((30, 3)), rng.random((20, 3))
  far = np.array([1e5, -2e5, 3e4])
  assert graph.chamfer_distance(p + far, q + far) == pytest.approx(
      graph.chamfer_distance(p, q), rel=1e-6)
  assert graph.pairwise_chamfer([p + far, q + far])[0, 1] == pytest.approx(
      graph.chamfer_distance(p, q), rel=1e-6)
  assert graph.chamfer_distance(p + far, p + far) < 1e-6


def test_bilinear_sample_affine_exact_clamped_and_nan():
  vv, uu = np.mgrid[0:5, 0:7].astype(float)
  img = 2.0 * uu - 3.0 * vv + 1.0
  x, y = np.array([0.5, 3.25, 6.0, -4.0, 100.0, np.nan]), np.array([0.5, 2.75, 4.0, 1.0, 9.0, 1.0])
  out = graph.bilinear_sample(img, x, y)
  np.testing.assert_allclose(out[:3], 2.0 * x[:3] - 3.0 * y[:3] + 1.0)
  assert out[3] == img[1, 0] and out[4] == img[4, 6] and np.isnan(out[5])


def test_chamfer_empty_is_inf():
  assert graph.chamfer_distance(np.zeros((0, 3)), np.ones((3, 3))) == np.inf


def test_chamfer_rejects_bad_shapes():
  with pytest.raises(ValueError, match="q"):
    graph.chamfer_distance(np.zeros((2, 3)), np.zeros((2, 2)))


def test_pairwise_chamfer_matches_pairs_and_handles_empty():
  rng = np.random.default_rng(2)
  clouds = [rng.normal(size=(n, 3)) + i for i, n in enumerate([5, 9, 0, 1, 12])]
  mat = graph.pairwise_chamfer(clouds)
  assert mat.shape == (5, 5)
  np.testing.assert_array_equal(np.diag(mat), 0.0)
  np.testing.assert_allclose(mat, mat.T)
  for i in range(5):
    for j in range(5):
      if i == j:
        continue
      if i == 2 or j == 2:
        assert mat[i, j] == np.inf
      else:
        assert mat[i, j] == pytest.approx(brute_chamfer(clouds[i], clouds[j]), rel=1e-9)


def test_pairwise_chamfer_large_clouds():
  rng = np.random.default_rng(3)
  clouds = [rng.random((700, 3)), rng.random((600, 3)) + 0.5]
  assert graph.pairwise_chamfer(clouds)[0, 1] == pytest.approx(
      graph.chamfer_distance(*clouds), rel=1e-9)


# ------------------------------------------------------------------------------ RBF weights


def test_rbf_paper_and_public_formulas():
  rng = np.random.default_rng(4)
  x = rng.random((6, 3))
  dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
  off = ~np.eye(6, dtype=bool)
  dn = dist / dist[off].max()
  p = np.percentile(dn[off], 25)
  w_paper = graph.rbf_edge_weights(dist, mode="paper")
  w_public = graph.rbf_edge_weights(dist, mode="public")
  np.testing.assert_allclose(w_paper[off], np.exp(-dn[off] / p**2), rtol=1e-5)
  np.testing.assert_allclose(w_public[off], np.exp(-dn[off] / p), rtol=1e-5)
  for w in (w_paper, w_public):
    np.testing.assert_array_equal(np.diag(w), 0.0)
    np.testing.assert_allclose(w, w.T)
    assert np.all((w[off] > 0) & (w[off] <= 1))


@pytest.mark.parametrize("mode", ["paper", "public"])
def test_rbf_degenerate_cases_are_finite(mode):
  one = graph.rbf_edge_weights(np.zeros((1, 1)), mode=mode)
  assert one.shape == (1, 1) and np.all(np.isfinite(one))
  zeros = graph.rbf_edge_weights(np.zeros((4, 4)), mode=mode)
  off = ~np.eye(4, dtype=bool)
  np.testing.assert_array_equal(zeros[off], 1.0)
  equal = graph.rbf_edge_weights(np.where(off, 3.0, 0.0), mode=mode)
  expected = np.exp(-1.0)  # normalised distance 1, percentile 1
  np.testing.assert_allclose(equal[off], expected, rtol=1e-6)


def test_rbf_invalid_nodes_and_underflow_stay_positive():
  dist = np.array([[0, 1e-3, 1.0, np.inf],
                   [1e-3, 0, 1.0, np.inf],
                   [1.0, 1.0, 0, np.inf],
                   [np.inf, np.inf, np.inf, 0]])
  w = graph.rbf_edge_weights(dist, valid=np.array([1, 1, 1, 0], bool), mode="paper")
  off = ~np.eye(4, dtype=bool)
  assert np.all(np.isfinite(w)) and np.all(w[off] > 0) and np.all(w[off] <= 1)
  assert w[0, 1] > w[0, 2]


# ------------------------------------------------------------------------------ similarity


@pytest.mark.parametrize("seed", range(4))
def test_fit_similarity_recovers_known_transform(seed):
  rng = np.random.default_rng(seed)
  s, rot, t = random_similarity(rng)
  src = rng.normal(size=(30, 3))
  dst = graph.apply_similarity(src, s, rot, t)
  s2, rot2, t2 = graph.fit_similarity(src, dst)
  assert s2 == pytest.approx(s, rel=1e-9)
  np.testing.assert_allclose(rot2, rot, atol=1e-9)
  np.testing.assert_allclose(t2, t, atol=1e-9)
  assert np.linalg.det(rot2) == pytest.approx(1.0)
  # Rigid fit of a pure rotation + translation; weights ignore a corrupted point.
  dst_r = graph.apply_similarity(src, 1.0, rot, t)
  dst_r[0] += 100.0
  w = np.ones(30)
  w[0] = 0.0
  s3, rot3, t3 = graph.fit_similarity(src, dst_r, with_scale=False, weights=w)
  assert s3 == 1.0
  np.testing.assert_allclose(rot3, rot, atol=1e-9)
  np.testing.assert_allclose(t3, t, atol=1e-9)


def test_fit_similarity_noisy_and_errors():
  rng = np.random.default_rng(9)
  s, rot, t = random_similarity(rng)
  src = rng.normal(size=(400, 3))
  dst = graph.apply_similarity(src, s, rot, t) + 1e-3 * rng.normal(size=(400, 3))
  s2, rot2, t2 = graph.fit_similarity(src, dst)
  assert abs(s2 - s) < 1e-3 and np.abs(rot2 - rot).max() < 1e-3 and np.abs(t2 - t).max() < 1e-3
  with pytest.raises(ValueError, match="shapes"):
    graph.fit_similarity(src, dst[:5])


def test_icp_recovers_transform_with_noise_outliers_and_partial_overlap():
  rng = np.random.default_rng(5)
  src = rng.random((500, 3)) * np.array([1.0, 0.8, 0.5])
  rot = Rotation.from_rotvec(np.deg2rad(8.0) * np.array([0.3, -0.5, 0.8]) / np.linalg.norm(
      [0.3, -0.5, 0.8])).as_matrix()
  s, t = 1.05, np.array([0.04, -0.03, 0.02])
  # dst holds only the part of src with x < 0.75 (partial overlap), noisy, plus outliers.
  part = src[src[:, 0] < 0.75]
  dst = graph.apply_similarity(part, s, rot, t) + 2e-3 * rng.normal(size=part.shape)
  dst = np.concatenate([dst, rng.random((40, 3)) * 2.0 - 0.5])
  overlap = len(part) / len(src)
  s2, rot2, t2, rmse = graph.icp(src, dst, iters=60, trim_fraction=0.9 * overlap)
  probe = src[:50]
  err = np.abs(graph.apply_similarity(probe, s2, rot2, t2)
               - graph.apply_similarity(probe, s, rot, t)).max()
  assert err < 0.01
  assert s2 == pytest.approx(s, abs=0.01)
  assert rmse < 0.01


def test_icp_from_good_init_is_exact_on_noise_free_data():
  rng = np.random.default_rng(6)
  s, rot, t = random_similarity(rng)
  src = rng.normal(size=(200, 3))
  dst = graph.apply_similarity(src, s, rot, t)
  init = graph.fit_similarity(src[:10], dst[:10])
  s2, rot2, t2, rmse = graph.icp(src, dst, init=init, trim_fraction=1.0)
  assert rmse < 1e-8 and s2 == pytest.approx(s) and np.allclose(rot2, rot)


# ------------------------------------------------------------------------------ rectification


def _pan_window(num=5, shift=2, height=72, width=96, seed=0):
  """Frames of a textured surface panned ``shift`` px per frame; depth varies with the row."""
  rng = np.random.default_rng(seed)
  tex = cv2.GaussianBlur(rng.random((height, width + shift * num)), (0, 0), 1.5)
  tex = (255 * (tex - tex.min()) / (tex.max() - tex.min())).astype(np.uint8)
  frames = np.stack([np.repeat(tex[:, f * shift:f * shift + width, None], 3, -1)
                     for f in range(num)])
  rows = np.arange(height, dtype=np.float64)[:, None] * np.ones((1, width))
  depth = 1.0 + 0.5 * np.sin(np.pi * rows / height)
  return frames, np.stack([depth] * num), depth


def test_track_points_follow_a_pan():
  frames, _, _ = _pan_window(num=4, shift=2)
  pts, ok = graph.track_points(frames)
  assert pts.shape[0] == 4 and pts.shape[1] > 20 and ok[0].all()
  assert ok[3].mean() > 0.8
  # Away from the border that the texture enters through (LK window half-width ~10 px).
  good = ok[3] & (pts[0, :, 0] > 16)
  assert good.sum() > 20
  np.testing.assert_allclose(pts[3, good, 0], pts[0, good, 0] - 6.0, atol=0.1)
  np.testing.assert_allclose(pts[3, good, 1], pts[0, good, 1], atol=0.1)


def test_rectify_window_undoes_camera_pan():
  num, shift, height, width = 5, 2, 72, 96
  frames, depths, depth = _pan_window(num, shift, height, width)
  rect = graph.rectify_window(frames, depths)
  assert isinstance(rect, rectify.WindowRectification)
  assert rect.valid.all() and len(rect) == num
  assert rect.scale[0] == 1.0 and np.array_equal(rect.rotation[0], np.eye(3))
  vv, uu = np.mgrid[8:height - 8:4, 8:width - 20:4]
  for f in range(1, num):
    x_f = np.stack([uu / width, vv / height, depth[vv, uu]], -1).reshape(-1, 3)
    x_r = np.stack([(uu + f * shift) / width, vv / height, depth[vv, uu]], -1).reshape(-1, 3)
    err = np.abs(rect.apply(f, x_f) - x_r).max()
    assert err < 0.1 / width  # a tenth of a pixel
    np.testing.assert_allclose(rect.translation[f], [f * shift / width, 0, 0], atol=1e-3)


def test_rectify_window_ignores_a_moving_object():
  num, shift, height, width = 4, 2, 72, 96
  frames, depths, depth = _pan_window(num, shift, height, width, seed=1)
  rng = np.random.default_rng(7)
  patch = cv2.GaussianBlur(rng.random((20, 20)), (0, 0), 1.0)
  patch = np.repeat((255 * patch / patch.max()).astype(np.uint8)[..., None], 3, -1)
  for f in range(num):  # the patch moves down-right 3 px per frame against the pan
    y, x = 20 + 3 * f, 30 + 3 * f
    frames[f, y:y + 20, x:x + 20] = patch
  rect = graph.rectify_window(frames, depths)
  assert rect.valid.all()
  np.testing.assert_allclose(rect.translation[num - 1], [(num - 1) * shift / width, 0, 0],
                             atol=2e-3)
  assert rect.scale[num - 1] == pytest.approx(1.0, abs=0.01)


def test_rectify_window_textureless_falls_back_to_identity():
  frames = np.full((4, 48, 64, 3), 128, np.uint8)
  rect = graph.rectify_window(frames, np.ones((4, 48, 64)))
  assert rect.valid.tolist() == [True, False, False, False]
  np.testing.assert_array_equal(rect.num_tracks, 0)
  np.testing.assert_array_equal(rect.rotation, np.tile(np.eye(3), (4, 1, 1)))
  np.testing.assert_array_equal(rect.translation, 0.0)
  np.testing.assert_array_equal(rect.scale, 1.0)


def test_rectify_window_rejects_mismatched_depth():
  with pytest.raises(ValueError, match="depths"):
    graph.rectify_window(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 8, 9)))
