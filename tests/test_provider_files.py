"""Provider files of sampled frames (written by asmp_jax.preprocess_videos) read for another frame
sampling: nearest stored frame, detections copied, flows chained, coverage refused in one line."""
import numpy as np
import pytest

from asmp_jax import frame_reader
from asmp_jax import provider_files
from asmp_jax.graph import providers as graph_providers


def _video(source_index, source_size=(40, 60), size=(20, 30), source_fps=24.0, fps=8.0):
  n = len(source_index)
  return frame_reader.VideoFrames(np.zeros((n,) + size + (3,), np.uint8), source_index,
                                  source_size, source_fps, fps)


def test_nearest_stored_frame():
  stored = np.array([0, 3, 6, 9])
  got = provider_files.nearest_stored(stored, np.array([0, 1, 2, 4, 5, 7, 8, 9, 10]))
  np.testing.assert_array_equal(got, [0, 0, 1, 1, 2, 2, 3, 3, 3])
  np.testing.assert_array_equal(provider_files.nearest_stored(np.array([5]), np.array([0, 9])),
                                [0, 0])


def test_detections_go_to_the_resampled_frames_nearest_their_stored_frame():
  stored = np.array([0, 3, 6, 9])  # 8 fps of a 24 fps video
  dets = graph_providers.Detections(
      frame=np.array([2, 0, 1, 1]), box=np.array([[4, 4, 20, 20]] * 4, np.float32),
      label=np.array([7, 5, 6, 8]), score=np.array([0.9, 0.8, 0.7, 0.6], np.float32),
      feature=np.arange(8, dtype=np.float32).reshape(4, 2))
  # A 12 fps reading of the same video: decoded frames 0, 2, 4, 6, 8.
  video = _video(np.array([0, 2, 4, 6, 8]))
  out = provider_files.map_detections(dets, video, stored)
  # Nearest stored: 0->0, 2->1 (frame 3), 4->1, 6->2, 8->3 (none there).
  np.testing.assert_array_equal(out.frame, [0, 1, 1, 2, 2, 3])
  np.testing.assert_array_equal(out.label, [5, 6, 8, 6, 8, 7])
  np.testing.assert_array_equal(out.feature[0], dets.feature[1])
  np.testing.assert_allclose(out.box[0], [2, 2, 10, 10])  # 60x40 -> 30x20 pixels
  # A file of every decoded frame: each resampled frame takes its own decoded frame's, also
  # when two resampled frames come from one decoded frame (a video slower than the model's rate).
  out = provider_files.map_detections(dets, _video(np.array([0, 0, 1, 2])))
  np.testing.assert_array_equal(out.frame, [0, 1, 2, 2, 3])
  np.testing.assert_array_equal(out.label, [5, 5, 6, 8, 7])


def test_depth_and_flow_of_stored_frames_for_another_sampling():
  stored = np.array([0, 3, 6, 9])
  depth = np.stack([np.full((40, 60), float(i), np.float32) for i in range(4)])
  flow = np.zeros((4, 40, 60, 2), np.float32)
  flow[..., 0] = 2.0  # each stored step moves 2 px right
  video = _video(np.array([0, 6, 9]), size=(20, 30))  # 4 fps: stored 0, 2, 3
  d = provider_files.resample_depth(provider_files.SampledArray(depth, stored, "d.npz"),
                                   video, np.arange(3))
  np.testing.assert_allclose(d[:, 0, 0], [0, 2, 3])
  f = provider_files.resample_flow(provider_files.SampledArray(flow, stored, "f.npz"), video,
                                  np.arange(3))
  # 0 -> 6 chains two stored flows (4 px at 60 px wide = 2 px at 30), 6 -> 9 one, the last none.
  np.testing.assert_allclose(f[:, 10, 10, 0], [2.0, 1.0, 0.0], atol=1e-5)
  np.testing.assert_allclose(f[..., 1], 0.0)


def test_a_file_shorter_than_the_video_is_refused_naming_num_windows(tmp_path):
  path = str(tmp_path / "depth.npz")
  stored = np.arange(8) * 3  # the first second of a 24 fps video
  np.savez(path, depth=np.zeros((8, 40, 60), np.float16), source_frame=stored,
           source_fps=np.float64(24))
  arr = provider_files.load_array(path, "depth")
  assert isinstance(arr, provider_files.SampledArray)
  video = _video(np.arange(0, 60, 3))  # 2.5 s
  with pytest.raises(graph_providers.ProviderError,
                     match=r"depth.npz: the depth file covers the video's first 1.0 s, the "
                           r"video runs 2.4 s; rerun .* --num_windows=3"):
    provider_files.check_array(arr, video, "depth", ())
  provider_files.check_array(arr, _video(np.arange(0, 24, 3)), "depth", ())  # 1 s: fine
  with pytest.raises(graph_providers.ProviderError,
                     match=r"expected depth \[8, 48, 64\].*got \(8, 40, 60\)"):
    provider_files.check_array(arr, _video(np.arange(0, 24, 3), source_size=(48, 64)),
                               "depth", ())
  # A file without source_frame describes every decoded frame, as before.
  plain = str(tmp_path / "plain.npz")
  np.savez(plain, depth=np.zeros((8, 40, 60), np.float16))
  assert isinstance(provider_files.load_array(plain, "depth"), np.ndarray)
