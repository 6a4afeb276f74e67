"""Can the direction head hear motion when separation is perfect? A probe on the generator's stems.

ASMP's direction head h_Lambda sees a source's *separated* spectrogram. This script trains the
same module (``DirectionClassifier`` with the sizes of ``configs/synthetic.py``, its slot-embedding
input set to zeros) alone, on the warped log-magnitude spectrogram of audio we choose:

  * ``--input=stem``: the source's own stem from the generator (what a perfect separator gives);
  * ``--input=video``: the whole audio of the source's video (both of its sources and the
    background: what a perfect separation of the two videos, but not of their sources, gives).

Crops of 65535 samples start on every label window (as in ``asmp_jax.evaluate``, hop 1 s); each
crop's six 1 s windows are classified and scored against the data set's labels (``dir10`` /
``dir28``), counting a window once per crop that covers it, like the evaluation. The majority
vote predicts the most frequent label of the training split. Sources whose stem cannot be told
apart (two objects of the same class in one clip) are left out, in both splits.

  python bench/direction_probe.py [--input=stem|video] [--num_classes=10] [--steps=1500]

Needs the built default data set and its raw clips (``~/tensorflow_datasets``, made on first use
of ``configs/synthetic.py``).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asmp_jax import audio, datasets, input_pipeline, schema  # noqa: E402
from asmp_jax.models.classifiers import DirectionClassifier  # noqa: E402
from asmp_data.synthetic import classes as synth_classes  # noqa: E402
from train_step_bench import load_config  # noqa: E402  (bench/ is this script's sys.path[0])

REPO = pathlib.Path(__file__).resolve().parent.parent
RAW_SPLITS = {"train": "train", "test": "test", "validation": "val"}


def raw_dir(builder, split: str) -> pathlib.Path:
  """Where the builder generated the raw clips of ``split`` (its download directory)."""
  cfg = builder.builder_config
  return (pathlib.Path(builder.data_dir).parents[2] / "downloads" / "asmp_synthetic_clips"
          / f"{cfg.name}-{builder.VERSION}" / RAW_SPLITS[split])


def source_rows(source, clip_dir: pathlib.Path, key: str, use: str):
  """(audio [N, L] float32, labels [N, W] int, valid [N, W] bool) per identifiable source."""
  auditory_ids = [synth_classes.class_id(c.name) for c in synth_classes.SOUNDING_CLASSES]
  wavs, labs, vals = [], [], []
  skipped = 0
  for i in range(len(source)):
    ex = source[i]
    clip_id = np.asarray(ex["clip_id"]).item().decode()
    meta = json.loads((clip_dir / f"{clip_id}.json").read_text())
    stems = np.load(clip_dir / f"{clip_id}.npz")["stems"]
    video = np.asarray(ex["audio"], np.float32) / 32767.0
    for a, k in enumerate(np.asarray(ex["source_class"])):
      if k < 0:
        continue
      objs = [o for o in meta["objects"] if o["class_id"] == auditory_ids[k] and o["sounding"]]
      if len(objs) != 1:
        skipped += 1
        continue
      wav = stems[objs[0]["stem"]] if use == "stem" else video
      n = min(len(wav), len(video))
      wavs.append(np.pad(wav[:n], (0, len(video) - n)).astype(np.float32))
      labs.append(np.asarray(ex[key])[:, a])
      vals.append(np.asarray(ex["window_valid"], bool) & (np.asarray(ex[key])[:, a] >= 0))
  return np.stack(wavs), np.stack(labs), np.stack(vals), skipped


def crops(n_rows: int, n_windows: np.ndarray, cfg) -> np.ndarray:
  """Every (row, start window) whose crop starts inside the clip's valid windows."""
  return np.array([(r, w) for r in range(n_rows)
                   for w in range(input_pipeline.crop_windows(int(n_windows[r]), cfg))])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default=str(REPO / "configs/synthetic.py"))
  parser.add_argument("--input", choices=("stem", "video"), default="stem")
  parser.add_argument("--num_classes", type=int, choices=(10, 28), default=10)
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  config = load_config(args.config)
  builder = datasets.get_builder(config.data)
  pair_cfg = input_pipeline.PairConfig.from_config(config)
  key = schema.direction_key(args.num_classes)
  data = {}
  for split in ("train", "test"):
    clip_dir = raw_dir(builder, split)
    if not clip_dir.is_dir():
      raise SystemExit(f"error: no raw clips at {clip_dir}; build the data set of {args.config} "
                       "first (it is built on first use)")
    wav, lab, val, skipped = source_rows(datasets.data_source(builder, split), clip_dir, key,
                                         args.input)
    nwin = np.asarray([np.sum(v) for v in val])
    data[split] = (wav, lab, val, crops(len(wav), nwin, pair_cfg))
    print(f"{split}: {len(wav)} sources ({skipped} left out: same-class objects), "
          f"{len(data[split][3])} crops", flush=True)

  m = config.model
  head = DirectionClassifier(args.num_classes, m.dir_window_cols, m.dir_window_stride,
                             m.num_dir_windows, m.cls_width, tuple(m.cls_blocks))
  crop_len, win = pair_cfg.crop_samples, pair_cfg.window_samples
  nd = m.num_dir_windows

  def batch_of(split, idx):
    wav, lab, val, cr = data[split]
    rows, starts = cr[idx, 0], cr[idx, 1]
    x = np.stack([np.pad(wav[r, s * win:s * win + crop_len],
                         (0, max(0, s * win + crop_len - wav.shape[1])))
                  for r, s in zip(rows, starts)])
    y = np.full((len(idx), nd), 0, np.int32)
    ok = np.zeros((len(idx), nd), bool)
    for i, (r, s) in enumerate(zip(rows, starts)):
      w = np.arange(s, min(s + nd, lab.shape[1]))
      y[i, :len(w)] = np.maximum(lab[r, w], 0)
      ok[i, :len(w)] = val[r, w]
    return jnp.asarray(x[:, :crop_len]), jnp.asarray(y), jnp.asarray(ok)

  def features(x):
    return audio.spectrogram_features(x)["warped_log_mag"]

  zeros = jnp.zeros((args.batch_size, m.embed_dim))
  x0, _, _ = batch_of("train", np.arange(args.batch_size))
  variables = head.init(jax.random.PRNGKey(args.seed), features(x0), zeros, train=False)
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.adamw(args.learning_rate, weight_decay=config.train.weight_decay)
  opt = tx.init(params)

  @jax.jit
  def step(params, stats, opt, x, y, ok):
    def loss_fn(p):
      logits, upd = head.apply({"params": p, "batch_stats": stats}, features(x), zeros,
                               train=True, mutable=["batch_stats"])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(ce * ok) / jnp.maximum(jnp.sum(ok), 1), upd["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, loss

  @jax.jit
  def predict(params, stats, x):
    return head.apply({"params": params, "batch_stats": stats}, features(x),
                      jnp.zeros((x.shape[0], m.embed_dim)), train=False).argmax(-1)

  rng = np.random.default_rng(args.seed)
  t0 = time.time()
  n_train = len(data["train"][3])
  for s in range(1, args.steps + 1):
    idx = rng.choice(n_train, size=args.batch_size, replace=False)
    params, stats, opt, loss = step(params, stats, opt, *batch_of("train", idx))
    if s % 100 == 0 or s == args.steps:
      print(f"step {s}/{args.steps} loss {float(loss):.3f} ({time.time() - t0:.0f} s)", flush=True)

  train_labels = np.concatenate([l[v] for l, v in zip(data["train"][1], data["train"][2])])
  majority = int(np.argmax(np.bincount(train_labels, minlength=args.num_classes)))
  for split in ("train", "test"):
    n = len(data[split][3])
    correct = counted = maj = 0
    for i in range(0, n, args.batch_size):
      idx = np.arange(i, min(i + args.batch_size, n))
      pad = args.batch_size - len(idx)
      x, y, ok = batch_of(split, np.concatenate([idx, np.repeat(idx[-1:], pad)]))
      pred = np.asarray(predict(params, stats, x))[:len(idx)]
      y, ok = np.asarray(y)[:len(idx)], np.asarray(ok)[:len(idx)]
      correct += int(np.sum((pred == y) & ok))
      maj += int(np.sum((y == majority) & ok))
      counted += int(np.sum(ok))
    print(f"{split}: direction accuracy ({args.num_classes} classes, input {args.input}) "
          f"{correct / counted:.3f}, majority vote {maj / counted:.3f}, {counted} windows",
          flush=True)


if __name__ == "__main__":
  main()
