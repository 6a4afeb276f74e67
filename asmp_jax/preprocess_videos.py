"""Runs the learned providers over videos and writes the files that ``separate`` and the ``raw``
ASIW/AVE builders read.

  python -m asmp_jax.preprocess_videos --videos=DIR_OR_LIST --out_dir=OUT \\
      --detector_weights=frcnn.pth --depth_weights=dpt_dir --flow_weights=raft.pth \\
      [--detector_score_threshold=0.5] [--label_map=asiw|ave|synthetic]

``--videos`` is a directory (every .mp4/.mkv/.webm/.avi/.mov in it) or a text file listing one
video per line (relative paths are relative to the list). Each video is decoded and sampled as the
raw builders do (asmp_data.real_common: 8 fps, nearest earlier frame, the first ``--num_windows``
seconds, frames at the video's own size), and the given providers write, per video ``<id>`` (the
file name's stem), each file also holding ``source_frame`` (int64 [T], the decoded frame each
8 fps frame is) and ``source_fps`` (the video's rate), so that ``separate --detections/--depth/
--flow`` can read them for its own frame sampling (asmp_jax.provider_files):

  ``OUT/detections/<id>.npz``  flat detections (asmp_jax.graph.providers): ``frame`` (index of the
                              8 fps frame), ``box`` (pixels), ``label`` (the detector's class id),
                              ``score``, ``feature`` float32 [D, 2048]; plus ``detector_classes``;
  ``OUT/depth/<id>.npz``       ``depth`` float16 [T, H, W] pseudo-depth (larger = farther);
  ``OUT/flow/<id>.npz``        ``flow`` float16 [T, H, W, 2] forward flow in pixels;
  ``OUT/detector_classes.txt`` the detector's vocabulary (line i = class i) with, for
                              ``--label_map``, the data set's object names of the mapped class as
                              synonyms: the raw builders map labels through it (written only if
                              absent);
  ``OUT/preprocess_report.json`` per video: done / skipped (reason) / no detections, and the
                              providers' names and weight sha256.

``OUT`` laid out so is a raw builder's manual directory (its ``detections/``, ``depth/``, ``flow/``
and ``detector_classes.txt``; put the videos under ``OUT/videos``). The run is resumable: a video
whose files all exist is skipped; every file is written to a temporary name and renamed, so an
interrupted run leaves no partial file. A bad weight file fails in one line before any video is
decoded, and nothing is written.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from asmp_jax import provider_files
from asmp_jax.vision import cli as vision_cli

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
REPORT_FILE = "preprocess_report.json"
VOCABULARY_FILE = "detector_classes.txt"
LABEL_MAPS = ("none", "synthetic", "asiw", "ave")


class UsageError(ValueError):
  """A command-line argument is missing or wrong."""


def list_videos(videos: str) -> list[str]:
  """The videos of a directory or of a list file (one path per line, ``#`` comments)."""
  if os.path.isdir(videos):
    return sorted(os.path.join(videos, f) for f in os.listdir(videos)
                  if f.lower().endswith(VIDEO_EXTENSIONS))
  if not os.path.isfile(videos):
    raise UsageError(f"--videos {videos}: not a directory or a list file")
  base = os.path.dirname(os.path.abspath(videos))
  with open(videos, encoding="utf-8") as f:
    lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]
  return [l if os.path.isabs(l) else os.path.join(base, l) for l in lines]


def _outputs(out_dir: str, vid: str, kinds: Sequence[str]) -> dict[str, str]:
  return {k: os.path.join(out_dir, k, vid + ".npz") for k in kinds}


