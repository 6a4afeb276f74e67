"""Per-video conversion time and example size of the ASIW/AVE builders (prints the figures that
docs/real_data.md turns into build-time and disk estimates).

  python bench/real_data_bench.py [--height=240 --width=320 --repeats=3]

Uses the test fixtures' writers (tests/test_real_data.py) for the released files, and one
synthetic raw video (25 fps, 20 detections per frame, 2048-d features) for the raw source.
"""

import os
import sys
import tempfile
import time
import zlib

from absl import app
from absl import flags
import cv2
import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import test_real_data as fx  # pylint: disable=g-import-not-at-top,wrong-import-position

from asmp_data import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    avsgs_format as fmt)
from asmp_data import real_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from asmp_data.asiw import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    asiw_dataset_builder as asiw)
from asmp_data.ave import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    ave_dataset_builder as ave)
from asmp_jax import media  # pylint: disable=g-import-not-at-top,wrong-import-position

_H = flags.DEFINE_integer("height", 240, "Raw video height.")
_W = flags.DEFINE_integer("width", 320, "Raw video width.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Repetitions of the released conversion.")


def _compressed_size(ex) -> int:
  return sum(len(zlib.compress(np.ascontiguousarray(v).tobytes(), 3))
             for k, v in ex.items() if k != "clip_id")


def _raw_video(root: str, h: int, w: int, rng) -> None:
  os.makedirs(f"{root}/AVE")
  os.makedirs(f"{root}/detections")
  tex = cv2.GaussianBlur((rng.uniform(size=(h, w + 200, 3)) * 255).astype(np.uint8), (7, 7), 2)
  frames = np.stack([tex[:, int(0.6 * i):int(0.6 * i) + w] for i in range(250)])
  media.write_video(f"{root}/AVE/v1.mp4", frames, 25.0,
                    audio=(fx._tone(440), fx.SR))  # pylint: disable=protected-access
  boxes = np.zeros((80, 20, 4), np.float32)
  for j in range(20):
    boxes[:, j] = [w * 0.03 * j, h * 0.02 * j, w * (0.25 + 0.03 * j), h * (0.5 + 0.02 * j)]
  labels = np.full((80, 20), 4)
  labels[:, 0] = 1
  with h5py.File(f"{root}/detections/v1.h5", "w") as f:
    f["boxes"], f["labels"] = boxes, labels
    f["scores"] = np.full((80, 20), 0.9, np.float32)
    f["features"] = np.maximum(rng.normal(size=(80, 20, 2048)), 0).astype(np.float32)
  with open(f"{root}/detector_classes.txt", "w") as f:
    f.write("\n".join(fx.AVE_VOCAB))
  for n in ave.SPLIT_FILES.values():
    with open(f"{root}/{n}", "w") as f:
      f.write("Bus&v1&good&0&10\n")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  root = fx.make_asiw_released(tempfile.mkdtemp())
  data = os.path.join(root, "Audiocaps_Dataset")
  builder = asiw.Builder(data_dir=tempfile.mkdtemp())
  tasks = builder.tasks(data, root, "train", [("trA", ()), ("trB", ()), ("trC", ())])
  real_common.process_video(tasks[0])  # warm-up
  t0 = time.perf_counter()
  for _ in range(_REPEATS.value):
    for task in tasks:
      real_common.process_video(task)
  ms = (time.perf_counter() - t0) / (_REPEATS.value * len(tasks)) * 1e3
  print(f"released graph path (fixture files, 10 images/video): {ms:.0f} ms/video")
  own = builder.tasks(data, root, "test", [("teOwn", ())])[0]
  t0 = time.perf_counter()
  real_common.process_video(own)
  print(f"released, own-preprocessing fallback (80 frames {fx.IMG_H}x{fx.IMG_W}): "
        f"{(time.perf_counter() - t0) * 1e3:.0f} ms/video")

  raw = tempfile.mkdtemp()
  _raw_video(raw, _H.value, _W.value, rng)
  raw_builder = ave.Builder(data_dir=tempfile.mkdtemp(), config="raw")
  task = raw_builder.tasks(raw, raw, "train", [("v1", ("Bus",))])[0]
  t0 = time.perf_counter()
  _, ex, skip = real_common.process_video(task)
  assert skip is None, skip
  print(f"raw source ({_H.value}x{_W.value}, 25 fps -> 8 fps, 20 detections/frame): "
        f"{time.perf_counter() - t0:.1f} s/video")
  print(f"example arrays: {sum(np.asarray(v).nbytes for k, v in ex.items() if k != 'clip_id')} "
        f"bytes; zlib-3: raw {_compressed_size(ex)} bytes", end="")
  info = fmt.ChamferInfo(np.array([[0, 1, 0], [0, 0, 1], [-1, -1, 0]]), [(706, 0)],
                         fmt.symmetric_distances(fx.DIST))
  feats = np.maximum(rng.normal(size=(10, 20, 2048)), 0).astype(np.float32)
  rel = fmt.released_graph_example(info, feats, {706: 0}, None, 10, fmt.ReleasedGraphConfig())
  rel["audio"] = (rng.normal(size=110250) * 3000).astype(np.int16)
  print(f", released {_compressed_size(rel)} bytes")


if __name__ == "__main__":
  app.run(main)
