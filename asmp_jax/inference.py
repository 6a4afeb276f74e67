"""Inference: restore a trained ASMP anywhere and separate the sounds of a real video file.

  sep = Separator.from_checkpoint("runs/synthetic")          # CPU, GPU or TPU; any training mesh
  result = sep.separate("clip.mp4")                           # or audio="mix.flac", providers=...
  result.sources        # float32 [M, L]: each source slot, then the background, at the input rate
  result.directions()   # per source and 1 s window: predicted motion class, name and probability

What happens to a video (the details are in docs/inference.md):

1. **Audio** comes from ``audio`` (wav, flac, ogg, mp3, ...) or the video's own stream, at any
   sample rate, downmixed to mono, resampled to the model's 11025 Hz (soxr) and back at the end, so
   every output has the input's sample rate and length.
2. **Frames** are decoded with PyAV one at a time and resampled to the model's frame rate (8 fps:
   ``config.data.window_frames`` frames per 1 s window, the frame nearest each 1/8 s tick) and to
   the training frame size (``frame_size``; area interpolation, aspect ratio not kept), so memory
   holds only the small resampled frames.
3. **Scene graphs**, one per 1 s window, by the training preprocessing (asmp_jax.preprocess) on
   chunks of windows, from the providers: a detections file (labels = data-set class ids), depth
   and flow files when given; otherwise the weight-free fallbacks, with a logged WARNING:
   motion-based box proposals (asmp_jax.graph.proposals; class "unknown"), flat depth, OpenCV DIS
   flow. Node features use the extractor recorded in the checkpoint's config (a mismatch is
   refused).
4. **Separation**: the audio is cut into 65535-sample crops every ``hop_s`` seconds (the last crop
   flush with the end; a clip shorter than one crop is zero-padded), each crop conditioned on the
   graph of the window it starts in. Crops go through the jitted model in fixed-size batches (one
   compilation) and are overlap-averaged into running sums, so memory does not grow with the
   number of crops. Slot ``k < N`` is an auditory source, the last slot the background.
5. **Predictions**: the consistency classifier's class probabilities (averaged over crops) and the
   direction classifier's per-window probabilities (each time slice is assigned to the 1 s window
   holding its centre; probabilities averaged over every crop that covers the window). With
   ``config.model.dir_window_graphs`` each time slice is conditioned on the graph of the window
   holding its centre, the separation still on the crop's first window's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Sequence

import av
import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asmp_jax import audio as audio_lib
from asmp_jax import evaluate
from asmp_jax import input_pipeline
from asmp_jax import media
from asmp_jax import preprocess
from asmp_jax import run_folder
from asmp_jax import safe_io
from asmp_jax import schema
from asmp_jax import slot_matching
from asmp_jax.graph import build as graph_build
from asmp_jax.graph import features as graph_features
from asmp_jax.graph import motion as graph_motion
from asmp_jax.graph import proposals as graph_proposals
from asmp_jax.graph import providers as graph_providers
from asmp_jax.models import asmp as asmp_model
from asmp_jax.models import conditioners

DEFAULT_FRAME_SIZE = (128, 128)  # (height, width) of the synthetic sets' frames
BACKGROUND_NAME = "background"
# Same RGB conversion as media.read_video (the training data were decoded with it).
_RGB_FLAGS = (av.video.reformatter.Interpolation.BILINEAR
              | av.video.reformatter.Interpolation.ACCURATE_RND
              | av.video.reformatter.Interpolation.BITEXACT
              | av.video.reformatter.Interpolation.FULL_CHR_H_INT)

MaskOverride = Callable[[jax.Array, jax.Array], jax.Array]


class InferenceError(ValueError):
  """Inference cannot run (missing checkpoint, mismatched config, bad argument...)."""


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Providers:
  """Where detections, depth and flow come from; ``None`` selects the documented fallback.

  Everything describes the video's *decoded* frames (its own frame rate and pixel size, frame 0 =
  the first decoded frame); inference maps them to the resampled frames.

  Attributes:
    detections: a detections file (.h5/.npz, formats in asmp_jax.graph.providers) or
      :class:`~asmp_jax.graph.providers.Detections`; labels are class ids of the data set
      (``dataset_meta.json``). None: motion-based proposals.
    depth: a depth file (.npy, or .npz with key ``depth``) or float [T0, H0, W0]. None: flat depth.
    flow: a flow file (.npy, or .npz with key ``flow``) or float [T0, H0, W0, 2], forward flow
      t -> t+1 in pixels. None: OpenCV DIS flow on the resampled frames.

  Each may instead be a learned provider of asmp_jax.vision (detector, depth or flow model),
  run on the resampled frames.
  """
  detections: str | os.PathLike[str] | graph_providers.Detections | None = None
  depth: str | os.PathLike[str] | np.ndarray | None = None
  flow: str | os.PathLike[str] | np.ndarray | None = None


@dataclasses.dataclass
class VideoFrames:
  """Frames resampled for the model.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB at ``fps`` and the training frame size.
    source_index: int64 [T] index of the decoded frame each one was taken from.
    source_size: (height, width) of the decoded frames.
    source_fps: the stream's average frame rate.
    fps: the model's frame rate.
  """
  frames: np.ndarray
  source_index: np.ndarray
  source_size: tuple[int, int]
  source_fps: float
  fps: float


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  h, w = size
  if rgb.shape[:2] == (h, w):
    return rgb
  shrink = rgb.shape[0] > h or rgb.shape[1] > w
  return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def read_frames(path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> VideoFrames:
  """Decodes a video and keeps, for every tick ``k / fps``, the frame nearest in time, resized.

  Args:
    path: any container PyAV reads (mp4, mkv, webm, avi, mov...).
    fps: output frame rate (frames per second).
    size: output (height, width) in pixels.

  Raises:
    media.MediaError: missing/corrupt file, no video stream, no decodable frame.
  """
  path = os.fspath(path)
  info = media.probe(path)  # missing / empty / unreadable files fail here with one line
  if not info["has_video"]:
    raise media.MediaError(path, "no video stream in the file")
  picked, index = [], []
  try:
    with av.open(path, mode="r") as container:
      stream = container.streams.video[0]
      src_fps = float(stream.average_rate or stream.guessed_rate or 0.0) or fps
      prev = prev_t = t0 = None
      for i, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else i / src_fps
        t0 = t if t0 is None else t0
        t -= t0
        while len(picked) / fps <= t + 1e-6:
          target = len(picked) / fps
          use_prev = prev is not None and target - prev_t < t - target
          chosen, chosen_i = (prev, i - 1) if use_prev else (frame, i)
          rgb = chosen.reformat(format="rgb24", interpolation=_RGB_FLAGS, threads=1).to_ndarray()
          picked.append(_resize(rgb, size))
          index.append(chosen_i)
        prev, prev_t = frame, t
        src_size = (frame.height, frame.width)
  except av.FFmpegError as e:
    raise media.MediaError(path, f"corrupt or unreadable video stream ({e})") from e
  except (AttributeError, TypeError, ValueError) as e:  # e.g. a stream without a known codec
    raise media.MediaError(path, f"unsupported video format or codec ({type(e).__name__}: {e})"
                           ) from e
  if not picked:
    raise media.MediaError(path, "video stream decodes to zero frames")
  return VideoFrames(np.stack(picked), np.asarray(index, np.int64), src_size, src_fps, fps)


def check_video(video: str | os.PathLike[str]) -> None:
  """Cheap up-front check: the file has a video stream whose first frame decodes.

  Raises:
    media.MediaError: missing/empty/corrupt file, no video stream, zero frames.
  """
  if not media.probe(video)["has_video"]:
    raise media.MediaError(video, "no video stream in the file")
  try:
    media.read_video(video, max_frames=1)
  except media.MediaError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # decoders fail in many ways
    raise media.MediaError(video, f"unsupported video format or codec ({type(e).__name__}: {e})"
                           ) from e


AudioInput = str | os.PathLike[str] | tuple[np.ndarray, int] | None


def load_mixture(video: str | os.PathLike[str], audio: AudioInput = None
                 ) -> tuple[np.ndarray, int, str]:
  """The mono mixture at its own sample rate: ``(float32 [L], sample_rate, where from)``.

  Args:
    video: the video file (its audio stream is used when ``audio`` is None).
    audio: an audio file, or ``(wav [L] or [L, C], sample_rate)`` already in memory.

  Raises:
    media.MediaError: no audio stream anywhere, unreadable/empty audio, bad samples.
  """
  if isinstance(audio, tuple):
    wav, sr = audio
    wav = media.downmix(np.asarray(wav, np.float32))
    where = "<array>"
    if int(sr) <= 0:
      raise media.MediaError(where, f"sample rate must be positive, got {sr}")
    if wav.size == 0 or not np.all(np.isfinite(wav)):
      raise media.MediaError(where, "audio is empty or has NaN/inf samples")
    return wav, int(sr), where
  path = os.fspath(audio) if audio is not None else os.fspath(video)
  if audio is None and not media.probe(path)["has_audio"]:
    raise media.MediaError(path, "no audio stream in the video and no separate audio file given")
  try:
    wav, sr = media.load_audio(path, target_sr=None, mono=True)
  except media.MediaError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # decoders fail in many ways
    raise media.MediaError(path, f"unsupported audio format or codec ({type(e).__name__}: {e})"
                           ) from e
  return wav, sr, path


def _load_array(value, key: str) -> np.ndarray | None:
  """A provider array from a path (.npy / .npz[key], memory-mapped for .npy) or an array."""
  if value is None or isinstance(value, np.ndarray) or graph_providers.is_frame_model(value):
    return value
  path = os.fspath(value)
  if not os.path.exists(path):
    raise graph_providers.ProviderError(f"{path}: {key} file not found")
  try:
    arr = safe_io.np_load(path, mmap_mode="r" if path.endswith(".npy") else None)
  except safe_io.SafeLoadError as e:
    raise graph_providers.ProviderError(f"{path}: not a readable .npy/.npz {key} file "
                                        f"({e.reason})") from e
  if isinstance(arr, dict):
    if key not in arr:
      raise graph_providers.ProviderError(f"{path}: expected an array named {key!r}, found "
                                          f"{sorted(arr.keys())}")
    arr = arr[key]
  return arr


def _check_source_array(arr: np.ndarray, name: str, num_frames: int, size: tuple[int, int],
                        trailing: tuple[int, ...]) -> None:
  want = (size[0], size[1]) + trailing
  if arr.ndim != 3 + len(trailing) or tuple(arr.shape[1:]) != want or arr.shape[0] < num_frames:
    raise graph_providers.ProviderError(
        f"{name}: expected [T >= {num_frames}, {', '.join(map(str, want))}] for the decoded "
        f"frames, got {tuple(arr.shape)}")


def map_detections(dets: graph_providers.Detections, video: VideoFrames
                   ) -> graph_providers.Detections:
  """Detections of decoded frames -> detections of the resampled frames (boxes rescaled)."""
  new_index = np.full(int(max(dets.frame.max(initial=-1), video.source_index.max())) + 1, -1)
  new_index[video.source_index] = np.arange(len(video.source_index))
  keep = (dets.frame >= 0) & (dets.frame < len(new_index))
  keep[keep] &= new_index[dets.frame[keep]] >= 0
  out = dets.select(np.flatnonzero(keep))
  h0, w0 = video.source_size
  h, w = video.frames.shape[1:3]
  scale = np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
  return graph_providers.Detections(new_index[out.frame], out.box * scale, out.label, out.score,
                                    out.feature, out.track)


def _resample_depth(depth: np.ndarray, video: VideoFrames, frames: np.ndarray) -> np.ndarray:
  """float32 [len(frames), H, W] depth of the resampled frames ``frames`` (indices)."""
  h, w = video.frames.shape[1:3]
  out = [cv2.resize(np.asarray(depth[video.source_index[k]], np.float32), (w, h),
                    interpolation=cv2.INTER_LINEAR) for k in frames]
  return np.stack(out)


def _resample_flow(flow: np.ndarray, video: VideoFrames, frames: np.ndarray) -> np.ndarray:
  """float32 [len(frames), H, W, 2] flow between consecutive resampled frames.

  Decoded-frame flows between the two source frames are chained (graph.motion.compose_flow),
  then resized and their vectors rescaled to the new pixel size.
  """
  h, w = video.frames.shape[1:3]
  h0, w0 = video.source_size
  scale = np.array([w / w0, h / h0], np.float32)
  src = video.source_index
  out = np.zeros((len(frames), h, w, 2), np.float32)
  for j, k in enumerate(frames):
    if k + 1 >= len(src) or src[k + 1] <= src[k]:
      continue
    chained = graph_motion.compose_flow(np.asarray(flow[src[k]:src[k + 1]], np.float32))
    out[j] = cv2.resize(chained, (w, h), interpolation=cv2.INTER_LINEAR) * scale
  return out


# ----------------------------------------------------------------------------- graphs


@dataclasses.dataclass
class SceneGraphs:
  """The per-window scene graphs a separation was conditioned on (W windows of 1 s).

  Node slots (N = 23): ``0..A-1`` the clip's auditory sources in source order (masked where the
  source is not seen in that window), then context nodes, the last slot the background.

  Attributes:
    node_features: float16 [W, N, F]; node_mask bool [W, N]; node_type int8 [W, N] (0 auditory,
      1 context, 2 background); adjacency float16 [W, N, N] (edge weight, 0 = no edge);
      window_valid bool [W].
    node_boxes: float32 [W, N, 4] (x0, y0, x1, y1) in pixels of ``reference_frames`` (NaN: no node).
    reference_frames: uint8 [W, H, W, 3], the first frame of each window.
    source_ids: int [A'] class ids (or proposal track ids) of the detected sources, A' <= A.
    source_names: names of those classes ("unknown" for proposals).
    measured_direction: int32 [A, W] direction class measured from the flow (-1 = not measured).
    from_proposals: the detections were motion proposals (source classes unknown).
  """
  node_features: np.ndarray
  node_mask: np.ndarray
  node_type: np.ndarray
  adjacency: np.ndarray
  window_valid: np.ndarray
  node_boxes: np.ndarray
  reference_frames: np.ndarray
  source_ids: np.ndarray
  source_names: list[str]
  measured_direction: np.ndarray
  from_proposals: bool = False

  @property
  def num_windows(self) -> int:
    return int(self.window_valid.shape[0])


def _window_node_boxes(dets: graph_providers.Detections, sources: np.ndarray,
                       auditory_ids: np.ndarray, ref: int, last: int, height: int, width: int,
                       cfg: preprocess.PreprocessConfig) -> np.ndarray:
  """float32 [N, 4] boxes of the node slots of one window, as preprocess.preprocess_clip lays
  them out (NaN for empty slots)."""
  out = np.full((preprocess.MAX_NODES, 4), np.nan, np.float32)
  aud = []
  for a, c in enumerate(sources):
    sel = np.flatnonzero((dets.label == c) & (dets.frame >= ref) & (dets.frame <= last))
    if len(sel):
      best = sel[np.lexsort((-dets.score[sel], np.abs(dets.frame[sel] - ref)))[0]]
      out[a] = dets.box[best]
      aud.append(dets.box[best])
  aud = np.asarray(aud, np.float32).reshape(-1, 4)
  in_ref = dets.frame == ref
  cand = np.flatnonzero(in_ref & ~np.isin(dets.label, auditory_ids))
  if len(aud) and len(cand):
    ctx = graph_build.select_context(aud, dets.box[cand], dets.score[cand],
                                     np.zeros(len(cand), bool), iou_threshold=cfg.iou_threshold,
                                     min_score=cfg.min_context_score,
                                     max_context=preprocess.MAX_CONTEXT)
    out[preprocess.MAX_AUDITORY:preprocess.MAX_AUDITORY + len(ctx)] = dets.box[cand[ctx]]
  all_boxes = np.concatenate([aud, dets.box[in_ref]], 0)
  out[-1] = graph_build.background_box(all_boxes, height, width)
  return out


def _clip_slot_order(sources: np.ndarray, chunk_sources: np.ndarray) -> np.ndarray:
  """int [A]: the chunk's auditory slot that holds clip source ``a`` (sources absent from the
  chunk get the chunk's unused slots)."""
  a_max = preprocess.MAX_AUDITORY
  pos = {int(c): i for i, c in enumerate(sources)}
  inverse = np.full(a_max, -1)
  inverse[[pos[int(c)] for c in chunk_sources]] = np.arange(len(chunk_sources))
  free = iter(range(len(chunk_sources), a_max))
  return np.array([inverse[a] if inverse[a] >= 0 else next(free) for a in range(a_max)])


def _permute_auditory(ex: dict[str, np.ndarray], order: np.ndarray) -> None:
  """Reorders the auditory node slots of a preprocessed chunk in place (slot a <- order[a])."""
  perm = np.arange(preprocess.MAX_NODES)
  perm[:len(order)] = order
  for key in ("node_features", "node_mask", "node_type", "node_boxes"):
    ex[key] = ex[key][:, perm]
  ex["adjacency"] = ex["adjacency"][:, perm][:, :, perm]


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class SeparationResult:
  """What :meth:`Separator.separate` returns.

  Attributes:
    sample_rate: Hz, the input's.
    mixture: float32 [L], the input mixture (downmixed), at ``sample_rate``.
    sources: float32 [M, L], the separated waveforms: the valid auditory slots, then the
      background (last row). Their sum is the model's view of the mixture (band-limited to the
      model's 5.5 kHz) when the masks are complementary.
    source_names: M names ("source 0", ..., "background").
    slots: int [M] model slot of each row.
    class_names: the consistency classifier's K class names (the data set's auditory classes,
      then "background").
    class_probabilities: float32 [M, K], averaged over crops.
    direction_names: the D direction class names (asmp_jax.graph.motion.direction_names).
    direction_probabilities: float32 [M - 1, W, D] per auditory source and 1 s window (NaN rows
      where no crop covers the window).
    detected_source: int [M - 1] index into ``graphs.source_ids`` of the detected object each
      source slot was matched to (-1: none; see docs/inference.md).
    graphs: the scene graphs used.
    window_seconds: length of a window (1 s).
    providers_used: what produced detections/depth/flow ("file", "motion proposals"...).
    warnings: the fallback warnings that were logged.
  """
  sample_rate: int
  mixture: np.ndarray
  sources: np.ndarray
  source_names: list[str]
  slots: np.ndarray
  class_names: list[str]
  class_probabilities: np.ndarray
  direction_names: list[str]
  direction_probabilities: np.ndarray
  detected_source: np.ndarray
  graphs: SceneGraphs
  window_seconds: float = 1.0
  providers_used: dict[str, str] = dataclasses.field(default_factory=dict)
  warnings: list[str] = dataclasses.field(default_factory=list)

  @property
  def num_sources(self) -> int:
    """Number of auditory sources (rows of ``sources`` before the background)."""
    return len(self.source_names) - 1

  def directions(self) -> list[list[dict[str, Any]]]:
    """Per auditory source, per window: ``{"window", "start_s", "class", "name", "probability"}``
    (windows no crop covered are left out)."""
    out = []
    for m in range(self.num_sources):
      rows = []
      for w, p in enumerate(self.direction_probabilities[m]):
        if not np.all(np.isfinite(p)):
          continue
        k = int(np.argmax(p))
        rows.append({"window": w, "start_s": w * self.window_seconds, "class": k,
                     "name": self.direction_names[k], "probability": float(p[k])})
      out.append(rows)
    return out

  def predicted_classes(self) -> list[dict[str, Any]]:
    """Per output row, the most probable sound class ``{"class", "name", "probability"}``."""
    k = self.class_probabilities.argmax(-1)
    return [{"class": int(c), "name": self.class_names[c],
             "probability": float(self.class_probabilities[m, c])} for m, c in enumerate(k)]


# ----------------------------------------------------------------------------- model side


def _forward(module: asmp_model.ASMP, graph: dict[str, jax.Array], mix_log_mag: jax.Array):
  """One video per mixture: masks, class and direction logits (train=False).

  ``graph`` arrays have leading ``[B, 1]`` (U = 1); ``mix_log_mag [B, H, W]``.
  """
  sp = module.spec
  b, h, w = mix_log_mag.shape
  s, e = sp.num_slots, sp.embed_dim
  emb = module.embed(graph)["embeddings"].reshape(b, s, e)
  masks = module.separate(mix_log_mag, emb, False)  # [B, S, H, W]
  sep = jnp.log(masks * jnp.exp(mix_log_mag)[:, None] + sp.sep_log_eps).reshape(b * s, h, w)
  cons = module.consistency(sep, False).reshape(b, s, sp.num_classes)
  if sp.dir_window_graphs:
    dir_emb = module.window_embeddings(graph).reshape(b * s, sp.num_dir_windows, e)
  else:
    dir_emb = emb.reshape(b * s, e)
  dirs = module.direction(sep, dir_emb, False)
  return masks, cons, dirs.reshape(b, s, sp.num_dir_windows, sp.num_direction_classes)


def crop_separation_fn(model: asmp_model.ASMP, normalise_mix: bool = False, num_videos: int = 1,
                       mask_override: MaskOverride | None = None):
  """Jittable ``(variables, batch) -> outputs`` for single-video crops.

  ``batch``: ``audio float32 [B, L]`` and the graph arrays of asmp_jax.models.asmp.BATCH_DTYPES
  with leading ``[B, 1]`` (``source_mask [B, 1, S]``). Returns ``slots [B, S, L]`` (separated
  waveforms, invalid slots zero), ``cons_logits [B, S, K]``, ``dir_logits [B, S, Wd, D]``.
  ``mask_override(masks [B, S, F, T], source_mask [B, S]) -> masks`` replaces the model's
  linear-frequency masks (tests, diagnostics). ``normalise_mix`` divides the spectrum by
  ``num_videos`` (``config.data``'s: the scale of the training mixtures).
  """

  def fn(variables, batch):
    wav = batch["audio"].astype(jnp.float32)
    feats = audio_lib.mixture_features(wav[:, None], normalise_mix, num_videos)
    spec, mix_log_mag = feats["spec"][:, 0], feats["mix_log_mag"]  # [B, F, T], [B, 256, T]
    graph = {k: batch[k] for k in (*asmp_model.BATCH_DTYPES, *asmp_model.WINDOW_BATCH_DTYPES)
             if k != "mix_log_mag" and k in batch}
    masks, cons, dirs = model.apply(variables, graph, mix_log_mag, method=_forward)
    valid = batch["source_mask"][:, 0]
    masks = audio_lib.log_freq_unwarp(masks) * valid[..., None, None]
    if mask_override is not None:
      masks = mask_override(masks, valid)
    slots = audio_lib.masks_to_waveforms(masks, spec, wav.shape[-1])
    return {"slots": slots, "cons_logits": cons, "dir_logits": dirs}

  return fn


def _match_slots_to_sources(class_probs: np.ndarray, source_classes: np.ndarray) -> np.ndarray:
  """Assigns detected sources to auditory slots by the lowest summed cross-entropy.

  Args:
    class_probs: [A, K] class probabilities of the auditory slots.
    source_classes: [n] classifier indices of the detected sources (n <= A; -1 = unknown class).

  Returns:
    int [A]: detected-source index matched to each slot, -1 for slots left unmatched.
  """
  a = class_probs.shape[0]
  out = np.full(a, -1, np.int64)
  known = np.flatnonzero(source_classes >= 0)[:a]
  if not len(known) or a == 0:
    return out
  logp = np.log(np.maximum(class_probs, 1e-12))
  # Rows: the known sources, then rows of cost 0 for the slots left over; columns: slots.
  cost = np.zeros((a, a), logp.dtype)
  cost[:len(known)] = -logp[:, source_classes[known]].T
  slot_of_row = slot_matching.best_permutation(cost)[1]
  out[slot_of_row[:len(known)]] = known
  return out


# ----------------------------------------------------------------------------- separator


def _abstract_variables(model: asmp_model.ASMP, config) -> dict[str, Any]:
  n = preprocess.MAX_NODES
  shapes = asmp_model.batch_shapes(config.model, 1, n, n * (n - 1))
  return jax.eval_shape(lambda: asmp_model.init_variables(model, jax.random.key(0), shapes))


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in leaves}