def _save_atomic(path: str, **arrays) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _write_text_atomic(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=os.path.dirname(path))
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def sample_frames(video: str, num_windows: int = 10) -> tuple[np.ndarray, np.ndarray, float]:
  """The frames the raw builders use (8 fps, nearest earlier, the first ``num_windows`` s; 0:
  the whole video): (uint8 [T, H, W, 3], the decoded frame index of each, the video's fps)."""
  from asmp_data import real_common  # pylint: disable=g-import-not-at-top
  from asmp_jax import media  # pylint: disable=g-import-not-at-top
  frames, fps = media.read_video(video)
  index = real_common.resample_index(len(frames), fps, real_common.FPS,
                                     int(num_windows * real_common.FPS) or None)
  return frames[index], index, float(fps)


def process_video(video: str, out_dir: str, learned, num_windows: int = 10) -> dict[str, Any]:
  """Runs the providers on one video and writes its files; returns its report entry."""
  vid = os.path.splitext(os.path.basename(video))[0]
  kinds = [k for k, p in (("detections", learned.detector), ("depth", learned.depth),
                          ("flow", learned.flow)) if p is not None]
  frames, index, fps = sample_frames(video, num_windows)
  # Which decoded frames these are: separate reads the files for its own frame sampling
  # (asmp_jax.provider_files).
  where = {provider_files.SOURCE_FRAME_KEY: index, provider_files.SOURCE_FPS_KEY: np.float64(fps)}
  entry: dict[str, Any] = {"video": os.path.abspath(video), "status": "done",
                           "frames": int(len(frames)), "size": list(frames.shape[1:3])}
  arrays = {}
  if learned.detector is not None:
    dets = learned.detector.detect(frames, vid)
    arrays["detections"] = {**where, "frame": dets.frame, "box": dets.box, "label": dets.label,
                            "score": dets.score, "feature": dets.feature,
                            "detector_classes": np.asarray(learned.detector.class_names)}
    entry["detections"] = int(len(dets))
    if not len(dets):
      entry["status"] = "done, no detections"
      logging.warning("%s: the detector found no object above score %g (file written empty; "
                      "the raw builders skip the video as no_auditory_object)", video,
                      learned.detector.score_threshold)
  if learned.depth is not None:
    arrays["depth"] = {**where, "depth": learned.depth.depth(frames, vid).astype(np.float16)}
  if learned.flow is not None:
    arrays["flow"] = {**where, "flow": learned.flow.flow(frames, vid).astype(np.float16)}
  for kind, path in _outputs(out_dir, vid, kinds).items():
    _save_atomic(path, **arrays[kind])
  return entry


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


def _vocabulary(learned, label_map: str) -> list[str] | None:
  if learned.detector is None:
    return None
  from asmp_jax.vision import labels  # pylint: disable=g-import-not-at-top
  names_of = {}
  if label_map in ("asiw", "ave"):
    import asmp_data  # pylint: disable=g-import-not-at-top
    from asmp_data import real_common  # pylint: disable=g-import-not-at-top
    cmap = real_common.load_class_map(os.path.join(os.path.dirname(asmp_data.__file__),
                                                   label_map, "classes.tsv"))
    names_of = {e.name: list(e.detector_names) for e in cmap.entries}
  return labels.vocabulary_lines(learned.detector.class_names,
                                 None if label_map == "none" else label_map, names_of)


