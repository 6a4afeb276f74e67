"""Evaluation protocol: whole test clips, fixed seeded pairs, BSS Eval and direction accuracy.

For each of ``config.eval.num_pairs`` fixed pairs of test clips (seeded by ``config.eval.seed``),
the two clips' audio are summed (unit gains) and the whole mixture is separated with a sliding
65535-sample window (hop ``config.eval.window_hop_s``; the public code uses 0.05 s, we default to
1 s so that every window starts on a label window and CPU evaluation stays cheap; the windows are
overlap-averaged as in the public code). Each crop is conditioned on the scene graph of the
1 s window it starts in. A video's estimate is the sum of its slots' masks applied to the mixture
STFT (mixture phase), inverted and overlap-averaged.

Scores (BSS Eval v3 on time-domain signals, ``asmp_jax.metrics``; each video's audio is a
reference, estimate u is scored against video u):
  * ``model``: ASMP's separation;
  * ``mixture``: the mixture itself as both estimates (the floor);
  * ``oracle_ibm`` / ``oracle_irm``: ideal binary / ratio masks (ratio clamped to [0, 1]) computed
    from the true clips on the same windows (the ceiling of mask-based separation).
Direction accuracy (10 or 28 classes, whichever the model was trained for) counts every valid
(auditory source, 1 s window) of every crop; slots are matched to sources per video by the
permutation with the lowest consistency cross-entropy. The majority-vote baseline predicts the
most frequent auditory-source label of the training split. ``direction_accuracy_<n>_any_order``
matches slots to labels separately in every window instead, as eq. 3 does (and the training and
validation ``acc_dir``, which also count the background slot, unless
``config.loss.share_direction_permutation``): an upper bound that shows how much a head trained
with per-window matching loses by not tying its answers to the sources (`direction_any_order`).
A window of a test clip is counted once for every crop that covers it and every pair that holds
the clip, so its answers are not independent: ``direction_accuracy_<n>_se`` and
``direction_gain_over_majority_<n>_se`` (the accuracy minus the majority vote's, paired on the same
labels) are standard errors clustered by test clip (``metrics.clustered_mean_se``), and
``direction_per_clip`` records ``[clip, labels counted, correct]`` for paired comparisons.
Results go to TensorBoard and, from launch.py's evaluation at the end of training, to
``<workdir>/eval_<split>.json``; ``python -m asmp_jax.evaluate`` writes
``<workdir>/eval_<split>_step<step>.json`` for the checkpoint it restored.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from asmp_jax import audio as audio_lib
from asmp_jax import input_pipeline
from asmp_jax import metrics as metrics_lib
from asmp_jax import sliding_window
from asmp_jax import slot_matching

_LOG = logging.getLogger(__name__)  # asmp_jax.evaluate


def separation_fn(model, normalise_mix: bool = False):
  """Jittable (variables, batch) -> model outputs plus separated waveforms for crops.

  ``batch`` is an input-pipeline batch of crops (unit gains). Returns ``video_est [N, U, L]``,
  ``slot_est [N, U, S, L]``, ``ibm_est``/``irm_est [N, U, L]``, ``mixture [N, L]``,
  ``cons_logits``, ``dir_logits``, ``masks`` (warped).
  """

  def fn(variables, batch):
    length = batch["audio"].shape[-1]
    feats = audio_lib.mixture_features(batch["audio"], normalise_mix)
    spec, mix_spec = feats["spec"], feats["mix_spec"]  # [N, U, F, T], [N, F, T]
    mb = dict(batch)
    mb["mix_log_mag"] = feats["mix_log_mag"]
    out = model.apply(variables, mb, train=False)
    masks = audio_lib.log_freq_unwarp(out["masks"])  # [N, U, S, F, T]
    masks = masks * batch["source_mask"][..., None, None]
    slot_est = audio_lib.masks_to_waveforms(
        masks.reshape(masks.shape[0], -1, *masks.shape[-2:]), mix_spec, length)
    slot_est = slot_est.reshape(masks.shape[:3] + (length,))
    video_est = audio_lib.masks_to_waveforms(masks.sum(axis=2), mix_spec, length)
    mags = jnp.abs(spec)
    ibm = audio_lib.ideal_binary_mask(mags)
    irm = jnp.clip(mags / (jnp.abs(mix_spec)[:, None] + 1e-8), 0.0, 1.0)
    mixture = audio_lib.istft(mix_spec, length)
    return {
        "video_est": video_est, "slot_est": slot_est,
        "ibm_est": audio_lib.masks_to_waveforms(ibm, mix_spec, length),
        "irm_est": audio_lib.masks_to_waveforms(irm, mix_spec, length),
        "mixture": mixture, "cons_logits": out["cons_logits"], "dir_logits": out["dir_logits"],
        "masks": out["masks"],
    }

  return fn


def bss_eval_videos(reference: np.ndarray, estimated: np.ndarray, chunk: int = 8
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BSS Eval v3 in float64 of ``[P, U, L]`` estimates against references, estimate u against
  reference u (the conditioning fixes the order); NaN for a silent reference (see metrics)."""
  outs = []
  with jax.enable_x64(True):
    fn = jax.jit(lambda r, e: metrics_lib.bss_eval_sources_batched(
        r, e, compute_permutation=False, dtype=jnp.float64)[:3])
    for i in range(0, len(reference), chunk):
      r = np.asarray(reference[i:i + chunk], np.float64)
      e = np.asarray(estimated[i:i + chunk], np.float64)
      pad = chunk - len(r)
      if pad:  # one compiled shape
        r = np.concatenate([r, np.repeat(r[-1:], pad, 0)])
        e = np.concatenate([e, np.repeat(e[-1:], pad, 0)])
      outs.append([np.asarray(x)[:chunk - pad] for x in fn(r, e)])
  return tuple(np.concatenate([o[k] for o in outs]) for k in range(3))


