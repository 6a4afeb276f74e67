"""Real data sets (ASIW, AVE): precomputed node features, the released file formats, the TFDS
builders on small fixture directories written in those formats, and one training step on each."""
import numpy as np
import pytest

from asmp_jax import preprocess
from asmp_jax.graph.providers import Detections

# ----------------------------------------------------------------------- precomputed features

T, H, W, F = 16, 48, 64, 6


def _feature_clip():
  """Two windows; per frame an auditory box (class 0), an overlapping context box and a far box,
  each with a distinct region feature (frame*10 + row)."""
  rows, feats = [], []
  for f in range(T):
    for j, (box, label) in enumerate((([8, 8, 28, 28], 0), ([18, 10, 38, 30], 7),
                                      ([50, 36, 60, 46], 7))):
      rows.append((f, box, label, 0.9))
      feats.append(np.full(F, 10 * f + j, np.float32))
  fr, bx, lb, sc = zip(*rows)
  dets = Detections(np.array(fr), np.array(bx, np.float32), np.array(lb), np.array(sc),
                    np.stack(feats))
  frames = np.full((T, H, W, 3), 128, np.uint8)
  return frames, dets, np.ones((T, H, W), np.float32), np.zeros((T, H, W, 2), np.float32)


@pytest.mark.parametrize("background", ["zeros", "mean"])
def test_precomputed_node_features_come_from_the_detections(background):
  frames, dets, depth, flow = _feature_clip()
  cfg = preprocess.PreprocessConfig(num_windows=2, feature_extractor="precomputed", rectify=False,
                                    background_feature=background)
  ex = preprocess.preprocess_clip(frames, np.full(100, 0.1, np.float32), dets, depth, flow,
                                  np.array([0, 1]), cfg)
  nf = ex["node_features"].astype(np.float32)
  assert nf.shape == (2, preprocess.MAX_NODES, F)
  for w, ref in enumerate((0, 8)):
    np.testing.assert_array_equal(nf[w, 0], 10 * ref + 0)  # auditory source of frame ref
    np.testing.assert_array_equal(nf[w, 2], 10 * ref + 1)  # its context node
    assert not ex["node_mask"][w, 3:-1].any()  # the far box is not context
    want_bg = 0.0 if background == "zeros" else 10 * ref + 1.0  # mean of rows 0, 1, 2
    np.testing.assert_allclose(nf[w, -1], want_bg)


def test_precomputed_dedicated_background_feature_and_missing_features():
  frames, dets, depth, flow = _feature_clip()
  cfg = preprocess.PreprocessConfig(num_windows=2, feature_extractor="precomputed", rectify=False)
  bg = np.arange(T * F, dtype=np.float32).reshape(T, F)
  ex = preprocess.preprocess_clip(frames, np.full(100, 0.1, np.float32), dets, depth, flow,
                                  np.array([0]), cfg, background_features=bg)
  np.testing.assert_array_equal(ex["node_features"][1, -1].astype(np.float32), bg[8])
  no_feat = Detections(dets.frame, dets.box, dets.label, dets.score)
  with pytest.raises(preprocess.PreprocessError, match="region features"):
    preprocess.preprocess_clip(frames, np.full(100, 0.1, np.float32), no_feat, depth, flow,
                               np.array([0]), cfg, clip_id="vid0")


# ----------------------------------------------------------------------- fixtures in the released
# formats. Provenance of every field: asmp_data/avsgs_format.py's docstring (the ASMP and AVSGS
# public loaders); AVE split files: 'Category&VideoID&Quality&StartTime&EndTime' (AVE release).

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import os  # pylint: disable=g-import-not-at-top,wrong-import-position
import pickle  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import av  # pylint: disable=g-import-not-at-top,wrong-import-position
import cv2  # pylint: disable=g-import-not-at-top,wrong-import-position
import h5py  # pylint: disable=g-import-not-at-top,wrong-import-position

from asmp_data import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    avsgs_format as fmt)
from asmp_data import real_builder  # pylint: disable=g-import-not-at-top,wrong-import-position
from asmp_data import real_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from asmp_jax import media  # pylint: disable=g-import-not-at-top,wrong-import-position
from asmp_jax.graph import motion  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import hostile  # pylint: disable=g-import-not-at-top,wrong-import-position

SR = 11025
FDIM = 2048
CTX_DET, FAR_DET = 1000, 1001  # detector classes that are no auditory object
IMG_H, IMG_W = 48, 64
BOXES = np.array([[8, 8, 28, 28], [18, 10, 38, 30], [50, 36, 60, 46]], np.float32)


