"""asmp_jax.sliding_window and the streamed separation: overlap-averaging handed out in pieces,
per-window probabilities, and memory bounded by structure (what is held at once), not by length."""
import gc
import weakref

import ml_collections
import numpy as np
import pytest

from asmp_jax import config_lib
from asmp_jax import inference
from asmp_jax import media
from asmp_jax import mixture_stream
from asmp_jax import preprocess
from asmp_jax import scene_pipeline
from asmp_jax import sliding_window
from asmp_jax.graph import providers


def _reference_average(crops, starts, length):
  """Per sample, the mean of the crops covering it (0 where none does), sample by sample."""
  out = np.zeros(crops.shape[1:-1] + (length,))
  for t in range(length):
    covering = [c[..., t - s] for c, s in zip(crops, starts) if s <= t < s + crops.shape[-1]]
    if covering:
      out[..., t] = np.mean(covering, axis=0)
  return out


def test_crop_starts_cover_the_signal_with_the_last_crop_flush_right():
  np.testing.assert_array_equal(sliding_window.crop_starts(100, 30, 25), [0, 25, 50, 70])
  np.testing.assert_array_equal(sliding_window.crop_starts(20, 30, 25), [0])


@pytest.mark.parametrize("pops", [[], [7, 40, 41, 90], [1000]])
def test_overlap_average_handed_out_in_pieces_is_the_mean_of_the_covering_crops(pops):
  rng = np.random.default_rng(0)
  length, crop = 103, 30
  starts = sliding_window.crop_starts(length, crop, 11)
  crops = rng.standard_normal((len(starts), 2, crop))
  acc = sliding_window.OverlapAverage((2,), length, np.float64)
  pieces, pops = [], list(pops)
  for c, s in zip(crops, starts):
    while pops and pops[0] <= s:  # only samples before the next crop's start are final
      pieces.append(acc.pop(pops.pop(0)))
    acc.add(c, s)
  pieces.append(acc.pop(length))
  np.testing.assert_allclose(np.concatenate(pieces, -1), _reference_average(crops, starts, length),
                             atol=1e-12)
  with pytest.raises(ValueError, match="already handed out"):
    acc.add(crops[0], 0)


def test_window_probabilities_average_each_slice_into_the_window_of_its_centre():
  # Windows of 10 samples; two slices per crop centred at +5 and +15; signal of 35 samples.
  acc = sliding_window.WindowProbabilities(4, 10, 35, np.array([5, 15]), (1, 2))
  probs = np.zeros((2, 1, 2, 2))
  probs[0, 0, :, 0] = 1.0  # crop at 0: class 0 in windows 0 and 1
  probs[1, 0, :, 1] = 1.0  # crop at 10: class 1 in windows 1 and 2
  acc.add(np.array([0, 10]), probs)
  got = acc.result()[0]
  np.testing.assert_allclose(got[:3], [[1, 0], [0.5, 0.5], [0, 1]])
  assert np.isnan(got[3]).all()  # no slice centred in window 3


# ----------------------------------------------------------------------------- streaming


def _tiny_separator(batch_size=3):
  config = config_lib.base_config()
  config.model.node_feature_dim = 400
  config.model.num_classes = 5
  return inference.Separator(ml_collections.ConfigDict(config.to_dict()), {},
                             {"auditory_classes": ["a", "b", "c", "d"]}, batch_size=batch_size)


def _pass_through(spec):
  """A separation that returns each crop in every slot (so the output is the input)."""

  def fn(batch):
    crops = batch["audio"]
    b, s = crops.shape[0], spec.num_slots
    return {"slots": np.repeat(crops[:, None], s, 1),
            "cons_logits": np.zeros((b, s, spec.num_classes)),
            "dir_logits": np.zeros((b, s, spec.num_dir_windows, spec.num_direction_classes))}

  return fn


def _graphs(num_windows):
  n = preprocess.MAX_NODES
  mask = np.zeros((num_windows, n), bool)
  mask[:, -1] = True
  return scene_pipeline.SceneGraphs(
      node_features=np.zeros((num_windows, n, 400), np.float16), node_mask=mask,
      node_type=np.full((num_windows, n), 1, np.int8),
      adjacency=np.zeros((num_windows, n, n), np.float16),
      window_valid=np.ones(num_windows, bool), node_boxes=np.zeros((num_windows, n, 4)),
      reference_frames=np.zeros((num_windows, 2, 2, 3), np.uint8), source_ids=np.zeros(0),
      source_names=[], measured_direction=np.full((2, num_windows), -1))