def match_slots(cons_logits: np.ndarray, class_labels: np.ndarray, source_mask: np.ndarray
                ) -> np.ndarray:
  """Per video, the slot that serves each label slot: argmin over permutations of the summed
  consistency cross-entropy over valid label slots. Returns int [..., S] (slot of label j)."""
  ce = slot_matching.pairwise_cross_entropy(cons_logits, class_labels)  # [..., S(slot), S(label)]
  return slot_matching.best_permutation(np.swapaxes(ce, -1, -2), row_valid=source_mask)[1]


def direction_predictions(dir_logits, dir_labels, dir_valid, slot_of_label):
  """Predicted and true direction class for each valid (label slot, window), auditory slots only.

  Arrays are ``[..., U, S, Wd]`` (videos, slots, windows). Returns ``(pred, label, video)``, each
  ``[K]`` over the K counted entries; ``video`` is each entry's index along the video axis U (to
  tell which clip it belongs to).
  """
  pred_slots = np.take_along_axis(dir_logits.argmax(-1), slot_of_label[..., None], axis=-2)
  aud = np.zeros(dir_valid.shape, bool)
  aud[..., :-1, :] = True  # the last slot is the background (trivially labelled)
  keep = dir_valid & aud
  return pred_slots[keep], dir_labels[keep], np.nonzero(keep)[keep.ndim - 3]


def direction_any_order(dir_logits, dir_labels, dir_valid) -> tuple[int, int]:
  """Correct predictions when each window's slots may be matched to labels in any order.

  Eq. 3 matches slots to labels separately in every window, so a direction head trained with it
  only has to get each window's set of labels right, not which slot carries which. This counts,
  over the valid auditory label slots, the correct predictions under the best permutation of all
  slots per window (eq. 3's matching; it looks at the labels, so it is an upper bound, not a
  score). Returns ``(num_correct, num_counted)``.
  """
  pred = np.moveaxis(dir_logits.argmax(-1), -1, -2)           # [..., Wd, S]
  keep = dir_valid.copy()
  keep[..., -1, :] = False  # the background slot's label is not counted
  labels, kept = np.moveaxis(dir_labels, -1, -2), np.moveaxis(keep, -1, -2)
  # cost[..., w, j, i] = -1 where slot i predicts label slot j's (counted) label in window w
  cost = -((pred[..., None, :] == labels[..., :, None]) & kept[..., :, None]).astype(np.int64)
  fewest, _ = slot_matching.best_permutation(cost)
  return int(-fewest.sum()), int(keep.sum())