def _tone(freq, seconds=10.0):
  t = np.arange(int(seconds * SR)) / SR
  return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_aac(path, wav):
  """A raw AAC (ADTS) file, as the released Extracted_Audio/<sub>/<id>.aac."""
  with av.open(path, "w", format="adts") as c:
    s = c.add_stream("aac", rate=SR)
    s.layout = "mono"
    frame = av.AudioFrame.from_ndarray(wav[None], format="fltp", layout="mono")
    frame.sample_rate = SR
    for p in list(s.encode(frame)) + list(s.encode(None)):
      c.mux(p)


def _region_feature(image, box):
  return np.full(FDIM, (100 * image + box + 1) / 1000.0, np.float32)


def _write_detections(folder, det_cls, num_images=10):
  """Image_info_20obj.json + Image_feature_20obj.h5: images 0001, 0009, ... (window starts), each
  with the auditory object (box 0), an overlapping context object (box 1) and a far one (box 2)."""
  info, boxes = [], np.zeros((num_images, 20, 4), np.float32)
  feats = np.zeros((num_images, 20, FDIM), np.float32)
  for i in range(num_images):
    info.append({"image": f"{8 * i + 1:04d}.png", "objects": [det_cls, CTX_DET, FAR_DET],
                 "objects_conf": [0.9, 0.8, 0.7], "image_h": IMG_H, "image_w": IMG_W})
    boxes[i, :3] = BOXES
    for j in range(3):
      feats[i, j] = _region_feature(i, j)
  with open(os.path.join(folder, fmt.IMAGE_INFO_JSON), "w") as f:
    json.dump(info, f)
  with h5py.File(os.path.join(folder, fmt.REGION_FEATURES_H5), "w") as f:
    f["boxes"], f["features"] = boxes, feats


DIST = np.array([[0, 2.0, 5.0], [0, 0, 3.0], [0, 0, 0]])  # upper triangle: ctx, principal, bg


def write_released_video(root, sub, vid, aud_class, det_cls, freq, motion_uvd=(1.0, 0.0, 0.0),
                         audio=True, chamfer=True, frames=False, csv_rows=True):
  fdir = os.path.join(root, "Extracted_Frames", sub, vid)
  os.makedirs(fdir, exist_ok=True)
  _write_detections(fdir, det_cls)
  with open(os.path.join(fdir, fmt.LABELS_CSV), "w") as f:
    if csv_rows:
      f.writelines(f"{aud_class},{det_cls},{i},0\n" for i in range(10))
  if audio:
    os.makedirs(os.path.join(root, "Extracted_Audio", sub), exist_ok=True)
    _write_aac(os.path.join(root, "Extracted_Audio", sub, vid + ".aac"), _tone(freq))
  if chamfer:
    rdir = os.path.join(root, "Rectified_Frames", sub, vid)
    os.makedirs(rdir, exist_ok=True)
    with open(os.path.join(rdir, fmt.CHAMFER_PICKLE), "wb") as f:
      pickle.dump({"object_context": [(0, 1, 0), (0, 0, 1), (-1, -1, 0)],
                   "object_wind": [(det_cls, 0)], "dist_mat": DIST}, f)
    with open(os.path.join(rdir, fmt.DISPLACEMENT_PICKLE), "wb") as f:
      pickle.dump({det_cls: {w: list(motion_uvd) for w in range(10)}}, f)
  if frames:
    rng = np.random.default_rng(len(vid))
    tex = (rng.uniform(size=(IMG_H, IMG_W, 3)) * 255).astype(np.uint8)
    for t in range(80):
      cv2.imwrite(os.path.join(fdir, f"{t + 1:04d}.png"), tex)


ASIW_SPLITS = {"train": ["trA", "trB", "trC", "trNoAudio", "trNoAud", "trBadH5"],
               "validation": ["vaA", "vaB"], "test": ["teA", "teOwn"]}


def make_asiw_released(root):
  """Manual dir in the released ASIW layout (Audiocaps_Dataset/ + dataset/ split pickle)."""
  data = os.path.join(root, "Audiocaps_Dataset")
  for i, vid in enumerate(["trA", "trB", "trC"]):
    write_released_video(data, "train", vid, aud_class=i, det_cls=[706, 817, 180][i],
                         freq=300 + 100 * i, motion_uvd=[(1.0, 0, 0), (0.1, 0.1, 0.1),
                                                         (0, -2.0, 0.5)][i])
  write_released_video(data, "train", "trNoAudio", 5, 117, 500, audio=False)
  write_released_video(data, "train", "trNoAud", 5, 117, 500, csv_rows=False)
  write_released_video(data, "train", "trBadH5", 5, 117, 500)
  with open(os.path.join(data, "Extracted_Frames", "train", "trBadH5", fmt.REGION_FEATURES_H5),
            "w") as f:
    f.write("not an HDF5 file")
  # The public loaders read non-training videos from the test folders.
  write_released_video(data, "test", "vaA", 7, 42, 700)
  write_released_video(data, "test", "vaB", 8, 50, 800)
  write_released_video(data, "test", "teA", 12, 663, 900)
  write_released_video(data, "test", "teOwn", 5, 117, 1000, chamfer=False, frames=True)
  os.makedirs(os.path.join(root, "dataset"))
  with open(os.path.join(root, "dataset", fmt.SPLIT_PICKLES[0]), "wb") as f:
    pickle.dump(tuple(ASIW_SPLITS[s] for s in ("train", "validation", "test")), f)
  return root


