"""Inference: restore a trained ASMP anywhere and separate the sounds of a real video file.

  sep = Separator.from_checkpoint("runs/synthetic")          # CPU, GPU or TPU; any training mesh
  result = sep.separate("clip.mp4")                           # or audio="mix.flac", providers=...
  result.sources        # float32 [M, L]: each source slot, then the background, at the input rate
  result.directions()   # per source and 1 s window: predicted motion class, name and probability

What happens to a video (the details are in docs/inference.md):

1. **Audio** comes from ``audio`` (wav, flac, ogg, mp3, ...) or the video's own stream, at any
   sample rate, downmixed to mono, resampled to the model's 11025 Hz (soxr) and back at the end, so
   every output has the input's sample rate and length.
2. **Frames** are decoded with PyAV in chunks and resampled to the model's frame rate (8 fps:
   ``config.data.window_frames`` frames per 1 s window, the frame nearest each 1/8 s tick) and to
   the training frame size (``frame_size``; area interpolation, aspect ratio not kept)
   (asmp_jax.frame_reader); they are never all held.
3. **Scene graphs**, one per 1 s window, by the training preprocessing on chunks of windows
   (asmp_jax.scene_pipeline), from the providers: a detections file (labels = data-set class
   ids), depth and flow files when given, or learned models (asmp_jax.vision); otherwise the
   weight-free fallbacks, with a logged WARNING: motion-based box proposals
   (asmp_jax.graph.proposals; class "unknown"), flat depth, OpenCV DIS flow. Node features use the
   extractor recorded in the checkpoint's config (a mismatch is refused).
4. **Separation**: the audio is cut into 65535-sample crops every ``hop_s`` seconds (the last crop
   flush with the end; a clip shorter than one crop is zero-padded), each crop conditioned on the
   graph of the window it starts in. Crops go through ``model.apply`` in fixed-size batches (one
   compilation) and are overlap-averaged into running sums (asmp_jax.sliding_window). The mixture
   is read and resampled block by block and the final samples are handed out as they are ready
   (to a :class:`Sink`, e.g. wav files being written), so memory does not grow with the length.
   Slot ``k < N`` is an auditory source, the last slot the background.
5. **Predictions**: the consistency classifier's class probabilities (averaged over crops) and the
   direction classifier's per-window probabilities (each time slice is assigned to the 1 s window
   holding its centre; probabilities averaged over every crop that covers the window). With
   ``config.model.dir_window_graphs`` each time slice is conditioned on the graph of the window
   holding its centre, the separation still on the crop's first window's.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asmp_jax import audio as audio_lib
from asmp_jax import frame_reader
from asmp_jax import input_pipeline
from asmp_jax import mixture_stream
from asmp_jax import preprocess
from asmp_jax import restore
from asmp_jax import run_folder
from asmp_jax import scene_pipeline
from asmp_jax import sliding_window
from asmp_jax.graph import features as graph_features
from asmp_jax.graph import motion as graph_motion
from asmp_jax import slot_matching
from asmp_jax.models import asmp as asmp_model
from asmp_jax.models import conditioners
from asmp_jax import separation_result

DEFAULT_FRAME_SIZE = (128, 128)  # (height, width) of the synthetic sets' frames
BACKGROUND_NAME = "background"
SINK_EXCERPT_S = 60  # seconds of output a streamed separation keeps in its result

MaskOverride = Callable[[jax.Array, jax.Array], jax.Array]
AudioInput = mixture_stream.AudioInput
Providers = scene_pipeline.Providers
SceneGraphs = scene_pipeline.SceneGraphs
VideoFrames = frame_reader.VideoFrames
read_frames = frame_reader.read_frames
check_video = frame_reader.check_video
load_mixture = mixture_stream.load_mixture
SeparationResult = separation_result.SeparationResult
Sink = separation_result.Sink
WavFiles = separation_result.WavFiles
open_mixture = mixture_stream.open_mixture
InferenceError = restore.InferenceError
restore_variables = restore.restore_variables
load_dataset_meta = run_folder.load_dataset_meta


# ----------------------------------------------------------------------------- model side


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
    inputs = {k: batch[k] for k in (*asmp_model.BATCH_DTYPES, *asmp_model.WINDOW_BATCH_DTYPES)
              if k != "mix_log_mag" and k in batch}
    out = model.apply(variables, {**inputs, "mix_log_mag": mix_log_mag}, train=False)
    masks, cons, dirs = out["masks"][:, 0], out["cons_logits"][:, 0], out["dir_logits"][:, 0]
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
  logp = np.log(np.maximum(class_probs, 1e-12))
  best, best_cost = None, np.inf
  for perm in itertools.permutations(range(a), min(len(known), a)):
    cost = -sum(logp[slot, source_classes[src]] for slot, src in zip(perm, known))
    if cost < best_cost:
      best, best_cost = perm, cost
  for slot, src in zip(best, known):
    out[slot] = src
  return out


# ----------------------------------------------------------------------------- separator


class Separator:
  """A restored ASMP that separates video files (module docstring).

  Args:
    config: the run's config (``config.json``), with ``model.node_feature_dim`` and
      ``model.num_classes`` filled in.
    variables: ``{"params", "batch_stats"}`` on any device(s).
    dataset_meta: the data set's metadata (class names, ...), see :func:`load_dataset_meta`.
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
    config, variables, restored_step = restore.restore_run(workdir, step)
    sep = cls(config, variables, load_dataset_meta(os.fspath(workdir), config), **kwargs)
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

  def scene_settings(self) -> scene_pipeline.Settings:
    """What the scene-graph pipeline needs from this checkpoint and its data set."""
    return scene_pipeline.Settings(
        preprocess=self.preprocess_config, auditory_ids=self._auditory_ids(),
        class_names=tuple(self._all_class_names()),
        num_direction_classes=int(self.config.model.num_direction_classes),
        chunk_windows=int(self.chunk_windows))

  def build_graphs(self, video, providers: Providers | None = None, measure_motion: bool = False
                   ) -> tuple[SceneGraphs, dict[str, str], list[str]]:
    """Per-window scene graphs of ``video`` (:func:`asmp_jax.scene_pipeline.build_scene_graphs`)."""
    return scene_pipeline.build_scene_graphs(video, providers, self.scene_settings(),
                                             measure_motion)

  # --------------------------------------------------------------- separation

  def _separation_fn(self, mask_override: MaskOverride | None):
    key = id(mask_override) if mask_override is not None else None
    if key not in self._fns:
      fn = jax.jit(crop_separation_fn(self.model, bool(self.config.data.get("normalise_mix")),
                                      int(self.config.data.num_videos), mask_override))
      self._fns[key] = functools.partial(fn, self.variables)
    return self._fns[key]

  def _crop_batch(self, graphs: SceneGraphs, n_win_graph: int, source_mask: np.ndarray
                  ) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """``(starts, crops) -> batch``: each crop conditioned on the graph of the window it starts in
    (with dir_window_graphs each direction slice also on the graph of the window holding its
    centre); graph inputs are ``[batch, video, ...]`` with one video per crop."""
    sp, win, bs = self.model.spec, self.sample_rate, self.batch_size
    ex = {"adjacency": graphs.adjacency, "node_mask": graphs.node_mask,
          "node_features": graphs.node_features, "node_type": graphs.node_type}
    graph_of = functools.lru_cache(maxsize=64)(lambda w: input_pipeline.window_graph(ex, w))
    stack = lambda windows: {k: np.stack([graph_of(int(w))[k] for w in windows.reshape(-1)]
                                         ).reshape(windows.shape + graph_of(0)[k].shape)
                             for k in graph_of(0)}
    senders, receivers = preprocess.dense_edges(preprocess.MAX_NODES)
    fixed = {k: np.broadcast_to(v, (bs, 1) + v.shape) for k, v in
             (("senders", senders), ("receivers", receivers), ("source_mask", source_mask))}

    def make(starts: np.ndarray, crops: np.ndarray) -> dict[str, np.ndarray]:
      batch = {k: v[:, None] for k, v in stack(np.minimum(starts // win, n_win_graph - 1)).items()}
      if sp.dir_window_graphs:
        slice_win = np.minimum((starts[:, None] + self._slice_centres()[None]) // win,
                               n_win_graph - 1).astype(np.int64)
        batch.update({"window_" + k: v[:, None] for k, v in stack(slice_win).items()})
      batch.update(fixed)
      batch["audio"] = crops
      return batch

    return make

  def _slice_centres(self) -> np.ndarray:
    """Centre sample of each time slice of the direction classifier within a crop."""
    sp = self.model.spec
    return (np.arange(sp.num_dir_windows) * sp.dir_window_stride
            + sp.dir_window_cols / 2) * audio_lib.HOP

  def separate_stream(self, reader: sliding_window.CropReader, length: int, graphs: SceneGraphs,
                      num_sources: int, mask_override: MaskOverride | None = None,
                      stats: dict[str, Any] | None = None) -> Iterator[np.ndarray]:
    """Sliding-window separation of a mono signal at the model's rate (module docstring, 4-5),
    streamed: yields the separated slots ``[S, n]`` of consecutive samples as they become final.

    Args:
      reader: the signal's crops (its blocks are read as the crops need them).
      length: the signal's length in samples.
      graphs: the clip's scene graphs.
      num_sources: auditory slots to use (0..S-1); the background slot is always used.
      mask_override: replaces the masks (:func:`crop_separation_fn`).
      stats: filled at the end with ``class_probs [S, K]``, ``dir_probs [S, W, D]`` (NaN where
        no crop covers a window) and ``num_crops``.
    """
    sp = self.model.spec
    s, win = sp.num_slots, self.sample_rate
    starts = sliding_window.crop_starts(length, self.crop, max(1, int(round(self.hop_s * win))))
    n_win_graph = int(np.max(np.flatnonzero(graphs.window_valid), initial=0)) + 1
    source_mask = np.zeros(s, bool)
    source_mask[:num_sources] = True
    source_mask[-1] = True
    make = self._crop_batch(graphs, n_win_graph, source_mask)
    slots = sliding_window.OverlapAverage((s,), length, np.float32)
    cons_sum = np.zeros((s, sp.num_classes), np.float64)
    dirs = sliding_window.WindowProbabilities(max(n_win_graph, -(-length // win)), win, length,
                                              self._slice_centres(),
                                              (s, sp.num_direction_classes))
    nexts = iter(list(starts[self.batch_size::self.batch_size]) + [length])
    for chunk, _, out in sliding_window.slide(self._separation_fn(mask_override), starts,
                                              self.batch_size,
                                              lambda st: make(st, reader.crops(st)),
                                              progress="separation"):
      for crop, st in zip(out["slots"], chunk):
        slots.add(crop, st)
      cons_sum += sliding_window.softmax(out["cons_logits"]).sum(0)
      dirs.add(chunk, sliding_window.softmax(out["dir_logits"]))
      upto = next(nexts)
      reader.release(upto)
      yield slots.pop(upto)
    if stats is not None:
      stats.update(class_probs=cons_sum / len(starts), dir_probs=dirs.result(),
                   num_crops=len(starts))

  def separate_waveform(self, wav: np.ndarray, graphs: SceneGraphs, num_sources: int,
                        mask_override: MaskOverride | None = None) -> dict[str, np.ndarray]:
    """:meth:`separate_stream` of a whole waveform ``float32 [L]`` at the model's rate.

    Returns:
      ``slots`` float32 [S, L], ``class_probs`` [S, K], ``dir_probs`` [S, W, D], ``num_crops``.
    """
    stats: dict[str, Any] = {}
    reader = sliding_window.CropReader(iter([wav]), self.crop)
    blocks = list(self.separate_stream(reader, wav.shape[0], graphs, num_sources, mask_override,
                                       stats))
    return {"slots": np.concatenate(blocks, -1), **stats}

  def separate(self, video: str | os.PathLike[str], audio: AudioInput = None,
               num_sources: int | None = None, providers: Providers | None = None, *,
               feature_extractor: str | None = None, measure_motion: bool = False,
               mask_override: MaskOverride | None = None, sink: Sink | None = None
               ) -> SeparationResult:
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
      sink: receives the mixture and the sources block by block (:class:`Sink`); the result
        then holds only their first ``SINK_EXCERPT_S`` seconds, so memory does not grow with
        the video's length.

    Raises:
      media.MediaError: unreadable/missing media, no video stream, no audio.
      graph_providers.ProviderError: a provider file missing or malformed.
      InferenceError: bad arguments, extractor mismatch.
    """
    self.check_feature_extractor(feature_extractor)
    frame_reader.check_video(video)
    s = self.model.spec.num_slots
    if num_sources is not None and not 0 <= int(num_sources) <= s - 1:
      raise InferenceError(f"num_sources must be in 0..{s - 1}, got {num_sources}")
    mix = mixture_stream.open_mixture(video, audio)
    frames = frame_reader.VideoFile(video, self.window_frames, self.frame_size)
    graphs, used, warns = self.build_graphs(frames, providers, measure_motion)
    logging.info("%s: %d frames at %g fps -> %d at %d fps, %dx%d; audio (%s): %d samples at %d Hz",
                 os.fspath(video), int(frames.source_index.max()) + 1, frames.source_fps,
                 frames.num_frames, self.window_frames, self.frame_size[1], self.frame_size[0],
                 mix.where, mix.num_samples, mix.sample_rate)
    num_sources = int(max(1, len(graphs.source_ids)) if num_sources is None else num_sources)
    slots = np.concatenate([np.arange(num_sources), [s - 1]])
    names = [f"source {k}" for k in range(num_sources)] + [BACKGROUND_NAME]
    collect = separation_result.Collect(mix.num_samples if sink is None else SINK_EXCERPT_S * mix.sample_rate)
    if sink is not None:
      sink.open(names, mix.sample_rate)
    stats = self._separate_mixture(mix, graphs, num_sources, slots, mask_override,
                                   [collect] + ([sink] if sink is not None else []))
    class_probs = stats["class_probs"][slots].astype(np.float32)
    return SeparationResult(
        sample_rate=mix.sample_rate, mixture=collect.mixture(), sources=collect.sources(),
        source_names=names, slots=slots, class_names=self.class_names,
        class_probabilities=class_probs,
        direction_names=graph_motion.direction_names(self.config.model.num_direction_classes),
        direction_probabilities=stats["dir_probs"][:num_sources],
        detected_source=self._match(class_probs[:num_sources], graphs), graphs=graphs,
        window_seconds=1.0, providers_used=used, warnings=warns, num_samples=mix.num_samples)

  def _separate_mixture(self, mix: mixture_stream.Mixture, graphs: SceneGraphs, num_sources: int,
                        slots: np.ndarray, mask_override: MaskOverride | None,
                        sinks: Sequence[Any]) -> dict[str, Any]:
    """Streams the mixture through :meth:`separate_stream` at the model's rate and the chosen
    ``slots`` back at the input's rate into ``sinks`` (``write(mixture [n], sources [M, n])``)."""
    sr, rate = mix.sample_rate, self.sample_rate
    pending: collections.deque[np.ndarray] = collections.deque()  # input not yet handed out

    def tee(blocks):
      for block in blocks:
        pending.append(block)
        yield block

    reader = sliding_window.CropReader(
        mixture_stream.resampled_blocks(tee(mix.blocks()), sr, rate), self.crop)
    stats: dict[str, Any] = {}
    model_rate = self.separate_stream(reader, mixture_stream.resampled_length(
        mix.num_samples, sr, rate), graphs, num_sources, mask_override, stats)
    back = mixture_stream.resampled_blocks((b[slots].T for b in model_rate), rate, sr,
                                           channels=len(slots))
    for block in mixture_stream.fit_length(back, mix.num_samples):
      mixture = separation_result.take(pending, block.shape[0])
      for sink in sinks:
        sink.write(mixture, np.ascontiguousarray(block.T, np.float32))
    return stats

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
