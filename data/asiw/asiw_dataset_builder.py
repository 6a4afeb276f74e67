"""TFDS builder of ASIW (Audio Separation in the Wild): 10 s AudioCaps videos, 14 auditory classes.

  python -m asmp_jax.datasets --config=configs/asiw.py --manual_dir=DIR        # build
  python launch.py --config=configs/asiw.py --workdir=runs/asiw --config.data.manual_dir=DIR

Splits as in the paper: 10,540 / 147 / 322 videos (those with valid visual labels), listed by the
authors' split pickle. Configs: ``released`` (the authors' preprocessed files) and ``raw`` (the
user's downloaded videos + detection files); layouts in docs/real_data.md and
``asmp_data.avsgs_format``.
"""

from __future__ import annotations

import os

from asmp_data import avsgs_format as fmt
from asmp_data import real_builder
from asmp_data import real_common

_HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT_DIRS = ("", "dataset", os.path.join("audiocaps", "dataset"), "Audiocaps_Dataset")
TEXT_SPLITS = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def find_split_lists(manual_dir: str) -> dict[str, list[str]]:
  """The split lists of the manual dir: the authors' pickle (ASMP's, else AVSGS's, else
  ``splits.pickle``) or ``splits/{train,val,test}.txt`` with one YouTube id per line."""
  names = fmt.SPLIT_PICKLES + ("splits.pickle",)
  pickle_path = real_common.first_existing(
      os.path.join(manual_dir, d, n) for n in names for d in SPLIT_DIRS)
  if pickle_path:
    try:
      return fmt.read_split_pickle(pickle_path)
    except fmt.FormatError as e:
      raise real_common.ManualDirError(str(e)) from e
  text_dir = os.path.join(manual_dir, "splits")
  if all(os.path.isfile(os.path.join(text_dir, f)) for f in TEXT_SPLITS.values()):
    out = {}
    for split, f in TEXT_SPLITS.items():
      with open(os.path.join(text_dir, f), encoding="utf-8") as fh:
        out[split] = [l.strip() for l in fh if l.strip() and not l.startswith("#")]
    return out
  raise real_common.ManualDirError(
      f"{manual_dir}: no split list; expected one of {', '.join(names)} (a pickled "
      "(train_ids, val_ids, test_ids) triple) in the manual dir or its dataset/ or "
      "audiocaps/dataset/ folder, or splits/train.txt, splits/val.txt, splits/test.txt")


class Builder(real_builder.RealBuilder):
  """ASIW: per-window scene graphs, motion labels and audio of 10 s in-the-wild videos."""

  name = "asmp_asiw"
  LABEL_MAP = "asiw"  # preprocess_videos --label_map (raw_learned)
  CLASS_MAP = os.path.join(_HERE, "classes.tsv")
  PAPER_SPLIT_SIZES = {"train": 10540, "validation": 147, "test": 322}
  DATA_ROOT_NAMES = ("Audiocaps_Dataset",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "released: unzip the authors' preprocessed ASIW (Audiocaps_Dataset/ with Extracted_Frames/, "
      "Extracted_Audio/; see github.com/metro-smiles/asmp README) and their Chamfer/displacement "
      "zip (Rectified_Frames/ inside Audiocaps_Dataset/) into DIR, with the split pickle "
      "(Multiple_Valid_RAFTFlow_Seq.pickle or AVSGS's Valid_Videos_Vis_Text.pickle) in DIR or "
      "DIR/dataset/. raw: DIR/videos/<id>.mp4, DIR/detections/<id>.h5 (+ optional depth/, flow/, "
      "detector_classes.txt) and the split pickle. Details: docs/real_data.md.")

  def list_videos(self, manual_dir: str):
    lists = find_split_lists(manual_dir)
    return {split: [(vid, ()) for vid in lists[split]] for split in real_common.SPLITS}
