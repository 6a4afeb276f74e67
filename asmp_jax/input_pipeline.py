"""grain input pipeline: mix-and-separate pairs of preprocessed clips, as static-shape batches.

One training element is a *pair* of clips (U = 2 videos, paper §3.4). For each clip of the pair the
pipeline draws a 65535-sample crop that starts on a 1 s window boundary (so the direction
classifier's 6 time slices line up with the label windows), a random gain in [0.5, 1.5], and takes
that first window's scene graph. STFTs, the mixture and the log-frequency warp are computed on the
accelerator inside the train step (they are linear/cheap and jittable, asmp_jax.audio), so the host
only slices arrays.

Everything is index-based (grain ``MapDataset``): element i of epoch e is a pure function of
(seed, e, i), so the iterator state that Orbax saves is a position, a restarted job continues with
exactly the next example, and each process reads its own disjoint slice of the pairs
(``process_index::process_count``).

Batch layout (leading axis B, U = 2 videos, S = 3 slots, N = 23 nodes, E = N(N-1) edges, Wd = 6):
  audio float32 [B, U, 65535] (gain applied), gain float32 [B, U];
  node_features float32 [B, U, N, F], node_mask bool, node_type int32 [B, U, N];
  senders, receivers int32 [B, U, E] (the same dense edge list for every graph), edge_weight float32
  and edge_mask bool [B, U, E];
  source_mask bool [B, U, S] (slots 0..1 auditory sources, slot 2 background, always valid);
  class_labels int32 [B, U, S] (background = K-1); dir_labels int32 and dir_valid bool [B, U, S, Wd]
  (``dir_labels`` holds the class for ``config.model.num_direction_classes``);
  clip_index int32 [B, U];
  with ``config.model.dir_window_graphs`` also each label window's own graph:
  window_node_features float32 [B, U, Wd, N, F], window_node_mask bool and window_node_type int32
  [B, U, Wd, N], window_edge_weight float32 and window_edge_mask bool [B, U, Wd, E].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from asmp_jax.graph import motion as graph_motion
from asmp_jax import preprocess
from asmp_jax import schema

Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class PairConfig:
  """How pairs are cut from preprocessed clips."""
  num_classes: int  # K, including the background class (index K-1)
  num_direction_classes: int = 10
  crop_samples: int = 65535
  window_samples: int = 11025  # samples per 1 s label window
  num_dir_windows: int = 6
  gain_range: tuple[float, float] = (0.5, 1.5)
  num_videos: int = 2
  # Also emit each label window's own scene graph (``window_*`` keys; config.model.
  # dir_window_graphs).
  window_graphs: bool = False

  @classmethod
  def from_config(cls, config) -> "PairConfig":
    d, m = config.data, config.model
    return cls(num_classes=m.num_classes, num_direction_classes=m.num_direction_classes,
               crop_samples=d.crop_samples, window_samples=d.sample_rate,
               num_dir_windows=m.num_dir_windows, gain_range=tuple(d.gain_range),
               num_videos=d.num_videos,
               window_graphs=bool(m.get("dir_window_graphs", False)))


_SENDERS, _RECEIVERS = preprocess.dense_edges(preprocess.MAX_NODES)


def crop_windows(num_windows_valid: int, cfg: PairConfig) -> int:
  """Number of possible crop start windows of a clip with that many valid windows (>= 1)."""
  need = int(np.ceil(cfg.crop_samples / cfg.window_samples))  # 6 windows touched by a crop
  return max(1, num_windows_valid - need + 1)


def window_graph(ex: Example, w: int) -> Example:
  """Window ``w``'s scene graph as model inputs: ``node_features [N, F]``, ``node_mask``,
  ``node_type [N]``, ``edge_weight``, ``edge_mask [E]`` (the dense `_SENDERS` -> `_RECEIVERS`
  edge list; weight 0 where there is no edge)."""
  adj = np.asarray(ex["adjacency"][w], np.float32)
  node_mask = np.asarray(ex["node_mask"][w], bool)
  edge_weight = adj[_SENDERS, _RECEIVERS]
  edge_mask = (edge_weight > 0) & node_mask[_SENDERS] & node_mask[_RECEIVERS]
  return {
      "node_features": np.asarray(ex["node_features"][w], np.float32),
      "node_mask": node_mask,
      "node_type": np.asarray(ex["node_type"][w], np.int32),
      "edge_weight": np.where(edge_mask, edge_weight, 0.0).astype(np.float32),
      "edge_mask": edge_mask,
  }


def label_window_graphs(ex: Example, windows: Sequence[int]) -> Example:
  """The scene graphs of the given windows, stacked: ``window_<key>`` with a leading window axis.

  A window past the clip's last valid one (its labels are invalid) gets the last valid window's
  graph, so every graph holds at least its background node.
  """
  last = max(0, int(np.asarray(ex["window_valid"]).sum()) - 1)
  graphs = [window_graph(ex, min(int(k), last)) for k in windows]
  return {"window_" + k: np.stack([g[k] for g in graphs]) for k in graphs[0]}


def clip_view(ex: Example, start_window: int, gain: float, cfg: PairConfig) -> Example:
  """One clip's contribution to a pair: its audio crop, graph and labels from ``start_window``."""
  audio = np.asarray(ex["audio"]).astype(np.float32) / 32767.0
  s0 = start_window * cfg.window_samples
  crop = audio[s0:s0 + cfg.crop_samples]
  crop = np.pad(crop, (0, cfg.crop_samples - crop.size)) * np.float32(gain)
  w = start_window
  graph = window_graph(ex, w)
  a_max = preprocess.MAX_AUDITORY
  src_class = np.asarray(ex["source_class"], np.int32)
  k_bg = cfg.num_classes - 1
  source_mask = np.concatenate([src_class >= 0, [True]])
  class_labels = np.concatenate([np.maximum(src_class, 0), [k_bg]]).astype(np.int32)
  nd, nwin = cfg.num_dir_windows, ex["dir10"].shape[0]
  key = schema.direction_key(cfg.num_direction_classes)
  wins = np.arange(w, w + nd)
  in_clip = wins < nwin
  labels = np.full((a_max + 1, nd), -1, np.int32)
  labels[:a_max, in_clip] = np.asarray(ex[key])[wins[in_clip]].T
  valid_win = np.zeros((nd,), bool)
  valid_win[in_clip] = np.asarray(ex["window_valid"])[wins[in_clip]]
  labels[a_max, :] = np.where(valid_win,
                              graph_motion.BACKGROUND_CLASS(cfg.num_direction_classes), -1)
  dir_valid = (labels >= 0) & source_mask[:, None]
  out = {
      "audio": crop.astype(np.float32),
      "gain": np.float32(gain),
      **graph,
      "senders": _SENDERS,
      "receivers": _RECEIVERS,
      "source_mask": source_mask,
      "class_labels": class_labels,
      "dir_labels": np.maximum(labels, 0),
      "dir_valid": dir_valid,
  }
  if cfg.window_graphs:
    out.update(label_window_graphs(ex, wins))
  return out


