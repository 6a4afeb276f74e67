"""A run's own record of what it was and what it gave: ``launch.py --run_record=FILE``.

Written by the run at its end (never by hand), as JSON:

  * ``command``: the command line; ``commit``: the repository's HEAD (``-dirty`` when tracked
    files differ from it); ``config_file`` and ``config_sha256``: the config file given to
    ``--config`` and the sha256 of its bytes; both read when the run starts (`provenance`), and
    ``config_sha256_at_end`` added if the file changed while it ran; ``config_overrides``:
    ``--config.*`` values;
  * ``machine``: CPU model, logical CPUs usable, memory, JAX backend and devices;
  * ``wall_s``: seconds of this invocation's data build (``build``, data set preparation
    included), training (``train``: state set-up, compilation and the steps), final evaluation
    (``eval``) and ``total``; ``steps`` reached and ``start_step`` (0 unless resumed: a resumed
    run's record covers only the last invocation, and says so);
  * ``test``: on ``config.eval.split``, the SDR, SIR and SAR gains over the mixture (dB) with
    standard errors clustered by pair; the direction accuracy, the majority vote of the training
    labels and the gain over it with standard errors clustered by test clip (also in points,
    ``direction_gain_points``); the ideal binary
    mask's SDR (the ceiling of mask-based separation on these mixtures) and its gain;
  * ``evaluation_file``: the run's own ``eval_<split>_step<N>.json`` holding every figure,
    relative to the directory the run started in when it lies below it (so that a committed
    record names no path of the machine it ran on).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from typing import Any, Mapping

from asmp_jax import files
from asmp_jax import summary


def machine() -> dict[str, Any]:
  """CPU model, usable logical CPUs, memory and the JAX backend of this machine."""
  info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      models = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    info["cpu_model"] = models[0] if models else platform.processor()
  except OSError:
    info["cpu_model"] = platform.processor()
  info["logical_cpus"] = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count())
  try:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    info["memory_gb"] = round(pages * size / 2**30, 1)
  except (ValueError, OSError, AttributeError):
    pass
  import jax  # pylint: disable=g-import-not-at-top
  info["jax_backend"] = jax.default_backend()
  info["devices"] = [str(d) for d in jax.devices()]
  return info


def git_commit(path: str) -> str | None:
  """HEAD of the repository holding ``path`` (``-dirty`` if tracked files changed), or None."""
  where = os.path.dirname(os.path.abspath(path)) or "."
  try:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                         text=True, check=True, timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return sha + ("-dirty" if dirty else "")


def provenance(config_file: str) -> dict[str, Any]:
  """What the run is started from: the repository's HEAD and the config file's sha256 (read before
  training, so that commits made while a long run trains do not enter its record)."""
  return {"commit": git_commit(config_file), "config_sha256": files.sha256_file(config_file)}


def gains(results: Mapping[str, Any]) -> dict[str, float]:
  """SDR/SIR/SAR of the model minus the mixture's, mean over the sources both score, with the
  standard error clustered by pair (``<metric>_gain``, ``<metric>_gain_se``)."""
  out = {}
  for m in ("sdr", "sir", "sar"):
    if f"{m}_per_source" in results["model"]:
      out[f"{m}_gain"], out[f"{m}_gain_se"] = summary.gain_over_mixture_se(dict(results), m)
  return out


def test_figures(results: Mapping[str, Any]) -> dict[str, Any]:
  """The record's ``test`` section from an evaluation's results (module docstring)."""
  nd = next(int(k.removeprefix("direction_accuracy_")) for k in results
            if k.removeprefix("direction_accuracy_").isdigit())
  out: dict[str, Any] = {"split": results["split"], "num_pairs": results["num_pairs"],
                         "window_hop_s": results.get("window_hop_s")}
  out.update(gains(results))
  out.update(
      model_sdr=results["model"]["sdr"], mixture_sdr=results["mixture"]["sdr"],
      ideal_mask_sdr=results["oracle_ibm"]["sdr"],
      ideal_mask_sdr_gain=results["oracle_ibm"]["sdr"] - results["mixture"]["sdr"],
      direction_classes=nd,
      direction_accuracy=results[f"direction_accuracy_{nd}"],
      direction_accuracy_se=results[f"direction_accuracy_{nd}_se"],
      majority_vote=results.get(f"majority_vote_{nd}"),
      direction_gain=results.get(f"direction_gain_over_majority_{nd}"),
      direction_gain_se=results.get(f"direction_gain_over_majority_{nd}_se"))
  if out["direction_gain"] is not None:
    out["direction_gain_points"] = 100.0 * out["direction_gain"]
    out["direction_gain_points_se"] = 100.0 * out["direction_gain_se"]
  return out


def build(*, argv: list[str], config_file: str, overrides: Mapping[str, Any],
          outcome: Mapping[str, Any], evaluation_file: str | None = None,
          started: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The record (module docstring) of a finished run.

  Args:
    argv: the command line (``sys.argv``).
    config_file: the file given to ``--config``.
    overrides: the ``--config.*`` values.
    outcome: what ``train.train_and_evaluate`` filled in (``wall_s``, ``steps``, ``start_step``,
      ``results``).
    evaluation_file: the evaluation record the run wrote.
    started: `provenance` read when the run started; None reads it now.
  """
  now = provenance(config_file)
  started = dict(started or now)
  wall = dict(outcome["wall_s"])
  wall["total"] = sum(wall.get(k, 0.0) for k in ("build", "train", "eval"))
  record: dict[str, Any] = {
      "command": shlex.join(["python"] + list(argv)),
      "commit": started["commit"],
      "config_file": config_file,
      "config_sha256": started["config_sha256"],
      "config_overrides": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in overrides.items()},
      "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "machine": machine(),
      "wall_s": {k: round(float(v), 1) for k, v in wall.items()},
      "steps": int(outcome["steps"]),
      "start_step": int(outcome["start_step"]),
  }
  if now["config_sha256"] != started["config_sha256"]:
    record["config_sha256_at_end"] = now["config_sha256"]
  if outcome.get("results") is not None:
    record["test"] = test_figures(outcome["results"])
  if evaluation_file:
    record["evaluation_file"] = portable_path(evaluation_file)
  return record


def portable_path(path: str, start: str | None = None) -> str:
  """``path`` relative to ``start`` (the working directory) if it lies below it, else as given."""
  start = os.path.abspath(start or os.getcwd())
  full = os.path.abspath(path)
  if os.path.commonpath([full, start]) == start:
    return os.path.relpath(full, start)
  return path


def write(path: str, record: Mapping[str, Any]) -> None:
  """Writes the record atomically (a temporary file renamed over ``path``)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, allow_nan=True)
    f.write("\n")
  os.replace(tmp, path)
