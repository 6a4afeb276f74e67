"""The synthetic benchmark table: trains and evaluates each variant, prints a markdown table.

Every variant is `configs/synthetic.py` plus config overrides (README, "variants"), trained and
evaluated by ``launch.py`` in ``<root>/<variant>`` (an existing finished workdir is only
re-read; an interrupted one resumes). The mixture and oracle rows come from the evaluation of
the first variant (they do not depend on the model). Wall time is that of the ``launch.py``
process on this machine (training + evaluation, data set already built).

  python bench/synthetic_results.py --root=runs/table                      # all variants
  python bench/synthetic_results.py --root=runs/table --variants=asmp,no_vision
  python bench/synthetic_results.py --root=runs/table --summarize_only     # table from workdirs
  python bench/synthetic_results.py --root=runs/table --summarize_only --class_overlap
  python bench/synthetic_results.py --paired A/eval_test.json B/eval_test.json  # B - A per pair
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent

VARIANTS = {
    "asmp": ("ASMP (graph + motion)", []),
    "graph_only": ("ASMP, only 2.5D graph (λ4 = 0)", ["--config.loss.lambda_dir=0"]),
    "multiscale": ("ASMP, multiscale Chamfer", ["--config.model.graph_mode=multiscale"]),
    "avsgs": ("AVSGS (equal edge weights)", ["--config.model.graph_mode=equal"]),
    "cosep": ("Co-Separation (single node)", ["--config.model.graph_mode=single_node"]),
    "no_vision": ("control: no vision", ["--config.model.graph_mode=no_vision"]),
    "class_label": ("audio-only, true class labels", ["--config.model.graph_mode=class_label"]),
    "asmp_dir28": ("ASMP, 28 direction classes", ["--config.model.num_direction_classes=28"]),
    # Levers for separation quality (not the paper's table): 4x the training clips (the "large"
    # build shares the default's test clips, so the pairs compare), and a U-Net twice as wide.
    "asmp_large": ("ASMP, 1600 training clips", ["--config.data.builder_config=large"]),
    "asmp_wide": ("ASMP, U-Net width x0.25", ["--config.model.unet_width_mult=0.25"]),
    "asmp_wide_large": ("ASMP, U-Net width x0.25, 1600 training clips",
                        ["--config.data.builder_config=large",
                         "--config.model.unet_width_mult=0.25"]),
    "asmp_wide_xlarge": ("ASMP, U-Net width x0.25, 3200 training clips",
                         ["--config.data.builder_config=xlarge",
                          "--config.model.unet_width_mult=0.25"]),
    # The direction loss matched once per clip by the consistency permutation (not eq. 3's
    # per-window minimum), on 10 and 28 direction classes.
    "asmp_share": ("ASMP, direction loss matched per clip",
                   ["--config.loss.share_direction_permutation=True"]),
    "asmp_dir28_share": ("ASMP, 28 classes, direction loss matched per clip",
                         ["--config.model.num_direction_classes=28",
                          "--config.loss.share_direction_permutation=True"]),
    # The direction head reading each 1 s window's own scene graph (config.model.
    # dir_window_graphs), with the loss matched per clip as the evaluation matches.
    "asmp_share_windows": ("ASMP, direction loss matched per clip, each window's own graph",
                           ["--config.loss.share_direction_permutation=True",
                            "--config.model.dir_window_graphs=True"]),
    # The "octant" builds, where every moving window moves along all three axes, so that its
    # 10-class label is set by the motion (docs/RESULTS.md, "Direction labels set by the motion").
    "octant_share": ("ASMP on octant, direction loss matched per clip",
                     ["--config.data.builder_config=octant",
                      "--config.loss.share_direction_permutation=True"]),
    "octant_share_windows": ("ASMP on octant, direction loss matched per clip, each window's "
                             "own graph",
                             ["--config.data.builder_config=octant",
                              "--config.loss.share_direction_permutation=True",
                              "--config.model.dir_window_graphs=True"]),
    "octant_large_share_windows": ("ASMP on octant_large (1600 clips), direction loss matched per "
                                   "clip, each window's own graph",
                                   ["--config.data.builder_config=octant_large",
                                    "--config.loss.share_direction_permutation=True",
                                    "--config.model.dir_window_graphs=True"]),
}


def run_variant(root: pathlib.Path, name: str, extra: list[str]) -> None:
  workdir = root / name
  if (workdir / "eval_test.json").exists():
    print(f"{name}: finished before, reading {workdir}", flush=True)
    return
  cmd = [sys.executable, str(REPO / "launch.py"), "--config=" + str(REPO / "configs/synthetic.py"),
         f"--workdir={workdir}"] + VARIANTS[name][1] + extra
  print("running:", " ".join(cmd), flush=True)
  t0 = time.time()
  subprocess.run(cmd, check=True)
  elapsed = time.time() - t0
  (workdir / "wall_time_s.json").write_text(json.dumps({"launch_wall_time_s": elapsed}))


def fmt(x) -> str:
  return "—" if x is None else f"{x:.2f}"


def per_pair_sdr(workdir: pathlib.Path, results: dict, steps: int | None, key: str = "model"
                 ) -> np.ndarray | None:
  """Mean SDR of each test pair (NaN where no source is valid), or None if not recorded.

  ``key``: "model", "mixture", "oracle_ibm" or "oracle_irm". Taken from ``eval_test.json``, or,
  for a workdir evaluated before per-source SDRs were recorded, from
  ``python -m asmp_jax.evaluate --workdir=DIR --split=test`` of the final step ``steps`` (None:
  no fallback).
  """
  per_source = results[key].get("sdr_per_source")
  if per_source is None and steps is not None:
    later = workdir / f"eval_test_step{steps}.json"
    again = json.loads(later.read_text()) if later.exists() else None
    if again is not None and again["pairs"] == results["pairs"]:
      per_source = again[key].get("sdr_per_source")
  if per_source is None:
    return None
  arr = np.array(per_source, dtype=float)  # None (silent reference) -> NaN
  valid = np.isfinite(arr).any(axis=1)
  out = np.full(len(arr), np.nan)
  out[valid] = np.nanmean(arr[valid], axis=1)
  return out


def mean_se(x: np.ndarray) -> str:
  """Mean of the finite entries ± its standard error, with their count; "" if fewer than 2."""
  x = x[np.isfinite(x)]
  if len(x) < 2:
    return ""
  return f"{x.mean():+.2f} ± {x.std(ddof=1) / np.sqrt(len(x)):.2f} ({len(x)} pairs)"


def direction_cell(results: dict, ndir: int) -> str:
  """Direction accuracy with its standard error clustered by test clip where recorded (evaluations
  made before that was recorded show the accuracy alone), and the class count."""
  acc = results.get(f"direction_accuracy_{ndir}")
  se = results.get(f"direction_accuracy_{ndir}_se")
  return (f"{fmt(acc)} ({ndir})" if acc is None or se is None
          else f"{acc:.3f} ± {se:.3f} ({ndir})")


def paired_difference(a: np.ndarray | None, b: np.ndarray | None) -> str:
  """Mean of a − b over the pairs valid in both, ± its standard error; "" if unknown."""
  if a is None or b is None or len(a) != len(b):
    return ""
  return mean_se(a - b)


def results_path(workdir: pathlib.Path, step: int | None) -> pathlib.Path:
  """The test results of the run's end, or of checkpoint ``step`` (``asmp_jax.evaluate --step``)."""
  return workdir / ("eval_test.json" if step is None else f"eval_test_step{step}.json")