def eval_pairs(num_clips: int, num_pairs: int, seed: int) -> list[tuple[int, int]]:
  """The fixed pairs of distinct clips (seeded)."""
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(num_pairs):
    a, b = rng.choice(num_clips, size=2, replace=False)
    pairs.append((int(a), int(b)))
  return pairs


@dataclasses.dataclass
class DirectionTally:
  """Direction predictions and labels counted so far (see :func:`direction_predictions`)."""
  preds: list = dataclasses.field(default_factory=list)
  labels: list = dataclasses.field(default_factory=list)
  clips: list = dataclasses.field(default_factory=list)  # the test clip of each label
  any_order: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2, np.int64))

  def add(self, batch, out, clip_ids: np.ndarray) -> None:
    """One batch of crops of a pair of clips ``clip_ids``."""
    slot_of_label = match_slots(out["cons_logits"], batch["class_labels"], batch["source_mask"])
    p, l, u = direction_predictions(out["dir_logits"], batch["dir_labels"], batch["dir_valid"],
                                    slot_of_label)
    self.preds.append(p)
    self.labels.append(l)
    self.clips.append(clip_ids[u])
    self.any_order += direction_any_order(out["dir_logits"], batch["dir_labels"],
                                          batch["dir_valid"])


def separate_pair(sep, ex: list[dict[str, Any]], pair_cfg: input_pipeline.PairConfig, hop: int,
                  batch_size: int, tally: DirectionTally, clip_ids: np.ndarray
                  ) -> dict[str, np.ndarray]:
  """Sliding-window separation of the sum of the clips ``ex`` (unit gains): the overlap-averaged
  ``model``/``oracle_ibm``/``oracle_irm`` estimates [U, L], ``mixture`` [L] and ``slots``
  [U, S, L]; each crop's direction answers go to ``tally``."""
  wav = np.stack([np.asarray(e["audio"], np.float32) / 32767.0 for e in ex])  # [U, L]
  length, crop = wav.shape[-1], pair_cfg.crop_samples
  starts = sliding_window.crop_starts(length, crop, hop)

  def element(s: int) -> dict[str, np.ndarray]:
    views = [input_pipeline.clip_view(e, min(s // pair_cfg.window_samples,
                                             input_pipeline.crop_windows(
                                                 int(np.sum(e["window_valid"])), pair_cfg) - 1),
                                      1.0, pair_cfg) for e in ex]
    el = {k: np.stack([v[k] for v in views]) for k in views[0]}
    el["audio"] = sliding_window.padded_crop(wav, s, crop).astype(np.float32)
    return el

  def make_batch(chunk: np.ndarray) -> dict[str, np.ndarray]:
    elems = [element(int(s)) for s in chunk]
    return {k: np.stack([e[k] for e in elems]) for k in elems[0]}

  keys = {"model": "video_est", "oracle_ibm": "ibm_est", "oracle_irm": "irm_est",
          "mixture": "mixture", "slots": "slot_est"}
  sums = {}
  for chunk, batch, out in sliding_window.slide(sep, starts, batch_size, make_batch):
    tally.add(batch, out, clip_ids)
    for name, key in keys.items():
      if name not in sums:
        sums[name] = sliding_window.OverlapAverage(out[key].shape[1:-1], length, np.float64)
      for crop_out, st in zip(out[key], chunk):
        sums[name].add(crop_out, st)
  return {name: acc.pop(length) for name, acc in sums.items()} | {"reference": wav}


def separation_scores(refs: np.ndarray, estimates: dict[str, np.ndarray]) -> dict[str, Any]:
  """BSS Eval of every method's ``[P, U, L]`` estimates against the references ``[P, U, L]``."""
  results = {}
  for k, est in estimates.items():
    sdr, sir, sar = bss_eval_videos(refs, est)
    results[k] = {"sdr": float(np.nanmean(sdr)), "sir": float(np.nanmean(sir)),
                  "sar": float(np.nanmean(sar)), "num_valid": int(np.isfinite(sdr).sum()),
                  # [pair][source], None where the reference is silent: for paired comparisons
                  # of two models on the same pairs (bench/synthetic_results.py) and the gains
                  # over the mixture with their standard errors (asmp_jax.run_record).
                  **{f"{name}_per_source": [[None if not np.isfinite(v) else round(float(v), 4)
                                             for v in row] for row in values]
                     for name, values in (("sdr", sdr), ("sir", sir), ("sar", sar))}}
  return results