def _stream(seconds, monkeypatch):
  sep = _tiny_separator()
  monkeypatch.setattr(sep, "_separation_fn", lambda override: _pass_through(sep.model.spec))
  rate, block = sep.sample_rate, 1000
  signal = np.random.default_rng(seconds).standard_normal(seconds * rate).astype(np.float32)
  pulled = []

  def blocks():
    for i in range(0, len(signal), block):
      pulled.append(i)
      yield signal[i:i + block]

  reader = sliding_window.CropReader(blocks(), sep.crop)
  out, pulled_at_output = [], []
  for piece in sep.separate_stream(reader, len(signal), _graphs(seconds), 1):
    out.append(piece)
    pulled_at_output.append(len(pulled) * block)
  return sep, signal, np.concatenate(out, -1), reader.max_held, pulled_at_output


def test_streamed_separation_holds_the_same_samples_whatever_the_length(monkeypatch):
  short = _stream(20, monkeypatch)
  long = _stream(200, monkeypatch)
  for sep, signal, out, _, _ in (short, long):
    assert out.shape == (sep.model.spec.num_slots, len(signal))
    np.testing.assert_allclose(out[0], signal, atol=1e-6)  # the pieces line up
  sep = long[0]
  hop, bs = sep.sample_rate, sep.batch_size
  # The reader holds one batch of crops and a block at most, ten times the length or not.
  assert max(short[3], long[3]) <= sep.crop + (bs - 1) * hop + 1000
  # Each output piece is handed out while the input is still being read: at most a batch of
  # crops and a block ahead of what was handed out.
  done = np.cumsum([0] + [hop * bs] * (len(long[4]) - 1))
  assert np.all(np.asarray(long[4]) - done <= sep.crop + bs * hop + 1000)


class _CountingVideo:
  """A video whose frames are made chunk by chunk; records how many chunks are alive at once."""

  def __init__(self, num_frames, size=(32, 48)):
    self.num_frames, self.size, self.source_size = num_frames, size, size
    self.source_index = np.arange(num_frames)
    self.made, self.max_alive = [], 0  # weak references to the chunks made

  def scan(self):
    pass

  def chunks(self, n):
    rng = np.random.default_rng(0)
    for k0 in range(0, self.num_frames, n):
      gc.collect()
      self.max_alive = max(self.max_alive, sum(r() is not None for r in self.made))
      frames = rng.integers(0, 255, (min(n, self.num_frames - k0),) + self.size + (3,), np.uint8)
      self.made.append(weakref.ref(frames))
      yield k0, frames, None


def test_scene_graphs_hold_one_chunk_of_frames_at_a_time():
  settings = scene_pipeline.Settings(preprocess=preprocess.PreprocessConfig(),
                                     auditory_ids=np.array([0], np.int32), class_names=("a", "b"),
                                     chunk_windows=2)
  for num_windows in (6, 30):
    video = _CountingVideo(num_windows * 8)
    frames = np.arange(video.num_frames)
    dets = providers.Detections(frame=frames, box=np.tile([4, 4, 20, 20], (len(frames), 1)),
                                label=np.zeros(len(frames)), score=np.ones(len(frames)))
    graphs, _, _ = scene_pipeline.build_scene_graphs(video, scene_pipeline.Providers(dets),
                                                     settings)
    assert graphs.num_windows == num_windows and graphs.node_mask[:, 0].all()
    assert video.max_alive <= 1, video.max_alive


@pytest.mark.parametrize("shape", [(30011,), (30011, 1), (30011, 3)])
def test_streamed_resampling_equals_resampling_the_whole(shape):
  x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
  cuts = [0, 7, 4096, 4097, 20000, shape[0]]
  blocks = (x[a:b] for a, b in zip(cuts[:-1], cuts[1:]))
  channels = shape[1] if len(shape) > 1 else 1
  got = np.concatenate(list(mixture_stream.resampled_blocks(blocks, 44100, 11025, channels)))
  np.testing.assert_array_equal(got, media.resample(x, 44100, 11025))
  assert len(got) == mixture_stream.resampled_length(shape[0], 44100, 11025)
  fitted = np.concatenate(list(mixture_stream.fit_length(iter([got[:5], got[5:]]), len(got) + 3)))
  np.testing.assert_array_equal(fitted[:len(got)], got)
  assert not fitted[len(got):].any() and len(fitted) == len(got) + 3
