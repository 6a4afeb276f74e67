"""Video -> per-window scene graphs: providers -> detections, depth, flow -> rectification ->
graphs -> motion labels (the training preprocessing, asmp_jax.preprocess), for the data builders
(one clip in memory -> one training example) and for inference (a video of any length).

  ex = scene_pipeline.clip_example(frames, audio, provider, auditory_ids, cfg)  # data builders
  video = scene_pipeline.VideoFile("clip.mp4", fps=8, size=(128, 128))          # inference
  graphs, used, warnings = scene_pipeline.build_scene_graphs(video, Providers(...), settings)

For a video file:
Frames are decoded twice and never all held: a first pass records which decoded frame each
resampled frame comes from (and, without a detections file, proposes moving objects from the
optical flow, :mod:`asmp_jax.graph.proposals`); the clip's auditory sources are then chosen over
the whole clip, as the training preprocessing does; a second pass preprocesses the windows in
chunks of ``chunk_windows``. Detections, depth and flow describe the video's *decoded* frames
(its own rate and pixel size), or the frames a sampling kept (files of asmp_jax.preprocess_videos);
asmp_jax.provider_files maps them to the resampled frames.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator

import numpy as np

from asmp_jax import frame_reader
from asmp_jax import preprocess
from asmp_jax import provider_files
from asmp_jax import schema
from asmp_jax.graph import build as graph_build
from asmp_jax.graph import proposals as graph_proposals
from asmp_jax.graph import providers as graph_providers

VideoFile = frame_reader.VideoFile
VideoFrames = frame_reader.VideoFrames


@dataclasses.dataclass
class Providers:
  """Where detections, depth and flow come from; ``None`` selects the documented fallback.

  Everything describes the video's *decoded* frames (its own frame rate and pixel size, frame 0 =
  the first decoded frame); the pipeline maps them to the resampled frames.

  Attributes:
    detections: a detections file (.h5/.npz, formats in asmp_jax.graph.providers) or
      :class:`~asmp_jax.graph.providers.Detections`; labels are class ids of the data set
      (``dataset_meta.json``), or, in a file that holds ``detector_classes`` (those of
      ``python -m asmp_jax.preprocess_videos``), the detector's, mapped as a learned detector's
      are. None: motion-based proposals.
    depth: a depth file (.npy, or .npz with key ``depth``) or float [T0, H0, W0]. None: flat depth.
    flow: a flow file (.npy, or .npz with key ``flow``) or float [T0, H0, W0, 2], forward flow
      t -> t+1 in pixels. None: OpenCV DIS flow on the resampled frames.

  Each may instead be a learned provider of asmp_jax.vision (detector, depth or flow model),
  run on the resampled frames, chunk by chunk.
  """
  detections: str | os.PathLike[str] | graph_providers.Detections | None = None
  depth: str | os.PathLike[str] | np.ndarray | None = None
  flow: str | os.PathLike[str] | np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the pipeline needs to know about the model and the data set.

  Attributes:
    preprocess: the training preprocessing's settings.
    auditory_ids: detection label ids of the auditory classes in classifier order (None: the
      data set's metadata is unknown, so only proposals can be used).
    class_names: names of the data set's classes by label id.
    num_direction_classes: 10 or 28 (which motion label is measured).
    chunk_windows: windows preprocessed at a time (bounds the frame, depth and flow memory).
  """
  preprocess: preprocess.PreprocessConfig
  auditory_ids: np.ndarray | None
  class_names: tuple[str, ...] = ()
  num_direction_classes: int = 10
  chunk_windows: int = 16