def shared_class_pairs(workdir: pathlib.Path, pairs: list[list[int]]) -> np.ndarray:
  """Whether the two test clips of each pair have a sounding class in common (from the data)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from asmp_jax import datasets  # pylint: disable=g-import-not-at-top
  data = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text())["data"])
  source = datasets.data_source(datasets.get_builder(data), "test")
  classes = [{int(k) for k in np.asarray(source[i]["source_class"]) if k >= 0}
             for i in range(len(source))]
  return np.array([bool(classes[a] & classes[b]) for a, b in pairs])


def summarize_class_overlap(root: pathlib.Path, names: list[str], step: int | None = None
                            ) -> None:
  """SDR gain over the mixture on pairs whose videos share a sounding class, and on the others."""
  print("\nSDR − mixture SDR per test pair (mean ± s.e.), by whether the two videos have a "
        "sounding class in common\n")
  print("| method | pairs sharing a class | pairs with no class in common |")
  print("|---|---|---|")
  shared = None
  for name in names:
    path = results_path(root / name, step)
    if not path.exists():
      continue
    r = json.loads(path.read_text())
    steps = step or json.loads((root / name / "config.json").read_text())["train"][
        "num_train_steps"]
    model = per_pair_sdr(root / name, r, steps)
    mixture = per_pair_sdr(root / name, r, steps, key="mixture")
    if model is None or mixture is None:
      print(f"| {VARIANTS[name][0]} | (no per-source SDRs) | |")
      continue
    if shared is None:
      shared = shared_class_pairs(root / name, r["pairs"])
    gain = model - mixture
    print(f"| {VARIANTS[name][0]} | {mean_se(gain[shared])} | {mean_se(gain[~shared])} |")


def summarize(root: pathlib.Path, names: list[str], step: int | None = None) -> None:
  rows, floor = [], None
  for name in names:
    path = results_path(root / name, step)
    if not path.exists():
      print(f"{name}: no {path}", file=sys.stderr)
      continue
    r = json.loads(path.read_text())
    floor = floor or r
    cfg = json.loads((root / name / "config.json").read_text())
    wall = root / name / "wall_time_s.json"
    wall_s = (json.loads(wall.read_text())["launch_wall_time_s"]
              if wall.exists() and step is None else None)
    ndir = cfg["model"]["num_direction_classes"]
    steps = step or cfg["train"]["num_train_steps"]
    rows.append((VARIANTS[name][0], r["model"], direction_cell(r, ndir),
                 r.get(f"majority_vote_{ndir}"), steps, cfg["seed"], wall_s,
                 per_pair_sdr(root / name, r, steps)))
  if floor is None:
    sys.exit("no finished variant")
  print(f"\ntest split, {floor['num_pairs']} fixed pairs, whole clips, hop "
        f"{floor['window_hop_s']} s; BSS Eval v3 (dB, mean over sources)\n")
  print("| method | SDR | SIR | SAR | direction acc. (± s.e. by clip; classes) | majority vote "
        "| steps | seed |"
        f" wall time | SDR − {rows[0][0]} (paired, ± s.e.) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for key, label in (("mixture", "mixture (input as estimate)"),
                     ("oracle_ibm", "oracle ideal binary mask"),
                     ("oracle_irm", "oracle ideal ratio mask")):
    m = floor[key]
    print(f"| {label} | {fmt(m['sdr'])} | {fmt(m['sir'])} | {fmt(m['sar'])} | | | | | | |")
  reference_pairs = rows[0][-1]
  for i, (label, m, direction, maj, steps, seed, wall_s, pairs) in enumerate(rows):
    wall_txt = "—" if wall_s is None else f"{wall_s / 60:.0f} min"
    diff = "" if i == 0 else paired_difference(pairs, reference_pairs)
    print(f"| {label} | {fmt(m['sdr'])} | {fmt(m['sir'])} | {fmt(m['sar'])} | "
          f"{direction} | {fmt(maj)} | {steps} | {seed} | {wall_txt} | {diff} |")


def compare_pair_results(path_a: pathlib.Path, path_b: pathlib.Path) -> str:
  """Markdown lines: two evaluations of the same test pairs (e.g. two checkpoints of one run).

  Each run's mean SDR and gain over the mixture, and B − A per pair (mean ± s.e.). Refuses
  evaluations of different pairs, or without per-source SDRs.
  """
  missing = [str(p) for p in (path_a, path_b) if not pathlib.Path(p).is_file()]
  if missing:
    raise FileNotFoundError(
        f"no evaluation JSON at {missing} (launch.py writes WORKDIR/eval_test.json; "
        "python -m asmp_jax.evaluate writes WORKDIR/eval_test_stepN.json)")
  a, b = (json.loads(pathlib.Path(p).read_text()) for p in (path_a, path_b))
  if a["pairs"] != b["pairs"]:
    raise ValueError(f"{path_a} and {path_b} evaluate different test pairs")
  rows, per_pair = [], []
  for path, r in ((path_a, a), (path_b, b)):
    model = per_pair_sdr(pathlib.Path(path).parent, r, steps=None)
    mixture = per_pair_sdr(pathlib.Path(path).parent, r, steps=None, key="mixture")
    if model is None or mixture is None:
      raise ValueError(f"{path} records no per-source SDRs; re-evaluate it with "
                       "python -m asmp_jax.evaluate")
    per_pair.append(model)
    rows.append(f"| {path} | {fmt(r['model']['sdr'])} | {mean_se(model - mixture)} |")
  return "\n".join(["| evaluation | SDR | SDR − mixture per pair (± s.e.) |", "|---|---|---|",
                    *rows, "", f"B − A per pair: {paired_difference(per_pair[1], per_pair[0])}"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="runs/table")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--summarize_only", action="store_true")
  parser.add_argument("--extra", default="", help="overrides for every variant, space-separated")
  parser.add_argument("--step", type=int, default=None,
                      help="with --summarize_only: compare checkpoint STEP of every variant, "
                      "from eval_test_stepSTEP.json (python -m asmp_jax.evaluate "
                      "--workdir=ROOT/VARIANT --split=test --step=STEP)")
  parser.add_argument("--class_overlap", action="store_true",
                      help="also print each variant's gain on test pairs that share a sounding "
                      "class and on the others (reads the data set's test split)")
  parser.add_argument("--paired", nargs=2, metavar=("A", "B"), default=None,
                      help="only compare two evaluation JSONs of the same test pairs (e.g. "
                      "two checkpoints' eval_test*.json): each SDR and B - A per pair")
  args = parser.parse_args()
  if args.paired:
    try:
      print(compare_pair_results(*args.paired))
    except (FileNotFoundError, ValueError) as e:
      sys.exit(str(e))
    return
  names = [v for v in args.variants.split(",") if v]
  unknown = [v for v in names if v not in VARIANTS]
  if unknown:
    sys.exit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
  if args.step is not None and not args.summarize_only:
    sys.exit("--step compares evaluated checkpoints: use it with --summarize_only")
  root = pathlib.Path(args.root)
  if not args.summarize_only:
    for name in names:
      run_variant(root, name, args.extra.split())
  summarize(root, names, args.step)
  if args.class_overlap:
    summarize_class_overlap(root, names, args.step)


if __name__ == "__main__":
  main()