AVE_ROWS = {  # (category, id); Shofar is not one of the used classes
    "trainSet.txt": [("Bus", "aTrBus"), ("Horse", "aTrHorse"), ("Shofar", "aTrShofar"),
                     ("Clock", "aTrMissed")],
    "valSet.txt": [("Banjo", "aVaBanjo"), ("Bus", "aVaBus")],
    "testSet.txt": [("Horse", "aTeHorse"), ("Cat", "aTeNoVideo")],
}
AVE_VOCAB = ["background", "bus", "horse,horses", "banjo", "man", "clock", "cat"]
SPEED = 12.0  # px/s of the moving source in the raw AVE fixture
AVE_W = 160  # frame width of the raw AVE fixture videos
AVE_DET = {"Bus": 1, "Horse": 2, "Banjo": 3, "Clock": 5, "Cat": 6}


def _moving_frames(n, fps, speed_px_per_s, seed):
  """Smooth textured background with a textured patch moving right (det boxes follow it)."""
  rng = np.random.default_rng(seed)
  tex = cv2.GaussianBlur((rng.uniform(size=(IMG_H, AVE_W, 3)) * 255).astype(np.uint8), (5, 5), 1)
  patch = cv2.GaussianBlur((rng.uniform(size=(20, 16, 3)) * 255).astype(np.uint8), (3, 3), 1)
  frames = np.empty((n, IMG_H, AVE_W, 3), np.uint8)
  for t in range(n):
    frames[t] = tex
    x = int(round(8 + speed_px_per_s * t / fps))
    frames[t, 12:32, x:x + 16] = patch
  return frames


def write_raw_ave_video(root, vid, category, det_cls_present, fps=16.0, seed=0):
  n = int(10 * fps)
  frames = _moving_frames(n, fps, SPEED, seed)
  media.write_video(os.path.join(root, "AVE", vid + ".mp4"), frames, fps,
                    audio=(_tone(400 + 50 * seed), SR))
  # Per-frame detections at 8 fps (providers' HDF5 layout): the source + a context box.
  t8 = 80
  boxes = np.zeros((t8, 3, 4), np.float32)
  labels = np.full((t8, 3), -1, np.int64)
  scores = np.zeros((t8, 3), np.float32)
  feats = np.zeros((t8, 3, FDIM), np.float32)
  for t in range(t8):
    x = 8 + SPEED * t / 8.0
    boxes[t, 0] = [x, 12, x + 16, 32]
    boxes[t, 1] = [x + 4, 8, x + 26, 30]
    labels[t, :2] = [det_cls_present, 4]  # 4 = "man": an auditory object of no used class
    scores[t, :2] = [0.9, 0.8]
    feats[t, 0], feats[t, 1] = 1.0, 2.0
  with h5py.File(os.path.join(root, "detections", vid + ".h5"), "w") as f:
    f["boxes"], f["labels"], f["scores"], f["features"] = boxes, labels, scores, feats