def run(videos: str | Sequence[str], out_dir: str, *, detector_weights: str | None = None,
        depth_weights: str | None = None, flow_weights: str | None = None,
        detector_score_threshold: float = 0.5, detector_min_size: int = 800,
        label_map: str = "none", num_windows: int = 10, learned=None) -> dict[str, Any]:
  """The command (module docstring); returns the report. ``videos``: ``--videos``, or the list
  of video paths itself; ``learned``: already loaded :class:`asmp_jax.vision.VisionProviders`
  (instead of the weight paths)."""
  from asmp_jax import media  # pylint: disable=g-import-not-at-top
  from asmp_jax import vision  # pylint: disable=g-import-not-at-top
  if label_map not in LABEL_MAPS:
    raise UsageError(f"--label_map must be one of {LABEL_MAPS}, got {label_map!r}")
  # Weight files are checked in full before any video is listed or decoded.
  if learned is None:
    learned = vision.VisionProviders.load(detector_weights, depth_weights, flow_weights,
                                          detector_score_threshold=detector_score_threshold,
                                          detector_min_size=detector_min_size)
  if not learned:
    raise UsageError("give at least one of --detector_weights, --depth_weights, --flow_weights")
  paths = list_videos(videos) if isinstance(videos, str) else [os.fspath(v) for v in videos]
  if not paths:
    raise UsageError(f"--videos {videos}: no video ({'/'.join(VIDEO_EXTENSIONS)}) found")
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  dup = sorted({s for s in stems if stems.count(s) > 1})
  if dup:
    raise UsageError(f"--videos {videos}: several videos named {dup[0]} (ids are file stems)")
  kinds = [k for k, p in (("detections", learned.detector), ("depth", learned.depth),
                          ("flow", learned.flow)) if p is not None]
  os.makedirs(out_dir, exist_ok=True)
  report_path = os.path.join(out_dir, REPORT_FILE)
  report = {"providers": learned.records(), "videos": {}}
  if os.path.exists(report_path):
    with open(report_path) as f:
      report["videos"] = json.load(f).get("videos", {})
  vocab = _vocabulary(learned, label_map)
  vocab_path = os.path.join(out_dir, VOCABULARY_FILE)
  if vocab is not None:
    if not os.path.exists(vocab_path):
      _write_text_atomic(vocab_path, "\n".join(vocab) + "\n")
    elif _read_lines(vocab_path) != vocab:
      logging.warning("%s exists and differs from this detector's vocabulary; left as it is",
                      vocab_path)
  t0 = time.time()
  for i, (video, vid) in enumerate(zip(paths, stems)):
    if all(os.path.exists(p) for p in _outputs(out_dir, vid, kinds).values()):
      logging.info("[%d/%d] %s: already done, skipped", i + 1, len(paths), vid)
      continue
    logging.info("[%d/%d] %s", i + 1, len(paths), video)
    try:
      entry = process_video(video, out_dir, learned, num_windows)
    except (media.MediaError, OSError, ValueError) as e:
      entry = {"video": os.path.abspath(video), "status": "skipped",
               "reason": " ".join(str(e).split())}
      logging.warning("%s: skipped (%s)", video, entry["reason"])
    report["videos"][vid] = entry
    _write_text_atomic(report_path, json.dumps(report, indent=2))
  _write_text_atomic(report_path, json.dumps(report, indent=2))
  skipped = [v for v, e in report["videos"].items() if e["status"] == "skipped"]
  logging.info("%d videos in %.1f s; %d skipped%s", len(paths), time.time() - t0, len(skipped),
               (": " + ", ".join(skipped)) if skipped else "")
  return report


def define_flags() -> None:
  flags.DEFINE_string("videos", None, "Directory of videos, or a text file listing one per line.")
  flags.DEFINE_string("out_dir", None, "Output root (detections/, depth/, flow/, report).")
  vision_cli.define_flags()
  flags.DEFINE_enum("label_map", "none", list(LABEL_MAPS), "Data set whose object names are "
                    "added to detector_classes.txt (COCO -> data set map, asmp_jax.vision.labels).")
  flags.DEFINE_integer("num_windows", 10, "Seconds (1 s windows) of each video to process "
                       "(0: the whole video, held in memory).")


def main(argv) -> int:
  from asmp_jax import separate  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if len(argv) > 1 or not f.videos or not f.out_dir:
    print(separate.error_line(UsageError("need --videos and --out_dir and no other arguments")),
          file=sys.stderr)
    return 2
  try:
    run(f.videos, f.out_dir, label_map=f.label_map, num_windows=f.num_windows,
        **vision_cli.flag_values())
  except (UsageError, ValueError, OSError) as e:
    print(separate.error_line(e), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
