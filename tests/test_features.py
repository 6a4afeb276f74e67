"""The appearance-feature extractor and the precomputed-file provider."""
import h5py
import numpy as np
import pytest

from asmp_jax.graph import features, providers


def _edge_patch(vertical: bool) -> np.ndarray:
  img = np.zeros((64, 64, 3), np.uint8)
  if vertical:
    img[:, 32:] = 255  # intensity changes along x: gradient angle 0 degrees
  else:
    img[32:, :] = 255  # along y: gradient angle 90 degrees
  return img


def test_hog_orientation_bins():
  box = np.array([[0, 0, 64, 64]], np.float32)
  hog_v = features.hog_color_features(_edge_patch(True), box)[0, :324].reshape(9, 4, 9)
  hog_h = features.hog_color_features(_edge_patch(False), box)[0, :324].reshape(9, 4, 9)
  # Bin centres are 10, 30, ..., 170 degrees: 0 degrees splits between bins 8 and 0, 90 falls in 4.
  assert set(np.nonzero(hog_v.sum((0, 1)) > 1e-3)[0]) == {0, 8}
  assert set(np.nonzero(hog_h.sum((0, 1)) > 1e-3)[0]) == {4}


def test_hog_color_layout_and_colour():
  frame = np.zeros((100, 200, 3), np.uint8)
  frame[10:50, 20:60] = (255, 0, 0)  # pure red box
  feat = features.hog_color_features(frame, np.array([[20, 10, 60, 50], [250, 0, 260, 10]]))
  assert feat.shape == (2, features.HOG_COLOR_DIM) and feat.dtype == np.float32
  np.testing.assert_allclose(feat[0, -4:], [0.2, 0.3, 0.2, 0.4], atol=1e-6)
  hist = feat[0, 324:396]
  assert hist.sum() == pytest.approx(1.0) and hist.max() == pytest.approx(1.0)  # one colour bin
  assert not feat[1].any()  # a box outside the frame gets zeros, not an exception


def test_extract_rejects_unknown_and_mismatched():
  frame = np.zeros((32, 32, 3), np.uint8)
  with pytest.raises(ValueError, match="unknown feature extractor"):
    features.extract("resnet", frame, np.zeros((1, 4)))
  with pytest.raises(ValueError, match="precomputed features"):
    features.extract("precomputed", frame, np.zeros((2, 4)), np.zeros((3, 8)))


def test_precomputed_detections_asiw_layout(tmp_path):
  path = tmp_path / "dets.h5"
  boxes = np.zeros((3, 4, 4), np.float32)
  boxes[0, 0] = [1, 2, 3, 4]
  boxes[2, 1] = [5, 6, 7, 8]
  feats = np.random.default_rng(0).normal(size=(3, 4, 2048)).astype(np.float32)
  with h5py.File(path, "w") as f:
    f["boxes"] = boxes
    f["features"] = feats
  dets = providers.load_detections(str(path))
  np.testing.assert_array_equal(dets.frame, [0, 2])
  np.testing.assert_array_equal(dets.box, [[1, 2, 3, 4], [5, 6, 7, 8]])
  np.testing.assert_array_equal(dets.feature, feats[[0, 2], [0, 1]])
  np.testing.assert_array_equal(dets.label, [-1, -1])


def test_precomputed_errors_name_the_file(tmp_path):
  with pytest.raises(providers.ProviderError, match="not found"):
    providers.load_detections(str(tmp_path / "missing.h5"))
  bad = tmp_path / "bad.npz"
  np.savez(bad, something=np.zeros(3))
  with pytest.raises(providers.ProviderError, match="bad.npz"):
    providers.load_detections(str(bad))
  corrupt = tmp_path / "corrupt.h5"
  corrupt.write_bytes(b"not hdf5")
  with pytest.raises(providers.ProviderError, match="corrupt.h5"):
    providers.load_detections(str(corrupt))
  depth = tmp_path / "depth.npy"
  np.save(depth, np.zeros((2, 8, 8), np.float32))
  prov = providers.PrecomputedFiles(str(bad), depth_path=str(depth))
  with pytest.raises(providers.ProviderError, match="does not match"):
    prov.depth(np.zeros((3, 8, 8, 3), np.uint8))


def test_opencv_flow_recovers_a_shift():
  rng = np.random.default_rng(0)
  tex = (rng.uniform(size=(80, 80)) * 255).astype(np.uint8)
  tex = np.repeat(np.repeat(tex, 2, 0), 2, 1)  # smoother texture
  f0 = np.stack([tex[:96, :96]] * 3, -1)
  f1 = np.stack([tex[:96, 2:98]] * 3, -1)  # content moves 2 px to the left
  flow = providers.opencv_flow(np.stack([f0, f1]))
  assert flow.shape == (2, 96, 96, 2)
  np.testing.assert_allclose(np.median(flow[0, 20:-20, 20:-20], axis=(0, 1)), [-2, 0], atol=0.3)
  assert not flow[1].any()