def make_pair(examples: Sequence[Example], rng: np.random.Generator | None, cfg: PairConfig,
              clip_indices: Sequence[int] = (-1, -1)) -> Example:
  """Mix-and-separate element from ``cfg.num_videos`` clips.

  With ``rng`` the crop start and gains are random (training); without it each clip is cut from
  its first window with unit gain (evaluation, deterministic).
  """
  views = []
  for ex in examples:
    n_valid = int(np.asarray(ex["window_valid"]).sum())
    n_starts = crop_windows(n_valid, cfg)
    if rng is None:
      start, gain = 0, 1.0
    else:
      start = int(rng.integers(n_starts))
      gain = float(rng.uniform(*cfg.gain_range))
    views.append(clip_view(ex, start, gain, cfg))
  out = {k: np.stack([v[k] for v in views]) for k in views[0]}
  out["clip_index"] = np.asarray(clip_indices, np.int32)
  return out


class _PairSource:
  """Random-access source of clip-index pairs: pair i of epoch e from a seeded permutation."""

  def __init__(self, num_clips: int, seed: int, num_videos: int, epoch_pairs: int | None = None):
    if num_clips < num_videos:
      raise ValueError(f"need at least {num_videos} clips to form pairs, the split has {num_clips}")
    self.num_clips, self.seed, self.u = num_clips, seed, num_videos
    self.epoch_pairs = epoch_pairs or num_clips // num_videos

  def __len__(self) -> int:
    return self.epoch_pairs

  def __getitem__(self, i: int) -> np.ndarray:
    epoch, j = divmod(int(i), self.epoch_pairs)
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_clips)
    idx = perm[(j * self.u + np.arange(self.u)) % self.num_clips]
    if len(set(idx.tolist())) < self.u:  # never pair a clip with itself
      idx[1:] = (idx[1:] + 1 + np.arange(self.u - 1)) % self.num_clips
    return idx


def pair_dataset(source: Sequence[Example], cfg: PairConfig, *, seed: int, train: bool,
                 process_index: int = 0, process_count: int = 1,
                 num_pairs: int | None = None) -> grain.MapDataset:
  """MapDataset of pair elements (before batching).

  Args:
    source: random-access clips (e.g. ``tfds.builder(...).as_data_source(split)``).
    train: random crops/gains and an infinite stream of reshuffled epochs; otherwise a fixed,
      seeded list of ``num_pairs`` pairs cut deterministically.
    process_index, process_count: each process keeps every ``process_count``-th pair.
  """
  pairs = _PairSource(len(source), seed, cfg.num_videos, None if train else num_pairs)
  import grain  # pylint: disable=g-import-not-at-top  # the clip-level functions above need none
  ds = grain.MapDataset.source(pairs)
  if train:
    ds = ds.repeat(None)

  def load(idx):
    return [source[int(i)] for i in idx], idx

  ds = ds.map(load)
  if train:
    ds = ds.random_map(lambda x, rng: make_pair(x[0], rng, cfg, x[1]), seed=seed)
  else:
    ds = ds.map(lambda x: make_pair(x[0], None, cfg, x[1]))
  # Shard last: the random crop and gains of pair i depend on its global index, so the union of
  # the processes' shards is exactly the single-process stream (MapDataset is lazy: a process only
  # loads its own pairs).
  return ds[process_index::process_count]


def batched(ds: grain.MapDataset, batch_size: int, *, drop_remainder: bool = True,
            worker_count: int = 0, prefetch_buffer: int = 2) -> grain.IterDataset:
  """Stacks pairs into batches and prefetches them (threads, or processes if worker_count > 0)."""
  import grain  # pylint: disable=g-import-not-at-top
  it = ds.batch(batch_size, drop_remainder=drop_remainder).to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch_buffer))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def batch_spec(batch: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Shapes and dtypes of a batch (for jax.eval_shape / abstract model init)."""
  return {k: (np.shape(v), np.asarray(v).dtype) for k, v in batch.items()}
