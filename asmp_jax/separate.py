"""Separates the sounds of a video file with a trained ASMP checkpoint.

  python -m asmp_jax.separate --workdir=runs/synthetic --video=clip.mp4 --out_dir=out/clip
  python -m asmp_jax.separate --workdir=RUN --video=clip.mkv --audio=mix.flac \\
      --detections=dets.h5 --depth=depth.npz --flow=flow.npz --out_dir=OUT
  python -m asmp_jax.separate --workdir=RUN --video=clip.mp4 --out_dir=OUT \\
      --detector_weights=frcnn.pth --depth_weights=dpt_dir --flow_weights=raft.pth

Writes to ``--out_dir``:
  ``source_0.wav``, ``source_1.wav``, ... and ``background.wav``: the separated sounds at the
  input's sample rate and length (mono);
  ``summary.json``: inputs, checkpoint, providers used (and fallback warnings), per source the
  predicted sound class and the per-window motion directions, per window the graph's size;
  ``separation.png``: the scene graph on a reference frame with the predicted directions, and the
  spectrograms of the mixture and of every source (asmp_jax.visualize);
  ``.asmp_separation.json``: the names of the files above, which ``--overwrite`` may replace.

Everything is written into a temporary directory beside ``--out_dir`` and renamed at the end, so
a failed run leaves no partial outputs. ``--overwrite`` replaces a directory only when it holds a
previous separation's outputs and nothing else; a workdir, the current or home directory and
anything else are refused. A failure prints one line ``error: ...`` and exits with
status 1. What each option does and which fallbacks apply: docs/inference.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator

from absl import app
from absl import flags
from absl import logging

from asmp_jax import files as file_records

SUMMARY_FILE = "summary.json"
PICTURE_FILE = "separation.png"
# Written beside the outputs: names the files a separation wrote, so that --overwrite replaces a
# directory only when it holds those and nothing else.
MARKER_FILE = ".asmp_separation.json"
MARKER_WRITER = "asmp_jax.separate"


class UsageError(ValueError):
  """A command-line argument is missing or contradictory."""


class _QuietLibraries:
  """Drops INFO records of Orbax/etils/TFDS (they log every file operation) and the warnings
  that only restate what this command asked for (Orbax's "read only" on the restore)."""

  EXPECTED_WARNINGS = ("Given directory is read only",)

  def filter(self, record) -> bool:
    if not any(f"/{lib}/" in record.pathname
               for lib in ("orbax", "etils", "tensorflow_datasets", "grain")):
      return True
    return record.levelno >= 30 and not record.getMessage().startswith(self.EXPECTED_WARNINGS)


def _written_by_separate(out_dir: str) -> set[str] | None:
  """The files a previous separation wrote into ``out_dir`` (from its marker), or None."""
  marker = file_records.read_json_object(os.path.join(out_dir, MARKER_FILE))
  if marker is None or marker.get("written_by") != MARKER_WRITER:
    return None
  names = marker.get("files")
  if not isinstance(names, list):
    return None
  return {n for n in names if isinstance(n, str)}


def _never_replaced(path: str) -> str | None:
  """Why ``path`` may never be replaced (None if nothing forbids it): the current directory,
  the home directory, a folder holding either, or a training workdir."""
  real = os.path.realpath(path)
  for name, other in (("the current directory", os.getcwd()),
                      ("your home directory", os.path.expanduser("~"))):
    other = os.path.realpath(other)
    if real == other:
      return f"is {name}"
    if other.startswith(real.rstrip(os.sep) + os.sep):
      return f"holds {name}"
  if (os.path.exists(os.path.join(real, "config.json"))
      or os.path.isdir(os.path.join(real, "checkpoints"))):
    return "is a training workdir (config.json, checkpoints/)"
  return None


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
  """An existing ``--out_dir`` must be an empty directory, or with ``--overwrite`` hold exactly
  a previous separation's outputs (its marker file lists them); anything else is refused."""
  if not os.path.exists(out_dir):
    return
  if not os.path.isdir(out_dir):
    raise UsageError(f"--out_dir {out_dir} exists and is not a directory")
  why = _never_replaced(out_dir)
  if why:
    raise UsageError(f"--out_dir {out_dir} {why}; it is never replaced: name a new directory")
  entries = set(os.listdir(out_dir))
  if not entries:
    return
  if not overwrite:
    raise UsageError(f"--out_dir {out_dir} exists and is not empty (pass --overwrite to "
                     "replace a previous separation's outputs)")
  written = _written_by_separate(out_dir)
  if written is None:
    raise UsageError(f"--out_dir {out_dir} holds no previous separation (no {MARKER_FILE}); "
                     "--overwrite replaces only a separation's outputs: name a new directory")
  others = sorted(entries - written - {MARKER_FILE})
  if others:
    raise UsageError(f"--out_dir {out_dir} holds files no separation wrote "
                     f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); "
                     "--overwrite replaces only a separation's outputs: name a new directory")


