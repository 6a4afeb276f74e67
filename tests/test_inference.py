"""asmp_jax.inference: restore anywhere, separate real files, graphs as in training, proposals."""
import json
import logging
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from asmp_jax import inference
from asmp_jax import media
from asmp_jax import provider_files
from asmp_jax.graph import proposals
from asmp_jax.graph import providers


# ----------------------------------------------------------------------------- no model needed


def _textured(h, w, seed):
  rng = np.random.default_rng(seed)
  import cv2  # pylint: disable=g-import-not-at-top
  noise = rng.uniform(0, 255, size=(h // 4, w // 4, 3)).astype(np.uint8)
  return cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)


def test_camera_motion_fit_recovers_pan_and_zoom():
  h, w = 48, 64
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  a, b, tx, ty = 1.02, 0.01, -1.5, 0.75  # zoom 2 %, small rotation, pan
  flow = np.stack([a * xs - b * ys + tx - xs, b * xs + a * ys + ty - ys], -1)[None]
  flow = np.repeat(flow, 2, 0)
  flow[1, 10:20, 10:20] += 5.0  # an independently moving object does not bias the fit
  params = proposals.fit_camera_motion(flow, step=2)
  np.testing.assert_allclose(params, [[a, b, tx, ty]] * 2, atol=1e-3)
  residual = proposals.residual_flow(flow, params)
  assert np.abs(residual[0]).max() < 1e-3
  np.testing.assert_allclose(residual[1, 10:20, 10:20], 5.0, atol=1e-2)


def test_motion_proposals_find_the_moving_object_under_camera_pan():
  t, h, w = 6, 64, 96
  flow = np.zeros((t, h, w, 2), np.float32)
  flow[..., 0] = 2.0  # the whole frame pans 2 px/frame
  boxes = []
  for k in range(t):  # a 12x10 object moving 3 px/frame more than the background
    x0, y0 = 20 + 3 * k, 30
    flow[k, y0:y0 + 10, x0:x0 + 12, 0] += 3.0
    flow[k, y0:y0 + 10, x0:x0 + 12, 1] += 1.0
    boxes.append([x0, y0, x0 + 12, y0 + 10])
  dets = proposals.propose(flow)
  assert sorted(set(dets.frame.tolist())) == list(range(t))
  assert len(dets) == t  # exactly one box per frame: the pan is removed
  from asmp_jax.graph import build  # pylint: disable=g-import-not-at-top
  ious = np.diag(build.iou(dets.box, np.asarray(boxes, np.float32)))
  assert ious.min() > 0.8, ious
  np.testing.assert_array_equal(dets.label, 0)  # one track, pseudo-class 0
  np.testing.assert_array_equal(dets.track, dets.label)
  assert np.all((dets.score > 0.5) & (dets.score < 1))


def test_link_tracks_orders_tracks_by_total_score():
  # Two objects: a weak one in frames 0-1 and a strong one in frames 0-3 (boxes drift).
  dets = providers.Detections(
      frame=[0, 0, 1, 1, 2, 3], box=[[0, 0, 10, 10], [50, 50, 60, 60], [1, 0, 11, 10],
                                     [52, 50, 62, 61], [54, 51, 64, 62], [56, 52, 66, 63]],
      label=[-1] * 6, score=[0.6, 0.9, 0.6, 0.9, 0.9, 0.9])
  linked = proposals.link_tracks(dets)
  np.testing.assert_array_equal(linked.label, [1, 0, 1, 0, 0, 0])


def _write_counting_video(path, num_frames, fps, size):
  """Frame k is a flat grey of intensity 8 * k (so the decoded frame index can be read back)."""
  h, w = size
  frames = np.broadcast_to((np.arange(num_frames) * 8).astype(np.uint8)[:, None, None, None],
                           (num_frames, h, w, 3)).copy()
  media.write_video(path, frames, fps, crf=0)


def test_read_frames_resamples_rate_and_size(tmp_path):
  path = str(tmp_path / "count.mkv")
  _write_counting_video(path, 24, 24.0, (48, 64))  # 1 s at 24 fps
  video = inference.read_frames(path, 8, (32, 40))
  np.testing.assert_array_equal(video.source_index, [0, 3, 6, 9, 12, 15, 18, 21])
  assert video.frames.shape == (8, 32, 40, 3) and video.source_size == (48, 64)
  np.testing.assert_allclose(video.frames[:, 16, 20, 0], 8 * video.source_index, atol=2)
  assert video.source_fps == pytest.approx(24.0)


def test_provider_files_are_mapped_to_resampled_frames(tmp_path):
  path = str(tmp_path / "count.mkv")
  _write_counting_video(path, 24, 24.0, (48, 64))
  video = inference.read_frames(path, 8, (24, 32))  # half the size
  dets = providers.Detections(frame=[3, 4, 6], box=[[8, 8, 16, 24]] * 3, label=[1, 1, 2],
                              score=[1, 1, 1])
  mapped = provider_files.map_detections(dets, video)
  np.testing.assert_array_equal(mapped.frame, [1, 2])  # frame 4 is not a resampled frame
  np.testing.assert_allclose(mapped.box, [[4, 4, 8, 12]] * 2)
  flow = np.zeros((24, 48, 64, 2), np.float32)
  flow[..., 0] = 1.0  # 1 px/frame to the right on the decoded frames
  resampled = provider_files.resample_flow(flow, video, np.arange(8))
  # 3 decoded frames per resampled frame, at half the width: 1.5 px (last frame: no successor).
  np.testing.assert_allclose(resampled[:7, ..., 0], 1.5, atol=1e-5)
  np.testing.assert_allclose(resampled[7], 0.0)


# ----------------------------------------------------------------------------- trained model


@pytest.fixture(scope="module")
def separator(trained_tiny_workdir):
  workdir, _, _ = trained_tiny_workdir
  return inference.Separator.from_checkpoint(workdir)


@pytest.mark.slow
def test_restore_on_one_device_matches_the_4_device_training_process(trained_tiny_workdir,
                                                                      separator):
  _, stem, npz = trained_tiny_workdir
  ref = np.load(npz)
  assert int(ref["devices"]) == 4 and int(ref["param_devices"]) == 4
  assert jax.device_count() == 1
  leaf = jax.tree.leaves(separator.variables["params"])[0]
  assert len(leaf.sharding.device_set) == 1
  result = separator.separate(stem + ".mp4", stem + ".wav")
  assert result.sources.shape == ref["sources"].shape
  peak = np.abs(ref["sources"]).max()
  np.testing.assert_allclose(result.sources, ref["sources"], atol=1e-5 * max(peak, 1e-3))
  # The fallbacks are reported and the result is well-formed.
  assert result.providers_used["detections"].startswith("motion proposals")
  assert result.source_names[-1] == "background" and result.graphs.num_windows == 10
  assert len(result.directions()) == result.num_sources


@pytest.mark.slow
def test_sources_sum_to_the_mixture_at_the_input_rate_and_length(trained_tiny_workdir, separator,
                                                                 tmp_path):
  _, stem, _ = trained_tiny_workdir
  wav, sr = media.load_audio(stem + ".wav", target_sr=44100)
  wav = wav[:44100 * 7 + 123]  # 7 s and a bit: two crops, a length that is no multiple of anything
  stereo = np.stack([0.8 * wav, 0.4 * wav], -1)
  audio_path = str(tmp_path / "mix.flac")
  media.write_wav(audio_path, stereo, 44100, subtype="PCM_24")

  def complementary(masks, valid):  # masks that sum to 1 over the used slots
    masks = masks * valid[..., None, None] + 1e-3 * valid[..., None, None]
    return masks / masks.sum(axis=1, keepdims=True)

  result = separator.separate(stem + ".mp4", audio_path, num_sources=2,
                              mask_override=complementary)
  expected, _ = media.load_audio(audio_path, target_sr=None)  # the downmixed input
  assert result.sample_rate == 44100
  assert result.sources.shape == (3, expected.shape[0])
  np.testing.assert_allclose(result.mixture, expected)
  # The input has no content above the model's 5.5 kHz band (it was made at 11025 Hz), so the
  # round trip 44.1 kHz -> 11025 Hz -> 44.1 kHz keeps it; away from the clip's abrupt start and
  # end (resampling filter transients, 50 ms) what is left is resampling error.
  err = np.abs(result.sources.sum(0) - expected)[2205:-2205]
  assert err.max() < 1e-3 * np.abs(expected).max(), err.max()
  # At the model's own rate nothing is resampled: the sum is the mixture to float precision.
  at_model_rate, _ = media.load_audio(stem + ".wav", target_sr=None)
  exact = separator.separate(stem + ".mp4", (at_model_rate, 11025), num_sources=2,
                             mask_override=complementary)
  np.testing.assert_allclose(exact.sources.sum(0), at_model_rate, atol=1e-5)
  # Without the override the sources are the model's own (not complementary): same shapes.
  plain = separator.separate(stem + ".mp4", audio_path, num_sources=1)
  assert plain.sources.shape == (2, expected.shape[0]) and plain.source_names == [
      "source 0", "background"]


@pytest.mark.slow
def test_short_in_memory_audio_is_padded_and_returned_at_its_length(trained_tiny_workdir,
                                                                    separator):
  _, stem, _ = trained_tiny_workdir
  wav, _ = media.load_audio(stem + ".wav", target_sr=22050)
  short = wav[:22050 * 2 + 7]  # 2 s: shorter than one 65535-sample crop
  result = separator.separate(stem + ".mp4", (short, 22050), num_sources=0)
  assert result.sources.shape == (1, short.shape[0]) and result.sample_rate == 22050
  assert np.all(np.isfinite(result.sources))
  assert result.direction_probabilities.shape[0] == 0


@pytest.mark.slow
def test_graphs_equal_the_training_examples(trained_tiny_workdir, tiny_data_dir, separator):
  """Same clip, same providers -> the graphs the data set was built from, also in small chunks."""
  _, stem, _ = trained_tiny_workdir
  from asmp_data.synthetic import synthetic_dataset_builder  # pylint: disable=g-import-not-at-top
  builder = synthetic_dataset_builder.Builder(data_dir=tiny_data_dir, config="tiny",
                                              file_format="array_record")
  source = builder.as_data_source("test")
  name = os.path.basename(stem)
  ex = next(source[i] for i in range(len(source))
            if source[i]["clip_id"] in (name, name.encode()))
  oracle = providers.SyntheticOracle(stem + ".json")
  given = inference.Providers(detections=oracle.detections(), depth=oracle.depth(None),
                              flow=oracle.flow(None))
  video = inference.read_frames(stem + ".mp4", 8, (128, 128))
  for chunk in (16, 3):
    separator.chunk_windows = chunk
    graphs, used, warns = separator.build_graphs(video, given, measure_motion=True)
    assert not warns and used["detections"] == "given"
    for key in ("node_mask", "node_type", "node_features", "adjacency", "window_valid"):
      np.testing.assert_array_equal(getattr(graphs, key), np.asarray(ex[key]), err_msg=key)
    np.testing.assert_array_equal(graphs.measured_direction, np.asarray(ex["dir10"]).T)
    # The drawn boxes are exactly the graph's nodes.
    np.testing.assert_array_equal(np.isfinite(graphs.node_boxes).all(-1), graphs.node_mask)
  separator.chunk_windows = 16
  valid = np.asarray(ex["source_class"]) >= 0
  names = json.load(open(stem + ".json"))["classes"]["sounding"]
  assert graphs.source_names == [names[c] for c in np.asarray(ex["source_class"])[valid]]


@pytest.mark.slow
def test_dir_window_graphs_condition_each_direction_window_on_its_own_graph(trained_tiny_workdir,
                                                                            separator):
  """The same weights with config.model.dir_window_graphs: each slice reads its window's graph."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  _, stem, _ = trained_tiny_workdir
  wav, _ = media.load_audio(stem + ".wav", target_sr=11025)
  graphs = separator.separate(stem + ".mp4", stem + ".wav", num_sources=2).graphs
  config = ml_collections.ConfigDict(separator.config.to_dict())
  config.model.dir_window_graphs = True
  windowed = inference.Separator(config, separator.variables, separator.meta)
  # Every window holding window 0's graph: the flag changes nothing.
  same = dataclasses.replace(graphs, **{
      k: np.broadcast_to(getattr(graphs, k)[:1], getattr(graphs, k).shape)
      for k in ("node_features", "node_mask", "node_type", "adjacency")})
  a = separator.separate_waveform(wav, same, 2)
  b = windowed.separate_waveform(wav, same, 2)
  np.testing.assert_allclose(b["dir_probs"], a["dir_probs"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(b["slots"], a["slots"], atol=1e-6)
  # The clip's own graphs: the separation is the same, the later windows' directions are not.
  a = separator.separate_waveform(wav, graphs, 2)
  b = windowed.separate_waveform(wav, graphs, 2)
  np.testing.assert_allclose(b["slots"], a["slots"], atol=1e-6)
  np.testing.assert_allclose(b["dir_probs"][:, 0], a["dir_probs"][:, 0], rtol=1e-5, atol=1e-6)
  assert np.nanmax(np.abs(b["dir_probs"] - a["dir_probs"])) > 1e-4


@pytest.mark.slow
def test_missing_and_mismatched_checkpoints_are_refused(trained_tiny_workdir, tmp_path):
  workdir, _, _ = trained_tiny_workdir
  with pytest.raises(inference.InferenceError, match="workdir not found"):
    inference.Separator.from_checkpoint(str(tmp_path / "nowhere"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(inference.InferenceError, match="no config.json"):
    inference.Separator.from_checkpoint(str(empty))
  shutil.copy(os.path.join(workdir, "config.json"), empty / "config.json")
  with pytest.raises(inference.InferenceError, match="no checkpoints directory"):
    inference.Separator.from_checkpoint(str(empty))
  with pytest.raises(inference.InferenceError, match="no checkpoint for step 7"):
    inference.Separator.from_checkpoint(workdir, step=7)
  # A config whose model does not match the saved parameters.
  other = tmp_path / "other"
  shutil.copytree(workdir, other)
  with open(other / "config.json") as f:
    config = json.load(f)
  config["model"]["embed_dim"] = 16
  with open(other / "config.json", "w") as f:
    json.dump(config, f)
  # Named from the checkpoint's metadata, parameter by parameter, before any array is read.
  with pytest.raises(inference.InferenceError,
                     match=r"does not match config.json \(\d+ parameters differ\): "
                           r"\['params'\].*checkpoint \(\d+, \d+\) vs config"):
    inference.Separator.from_checkpoint(str(other))
  # The audio-only baseline needs ground-truth labels: refused for video files.
  with open(workdir + "/config.json") as f:
    config = json.load(f)
  config["model"]["graph_mode"] = "class_label"
  with pytest.raises(inference.InferenceError, match="class_label baseline"):
    inference.Separator(ml_collections.ConfigDict(config), {})


@pytest.mark.slow
def test_feature_extractor_and_arguments_are_checked(trained_tiny_workdir, separator, tmp_path):
  _, stem, _ = trained_tiny_workdir
  with pytest.raises(inference.InferenceError, match="'precomputed' requested.*'hog_color'"):
    separator.separate(stem + ".mp4", stem + ".wav", feature_extractor="precomputed")
  with pytest.raises(inference.InferenceError, match="num_sources must be in 0..2"):
    separator.separate(stem + ".mp4", stem + ".wav", num_sources=3)
  frames, _ = media.read_video(stem + ".mp4", max_frames=8)
  silent = str(tmp_path / "silent.mp4")
  media.write_video(silent, frames, 8)  # pictures only
  with pytest.raises(media.MediaError, match="no audio stream in the video"):
    separator.separate(silent)
  with pytest.raises(providers.ProviderError, match="depth file not found"):
    separator.separate(stem + ".mp4", stem + ".wav",
                       providers=inference.Providers(depth=stem + ".missing.npy"))


class _ListSink:
  """Collects what a streamed separation hands out."""

  def __init__(self):
    self.names, self.mixture, self.sources = None, [], []

  def open(self, names, sample_rate):
    self.names, self.sample_rate = names, sample_rate

  def write(self, mixture, sources):
    self.mixture.append(mixture)
    self.sources.append(sources)


@pytest.mark.slow
def test_streamed_output_equals_the_whole_and_the_log_names_the_audio_file(trained_tiny_workdir,
                                                                           separator, caplog):
  _, stem, _ = trained_tiny_workdir
  whole = separator.separate(stem + ".mp4", stem + ".wav", num_sources=2)
  sink = _ListSink()
  caplog.set_level(logging.INFO)
  streamed = separator.separate(stem + ".mp4", stem + ".wav", num_sources=2, sink=sink)
  assert f"audio ({stem}.wav)" in caplog.text  # the file, not "<array>"
  assert sink.names == whole.source_names and sink.sample_rate == whole.sample_rate
  assert len(sink.sources) > 1  # handed out in pieces
  np.testing.assert_array_equal(np.concatenate(sink.sources, -1), whole.sources)
  np.testing.assert_array_equal(np.concatenate(sink.mixture), whole.mixture)
  np.testing.assert_array_equal(streamed.sources, whole.sources)  # under a minute: all kept
  assert streamed.num_samples == whole.num_samples == whole.mixture.shape[0]