def make_ave_raw(root):
  for d in ("AVE", "detections"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  for name, rows in AVE_ROWS.items():
    with open(os.path.join(root, name), "w") as f:
      f.write("Category&VideoID&Quality&StartTime&EndTime\n")
      f.writelines(f"{c}&{v}&good&0&10\n" for c, v in rows)
  with open(os.path.join(root, "detector_classes.txt"), "w") as f:
    f.write("\n".join(AVE_VOCAB) + "\n")
  seed = 0
  for rows in AVE_ROWS.values():
    for category, vid in rows:
      if vid == "aTeNoVideo":
        continue
      # aTrMissed: annotated Clock but only a bus is detected -> no auditory object.
      det = AVE_DET["Bus"] if vid == "aTrMissed" else AVE_DET.get(category, 1)
      write_raw_ave_video(root, vid, category, det, seed=seed)
      seed += 1
  return root


def build(builder_module, manual_dir, data_dir, config="released"):
  """Builds in this process (one worker) as datasets.prepare would."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = builder_module.Builder(data_dir=str(data_dir), config=config,
                                   file_format="array_record")
  old = os.environ.get(real_builder.WORKERS_ENV)
  os.environ[real_builder.WORKERS_ENV] = "1"
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        file_format="array_record")
  finally:
    if old is None:
      os.environ.pop(real_builder.WORKERS_ENV)
    else:
      os.environ[real_builder.WORKERS_ENV] = old
  return builder


@pytest.fixture(scope="module")
def asiw_built(tmp_path_factory):
  from asmp_data.asiw import asiw_dataset_builder  # pylint: disable=g-import-not-at-top
  root = make_asiw_released(str(tmp_path_factory.mktemp("asiw_manual")))
  data_dir = tmp_path_factory.mktemp("tfds_asiw")
  return root, str(data_dir), build(asiw_dataset_builder, root, data_dir)


@pytest.fixture(scope="module")
def ave_built(tmp_path_factory):
  from asmp_data.ave import ave_dataset_builder  # pylint: disable=g-import-not-at-top
  root = make_ave_raw(str(tmp_path_factory.mktemp("ave_manual")))
  data_dir = tmp_path_factory.mktemp("tfds_ave")
  return root, str(data_dir), build(ave_dataset_builder, root, data_dir, "raw")


def _examples(builder, split):
  src = builder.as_data_source(split)
  return {ex["clip_id"].decode() if isinstance(ex["clip_id"], bytes) else ex["clip_id"]: ex
          for ex in (src[i] for i in range(len(src)))}


def test_asiw_released_build_counts_skips_and_checksums(asiw_built):
  _, data_dir, builder = asiw_built
  meta = builder.info.metadata
  assert meta["num_examples"] == {"train": 3, "validation": 2, "test": 2}
  assert {s: len(builder.as_data_source(s)) for s in real_common.SPLITS} == meta["num_examples"]
  assert meta["skip_counts"]["train"] == {"missing_audio": 1, "no_auditory_object": 1,
                                          "malformed_file": 1}
  reasons = {s["clip_id"]: s["reason"] for s in meta["skipped"]["train"]}
  assert fmt.REGION_FEATURES_H5 in reasons["trBadH5"]
  assert "trNoAudio.aac" in reasons["trNoAudio"]
  assert meta["auditory_classes"][0] == "baby" and len(meta["auditory_classes"]) == 14
  assert meta["feature_dim"] == FDIM and meta["feature_extractor"] == "precomputed"
  files = sorted(p for p in os.listdir(builder.data_dir) if ".array_record-" in p)
  assert sorted(meta["checksums"]) == files
  for p in files:
    assert meta["checksums"][p] == real_builder.sha256_file(os.path.join(builder.data_dir, p))
  # Content digests: recomputed from the stored (decoded) examples, they match the metadata.
  for split in real_common.SPLITS:
    digests = {k: real_builder.example_digest(dict(ex, clip_id=k), builder.info.features)
               for k, ex in _examples(builder, split).items()}
    assert digests == meta["example_sha256"][split]
    assert real_builder.split_digest(digests) == meta["content_sha256"][split]
  report = real_builder.format_report(meta)
  assert "train: 3 examples from 6 listed videos (paper: 10540)" in report
  assert f"content sha256 {meta['content_sha256']['test']}  test" in report


def test_asiw_released_graph_and_labels(asiw_built):
  _, _, builder = asiw_built
  ex = _examples(builder, "train")["trA"]
  n = 23
  nf = np.asarray(ex["node_features"], np.float32)
  assert nf.shape == (10, n, FDIM)
  np.testing.assert_allclose(nf[3, 0], _region_feature(0, 0), rtol=1e-3)  # principal (0, 0)
  np.testing.assert_allclose(nf[3, 2], _region_feature(0, 1), rtol=1e-3)  # its context (0, 1)
  assert not nf[3, -1].any()  # background: zeros
  mask = ex["node_mask"]
  assert mask[:, [0, 2, n - 1]].all() and mask.sum() == 30
  assert list(ex["source_class"]) == [0, -1]
  # Edge weights: RBF of the symmetrised released distances (released node order ctx, principal,
  # bg -> our slots 2, 0, 22).
  d = fmt.symmetric_distances(DIST)
  from asmp_jax.graph import geometry  # pylint: disable=g-import-not-at-top
  w = geometry.rbf_edge_weights(d, percentile=25.0, mode="paper")
  adj = np.asarray(ex["adjacency"][0], np.float32)
  slots = [2, 0, n - 1]
  np.testing.assert_allclose(adj[np.ix_(slots, slots)], w, rtol=2e-3)
  assert adj.sum() == pytest.approx(w.sum(), rel=2e-3)
  # Motion labels from the released displacements with the public code's thresholds.
  want10 = motion.direction_class(np.array([1.0, 0, 0]), 10, thresholds=(0.6, 0.6, 0.3))
  assert (ex["dir10"][:, 0] == want10).all() and (ex["dir10"][:, 1] == -1).all()
  still = _examples(builder, "train")["trB"]
  assert (still["dir10"][:, 0] == motion.NO_MOTION_CLASS(10)).all()
  assert (still["dir28"][:, 0] == motion.NO_MOTION_CLASS(28)).all()
  # Audio: the 300 Hz tone of the .aac, resampled to 11025 Hz and cut to 10 s.
  audio = np.asarray(ex["audio"], np.float32) / 32767.0
  assert audio.shape == (10 * SR,)
  spec = np.abs(np.fft.rfft(audio[SR:3 * SR]))
  assert abs(np.argmax(spec) * SR / (2 * SR) - 300) < 2
  assert np.isnan(ex["gt_window_displacement"]).all()


def test_asiw_without_chamfer_goes_through_own_preprocessing(asiw_built):
  _, _, builder = asiw_built
  ex = _examples(builder, "test")["teOwn"]
  nf = np.asarray(ex["node_features"], np.float32)
  # Own per-window graphs from the released detections: window w's reference image is 8w + 1.
  for w in (0, 4):
    np.testing.assert_allclose(nf[w, 0], _region_feature(w, 0), rtol=1e-3)
    np.testing.assert_allclose(nf[w, 2], _region_feature(w, 1), rtol=1e-3)
  assert list(ex["source_class"]) == [5, -1]
  assert ex["window_valid"].all() and (ex["dir10"][:, 0] == motion.NO_MOTION_CLASS(10)).all()


def test_ave_raw_build_from_videos_and_detection_files(ave_built):
  _, _, builder = ave_built
  meta = builder.info.metadata
  assert len(meta["auditory_classes"]) == 18 and "Bus" in meta["auditory_classes"]
  assert "Shofar" not in meta["auditory_classes"]
  # Shofar is not a used class: its video is not even listed.
  assert meta["num_listed"] == {"train": 3, "validation": 2, "test": 2}
  assert meta["num_examples"] == {"train": 2, "validation": 2, "test": 1}
  assert meta["skip_counts"] == {"train": {"no_auditory_object": 1}, "validation": {},
                                 "test": {"missing_file": 1}}
  train = _examples(builder, "train")
  names = meta["auditory_classes"]
  assert list(train["aTrBus"]["source_class"]) == [names.index("Bus"), -1]
  ex = train["aTrHorse"]
  assert list(ex["source_class"]) == [names.index("Horse"), -1]
  nf = np.asarray(ex["node_features"], np.float32)
  # The source's region feature (1.0) and the "man" box as context (2.0): man is an auditory
  # object of an unused class, hence context here.
  assert (nf[:, 0] == 1.0).all() and (nf[:, 2] == 2.0).all() and not nf[:, -1].any()
  # The patch moves right at 12 px/s (8 fps after resampling 16 fps): 10.5 px over a window, 0.066
  # of the 160-px width; DIS flow on these tiny textures recovers about half of it, still well
  # above the 0.02 no-motion threshold.
  d = ex["displacement"][:, 0]
  assert (d[:, 0] > 0.025).all() and (np.abs(d[:, 1]) < 0.02).all()
  d = d[0]
  assert ex["dir10"][0, 0] == motion.direction_class(d, 10, thresholds=(0.02, 0.02, 0.1))
  audio = np.asarray(ex["audio"], np.float32) / 32767.0
  spec = np.abs(np.fft.rfft(audio[SR:3 * SR]))
  assert abs(np.argmax(spec) / 2 - 450) < 2  # seed 1 -> 450 Hz



def test_ave_released_layout_takes_classes_from_the_annotations(tmp_path):
  """AVE in the (assumed) ASIW-style released layout: the CSV marks the auditory objects, the
  annotation gives their class."""
  from asmp_data.ave import ave_dataset_builder as ave  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "ave"
  for sub, vid, det in (("train", "r1", 11), ("train", "r2", 12), ("test", "r3", 13),
                        ("test", "r4", 14)):
    write_released_video(str(manual), sub, vid, aud_class=99, det_cls=det, freq=500)
  rows = {"trainSet.txt": "Bus&r1\nHorse&r2\n", "valSet.txt": "Banjo&r3\n",
          "testSet.txt": "Clock&r4\nBus&r4\n"}
  for name, text in rows.items():
    (manual / name).write_text("".join(f"{l}&good&0&10\n" for l in text.split()))
  builder = build(ave, manual, tmp_path / "tfds")
  names = builder.info.metadata["auditory_classes"]
  got = {k: list(ex["source_class"]) for s in real_common.SPLITS
         for k, ex in _examples(builder, s).items()}
  # r4 has two annotated events; without a detector vocabulary its auditory objects take the
  # first used class in class-map order (Clock before Bus).
  assert got == {"r1": [names.index("Bus"), -1], "r2": [names.index("Horse"), -1],
                 "r3": [names.index("Banjo"), -1], "r4": [names.index("Clock"), -1]}


def test_asiw_raw_with_released_style_detection_folders(tmp_path):
  """Raw ASIW: videos + detections/<id>/ (released JSON + HDF5 pair), detector classes mapped
  through the Visual Genome indices of data/asiw/classes.tsv (706 = baby -> class 0)."""
  from asmp_data.asiw import asiw_dataset_builder as asiw  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "asiw_raw"
  splits = {"train": ["v1", "v2"], "val": ["v3", "v4"], "test": ["v5"]}
  for sub, ids in splits.items():
    for vid in ids:
      det_dir = manual / "detections" / vid
      det_dir.mkdir(parents=True)
      _write_detections(str(det_dir), 706 if vid != "v2" else 817)  # 817 = bell -> class 1
      frames = np.full((80, IMG_H, IMG_W, 3), 90, np.uint8)
      (manual / "videos").mkdir(exist_ok=True)
      media.write_video(str(manual / "videos" / f"{vid}.mp4"), frames, 8.0,
                        audio=(_tone(350), SR))
  (manual / "splits").mkdir()
  for sub, ids in splits.items():
    (manual / "splits" / f"{sub}.txt").write_text("\n".join(ids) + "\n")
  builder = build(asiw, manual, tmp_path / "tfds", "raw")
  train = _examples(builder, "train")
  assert list(train["v1"]["source_class"]) == [0, -1]
  assert list(train["v2"]["source_class"]) == [1, -1]
  nf = np.asarray(train["v1"]["node_features"], np.float32)
  np.testing.assert_allclose(nf[2, 0], _region_feature(2, 0), rtol=1e-3)
  assert builder.info.metadata["num_examples"] == {"train": 2, "validation": 2, "test": 1}


# ----------------------------------------------------------------------- errors name the file


def _prepare_error(builder_module, manual_dir, tmp_path, config="released"):
  with pytest.raises(Exception) as info:
    build(builder_module, manual_dir, tmp_path / "tfds", config)
  return str(info.value)


def test_raw_learned_runs_the_learned_providers_over_the_listed_videos(tmp_path, monkeypatch):
  """raw_learned: preprocess_videos over every listed video that exists, into the manual
  directory, with the data set's label map; no weights -> one error before anything runs."""
  from asmp_data.ave import ave_dataset_builder  # pylint: disable=g-import-not-at-top
  from asmp_jax import preprocess_videos  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "manual")
  os.makedirs(os.path.join(root, "AVE"))
  for name, rows in AVE_ROWS.items():
    with open(os.path.join(root, name), "w") as f:
      f.write("Category&VideoID&Quality&StartTime&EndTime\n")
      f.writelines(f"{c}&{v}&good&0&10\n" for c, v in rows)
  listed = [v for rows in AVE_ROWS.values() for _, v in rows]
  for vid in listed[:3]:
    open(os.path.join(root, "AVE", vid + ".mp4"), "wb").close()
  builder = ave_dataset_builder.Builder(data_dir=str(tmp_path / "tfds"), config="raw_learned")
  calls = []
  monkeypatch.setattr(preprocess_videos, "run", lambda videos, out, **kw: calls.append(
      (list(videos), out, kw)))
  for env in real_builder.VISION_WEIGHTS_ENV.values():
    monkeypatch.delenv(env, raising=False)
  with pytest.raises(real_builder.ManualDirError, match="ASMP_DETECTOR_WEIGHTS"):
    builder.run_learned_vision(root, root, builder.list_videos(root))
  assert not calls
  monkeypatch.setenv("ASMP_DETECTOR_WEIGHTS", "/w/frcnn.pth")
  monkeypatch.setenv("ASMP_FLOW_WEIGHTS", "/w/raft.pth")
  builder.run_learned_vision(root, root, builder.list_videos(root))
  (videos, out, kw), = calls
  used = {s for rows in builder.list_videos(root).values() for s, _ in rows}
  assert sorted(os.path.basename(v)[:-4] for v in videos) == sorted(used & set(listed[:3]))
  assert out == root and kw["label_map"] == "ave" and kw["num_windows"] == 10
  assert (kw["detector_weights"], kw["depth_weights"], kw["flow_weights"]) == (
      "/w/frcnn.pth", None, "/w/raft.pth")


