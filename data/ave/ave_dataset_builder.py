"""TFDS builder of AVE (Audio-Visual Event) restricted to the 18 event classes used by ASMP.

  python -m asmp_jax.datasets --config=configs/ave.py --manual_dir=DIR        # build
  python launch.py --config=configs/ave.py --workdir=runs/ave --config.data.manual_dir=DIR

Splits: AVE's own trainSet.txt / valSet.txt / testSet.txt (lines
``Category&VideoID&Quality&StartTime&EndTime``) filtered to the used classes of classes.tsv; the
paper reports 2211 / 257 / 261 videos. A video's annotated events restrict its auditory sources.
Configs ``released`` (preprocessed files in the ASIW layout, assumed) and ``raw`` (AVE.zip videos
+ detection files); layouts in docs/real_data.md.
"""

from __future__ import annotations

import os

from asmp_data import real_builder
from asmp_data import real_common

_HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}
HEADER = "Category&VideoID&Quality&StartTime&EndTime"


def read_ave_split(path: str) -> list[tuple[str, str]]:
  """An AVE split/annotation file -> [(category, video id), ...] in file order."""
  if not os.path.isfile(path):
    raise real_common.ManualDirError(f"{path}: AVE split file not found "
                                     f"(expected lines '{HEADER}')")
  out = []
  with open(path, encoding="utf-8-sig") as f:
    for n, line in enumerate(f, start=1):
      line = line.strip()
      if not line or line.startswith("Category&"):
        continue
      fields = line.split("&")
      if len(fields) != 5 or not fields[1]:
        raise real_common.ManualDirError(
            f"{path}: line {n} has {len(fields)} '&'-separated fields; expected '{HEADER}'")
      out.append((fields[0], fields[1]))
  return out


class Builder(real_builder.RealBuilder):
  """AVE (18 classes): per-window scene graphs, motion labels and audio of 10 s event videos."""

  name = "asmp_ave"
  LABEL_MAP = "ave"  # preprocess_videos --label_map (raw_learned)
  CLASS_MAP = os.path.join(_HERE, "classes.tsv")
  PAPER_SPLIT_SIZES = {"train": 2211, "validation": 257, "test": 261}
  DATA_ROOT_NAMES = ("AVE_Dataset", "AVE")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put AVE's trainSet.txt, valSet.txt, testSet.txt in DIR (or DIR/AVE_Dataset/). raw: the "
      "videos of AVE.zip as DIR/AVE/<id>.mp4 (or DIR/videos/<id>.mp4), DIR/detections/<id>.h5 and "
      "the detector vocabulary DIR/detector_classes.txt. released: the ASIW-style layout "
      "(Extracted_Frames/, Extracted_Audio/, Rectified_Frames/). Details: docs/real_data.md.")

  def list_videos(self, manual_dir: str):
    used = set(self.class_map().names)
    out = {}
    for split, name in SPLIT_FILES.items():
      path = real_common.first_existing(
          os.path.join(manual_dir, d, name) for d in ("",) + self.DATA_ROOT_NAMES)
      rows = read_ave_split(path or os.path.join(manual_dir, name))
      events: dict[str, list[str]] = {}
      for category, vid in rows:
        if category in used:
          events.setdefault(vid, [])
          if category not in events[vid]:
            events[vid].append(category)
      out[split] = [(vid, tuple(cats)) for vid, cats in events.items()]
    return out