def restore_variables(workdir: str, config: ml_collections.ConfigDict, step: int | None = None,
                      device: jax.Device | None = None) -> tuple[dict[str, Any], int]:
  """Restores ``params`` and ``batch_stats`` of a training checkpoint onto one local device.

  Only the ``state`` item is read, and of it only params and BatchNorm statistics (the optimizer
  state and the data-iterator position are skipped). The targets carry an explicit
  ``SingleDeviceSharding``, so a checkpoint written by any number of devices or hosts restores in
  a 1-device process.

  Returns:
    (``{"params", "batch_stats"}``, the restored step).

  Raises:
    InferenceError: no checkpoint, unknown step, or a checkpoint that does not match ``config``.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = run_folder.workdir_path(workdir) / "checkpoints"
  if not ckpt_dir.exists():
    raise InferenceError(f"{workdir}: no checkpoints directory (train with launch.py first)")
  mngr = run_folder.read_only_checkpoints(ckpt_dir, state_handler=ocp.PyTreeCheckpointHandler())
  try:
    steps = list(mngr.all_steps())
    if not steps:
      raise InferenceError(f"{ckpt_dir}: no checkpoint found")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise InferenceError(
          f"{ckpt_dir}: no checkpoint for step {step}; available: {sorted(steps)}")
    model = asmp_model.create_model(config.model)
    abstract = _abstract_variables(model, config)
    sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    target = {k: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                              abstract.get(k, {})) for k in ("params", "batch_stats")}
    # Shapes are compared on the checkpoint's metadata before any array is read: a mismatch is
    # named parameter by parameter, and no restore is started only to fail half way. (Without
    # metadata the restore below still refuses mismatched shapes, less legibly.)
    try:
      saved = getattr(mngr.item_metadata(step)["state"], "tree", None)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise InferenceError(f"{ckpt_dir}/{step}: unreadable checkpoint metadata "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
    if saved is not None:
      got = {jax.tree_util.keystr(p): tuple(m.shape) for p, m in
             jax.tree_util.tree_flatten_with_path({k: saved.get(k, {}) for k in target},
                                                  is_leaf=lambda x: hasattr(x, "shape"))[0]}
      diffs = [f"{k}: checkpoint {got.get(k)} vs config {v}"
               for k, v in _flat_shapes(target).items() if got.get(k) != v]
      if diffs:
        raise InferenceError(f"{ckpt_dir}/{step} does not match {run_folder.CONFIG_FILE} "
                             f"({len(diffs)} parameters differ): " + "; ".join(diffs[:3]))
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True)))["state"]
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise InferenceError(f"{ckpt_dir}/{step} does not match {run_folder.CONFIG_FILE} "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
  finally:
    mngr.close()
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}, step


class Separator:
  """A restored ASMP that separates video files (module docstring).

  Args:
    config: the run's config (``config.json``), with ``model.node_feature_dim`` and
      ``model.num_classes`` filled in.
    variables: ``{"params", "batch_stats"}`` on any device(s).
    dataset_meta: the data set's metadata (class names, ...), see :func:`asmp_jax.run_folder.load_dataset_meta`.
    batch_size: crops per model call (fixed: one compilation; bounds memory).
    hop_s: seconds between crop starts (1.0: every crop starts on a window; the public code's
      evaluation used 0.05).
    frame_size: (height, width) the frames are resized to; default from the metadata
      (``frame_size``), else 128x128 (the synthetic sets).
    chunk_windows: windows preprocessed at a time (bounds the depth/flow memory).
  """

  def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any],
               dataset_meta: dict[str, Any] | None = None, *, batch_size: int = 4,
               hop_s: float = 1.0, frame_size: tuple[int, int] | None = None,
               chunk_windows: int = 16):
    if batch_size < 1:
      raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    if not hop_s > 0:
      raise InferenceError(f"hop_s must be > 0, got {hop_s}")
    if not config.model.get("node_feature_dim") or not config.model.get("num_classes"):
      raise InferenceError("config.model.node_feature_dim / num_classes are 0: this config was "
                           "not filled in by training (use the workdir's config.json)")
    try:
      self.model = asmp_model.create_model(config.model)
    except ValueError as e:
      raise InferenceError(f"invalid model config: {e}") from e
    if conditioners.needs_labels(self.model.spec.graph_mode):
      raise InferenceError(f"this checkpoint is the audio-only {self.model.spec.graph_mode} "
                           "baseline: it is conditioned on ground-truth class labels, not on "
                           "video, and cannot separate unlabelled videos")
    self.config = config
    self.variables = variables
    self.meta = dict(dataset_meta or {})
    self.batch_size, self.hop_s, self.chunk_windows = int(batch_size), float(hop_s), chunk_windows
    size = frame_size or self.meta.get("frame_size") or DEFAULT_FRAME_SIZE
    self.frame_size = (int(size[0]), int(size[1]))
    self.sample_rate = int(config.data.sample_rate)
    self.crop = int(config.data.crop_samples)
    self.window_frames = int(config.data.window_frames)
    self.preprocess_config = preprocess.PreprocessConfig.from_config(config)
    self.step: int | None = None
    self.class_names = self._class_names()
    self._fns: dict[Any, Callable] = {}

  @classmethod
  def from_checkpoint(cls, workdir: str | os.PathLike[str], step: int | None = None,
                      **kwargs) -> "Separator":
    """Reads ``<workdir>/config.json`` and restores the latest (or ``step``) checkpoint on the
    first local device (see :func:`restore_variables`); ``kwargs`` go to the constructor."""
    workdir = os.fspath(workdir)
    if not run_folder.workdir_path(workdir).exists():
      raise InferenceError(f"{workdir}: workdir not found")
    config = run_folder.load_saved_config(workdir)
    if config is None:
      raise InferenceError(f"{workdir}: no {run_folder.CONFIG_FILE} (not a training workdir)")
    try:
      asmp_model.spec_from_config(config.model)
    except ValueError as e:
      raise InferenceError(f"{workdir}/{run_folder.CONFIG_FILE}: {e}") from e
    variables, restored_step = restore_variables(workdir, config, step)
    sep = cls(config, variables, run_folder.load_dataset_meta(workdir, config), **kwargs)
    sep.step = restored_step
    logging.info("Restored step %d of %s on %s.", restored_step, workdir, jax.local_devices()[0])
    return sep

  # --------------------------------------------------------------- class names and ids

  def _class_names(self) -> list[str]:
    k = int(self.config.model.num_classes)
    names = list(self.meta.get("auditory_classes") or [])
    if len(names) != k - 1:
      if names:
        logging.warning("dataset metadata lists %d auditory classes but the model has %d; "
                        "using generic class names", len(names), k - 1)
      names = [f"class {i}" for i in range(k - 1)]
    return names + [BACKGROUND_NAME]

  def _auditory_ids(self) -> np.ndarray | None:
    """Detection label ids of the auditory classes, in classifier order (None if unknown)."""
    if "auditory_class_ids" in self.meta:
      return np.asarray(self.meta["auditory_class_ids"], np.int32)
    if self.meta.get("auditory_classes"):
      # Synthetic convention: labels index auditory_classes + context_classes.
      return np.arange(len(self.meta["auditory_classes"]), dtype=np.int32)
    return None

  def _all_class_names(self) -> list[str]:
    return list(self.meta.get("auditory_classes") or []) + list(
        self.meta.get("context_classes") or [])

  # --------------------------------------------------------------- graphs

  def check_feature_extractor(self, requested: str | None) -> str:
    """The checkpoint's feature extractor; refuses a different ``requested`` one."""
    used = self.config.graph.feature_extractor
    if requested is not None and requested != used:
      raise InferenceError(f"feature extractor {requested!r} requested but the checkpoint was "
                           f"trained with {used!r}; node features must come from the same "
                           "extractor")
    if used not in graph_features.EXTRACTORS:
      raise InferenceError(f"the checkpoint's feature extractor {used!r} is unknown; expected one "
                           f"of {graph_features.EXTRACTORS}")
    return used

  def build_graphs(self, video: VideoFrames, providers: Providers | None = None,
                   measure_motion: bool = False) -> tuple[SceneGraphs, dict[str, str], list[str]]:
    """Per-window scene graphs of ``video`` (module docstring, step 3).

    The clip's auditory sources are chosen once over the whole clip (as the training
    preprocessing does), then the windows are preprocessed in chunks of ``chunk_windows``.

    Returns:
      (graphs, what provided detections/depth/flow/features, the fallback warnings logged).
    """
    providers = providers or Providers()
    t = video.frames.shape[0]
    depth_src = _load_array(providers.depth, "depth")
    flow_src = _load_array(providers.flow, "flow")
    for arr, name, trailing in ((depth_src, "depth", ()), (flow_src, "flow", (2,))):
      if arr is not None and not graph_providers.is_frame_model(arr):
        _check_source_array(arr, name, int(video.source_index.max()) + 1, video.source_size,
                            trailing)

    def flow_of(k0: int, k1: int) -> np.ndarray:
      """float32 [k1 - k0, H, W, 2] flow of resampled frames k0..k1-1 (frame k1 as look-ahead)."""
      if graph_providers.is_frame_model(flow_src):
        return flow_src.flow(video.frames[k0:min(k1 + 1, t)])[:k1 - k0]
      if flow_src is not None:
        return _resample_flow(flow_src, video, np.arange(k0, k1))
      return graph_providers.opencv_flow(video.frames[k0:min(k1 + 1, t)])[:k1 - k0]

    dets, auditory_ids, names, used, warns = self._detections(video, providers, flow_of)
    if depth_src is None:
      used["depth"] = "flat (fallback)"
      warns.append("no depth file: using flat depth (edge weights then reflect 2D box distances "
                   "only, not depth)")
    elif graph_providers.is_frame_model(depth_src):
      used["depth"] = depth_src.record()
    else:
      used["depth"] = "given" if isinstance(providers.depth, np.ndarray) else "file"
    if graph_providers.is_frame_model(flow_src) and (measure_motion or
                                                     providers.detections is None):
      used["flow"] = flow_src.record()
    elif flow_src is not None and not graph_providers.is_frame_model(flow_src):
      used["flow"] = "given" if isinstance(providers.flow, np.ndarray) else "file"
    elif measure_motion or providers.detections is None:
      used["flow"] = "OpenCV DIS (fallback)"
      if measure_motion:
        warns.append("no flow file: measuring motion with OpenCV DIS flow (less accurate than "
                     "RAFT on fast or textureless motion)")
    else:
      used["flow"] = "not needed"
    used["features"] = self.preprocess_config.feature_extractor
    sources = preprocess.select_sources(dets, auditory_ids, preprocess.MAX_AUDITORY,
                                        self.preprocess_config.min_auditory_score)
    if not len(sources):
      warns.append("no auditory object found in the video (no detection with an auditory class "
                   "id): the graphs hold the background node only" if providers.detections
                   is not None else "no moving object found in the video: the graphs hold the "
                   "background node only")
    for msg in warns:
      logging.warning("%s", msg)

    l = self.window_frames
    num_windows = -(-t // l)
    parts = []
    for w0 in range(0, num_windows, self.chunk_windows):
      w1 = min(num_windows, w0 + self.chunk_windows)
      k0, k1 = w0 * l, min(t, w1 * l)
      if graph_providers.is_frame_model(depth_src):
        depth = depth_src.depth(video.frames[k0:k1])
      else:
        depth = (_resample_depth(depth_src, video, np.arange(k0, k1)) if depth_src is not None
                 else graph_providers.flat_depth(video.frames[k0:k1]))
      flow = flow_of(k0, k1) if measure_motion else None
      parts.append(self._graph_chunk(video.frames[k0:k1], dets, k0, sources, auditory_ids, depth,
                                     flow))
      logging.info("scene graphs: windows %d-%d of %d", w0 + 1, w1, num_windows)
    cat = lambda k, axis=0: np.concatenate([p[k] for p in parts], axis=axis)
    graphs = SceneGraphs(
        node_features=cat("node_features"), node_mask=cat("node_mask"),
        node_type=cat("node_type"), adjacency=cat("adjacency"), window_valid=cat("window_valid"),
        node_boxes=cat("node_boxes"), reference_frames=cat("reference_frames"),
        source_ids=np.asarray(sources, np.int64),
        source_names=[names.get(int(c), f"class id {int(c)}") for c in sources],
        measured_direction=cat("measured", axis=1),
        from_proposals=providers.detections is None or "auditory_candidates" in used)
    return graphs, used, warns

  def _detections(self, video: VideoFrames, providers: Providers,
                  flow_of: Callable[[int, int], np.ndarray]):
    """The clip's detections on the resampled frames, the auditory class ids among their labels,
    class names by id, what provided them and the warning for a fallback."""
    if providers.detections is None:
      step = self.chunk_windows * self.window_frames
      t = video.frames.shape[0]
      chunks = [graph_proposals.motion_proposals(flow_of(k0, min(t, k0 + step)), frame_offset=k0)
                for k0 in range(0, t, step)]
      dets = graph_proposals.link_tracks(_concat_dets(chunks))
      # Tracks are numbered by total score: the first ones are the auditory candidates.
      auditory_ids = np.unique(dets.label)[:preprocess.MAX_AUDITORY].astype(np.int32)
      names = {int(i): graph_proposals.UNKNOWN_CLASS_NAME for i in auditory_ids}
      return dets, auditory_ids, names, {"detections": "motion proposals (fallback)"}, [
          "no detections file: using motion-based box proposals (objects are found only where "
          "they move against the camera; their class is unknown; expect a weaker separation "
          "than with a detector)"]
    if graph_providers.is_frame_model(providers.detections):
      from asmp_jax.vision import separation  # pylint: disable=g-import-not-at-top
      return separation.learned_detections(
          providers.detections, video.frames, self._all_class_names(),
          self._auditory_ids() if self._auditory_ids() is not None else np.zeros(0, np.int32))
    if isinstance(providers.detections, graph_providers.Detections):
      raw, used = providers.detections, "given"
    else:
      raw = graph_providers.load_detections(os.fspath(providers.detections))
      used = f"file {os.fspath(providers.detections)}"
    auditory_ids = self._auditory_ids()
    if auditory_ids is None:
      raise InferenceError("the workdir has no dataset_meta.json (and the data set is not on "
                           "this machine), so detection labels cannot be mapped to auditory "
                           "classes; retrain or copy dataset_meta.json into the workdir")
    dets = map_detections(raw, video)
    all_names = self._all_class_names()
    names = {int(i): (all_names[i] if 0 <= i < len(all_names) else f"class id {i}")
             for i in np.unique(dets.label)}
    return dets, auditory_ids, names, {"detections": used}, []

  def _graph_chunk(self, frames: np.ndarray, dets: graph_providers.Detections, first: int,
                   sources: np.ndarray, auditory_ids: np.ndarray, depth: np.ndarray,
                   flow: np.ndarray | None) -> dict[str, np.ndarray]:
    """Preprocessed windows of the frames ``frames`` (clip frames ``first...``), node slots in
    clip source order, plus ``node_boxes``, ``reference_frames`` and ``measured`` [A, W]."""
    cfg = self.preprocess_config
    l, (h, w) = self.window_frames, frames.shape[1:3]
    nw = -(-len(frames) // l)
    dc = dets.select(np.flatnonzero((dets.frame >= first) & (dets.frame < first + len(frames))))
    dc.frame = dc.frame - first
    chunk_sources = preprocess.select_sources(dc, auditory_ids, preprocess.MAX_AUDITORY,
                                              cfg.min_auditory_score)
    if not set(chunk_sources.tolist()) <= set(sources.tolist()):
      # Another auditory class outranks a clip source in this chunk: drop its detections so that
      # the chunk keeps the clip's sources (this can only move the background crop).
      other = np.isin(dc.label, auditory_ids) & ~np.isin(dc.label, sources)
      dc = dc.select(np.flatnonzero(~other))
      chunk_sources = preprocess.select_sources(dc, auditory_ids, preprocess.MAX_AUDITORY,
                                                cfg.min_auditory_score)
    measure = flow is not None
    chunk_cfg = dataclasses.replace(cfg, num_windows=nw, rectify=cfg.rectify and measure)
    if flow is None:  # motion labels unused: zero flow, no rectification (cheap)
      flow = np.zeros(frames.shape[:3] + (2,), np.float32)
    ex = preprocess.preprocess_clip(frames, np.zeros(1, np.float32), dc, depth, flow,
                                    auditory_ids, chunk_cfg)
    ex["node_boxes"] = np.stack([
        _window_node_boxes(dc, chunk_sources, auditory_ids, wi * l,
                           min(wi * l + l, len(frames)) - 1, h, w, cfg) for wi in range(nw)])
    ex["reference_frames"] = frames[::l]
    order = _clip_slot_order(sources, chunk_sources)
    _permute_auditory(ex, order)
    key = schema.direction_key(self.config.model.num_direction_classes)
    ex["measured"] = (ex[key][:, order].T if measure
                      else np.full((preprocess.MAX_AUDITORY, nw), -1, np.int32))
    return ex

  # --------------------------------------------------------------- separation

  def _separation_fn(self, mask_override: MaskOverride | None):
    key = id(mask_override) if mask_override is not None else None
    if key not in self._fns:
      self._fns[key] = jax.jit(crop_separation_fn(
          self.model, bool(self.config.data.get("normalise_mix")),
          int(self.config.data.num_videos), mask_override))
    return self._fns[key]

  @staticmethod
  def _window_graphs(graphs: SceneGraphs, num_windows: int) -> dict[str, np.ndarray]:
    """Every window's graph as model inputs (input_pipeline.window_graph), stacked
    ``[num_windows, ...]``: built once per clip, indexed per crop and per direction slice."""
    ex = {"adjacency": graphs.adjacency, "node_mask": graphs.node_mask,
          "node_features": graphs.node_features, "node_type": graphs.node_type}
    per = [input_pipeline.window_graph(ex, w) for w in range(num_windows)]
    return {k: np.stack([g[k] for g in per]) for k in per[0]}

  def separate_waveform(self, wav: np.ndarray, graphs: SceneGraphs, num_sources: int,
                        mask_override: MaskOverride | None = None) -> dict[str, np.ndarray]:
    """Sliding-window separation of a mono waveform at the model's rate (module docstring, 4-5).

    Args:
      wav: float32 [L] at ``config.data.sample_rate``.
      graphs: the clip's scene graphs.
      num_sources: auditory slots to use (0..S-1); the background slot is always used.

    Returns:
      ``slots`` float32 [S, L], ``class_probs`` [S, K], ``dir_probs`` [S, W, D] (NaN where no
      crop covers a window).
    """
    sp = self.model.spec
    s = sp.num_slots
    length = wav.shape[0]
    win = self.sample_rate  # samples per 1 s window
    hop = max(1, int(round(self.hop_s * win)))
    starts = evaluate.crop_starts(length, self.crop, hop)
    n_win_graph = int(np.max(np.flatnonzero(graphs.window_valid), initial=0)) + 1
    n_win_audio = -(-length // win)
    nw = max(n_win_graph, n_win_audio)
    source_mask = np.zeros(s, bool)
    source_mask[:num_sources] = True
    source_mask[-1] = True
    fn = self._separation_fn(mask_override)
    window_graphs = self._window_graphs(graphs, n_win_graph)
    senders, receivers = preprocess.dense_edges(preprocess.MAX_NODES)
    total = np.zeros((s, length), np.float32)
    count = np.zeros((length,), np.float32)
    cons_sum = np.zeros((s, sp.num_classes), np.float64)
    dir_sum = np.zeros((nw, s, sp.num_direction_classes), np.float64)
    dir_count = np.zeros((nw,), np.float64)
    # Time slices of the direction classifier: centre sample of slice j within a crop.
    slice_centre = (np.arange(sp.num_dir_windows) * sp.dir_window_stride
                    + sp.dir_window_cols / 2) * audio_lib.HOP
    bs = self.batch_size
    t0, n_batches = time.time(), -(-len(starts) // bs)
    for bi in range(n_batches):
      chunk = starts[bi * bs:(bi + 1) * bs]
      real = len(chunk)
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - real)])  # static batch size
      crops = np.stack([np.pad(wav[st:st + self.crop], (0, max(0, st + self.crop - length)))
                        for st in chunk]).astype(np.float32)
      # Each crop is conditioned on the graph of the window it starts in; with dir_window_graphs
      # each direction slice also reads the graph of the window holding the slice's centre.
      windows = np.minimum(chunk // win, n_win_graph - 1)
      # Graph inputs are [batch, video, ...] with one video per crop.
      batch = {k: v[windows, None] for k, v in window_graphs.items()}
      if sp.dir_window_graphs:
        slice_win = np.minimum((chunk[:, None] + slice_centre[None]) // win,
                               n_win_graph - 1).astype(np.int64)
        batch.update({"window_" + k: v[slice_win][:, None] for k, v in window_graphs.items()})
      batch.update({k: np.broadcast_to(v, (bs, 1) + v.shape) for k, v in
                    (("senders", senders), ("receivers", receivers), ("source_mask", source_mask))})
      batch["audio"] = crops
      out = jax.device_get(fn(self.variables, batch))
      for j in range(real):
        st = int(chunk[j])
        n = min(self.crop, length - st)
        total[:, st:st + n] += out["slots"][j, :, :n]
        count[st:st + n] += 1
      cons_sum += _softmax(out["cons_logits"][:real]).sum(0)
      probs = _softmax(out["dir_logits"][:real])  # [real, S, Wd, D]
      widx = ((chunk[:real, None] + slice_centre[None]) // win).astype(np.int64)  # [real, Wd]
      ok = (widx < nw) & ((chunk[:real, None] + slice_centre[None]) < length)
      np.add.at(dir_sum, widx[ok], probs.transpose(0, 2, 1, 3)[ok])
      np.add.at(dir_count, widx[ok], 1.0)
      if (bi + 1) % max(1, n_batches // 10) == 0:
        el = time.time() - t0
        logging.info("separation: batch %d/%d (%.0f s elapsed, ~%.0f s left)", bi + 1, n_batches,
                     el, el / (bi + 1) * (n_batches - bi - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
      dir_probs = (dir_sum / dir_count[:, None, None]).transpose(1, 0, 2).astype(np.float32)
    return {"slots": total / np.maximum(count, 1), "class_probs": (cons_sum / len(starts)),
            "dir_probs": dir_probs, "num_crops": len(starts)}

  def separate(self, video: str | os.PathLike[str], audio: AudioInput = None,
               num_sources: int | None = None, providers: Providers | None = None, *,
               feature_extractor: str | None = None, measure_motion: bool = False,
               mask_override: MaskOverride | None = None) -> SeparationResult:
    """Separates the sounds of a video file (module docstring).

    Args:
      video: the video file.
      audio: a separate audio file for the mixture, or ``(wav, sample_rate)`` in memory
        (default: the video's own audio stream).
      num_sources: auditory sources to separate, 0..S-1 (default: the number of auditory objects
        found, at least 1).
      providers: detections/depth/flow files (:class:`Providers`); None -> fallbacks.
      feature_extractor: must equal the checkpoint's extractor if given.
      measure_motion: also measure each source's motion from the flow (the training labels'
        pipeline; slower), reported as ``graphs.measured_direction``.
      mask_override: replaces the masks (:func:`crop_separation_fn`); tests and diagnostics.

    Raises:
      media.MediaError: unreadable/missing media, no video stream, no audio.
      graph_providers.ProviderError: a provider file missing or malformed.
      InferenceError: bad arguments, extractor mismatch.
    """
    self.check_feature_extractor(feature_extractor)
    check_video(video)
    s = self.model.spec.num_slots
    if num_sources is not None and not 0 <= int(num_sources) <= s - 1:
      raise InferenceError(f"num_sources must be in 0..{s - 1}, got {num_sources}")
    mixture, sr, audio_path = load_mixture(video, audio)
    frames = read_frames(video, self.window_frames, self.frame_size)
    logging.info("%s: %d frames at %g fps -> %d at %d fps, %dx%d; audio (%s): %d samples at %d Hz",
                 os.fspath(video), int(frames.source_index.max()) + 1, frames.source_fps,
                 len(frames.frames), self.window_frames, self.frame_size[1], self.frame_size[0],
                 audio_path, mixture.shape[0], sr)
    graphs, used, warns = self.build_graphs(frames, providers, measure_motion)
    if num_sources is None:
      num_sources = max(1, len(graphs.source_ids))
    num_sources = int(num_sources)
    wav = media.resample(mixture, sr, self.sample_rate)
    out = self.separate_waveform(wav, graphs, num_sources, mask_override)
    slots = np.concatenate([np.arange(num_sources), [s - 1]])
    back = media.resample(np.ascontiguousarray(out["slots"][slots].T), self.sample_rate, sr).T
    sources = _fit_length(back, mixture.shape[0])
    class_probs = out["class_probs"][slots].astype(np.float32)
    detected = self._match(class_probs[:num_sources], graphs)
    return SeparationResult(
        sample_rate=sr, mixture=mixture, sources=sources.astype(np.float32),
        source_names=[f"source {k}" for k in range(num_sources)] + [BACKGROUND_NAME],
        slots=slots, class_names=self.class_names, class_probabilities=class_probs,
        direction_names=graph_motion.direction_names(self.config.model.num_direction_classes),
        direction_probabilities=out["dir_probs"][:num_sources], detected_source=detected,
        graphs=graphs, window_seconds=1.0, providers_used=used, warnings=warns)

  def _match(self, class_probs: np.ndarray, graphs: SceneGraphs) -> np.ndarray:
    """Detected source matched to each auditory slot (by class when classes are known, else in
    order)."""
    a = class_probs.shape[0]
    n = len(graphs.source_ids)
    if graphs.from_proposals:
      out = np.full(a, -1, np.int64)
      out[:min(a, n)] = np.arange(min(a, n))
      return out
    ids = self._auditory_ids()
    lookup = {int(c): i for i, c in enumerate(ids)} if ids is not None else {}
    source_classes = np.array([lookup.get(int(c), -1) for c in graphs.source_ids], np.int64)
    return _match_slots_to_sources(class_probs, source_classes)


# ----------------------------------------------------------------------------- helpers


def _concat_dets(parts: Sequence[graph_providers.Detections]) -> graph_providers.Detections:
  return graph_providers.Detections(
      np.concatenate([p.frame for p in parts]), np.concatenate([p.box for p in parts]),
      np.concatenate([p.label for p in parts]), np.concatenate([p.score for p in parts]))


def _softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
  """Pads with zeros or trims the last axis to ``length``."""
  if x.shape[-1] >= length:
    return x[..., :length]
  return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])