def test_missing_manual_dir_and_split_list(tmp_path):
  from asmp_data.asiw import asiw_dataset_builder as asiw  # pylint: disable=g-import-not-at-top
  msg = _prepare_error(asiw, tmp_path / "nowhere", tmp_path)
  assert "nowhere" in msg and "does not exist" in msg
  manual = tmp_path / "manual"
  (manual / "Extracted_Frames" / "train").mkdir(parents=True)
  msg = _prepare_error(asiw, manual, tmp_path)
  assert fmt.SPLIT_PICKLES[0] in msg and "(train_ids, val_ids, test_ids)" in msg


def test_malformed_split_pickle_and_ave_split_file(tmp_path):
  from asmp_data.asiw import asiw_dataset_builder as asiw  # pylint: disable=g-import-not-at-top
  from asmp_data.ave import ave_dataset_builder as ave  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "asiw"
  (manual / "Extracted_Frames").mkdir(parents=True)
  with open(manual / fmt.SPLIT_PICKLES[1], "wb") as f:
    pickle.dump({"train": ["a"]}, f)
  msg = _prepare_error(asiw, manual, tmp_path)
  assert fmt.SPLIT_PICKLES[1] in msg and "(train_ids, val_ids, test_ids)" in msg
  (manual / fmt.SPLIT_PICKLES[1]).write_bytes(b"\x80\x04garbage")
  assert "not a readable pickle" in _prepare_error(asiw, manual, tmp_path / "2")
  manual = tmp_path / "ave"
  (manual / "AVE").mkdir(parents=True)
  (manual / "trainSet.txt").write_text("Bus&abc&good&0&10\nBus;def;good;0;10\n")
  msg = _prepare_error(ave, manual, tmp_path / "3", "raw")
  assert "trainSet.txt: line 2" in msg and "Category&VideoID&Quality&StartTime&EndTime" in msg


