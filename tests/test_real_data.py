"""Real data sets (ASIW, AVE): precomputed node features, the released file formats, the TFDS
builders on small fixture directories written in those formats, and one training step on each."""
import numpy as np
import pytest

from asmp_jax import preprocess
from asmp_jax.graph.providers import Detections

# ----------------------------------------------------------------------- precomputed features

T, H, W, F = 16, 48, 64, 6


def _feature_clip():
  """Two windows; per frame an auditory box (class 0), an overlapping context box and a far box,
  each with a distinct region feature (frame*10 + row)."""
  rows, feats = [], []
  for f in range(T):
    for j, (box, label) in enumerate((([8, 8, 28, 28], 0), ([18, 10, 38, 30], 7),
                                      ([50, 36, 60, 46], 7))):
      rows.append((f, box, label, 0.9))
      feats.append(np.full(F, 10 * f + j, np.float32))
  fr, bx, lb, sc = zip(*rows)
  dets = Detections(np.array(fr), np.array(bx, np.float32), np.array(lb), np.array(sc),
                    np.stack(feats))
  frames = np.full((T, H, W, 3), 128, np.uint8)
  return frames, dets, np.ones((T, H, W), np.float32), np.zeros((T, H, W, 2), np.float32)


@pytest.mark.parametrize("background", ["zeros", "mean"])
def test_precomputed_node_features_come_from_the_detections(background):
  frames, dets, depth, flow = _feature_clip()
  cfg = preprocess.PreprocessConfig(num_windows=2, feature_extractor="precomputed", rectify=False,
                                    background_feature=background)
  ex = preprocess.preprocess_clip(frames, np.full(100, 0.1, np.float32), dets, depth, flow,
                                  np.array([0, 1]), cfg)
  nf = ex["node_features"].astype(np.float32)
  assert nf.shape == (2, preprocess.MAX_NODES, F)
  for w, ref in enumerate((0, 8)):
    np.testing.assert_array_equal(nf[w, 0], 10 * ref + 0)  # auditory source of frame ref
    np.testing.assert_array_equal(nf[w, 2], 10 * ref + 1)  # its context node
    assert not ex["node_mask"][w, 3:-1].any()  # the far box is not context
    want_bg = 0.0 if background == "zeros" else 10 * ref + 1.0  # mean of rows 0, 1, 2
    np.testing.assert_allclose(nf[w, -1], want_bg)


def test_precomputed_dedicated_background_feature_and_missing_features():
  frames, dets, depth, flow = _feature_clip()
  cfg = preprocess.PreprocessConfig(num_windows=2, feature_extractor="precomputed", rectify=False)
  bg = np.arange(T * F, dtype=np.float32).reshape(T, F)
  ex = preprocess.preprocess_clip(frames, np.full(100, 0.1, np.float32), dets, depth, flow,
                                  np.array([0]), cfg, background_features=bg)
  np.testing.assert_array_equal(ex["node_features"][1, -1].astype(np.float32), bg[8])
  no_feat = Detections(dets.frame, dets.box, dets.label, dets.score)
  with pytest.raises(preprocess.PreprocessError, match="region features"):
    preprocess.preprocess_clip(frames, np.full(100, 0.1, np.float32), no_feat, depth, flow,
                               np.array([0]), cfg, clip_id="vid0")
