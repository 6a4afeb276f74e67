"""The ASMP paper's evaluation protocol: the authors' pair lists, their mixing and windowing.

  python -m asmp_jax.evaluate --workdir=RUN --paper_pairs=DIR_OF_PICKLES [--split=test]

The public test scripts (``metro-smiles/asmp``) score two fixed lists of test-clip pairs, released
beside the code as ``dataset/Onlysep_Pairlist.pickle`` (300 tuples ``(video_1, class_1, video_2,
class_2)``) and ``dataset/DirPred_PairList.pickle`` (207 tuples ``(video_1, class_1, window_1,
video_2, class_2, window_2)``, windows 0-9). Both are read with a restricted unpickler that
rebuilds lists, tuples, strings, ints and numpy integers only (`asmp_jax.safe_io`): a pair list
cannot run code.

Separation (first list), as the public script does it:
  * each clip's audio is clipped to [-1, 1], both are cut to the shorter length and mixed as
    ``(a1 + a2) / 2``;
  * 65535-sample windows every 0.05 s (551 samples; the last one flush with the end) are
    separated, each video by its conditioning, inverted with the mixture's phase and
    overlap-averaged; the averaged estimate is multiplied by 2 (undoing the mixture's 1/2) and
    clipped to [-1, 1];
  * BSS Eval v3 (SDR, SIR, SAR) of the two estimates against the two clipped clips, estimate u
    against clip u; the pair's score is the mean over its two clips, the result the mean over
    pairs.
Direction (second list):
  * each clip contributes one 65535-sample crop, starting at the latest whole second that keeps
    the listed window inside it (window ``w``: second ``max(0, w - 5)``); a clip shorter than a
    crop is repeated; the mixture is ``(a1 + a2) / 2`` of the two crops;
  * the direction of the listed window (the crop's time slice ``w - start``) is predicted from
    the separated spectrogram; a prediction is correct when it is the label of the clip's source
    of the listed class in that window.

What comes from this project's data (the public scripts read their own files): each crop is
conditioned on our scene graph of the window it starts in (separation) or of the listed window
(direction); the direction labels are our labels of that source and window (``dir28`` or
``dir10``, whichever the model predicts); class ids are the data set's class indices
(``asmp_data/asiw/classes.tsv``). A video's separated sound is the mask of its slot that holds
the first GRU step (its first valid slot) for the released networks (``graph_mode="authors"``:
the test scripts condition the U-Net on the first GRU step only) and the sum of its valid slots'
masks otherwise; the direction of a video is that slot's for the released networks, otherwise
the auditory slot whose consistency classifier gives the listed class the highest probability.
A pair whose clip is not in the split is skipped and counted.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from asmp_jax import audio as audio_lib
from asmp_jax import input_pipeline
from asmp_jax import metrics as metrics_lib
from asmp_jax import schema
from asmp_jax import sliding_window

SEPARATION_PAIRS = "Onlysep_Pairlist.pickle"
DIRECTION_PAIRS = "DirPred_PairList.pickle"
HOP_S = 0.05               # the public scripts' --hop_size
NUM_WINDOWS = 10           # label windows of an ASIW clip (pair-list windows 0-9)
# A pair list may rebuild numpy integers and nothing else beyond plain containers.
PAIR_GLOBALS = frozenset({("builtins", "tuple"), ("builtins", "list"), ("builtins", "int"),
                          ("builtins", "str"), ("numpy", "dtype"),
                          ("numpy._core.multiarray", "scalar")})


class PairListError(ValueError):
  """A pair list cannot be used; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One listed pair: two clips (YouTube ids), their classes and, for direction, windows."""
  videos: tuple[str, str]
  classes: tuple[int, int]
  windows: tuple[int, int] | None = None


def _as_int(v: Any) -> int | None:
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
    return None
  return int(v)


def load_pairs(path: str | os.PathLike, with_windows: bool) -> list[Pair]:
  """Reads one of the released pair lists (module docstring).

  Raises:
    PairListError: unreadable file, refused content, or an entry of the wrong form (one line).
  """
  from asmp_jax import safe_io  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  try:
    raw = safe_io.load_pickle(path, allowed=PAIR_GLOBALS)
  except safe_io.SafeLoadError as e:
    raise PairListError(str(e)) from None
  form = ("(video_1, class_1, window_1, video_2, class_2, window_2)" if with_windows
          else "(video_1, class_1, video_2, class_2)")
  if not isinstance(raw, (list, tuple)) or not raw:
    raise PairListError(f"{path}: expected a non-empty list of {form} tuples, got "
                        f"{type(raw).__name__}")
  n = 6 if with_windows else 4
  pairs = []
  for i, entry in enumerate(raw):
    ok = isinstance(entry, tuple) and len(entry) == n
    if ok:
      v1, v2 = entry[0], entry[n // 2]
      nums = [_as_int(x) for j, x in enumerate(entry) if j not in (0, n // 2)]
      ok = isinstance(v1, str) and isinstance(v2, str) and None not in nums
    if ok and with_windows:
      ok = all(0 <= w < NUM_WINDOWS for w in (nums[1], nums[3]))
    if not ok:
      raise PairListError(f"{path}: entry {i} is {entry!r:.120}; expected {form} with string "
                          f"ids, integer classes{' and windows 0-9' if with_windows else ''}")
    if with_windows:
      pairs.append(Pair((v1, v2), (nums[0], nums[2]), (nums[1], nums[3])))
    else:
      pairs.append(Pair((v1, v2), (nums[0], nums[1])))
  return pairs


def load_pair_lists(folder: str | os.PathLike) -> tuple[list[Pair], list[Pair]]:
  """``(separation pairs, direction pairs)`` from a folder holding both released pickles."""
  folder = os.fspath(folder)
  return (load_pairs(os.path.join(folder, SEPARATION_PAIRS), with_windows=False),
          load_pairs(os.path.join(folder, DIRECTION_PAIRS), with_windows=True))


def first_slot_only(model) -> bool:
  """The released networks condition each video on its first GRU step only."""
  return bool(getattr(model, "FIRST_STEP_ONLY", False))


def separation_fn(model):
  """Jittable ``(variables, batch) -> {"estimate" [N, U, L], "cons_logits", "dir_logits"}``.

  ``batch["audio"] [N, U, L]`` are the clips' crops; the mixture is their mean.
  """
  first = first_slot_only(model)

  def fn(variables, batch):
    wav = batch["audio"].astype(jnp.float32)
    mix_spec = audio_lib.stft(jnp.mean(wav, axis=1))                     # [N, F, T]
    mb = dict(batch)
    mb["mix_log_mag"] = jnp.log(audio_lib.log_freq_warp(jnp.abs(mix_spec)) + 1e-10)
    out = model.apply(variables, mb, train=False)
    masks = audio_lib.log_freq_unwarp(out["masks"])                        # [N, U, S, F, T]
    # The slot that received the first GRU step (`assign_steps_to_slots`): the first valid one.
    first_slot = jnp.argmax(batch["source_mask"], axis=-1)                 # [N, U]
    if first:
      video = jnp.take_along_axis(masks, first_slot[:, :, None, None, None], axis=2)[:, :, 0]
    else:
      video = jnp.sum(masks * batch["source_mask"][..., None, None], axis=2)
    est = audio_lib.masks_to_waveforms(video, mix_spec, wav.shape[-1])
    return {"estimate": est, "cons_logits": out["cons_logits"], "dir_logits": out["dir_logits"],
            "first_slot": first_slot}

  return fn


def _run(fn, variables, elems: list[dict[str, np.ndarray]], batch_size: int
         ) -> dict[str, np.ndarray]:
  """``fn`` on ``elems`` in fixed-size batches (`sliding_window.slide`), outputs concatenated."""
  def make_batch(idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.stack([elems[int(i)][k] for i in idx]) for k in elems[0]}

  outs = [out for _, _, out in sliding_window.slide(
      lambda batch: fn(variables, batch), np.arange(len(elems)), batch_size, make_batch)]
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _clipped(ex) -> np.ndarray:
  return np.clip(np.asarray(ex["audio"], np.float32) / 32767.0, -1.0, 1.0)


def _element(exs, start_windows, audio: np.ndarray, cfg) -> dict[str, np.ndarray]:
  views = [input_pipeline.clip_view(e, w, 1.0, cfg) for e, w in zip(exs, start_windows)]
  el = {k: np.stack([v[k] for v in views]) for k in views[0]
        if k not in ("audio", "gain", "dir_labels", "dir_valid")}
  el["audio"] = audio.astype(np.float32)
  return el


def separate_pair(fn, variables, exs, cfg, hop: int, batch_size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """``(estimates [2, L], references [2, L])`` of one separation pair (module docstring)."""
  refs = [_clipped(e) for e in exs]
  length = min(len(r) for r in refs)
  refs = np.stack([r[:length] for r in refs])
  crop, ws = cfg.crop_samples, cfg.window_samples
  starts = sliding_window.crop_starts(length, crop, hop)
  last = [input_pipeline.crop_windows(int(np.sum(e["window_valid"])), cfg) - 1 for e in exs]
  elems = []
  for s in starts:
    audio = np.stack([np.pad(r[s:s + crop], (0, max(0, s + crop - length))) for r in refs])
    elems.append(_element(exs, [min(int(s) // ws, lw) for lw in last], audio, cfg))
  est = _run(fn, variables, elems, batch_size)["estimate"]
  est = sliding_window.overlap_average(est, starts, length)
  return np.clip(est * 2.0, -1.0, 1.0), refs


def direction_crop(window: int, window_samples: int, crop: int) -> int:
  """The crop's start second for a listed window: the public script steps a second at a time
  from 0 until the window's first sample is inside the crop."""
  return max(0, -(-(window * window_samples - crop) // window_samples))


def _source_of_class(ex, cls: int) -> int | None:
  hits = np.flatnonzero(np.asarray(ex["source_class"]) == cls)
  return int(hits[0]) if len(hits) else None


def direction_pair(fn, variables, exs, pair: Pair, cfg, first: bool
                   ) -> list[tuple[int, int] | None]:
  """Per clip of the pair: ``(predicted, label)`` for the listed window, or None when the clip
  has no source of the listed class or no label there."""
  crop, ws = cfg.crop_samples, cfg.window_samples
  key = schema.direction_key(cfg.num_direction_classes)
  audio, rel = [], []
  for e, w in zip(exs, pair.windows):
    wav = _clipped(e)
    if len(wav) < crop:
      wav = np.tile(wav, crop // len(wav) + 1)
    k = direction_crop(w, ws, crop)
    a = wav[k * ws:k * ws + crop]
    audio.append(np.pad(a, (0, crop - len(a))))
    rel.append(w - k)
  out = _run(fn, variables, [_element(exs, pair.windows, np.stack(audio), cfg)], 1)
  logits, cons = out["dir_logits"][0], out["cons_logits"][0]     # [U, S, Wd, D], [U, S, K]
  first_slot = out["first_slot"][0]                                # [U]
  results = []
  for u, (e, w, c) in enumerate(zip(exs, pair.windows, pair.classes)):
    a = _source_of_class(e, c)
    labels = np.asarray(e[key])
    if a is None or w >= labels.shape[0] or labels[w, a] < 0:
      results.append(None)
      continue
    if first:
      slot = int(first_slot[u])
    else:
      logp = cons[u, :-1] - np.logaddexp.reduce(cons[u, :-1], axis=-1, keepdims=True)
      slot = int(np.argmax(logp[:, c]))
    results.append((int(np.argmax(logits[u, slot, rel[u]])), int(labels[w, a])))
  return results


def evaluate_paper(variables, model, config, source, sep_pairs: Sequence[Pair],
                   dir_pairs: Sequence[Pair], hop_s: float = HOP_S) -> dict[str, Any]:
  """Both halves of the protocol on ``source`` (a split's random-access clips)."""
  t0 = time.time()
  cfg = input_pipeline.PairConfig.from_config(config)
  index = {str(source[i]["clip_id"]): i for i in range(len(source))}
  fn = jax.jit(separation_fn(model))
  first = first_slot_only(model)
  hop = int(hop_s * cfg.window_samples)
  bs = max(1, int(config.eval.batch_size))

  def clips(pair):
    idx = [index.get(v) for v in pair.videos]
    return None if None in idx else [source[i] for i in idx]

  refs, ests, missing_sep = [], [], []
  for p in sep_pairs:
    exs = clips(p)
    if exs is None:
      missing_sep.append(list(p.videos))
      continue
    est, ref = separate_pair(fn, variables, exs, cfg, hop, bs)
    ests.append(est)
    refs.append(ref)
  results: dict[str, Any] = {"protocol": "paper", "hop_s": hop_s,
                             "num_separation_pairs": len(refs),
                             "separation_pairs_missing": missing_sep}
  if refs:
    # mir_eval's bss_eval_sources(references, estimates, False), as the public script calls it.
    per_pair = np.asarray([[float(np.nanmean(x)) for x in
                            metrics_lib.bss_eval_sources(r, e, compute_permutation=False)[:3]]
                           for r, e in zip(refs, ests)])
    results.update(sdr=float(np.nanmean(per_pair[:, 0])), sir=float(np.nanmean(per_pair[:, 1])),
                   sar=float(np.nanmean(per_pair[:, 2])), per_pair=per_pair.round(4).tolist())
  hits, missing_dir = [[], []], 0
  for p in dir_pairs:
    exs = clips(p)
    if exs is None:
      missing_dir += 2
      continue
    for u, r in enumerate(direction_pair(fn, variables, exs, p, cfg, first)):
      if r is None:
        missing_dir += 1
      else:
        hits[u].append(r[0] == r[1])
  counted = hits[0] + hits[1]
  nd = cfg.num_direction_classes
  results.update({
      f"direction_accuracy_{nd}": float(np.mean(counted)) if counted else float("nan"),
      f"direction_accuracy_{nd}_per_position": [float(np.mean(h)) if h else float("nan")
                                                for h in hits],
      "direction_count": len(counted), "direction_missing": missing_dir,
      "wall_time_s": time.time() - t0})
  return results


def evaluate_checkpoint(workdir: str, pairs_dir: str, split: str | None = None,
                        step: int | None = None, hop_s: float = HOP_S) -> dict[str, Any]:
  """The protocol on a workdir's checkpoint (a training run or a converted release).

  Writes ``<workdir>/eval_paper_<split>_step<step>.json`` and returns the results.

  Raises:
    PairListError: a pair list is missing or malformed (before the model is restored).
  """
  import json  # pylint: disable=g-import-not-at-top
  from asmp_jax import datasets, inference, run_folder  # pylint: disable=g-import-not-at-top
  from asmp_jax.models import asmp as asmp_model  # pylint: disable=g-import-not-at-top
  sep_pairs, dir_pairs = load_pair_lists(pairs_dir)
  config = run_folder.load_saved_config(workdir)
  if config is None:
    raise ValueError(f"{workdir}: no saved config; is this a run or converted workdir?")
  split = split or config.eval.split
  variables, ckpt_step = inference.restore_variables(workdir, config, step=step)
  model = asmp_model.create_model(config.model)
  source = datasets.data_source(datasets.get_builder(config.data), split)
  results = evaluate_paper(variables, model, config, source, sep_pairs, dir_pairs, hop_s)
  results.update(split=split, checkpoint_step=int(ckpt_step))
  run_folder.write_new_record(
      run_folder.workdir_path(workdir) / f"eval_paper_{split}_step{ckpt_step}.json",
      json.dumps(results, indent=2))
  return results


def summary_line(workdir: str, r: dict[str, Any]) -> str:
  nd = next(k for k in r if k.removeprefix("direction_accuracy_").isdigit())
  nan = float("nan")
  return (f"{workdir} step {r['checkpoint_step']}, {r['split']}, paper protocol: "
          f"{r['num_separation_pairs']} separation pairs ({len(r['separation_pairs_missing'])} "
          f"not in the split): SDR {r.get('sdr', nan):.2f}, SIR {r.get('sir', nan):.2f}, SAR "
          f"{r.get('sar', nan):.2f} dB; {nd} {r[nd]:.3f} over {r['direction_count']} listed "
          f"objects ({r['direction_missing']} without a label)")