def test_split_with_no_usable_video_is_an_error(tmp_path):
  from asmp_data.asiw import asiw_dataset_builder as asiw  # pylint: disable=g-import-not-at-top
  data = tmp_path / "manual"
  write_released_video(str(data), "train", "ok1", 0, 706, 300)
  write_released_video(str(data), "train", "ok2", 1, 817, 300)
  write_released_video(str(data), "test", "bad", 0, 706, 300, audio=False)
  with open(data / "splits.pickle", "wb") as f:
    pickle.dump((["ok1", "ok2"], ["bad"], ["ok1"]), f)
  msg = _prepare_error(asiw, data, tmp_path)
  assert "no usable video in split 'validation'" in msg and "missing_audio" in msg
  assert not list((tmp_path / "tfds").rglob("*.array_record*"))  # nothing left half-built


def test_released_readers_reject_malformed_files(tmp_path):
  bad_csv = tmp_path / fmt.LABELS_CSV
  bad_csv.write_text("3,706,0,0\nbaby,706,1,0\n")
  with pytest.raises(fmt.FormatError, match=r"Vision_Text_Labels.csv: non-integer entry"):
    fmt.read_labels_csv(str(bad_csv))
  info = tmp_path / fmt.IMAGE_INFO_JSON
  info.write_text(json.dumps([{"image": "0001.png"}]))
  with pytest.raises(fmt.FormatError, match="lacks 'image' or 'objects'"):
    fmt.read_image_info(str(info))
  cham = tmp_path / fmt.CHAMFER_PICKLE
  with open(cham, "wb") as f:
    pickle.dump({"object_context": [(0, 0, 1), (-1, -1, 0)], "object_wind": [(5, 0)],
                 "dist_mat": np.zeros((3, 3))}, f)
  with pytest.raises(fmt.FormatError, match=r"'dist_mat' has shape \(3, 3\) for 2 nodes"):
    fmt.read_chamfer_info(str(cham))
  with pytest.raises(fmt.FormatError, match="file not found"):
    fmt.read_displacements(str(tmp_path / "nope.pickle"), 10)