def direction_scores(tally: DirectionTally, nd: int, train_labels: np.ndarray | None
                     ) -> dict[str, Any]:
  """Direction accuracy, its clustered standard error, the majority vote and the per-clip record
  (module docstring)."""
  pred = np.concatenate(tally.preds) if tally.preds else np.zeros((0,), np.int64)
  lab = np.concatenate(tally.labels) if tally.labels else np.zeros((0,), np.int64)
  any_order = tally.any_order
  results: dict[str, Any] = {}
  results[f"direction_accuracy_{nd}"] = float(np.mean(pred == lab)) if len(lab) else float("nan")
  results["direction_count"] = int(len(lab))
  # How often each class was predicted / is the label, over the counted windows.
  results[f"direction_predicted_counts_{nd}"] = np.bincount(pred, minlength=nd).tolist()
  results[f"direction_label_counts_{nd}"] = np.bincount(lab, minlength=nd).tolist()
  results[f"direction_accuracy_{nd}_any_order"] = (float(any_order[0] / any_order[1])
                                                   if any_order[1] else float("nan"))
  clips = np.concatenate(tally.clips) if tally.clips else np.zeros((0,), np.int64)
  correct = pred == lab
  # Labels of one clip are counted for every crop and pair that holds it: standard errors are
  # clustered by test clip (metrics.clustered_mean_se).
  results[f"direction_accuracy_{nd}_se"] = metrics_lib.clustered_mean_se(correct, clips)[1]
  clip_ids, clip_of_label = np.unique(clips, return_inverse=True)
  results["direction_num_clips"] = int(len(clip_ids))
  if train_labels is not None and len(lab):
    counts = np.bincount(np.asarray(train_labels).reshape(-1), minlength=nd)
    majority = int(np.argmax(counts))
    results[f"majority_vote_{nd}"] = float(np.mean(lab == majority))
    results["majority_class"] = majority
    # The model's accuracy minus the majority vote's on the same labels, paired per label.
    gain, gain_se = metrics_lib.clustered_mean_se(correct.astype(np.float64) - (lab == majority),
                                                  clips)
    results[f"direction_gain_over_majority_{nd}"] = gain
    results[f"direction_gain_over_majority_{nd}_se"] = gain_se
  # Per test clip: [clip index, labels counted, correct]; for paired comparisons across models.
  results["direction_per_clip"] = np.stack(
      [clip_ids, np.bincount(clip_of_label, minlength=len(clip_ids)),
       np.bincount(clip_of_label, weights=correct, minlength=len(clip_ids))],
      -1).astype(np.int64).tolist()
  return results


