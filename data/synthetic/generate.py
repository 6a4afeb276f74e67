r"""Builds the synthetic data set on disk.

  python -m asmp_data.synthetic.generate --out_dir=/tmp/asmp_synthetic \
      [--num_train=400 --num_val=40 --num_test=80 --seed=0 --workers=2]

writes ``DIR/{train,val,test}/<id>.{mp4,wav,json,npz}`` and ``DIR/manifest.json`` (format version,
generator config, seed, counts, per-clip seeds and classes, and the sha256 of every file). The same
seed and config give byte-identical files. ``--config`` takes a JSON object of
:class:`GeneratorConfig` overrides, e.g. ``--config='{"camera_motion_prob": 0.0}'``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

from asmp_data.synthetic import files
from asmp_data.synthetic import generator
from asmp_data.synthetic import workers
from asmp_data.synthetic.config import GeneratorConfig

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory of the data set.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 400, "Training clips.")
_NUM_VAL = flags.DEFINE_integer("num_val", 40, "Validation clips.")
_NUM_TEST = flags.DEFINE_integer("num_test", 80, "Test clips.")
_SEED = flags.DEFINE_integer("seed", 0, "Data-set seed; per-clip seeds derive from it.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes.")
_CONFIG = flags.DEFINE_string("config", "{}", "JSON object of GeneratorConfig overrides.")


def build(out_dir: str, counts: dict[str, int], seed: int, cfg: GeneratorConfig,
          workers: int) -> dict:
  """Generates every split and writes ``manifest.json``; returns the manifest."""
  os.makedirs(out_dir, exist_ok=True)
  start = time.perf_counter()
  splits = generator.generate_splits(out_dir, counts, seed, cfg, num_workers=workers,
                                     progress=generator.ProgressReport(
                                         lambda m: print(m, flush=True)))
  elapsed = time.perf_counter() - start
  manifest = {
      "format_version": generator.FORMAT_VERSION,
      "generator": "asmp_data.synthetic",
      "seed": seed,
      "config": cfg.to_dict(),
      "counts": dict(counts),
      "splits": splits,
  }
  files.write_json(os.path.join(out_dir, "manifest.json"), manifest)
  total = sum(counts.values())
  print(f"wrote {total} clips to {out_dir} in {elapsed:.1f} s "
        f"({total / max(elapsed, 1e-9):.2f} clips/s with {workers} worker(s))", flush=True)
  return manifest


def main(argv):
  del argv
  if not _OUT_DIR.value:
    raise app.UsageError("--out_dir is required")
  try:
    overrides = json.loads(_CONFIG.value)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--config is not valid JSON: {e}") from None
  if not isinstance(overrides, dict):
    raise app.UsageError("--config must be a JSON object")
  cfg = GeneratorConfig.from_dict(overrides)
  for name, value in (("num_train", _NUM_TRAIN.value), ("num_val", _NUM_VAL.value),
                      ("num_test", _NUM_TEST.value)):
    if value < 0:
      raise app.UsageError(f"--{name}={value}: expected a non-negative number of clips")
  if _WORKERS.value < 1:
    raise app.UsageError(f"--workers={_WORKERS.value}: expected at least 1")
  counts = {"train": _NUM_TRAIN.value, "val": _NUM_VAL.value, "test": _NUM_TEST.value}
  with workers.stop_on_sigterm(f"generating clips into {_OUT_DIR.value}",
                               "whole clips are kept and the same command resumes from them"):
    build(_OUT_DIR.value, counts, _SEED.value, cfg, _WORKERS.value)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