def _hostile(tmp_path, name, wrap=lambda p: p):
  """A pickle named like a released file whose payload, if run, writes tmp_path/ran."""
  return hostile.hostile_pickle(tmp_path / name, tmp_path / "ran", wrap)


@pytest.mark.parametrize("reader,name,wrap", [
    (fmt.read_split_pickle, fmt.SPLIT_PICKLES[0], lambda p: (["a"], ["b"], [p])),
    (fmt.read_chamfer_info, fmt.CHAMFER_PICKLE,
     lambda p: {"object_context": [(0, 0, 1), (-1, -1, 0)], "object_wind": [(5, 0)],
                "dist_mat": p}),
    (lambda path: fmt.read_displacements(path, 10), fmt.DISPLACEMENT_PICKLE,
     lambda p: {5: {0: p}}),
], ids=["split_list", "chamfer", "displacement"])
def test_released_readers_refuse_hostile_pickles(tmp_path, reader, name, wrap):
  path = _hostile(tmp_path, name, wrap)
  with pytest.raises(fmt.FormatError) as e:
    reader(path)
  hostile.assert_nothing_ran(tmp_path / "ran")
  assert str(e.value).startswith(f"{path}: refused: the pickle asks for posix.system")
  assert e.value.path == path


def test_hostile_release_files_stop_or_skip_the_build_without_running(tmp_path):
  """Through the builder: a hostile split list stops the build with its name; a hostile
  per-video Chamfer/displacement file skips that video with its name; nothing runs."""
  from asmp_data.asiw import asiw_dataset_builder as asiw  # pylint: disable=g-import-not-at-top
  data = tmp_path / "manual"
  write_released_video(str(data), "train", "vidA", 0, 706, 300)
  write_released_video(str(data), "train", "vidB", 1, 817, 300)
  rdir = data / "Rectified_Frames" / "train"
  cham = _hostile(rdir / "vidA", fmt.CHAMFER_PICKLE)
  disp = _hostile(rdir / "vidB", fmt.DISPLACEMENT_PICKLE, lambda p: {817: p})
  splits = _hostile(data, "splits.pickle", lambda p: (["vidA"], [p], []))
  msg = _prepare_error(asiw, data, tmp_path)
  assert splits in msg and "refused" in msg
  hostile.assert_nothing_ran(tmp_path / "ran")
  builder = asiw.Builder(data_dir=str(tmp_path / "tfds"), config="released")
  tasks = builder.tasks(str(data), str(data), "train", [("vidA", ()), ("vidB", ())])
  records = {clip: skip for clip, _, skip in map(real_common.process_video, tasks)}
  for clip, path in (("vidA", cham), ("vidB", disp)):
    assert records[clip]["kind"] == real_common.MALFORMED_FILE
    assert records[clip]["reason"].startswith(f"{path}: refused")
  hostile.assert_nothing_ran(tmp_path / "ran")