@dataclasses.dataclass
class SceneGraphs:
  """The per-window scene graphs a separation is conditioned on (W windows of 1 s).

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
    from_proposals: the sources are of no class the model knows (motion proposals, or a learned
      detector's best-scoring classes standing in).
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


def clip_example(frames: np.ndarray, audio: np.ndarray, provider: graph_providers.Provider,
                 auditory_ids: np.ndarray, cfg: preprocess.PreprocessConfig, **kwargs
                 ) -> dict[str, np.ndarray]:
  """One clip of a data set -> its training example: the provider's detections, depth and flow
  of ``frames`` (uint8 [T, H, W, 3]), then :func:`asmp_jax.preprocess.preprocess_clip` (``kwargs``
  go to it)."""
  return preprocess.preprocess_clip(frames, audio, provider.detections(), provider.depth(frames),
                                    provider.flow(frames), np.asarray(auditory_ids), cfg,
                                    **kwargs)


# ----------------------------------------------------------------------------- detections


def _chunk_flow(frames: np.ndarray, lookahead: np.ndarray | None, k0: int, flow_src, video
                ) -> np.ndarray:
  """float32 [len(frames), H, W, 2] flow of resampled frames k0.. (the next frame as look-ahead)."""
  ext = frames if lookahead is None else np.concatenate([frames, lookahead[None]])
  if graph_providers.is_frame_model(flow_src):
    return flow_src.flow(ext)[:len(frames)]
  if flow_src is not None:
    return provider_files.resample_flow(flow_src, video, np.arange(k0, k0 + len(frames)))
  return graph_providers.opencv_flow(ext)[:len(frames)]


def _concat_dets(parts: list[graph_providers.Detections]) -> graph_providers.Detections:
  features = [p.feature for p in parts]
  return graph_providers.Detections(
      np.concatenate([p.frame for p in parts]), np.concatenate([p.box for p in parts]),
      np.concatenate([p.label for p in parts]), np.concatenate([p.score for p in parts]),
      np.concatenate(features) if parts and all(f is not None for f in features) else None)


class _VideoDetector:
  """A learned detector run over a whole video chunk by chunk (``detect`` ignores its frames
  argument; frame indices are the video's); everything else is the detector's."""

  def __init__(self, detector, video, step: int):
    self._detector, self._video, self._step = detector, video, step

  def __getattr__(self, name):
    return getattr(self._detector, name)

  def detect(self, frames, label: str = "") -> graph_providers.Detections:
    del frames
    parts = []
    for k0, chunk, _ in self._video.chunks(self._step):
      d = self._detector.detect(chunk, label)
      d.frame = d.frame + np.int32(k0)
      parts.append(d)
    return _concat_dets(parts)


def _proposals(video, step: int, flow_src):
  """First pass without a detections file: motion proposals, chunk by chunk, linked into tracks."""
  chunks = [graph_proposals.motion_proposals(_chunk_flow(frames, nxt, k0, flow_src, video),
                                             frame_offset=k0)
            for k0, frames, nxt in video.chunks(step)]
  return graph_proposals.link_tracks(_concat_dets(chunks))


def clip_detections(video, providers: Providers, settings: Settings, flow_src):
  """The clip's detections on the resampled frames, the auditory class ids among their labels,
  class names by id, what provided them and the warning for a fallback.

  Reads the video once (which also records its frame mapping)."""
  step = settings.chunk_windows * settings.preprocess.window_frames
  if providers.detections is None:
    dets = _proposals(video, step, flow_src)
    # Tracks are numbered by total score: the first ones are the auditory candidates.
    auditory_ids = np.unique(dets.label)[:preprocess.MAX_AUDITORY].astype(np.int32)
    names = {int(i): graph_proposals.UNKNOWN_CLASS_NAME for i in auditory_ids}
    return dets, auditory_ids, names, {"detections": "motion proposals (fallback)"}, [
        "no detections file: using motion-based box proposals (objects are found only where "
        "they move against the camera; their class is unknown; expect a weaker separation "
        "than with a detector)"]
  if graph_providers.is_frame_model(providers.detections):
    from asmp_jax.vision import separation  # pylint: disable=g-import-not-at-top
    ids = settings.auditory_ids
    return separation.learned_detections(
        _VideoDetector(providers.detections, video, step), None, list(settings.class_names),
        np.asarray(ids if ids is not None else np.zeros(0), np.int32))
  extras: dict[str, np.ndarray] = {}
  if isinstance(providers.detections, graph_providers.Detections):
    raw, used = providers.detections, "given"
  else:
    path = os.fspath(providers.detections)
    raw, used = graph_providers.load_detections(path), f"file {path}"
    extras = provider_files.read_extras(path)
  video.scan()
  if provider_files.SOURCE_FRAME_KEY in extras:  # written by asmp_jax.preprocess_videos
    provider_files.check(extras[provider_files.SOURCE_FRAME_KEY], video, path, "detections")
  dets = provider_files.map_detections(raw, video, extras.get(provider_files.SOURCE_FRAME_KEY))
  if "detector_classes" in extras:  # labels are the detector's classes: map them as a learned
    from asmp_jax.vision import separation  # pylint: disable=g-import-not-at-top  # detector's
    ids = settings.auditory_ids
    return separation.mapped_detections(
        dets, [str(n) for n in extras["detector_classes"]], list(settings.class_names),
        np.asarray(ids if ids is not None else np.zeros(0), np.int32), {"detections": used},
        f"{path}: no detection in the file: the graphs hold the background node only")
  if settings.auditory_ids is None:
    raise graph_providers.ProviderError(
        "the workdir has no dataset_meta.json (and the data set is not on this machine), so "
        "detection labels cannot be mapped to auditory classes; retrain or copy "
        "dataset_meta.json into the workdir")
  all_names = settings.class_names
  names = {int(i): (all_names[i] if 0 <= i < len(all_names) else f"class id {i}")
           for i in np.unique(dets.label)}
  return dets, np.asarray(settings.auditory_ids, np.int32), names, {"detections": used}, []


# ----------------------------------------------------------------------------- graphs


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


def graph_chunk(frames: np.ndarray, dets: graph_providers.Detections, first: int,
                sources: np.ndarray, auditory_ids: np.ndarray, depth: np.ndarray,
                flow: np.ndarray | None, settings: Settings) -> dict[str, np.ndarray]:
  """Preprocessed windows of the frames ``frames`` (clip frames ``first...``), node slots in
  clip source order, plus ``node_boxes``, ``reference_frames`` and ``measured`` [A, W]."""
  cfg = settings.preprocess
  l, (h, w) = cfg.window_frames, frames.shape[1:3]
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
  ex["reference_frames"] = frames[::l].copy()  # not a view: the chunk's frames are freed
  order = _clip_slot_order(sources, chunk_sources)
  _permute_auditory(ex, order)
  key = schema.direction_key(settings.num_direction_classes)
  ex["measured"] = (ex[key][:, order].T if measure
                    else np.full((preprocess.MAX_AUDITORY, nw), -1, np.int32))
  return ex


_GRAPH_KEYS = ("node_features", "node_mask", "node_type", "adjacency", "window_valid",
               "node_boxes", "reference_frames", "measured")


def _provider_notes(providers: Providers, depth_src, flow_src, measure_motion: bool,
                    used: dict[str, str], warns: list[str], extractor: str) -> None:
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
  used["features"] = extractor


def build_scene_graphs(video, providers: Providers | None, settings: Settings,
                       measure_motion: bool = False
                       ) -> tuple[SceneGraphs, dict[str, str], list[str]]:
  """Per-window scene graphs of ``video`` (a :class:`VideoFile` or :class:`VideoFrames`).

  The clip's auditory sources are chosen once over the whole clip (as the training
  preprocessing does), then the windows are preprocessed in chunks of ``chunk_windows``.

  Returns:
    (graphs, what provided detections/depth/flow/features, the fallback warnings logged).

  Raises:
    graph_providers.ProviderError: a provider file missing or malformed.
    media.MediaError: the video cannot be decoded.
  """
  providers = providers or Providers()
  depth_src = provider_files.load_array(providers.depth, "depth")
  flow_src = provider_files.load_array(providers.flow, "flow")
  checks = [(arr, name, trailing) for arr, name, trailing in
            ((depth_src, "depth", ()), (flow_src, "flow", (2,)))
            if arr is not None and not graph_providers.is_frame_model(arr)]
  if checks:
    video.scan()
    for arr, name, trailing in checks:
      if isinstance(arr, provider_files.SampledArray):
        provider_files.check_array(arr, video, name, trailing)
      else:
        provider_files.check_source_array(arr, name, int(video.source_index.max()) + 1,
                                          video.source_size, trailing)
  dets, auditory_ids, names, used, warns = clip_detections(video, providers, settings, flow_src)
  _provider_notes(providers, depth_src, flow_src, measure_motion, used, warns,
                  settings.preprocess.feature_extractor)
  sources = preprocess.select_sources(dets, auditory_ids, preprocess.MAX_AUDITORY,
                                      settings.preprocess.min_auditory_score)
  if not len(sources):
    warns.append("no auditory object found in the video (no detection with an auditory class "
                 "id): the graphs hold the background node only" if providers.detections
                 is not None else "no moving object found in the video: the graphs hold the "
                 "background node only")
  for msg in warns:
    logging.warning("%s", msg)
  # Windows are written into arrays allocated once (no list of chunks to concatenate).
  l = settings.preprocess.window_frames
  num_windows = -(-video.num_frames // l)
  out: dict[str, np.ndarray] = {}
  for w0, ex in _graph_chunks(video, dets, sources, auditory_ids, depth_src, flow_src, settings,
                              measure_motion):
    for key in _GRAPH_KEYS:
      if key not in out:
        shape = ex[key].shape
        out[key] = (np.empty((shape[0], num_windows) + shape[2:], ex[key].dtype)
                    if key == "measured" else
                    np.empty((num_windows,) + shape[1:], ex[key].dtype))
      if key == "measured":
        out[key][:, w0:w0 + ex[key].shape[1]] = ex[key]
      else:
        out[key][w0:w0 + ex[key].shape[0]] = ex[key]
  graphs = SceneGraphs(
      node_features=out["node_features"], node_mask=out["node_mask"],
      node_type=out["node_type"], adjacency=out["adjacency"], window_valid=out["window_valid"],
      node_boxes=out["node_boxes"], reference_frames=out["reference_frames"],
      source_ids=np.asarray(sources, np.int64),
      source_names=[names.get(int(c), f"class id {int(c)}") for c in sources],
      measured_direction=out["measured"],
      from_proposals=providers.detections is None or "auditory_candidates" in used)
  return graphs, used, warns


def _graph_chunks(video, dets, sources, auditory_ids, depth_src, flow_src, settings: Settings,
                  measure_motion: bool) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """Second pass: ``(first window, preprocessed windows)``, ``chunk_windows`` at a time."""
  l = settings.preprocess.window_frames
  num_windows = -(-video.num_frames // l)
  for k0, frames, nxt in video.chunks(settings.chunk_windows * l):
    k1 = k0 + len(frames)
    if graph_providers.is_frame_model(depth_src):
      depth = depth_src.depth(frames)
    else:
      depth = (provider_files.resample_depth(depth_src, video, np.arange(k0, k1))
               if depth_src is not None else graph_providers.flat_depth(frames))
    flow = _chunk_flow(frames, nxt, k0, flow_src, video) if measure_motion else None
    yield k0 // l, graph_chunk(frames, dets, k0, sources, auditory_ids, depth, flow, settings)
    logging.info("scene graphs: windows %d-%d of %d", k0 // l + 1, -(-k1 // l), num_windows)