def evaluate(state, model, config, source, split: str, workdir: str | None = None,
             train_labels: np.ndarray | None = None, writer=None, step: int = 0
             ) -> dict[str, Any]:
  """Runs the protocol of the module docstring on ``source`` (a split's random-access clips):
  pairs -> separate -> score -> report."""
  t0 = time.time()
  pair_cfg = input_pipeline.PairConfig.from_config(config)
  pairs = eval_pairs(len(source), config.eval.num_pairs, config.eval.seed)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  sep = functools.partial(jax.jit(separation_fn(model, config.data.normalise_mix)), variables)
  hop = int(round(config.eval.window_hop_s * pair_cfg.window_samples))
  tally = DirectionTally()
  methods = ("model", "mixture", "oracle_ibm", "oracle_irm")
  refs, estimates, audio_examples = [], {k: [] for k in methods}, []
  for pi, (a, b) in enumerate(pairs):
    out = separate_pair(sep, [source[a], source[b]], pair_cfg, hop,
                        max(1, config.eval.batch_size), tally, np.array((a, b)))
    refs.append(out["reference"])
    out["mixture"] = np.stack([out["mixture"], out["mixture"]])
    for k in methods:
      estimates[k].append(out[k])
    done = pi + 1
    if done < len(pairs) and done % max(1, len(pairs) // 10) == 0:
      _LOG.info("evaluation on %s: %d/%d pairs, %.0f s", split, done, len(pairs),
                time.time() - t0)
    if pi < config.eval.num_audio_summaries:
      audio_examples.append((pi, out["mixture"][0], out["model"], out["slots"]))
  results: dict[str, Any] = {"split": split, "num_pairs": len(pairs), "pairs": pairs,
                             "window_hop_s": config.eval.window_hop_s}
  results.update(separation_scores(np.stack(refs),
                                   {k: np.stack(v) for k, v in estimates.items()}))
  nd = config.model.num_direction_classes
  results.update(direction_scores(tally, nd, train_labels))
  results["sdr_gain_over_mixture"] = results["model"]["sdr"] - results["mixture"]["sdr"]
  results["wall_time_s"] = time.time() - t0
  path = report(results, split, nd, workdir, writer, step, audio_examples,
                pair_cfg.window_samples)
  if path is not None:
    results["evaluation_file"] = str(path)  # (not in the file itself)
  return results


def report(results: dict[str, Any], split: str, nd: int, workdir: str | None, writer, step: int,
           audio_examples: list, sample_rate: int):
  """Writes ``eval_<split>_step<N>.json`` (with a workdir), the TensorBoard summaries and the log
  line; returns the path written, or None."""
  path = None
  if workdir and jax.process_index() == 0:
    from asmp_jax import run_folder  # pylint: disable=g-import-not-at-top
    path = run_folder.write_new_record(run_folder.workdir_path(workdir)
                                       / f"eval_{split}_step{step}.json",
                                       json.dumps(results, indent=2))
    _LOG.info("evaluation record: %s", path)
  if writer is not None:
    flat = {f"eval_{split}/{k}_{m}": v[m] for k, v in results.items() if isinstance(v, dict)
            for m in ("sdr", "sir", "sar")}
    flat.update({f"eval_{split}/{k}": v for k, v in results.items()
                 if k.startswith(("direction_accuracy", "direction_gain", "majority_vote",
                                  "sdr_gain"))})
    writer.scalars(step, flat)
    for pi, mixture, videos, slots in audio_examples:
      writer.audio(step, f"eval_{split}/pair{pi}/mixture", mixture, sample_rate)
      for u in range(videos.shape[0]):
        writer.audio(step, f"eval_{split}/pair{pi}/video{u}", videos[u], sample_rate)
      writer.image(step, f"eval_{split}/pair{pi}/spectrograms", spectrogram_image(mixture, slots))
  _LOG.info("evaluation on %s (%d pairs, %.0f s): model SDR %.2f dB (mixture %.2f, IBM %.2f), "
            "direction acc %.3f ± %.3f (clustered by clip)", split, len(results["pairs"]),
            results["wall_time_s"], results["model"]["sdr"], results["mixture"]["sdr"],
            results["oracle_ibm"]["sdr"], results[f"direction_accuracy_{nd}"],
            results[f"direction_accuracy_{nd}_se"])
  return path


def spectrogram_image(mixture: np.ndarray, slots: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3]: log spectrograms of the mixture and of every separated slot, stacked."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import cm  # pylint: disable=g-import-not-at-top
  rows = [mixture] + [s for s in slots.reshape(-1, slots.shape[-1])]
  imgs = []
  for r in rows:
    mag = np.abs(np.asarray(audio_lib.stft(jnp.asarray(r, jnp.float32))))
    db = 20 * np.log10(mag + 1e-6)
    db = np.clip((db - db.max() + 80) / 80, 0, 1)[::-1]
    imgs.append((cm.magma(db)[..., :3] * 255).astype(np.uint8)[::4])
  return np.concatenate(imgs, axis=0)


def evaluate_checkpoint(workdir: str, split: str | None = None, num_pairs: int | None = None,
                        step: int | None = None,
                        window_hop_s: float | None = None) -> dict[str, Any]:
  """Evaluates the checkpoint of a ``launch.py`` run directory with the protocol above.

  Args:
    workdir: the run directory (its saved config and checkpoints are used).
    split: data split (default ``config.eval.split``).
    num_pairs: fixed pairs (default ``config.eval.num_pairs``).
    step: checkpoint step (default the latest).
    window_hop_s: hop of the sliding window in seconds (default ``config.eval.window_hop_s``;
      the public code uses 0.05).

  Returns:
    The results dict; also written to ``<workdir>/eval_<split>_step<step>.json``, or
    ``..._step<step>_hop<window_hop_s>.json`` when ``window_hop_s`` differs from the run's.
  """
  import types  # pylint: disable=g-import-not-at-top
  from asmp_jax import datasets, restore, run_folder  # pylint: disable=g-import-not-at-top
  from asmp_jax.models import asmp as asmp_model  # pylint: disable=g-import-not-at-top
  config = run_folder.load_saved_config(workdir)
  if config is None:
    raise ValueError(f"{workdir}: no saved config; is this a launch.py run directory?")
  with config.unlocked():
    if split:
      config.eval.split = split
    if num_pairs is not None:
      config.eval.num_pairs = int(num_pairs)
    suffix = ""
    if window_hop_s is not None and float(window_hop_s) != config.eval.window_hop_s:
      config.eval.window_hop_s = float(window_hop_s)
      suffix = f"_hop{float(window_hop_s):g}"
  if config.eval.num_pairs < 1:
    raise ValueError("evaluate_checkpoint: num_pairs must be >= 1")
  if config.eval.window_hop_s * config.data.sample_rate < 1:
    raise ValueError(f"evaluate_checkpoint: window_hop_s={config.eval.window_hop_s} is under one "
                     "sample")
  variables, ckpt_step = restore.restore_variables(workdir, config, step=step)
  model = asmp_model.create_model(config.model)
  builder = datasets.get_builder(config.data)
  state = types.SimpleNamespace(params=variables["params"],
                                batch_stats=variables.get("batch_stats", {}))
  train_labels = datasets.direction_labels(datasets.data_source(builder, "train"), config.model)
  results = evaluate(state, model, config, datasets.data_source(builder, config.eval.split),
                     config.eval.split, None, train_labels=train_labels, step=ckpt_step)
  results["checkpoint_step"] = int(ckpt_step)
  path = run_folder.write_new_record(
      run_folder.workdir_path(workdir) / f"eval_{config.eval.split}_step{ckpt_step}{suffix}.json",
      json.dumps(results, indent=2))
  _LOG.info("evaluation record: %s", path)
  return results


def main(argv=None) -> None:
  """``python -m asmp_jax.evaluate --workdir=DIR [--split=validation] [--num_pairs=40]``."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description="Evaluate a launch.py checkpoint (whole clips, "
                                   "BSS Eval v3, direction accuracy).")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--split", default=None, help="default: the run's config.eval.split")
  parser.add_argument("--num_pairs", type=int, default=None,
                      help="default: the run's config.eval.num_pairs")
  parser.add_argument("--step", type=int, default=None, help="default: the latest checkpoint")
  parser.add_argument("--window_hop_s", type=float, default=None,
                      help="sliding-window hop in seconds (default: the run's "
                      "config.eval.window_hop_s; the public code's is 0.05)")
  parser.add_argument("--paper_pairs", default=None,
                      help="folder holding the authors' Onlysep_Pairlist.pickle and "
                      "DirPred_PairList.pickle: score those pairs with the paper's protocol "
                      "(asmp_jax.paper_protocol) instead of seeded pairs")
  args = parser.parse_args(argv)
  # An import may have configured logging already: reset it, keep other libraries' INFO
  # records (Orbax's) out, and show this module's progress.
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                      force=True)
  _LOG.setLevel(logging.INFO)
  from asmp_jax import restore, summary  # pylint: disable=g-import-not-at-top
  if args.paper_pairs:
    from asmp_jax import paper_protocol  # pylint: disable=g-import-not-at-top
    try:
      r = paper_protocol.evaluate_checkpoint(args.workdir, args.paper_pairs, args.split,
                                             args.step, args.window_hop_s or paper_protocol.HOP_S)
    except (ValueError, restore.InferenceError) as e:
      raise SystemExit(f"error: {e}") from None
    print(paper_protocol.summary_line(args.workdir, r))
    return
  try:
    r = evaluate_checkpoint(args.workdir, args.split, args.num_pairs, args.step,
                            args.window_hop_s)
  except (ValueError, restore.InferenceError) as e:
    raise SystemExit(f"error: {e}") from None
  nd = next(k for k in r if k.removeprefix("direction_accuracy_").isdigit())
  print(f"{args.workdir} step {r['checkpoint_step']}, {summary.final_line(r)}; SIR "
        f"{r['model']['sir']:.2f}, SAR {r['model']['sar']:.2f}; slots in any order per window "
        f"{r[nd + '_any_order']:.3f}")


if __name__ == "__main__":
  main()