def test_symmetric_distances_and_public_code_weights():
  d = fmt.symmetric_distances(np.array([[0, 2.0, np.nan], [0, 0, 4.0], [1.0, 0, 0]]))
  np.testing.assert_array_equal(d, [[0, 2, 1], [2, 0, 4], [1, 4, 0]])
  w = fmt.released_edge_weights(d, 25.0, "public_code")
  p = np.percentile([2.0, 1.0, 4.0, 2.0, 1.0, 4.0], 25.0)  # raw non-zero distances
  np.testing.assert_allclose(w[0, 1], np.exp(-(2.0 / 4.0) / p), rtol=1e-6)
  assert w[0, 0] == 0 and np.allclose(w, w.T)


# ----------------------------------------------------------------------- one training step each

TINY = ["--config.model.node_hidden=32", "--config.model.embed_dim=32",
        "--config.model.gat_heads=2", "--config.model.gat_head_dim=8",
        "--config.model.edgeconv_dim=16", "--config.model.unet_width_mult=0.125",
        "--config.model.cls_width=8", "--config.model.cls_blocks=(1,1,1,1)",
        "--config.train.batch_size=2", "--config.train.num_train_steps=1",
        "--config.train.log_every=1", "--config.train.eval_every=1",
        "--config.train.checkpoint_every=1", "--config.eval.num_pairs=0",
        "--config.eval.batch_size=2", "--config.eval.val_batches=1",
        "--config.eval.num_audio_summaries=0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["asiw", "ave"])
def test_one_training_step(name, asiw_built, ave_built, tmp_path):
  """launch.py trains one step on each data set. ASIW is built by launch.py itself from the manual
  dir (config.data.manual_dir -> datasets.prepare); AVE reuses the fixture's build."""
  from conftest import run_launch  # pylint: disable=g-import-not-at-top
  manual, data_dir, _ = asiw_built if name == "asiw" else ave_built
  if name == "asiw":
    data_dir = str(tmp_path / "tfds")
  extra = [] if name == "asiw" else ["--config.data.builder_config=raw"]
  proc = run_launch(str(tmp_path / "run"), data_dir, f"--config.data.manual_dir={manual}",
                    *TINY, *extra, config=f"configs/{name}.py",
                    env={real_builder.WORKERS_ENV: "1"})
  assert proc.returncode == 0, proc.stdout[-3000:]
  assert "step 1/1" in proc.stdout
  cfg = json.load(open(tmp_path / "run" / "config.json"))
  assert cfg["model"]["num_classes"] == (15 if name == "asiw" else 19)
  assert cfg["model"]["node_feature_dim"] == FDIM