def _write_marker(out_dir: str) -> None:
  names = sorted(n for n in os.listdir(out_dir) if n != MARKER_FILE)
  with open(os.path.join(out_dir, MARKER_FILE), "w", encoding="utf-8") as f:
    json.dump({"written_by": MARKER_WRITER, "files": names}, f, indent=1)


@contextlib.contextmanager
def staged_output(out_dir: str, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary directory beside ``out_dir``; moves it onto ``out_dir`` on success.

  On any exception the temporary directory is removed and ``out_dir`` is left as it was. The
  outputs get a marker file listing them (what ``--overwrite`` may replace later). An existing
  ``out_dir`` is checked again (:func:`_check_out_dir`) and replaced only after the new outputs
  are complete.
  """
  out_dir = os.path.abspath(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it owner-only; give it a normal directory's mode
  try:
    yield tmp
    _write_marker(tmp)
    _check_out_dir(out_dir, overwrite)
    old = None
    if os.path.exists(out_dir):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
      os.rename(out_dir, os.path.join(old, "previous"))
    os.rename(tmp, out_dir)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _file_name(name: str) -> str:
  return name.replace(" ", "_") + ".wav"


def inputs_line(video: str, audio: str | None, workdir: str, step: int,
                provider_files: dict[str, str | None]) -> str:
  """One line naming every file the separation reads."""
  parts = [f"video {video}",
           f"audio {audio}" if audio else f"audio: the sound track of {video}",
           f"checkpoint step {step} of {workdir}"]
  parts += [f"{k} {v}" if v else f"{k}: none given" for k, v in provider_files.items()]
  return "Reading " + "; ".join(parts)


def summary_dict(result, args: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
  """The JSON summary of a separation (module docstring)."""
  g = result.graphs
  classes = result.predicted_classes()
  directions = result.directions()
  sources = []
  for m, name in enumerate(result.source_names):
    entry = {"name": name, "file": files[name], "slot": int(result.slots[m]),
             "predicted_class": classes[m]}
    if m < result.num_sources:
      d = int(result.detected_source[m])
      entry["detected_object"] = ({"index": d, "id": int(g.source_ids[d]),
                                   "name": g.source_names[d]} if d >= 0 else None)
      entry["directions"] = directions[m]
      if d >= 0 and (g.measured_direction[d] >= 0).any():
        entry["measured_directions"] = [
            {"window": w, "class": int(c), "name": result.direction_names[c]}
            for w, c in enumerate(g.measured_direction[d]) if c >= 0]
    sources.append(entry)
  aud = g.node_mask & (g.node_type == 0)
  return {
      **args,
      "sample_rate": result.sample_rate,
      "num_samples": int(result.num_samples),
      "duration_s": result.num_samples / result.sample_rate,
      "num_windows": g.num_windows,
      "providers": result.providers_used,
      "warnings": result.warnings,
      "detected_objects": [{"id": int(i), "name": n} for i, n in zip(g.source_ids, g.source_names)],
      "sources": sources,
      "windows": [{"window": w, "num_nodes": int(g.node_mask[w].sum()),
                   "auditory_nodes": int(aud[w].sum())} for w in range(g.num_windows)],
  }


def run(workdir: str, video: str, out_dir: str, *, audio: str | None = None,
        detections: str | None = None, depth: str | None = None, flow: str | None = None,
        step: int | None = None, num_sources: int | None = None,
        feature_extractor: str | None = None, batch_size: int = 4, hop_s: float = 1.0,
        measure_motion: bool = False, picture_window: int | None = None,
        wav_subtype: str = "PCM_16", overwrite: bool = False,
        detector_weights: str | None = None, depth_weights: str | None = None,
        flow_weights: str | None = None, detector_score_threshold: float = 0.5,
        detector_min_size: int = 800) -> dict[str, Any]:
  """The command: checks inputs, restores, separates, writes the outputs; returns the summary."""
  # Imported here so that --help and argument errors stay fast.
  from asmp_jax import inference  # pylint: disable=g-import-not-at-top
  from asmp_jax import visualize  # pylint: disable=g-import-not-at-top

  t0 = time.time()
  _check_out_dir(out_dir, overwrite)
  for given, learned in ((detections, detector_weights), (depth, depth_weights),
                         (flow, flow_weights)):
    if given and learned:
      raise UsageError(f"both a file ({given}) and weights ({learned}) given for one provider")
  from asmp_jax import vision  # pylint: disable=g-import-not-at-top
  # Weight files are checked in full before any video is decoded.
  learned = vision.VisionProviders.load(detector_weights, depth_weights, flow_weights,
                                        detector_score_threshold=detector_score_threshold,
                                        detector_min_size=detector_min_size)
  inference.check_video(video)  # cheap input checks first: a bad file fails in one line
  mixture = inference.open_mixture(video, audio)  # bad audio fails before the restore
  separator = inference.Separator.from_checkpoint(workdir, step, batch_size=batch_size,
                                                  hop_s=hop_s)
  separator.check_feature_extractor(feature_extractor)
  vision.check_checkpoint(separator.config, learned, detections)
  logging.info("%s", inputs_line(video, audio, workdir, separator.step,
                                 {"detections": detections or detector_weights,
                                  "depth": depth or depth_weights, "flow": flow or flow_weights}))
  providers = inference.Providers(detections=learned.detector or detections,
                                  depth=learned.depth or depth, flow=learned.flow or flow)
  measure_motion = measure_motion or learned.flow is not None
  with staged_output(out_dir, overwrite) as tmp:
    sink = inference.WavFiles(tmp, _file_name, wav_subtype)  # sources written as they come
    try:
      result = separator.separate(video, mixture, num_sources, providers,
                                  feature_extractor=feature_extractor,
                                  measure_motion=measure_motion, sink=sink)
    finally:
      sink.close()
    files = sink.files
    visualize.save_picture(result, os.path.join(tmp, PICTURE_FILE), picture_window)
    args = {"workdir": os.path.abspath(workdir), "checkpoint_step": separator.step,
            "video": os.path.abspath(video), "audio": mixture.where,
            "feature_extractor": separator.config.graph.feature_extractor,
            "hop_s": hop_s, "picture": PICTURE_FILE}
    summary = summary_dict(result, args, files)
    summary["wall_time_s"] = time.time() - t0
    with open(os.path.join(tmp, SUMMARY_FILE), "w") as f:
      json.dump(summary, f, indent=2)
  logging.info("Wrote %d sources, %s and %s to %s in %.1f s.", len(result.source_names),
               SUMMARY_FILE, PICTURE_FILE, out_dir, time.time() - t0)
  return summary


def define_flags() -> None:
  """Defines the command-line flags. Called only when run as a program, so that importing this
  module (for :func:`run`) never clashes with another program's flags of the same name."""
  flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).")
  flags.DEFINE_string("video", None, "Video file (mp4, mkv, webm, avi, mov...).")
  flags.DEFINE_string("audio", None, "Audio file for the mixture (wav, flac, ogg, mp3...); "
                      "default: the video's own audio stream.")
  flags.DEFINE_string("detections", None, "Detections file (.h5/.npz, e.g. one written by "
                      "python -m asmp_jax.preprocess_videos); default: motion-based box "
                      "proposals.")
  flags.DEFINE_string("depth", None, "Depth file (.npy/.npz, e.g. preprocess_videos'); default: "
                      "flat depth.")
  flags.DEFINE_string("flow", None, "Optical-flow file (.npy/.npz, e.g. preprocess_videos'); "
                      "default: OpenCV DIS.")
  from asmp_jax.vision import cli as vision_cli  # pylint: disable=g-import-not-at-top
  vision_cli.define_flags()  # --detector_weights, --depth_weights, --flow_weights, ...
  flags.DEFINE_string("out_dir", None, "Output directory (created; must not exist or be empty "
                      "unless --overwrite).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("num_sources", None, "Auditory sources to separate (default: the number "
                       "of objects found, at least 1).")
  flags.DEFINE_string("feature_extractor", None, "Must match the checkpoint's extractor if given.")
  flags.DEFINE_integer("batch_size", 4, "Crops per model call.")
  flags.DEFINE_float("hop_s", 1.0, "Seconds between sliding-window crops.")
  flags.DEFINE_bool("measure_motion", False, "Also measure each source's motion from the flow "
                    "(as the training labels are made).")
  flags.DEFINE_integer("picture_window", None, "1 s window shown in the picture (default: the one "
                       "with the most sources).")
  flags.DEFINE_enum("wav_subtype", "PCM_16", ["PCM_16", "PCM_24", "FLOAT"],
                    "Sample format of the written wav files.")
  flags.DEFINE_bool("overwrite", False, "Replace an --out_dir that holds a previous "
                    "separation's outputs (and nothing else).")


def error_line(e: BaseException) -> str:
  """The one line printed for an expected failure."""
  return "error: " + " ".join(str(e).split())


def expected_errors() -> tuple[type[BaseException], ...]:
  """Failures reported as one ``error:`` line (bad inputs, files, checkpoints, arguments)."""
  from asmp_jax import inference, media, preprocess  # pylint: disable=g-import-not-at-top
  from asmp_jax.graph import providers  # pylint: disable=g-import-not-at-top
  return (media.MediaError, providers.ProviderError, inference.InferenceError,
          preprocess.PreprocessError, UsageError, OSError, ValueError)


def main(argv) -> int:
  f = flags.FLAGS
  if len(argv) > 1:
    print(error_line(UsageError(f"unexpected arguments {argv[1:]}")), file=sys.stderr)
    return 2
  missing = [f"--{n}" for n in ("workdir", "video", "out_dir") if not f[n].value]
  if missing:
    print(error_line(UsageError(f"missing required flag(s) {', '.join(missing)}")),
          file=sys.stderr)
    return 2
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from asmp_jax.vision import cli as vision_cli  # pylint: disable=g-import-not-at-top
  try:
    run(f.workdir, f.video, f.out_dir, audio=f.audio, detections=f.detections, depth=f.depth,
        flow=f.flow, step=f.step, num_sources=f.num_sources,
        feature_extractor=f.feature_extractor, batch_size=f.batch_size, hop_s=f.hop_s,
        measure_motion=f.measure_motion, picture_window=f.picture_window,
        wav_subtype=f.wav_subtype, overwrite=f.overwrite, **vision_cli.flag_values())
  except expected_errors() as e:  # pylint: disable=catching-non-exception
    print(error_line(e), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
