"""The learned providers end to end: python -m asmp_jax.preprocess_videos and python -m
asmp_jax.separate with weight files (real architectures at random init) on real-encoded videos;
a paper-setting (2048-d 'precomputed' features) checkpoint separating a video; bad weight files
refused in one line before any video is decoded, with no output."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("transformers")

from conftest import REPO  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_vision import DET_KW, save_weights  # pylint: disable=g-import-not-at-top
from asmp_jax import inference, media, preprocess, vision
from asmp_jax.graph import providers as graph_providers
from asmp_jax.models import asmp as asmp_model
from asmp_jax.vision import weights as weights_lib

RUN = os.path.join(REPO, "tests", "data", "pre_redesign", "run")  # a checked-in tiny hog_color run


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  return save_weights(tmp_path_factory.mktemp("vision_cli_weights"))


def make_video(path, seconds=1.5, fps=24, size=(48, 64), seed=0):
  """A real-encoded (H.264 + AAC) clip: a textured square moving right over noise, a tone."""
  rng = np.random.default_rng(seed)
  h, w = size
  bg = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
  patch = rng.integers(120, 255, (16, 16, 3), dtype=np.uint8)
  frames = []
  for k in range(int(seconds * fps)):
    f = bg.copy()
    x = 4 + k
    f[16:32, x:x + 16] = patch[:, :min(16, w - x)]
    frames.append(f)
  sr = 22050
  tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
  media.write_video(path, np.stack(frames), fps, audio=(tone, sr))
  return path


def _cli(module, *args, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        timeout=timeout)


def _weight_flags(weights):
  return [f"--detector_weights={weights['detector']}", f"--depth_weights={weights['depth']}",
          f"--flow_weights={weights['raft_small']}", "--detector_score_threshold=0.0",
          "--detector_min_size=64"]


@pytest.mark.slow
def test_preprocess_videos_writes_the_builders_files_resumably(weights, tmp_path):
  from asmp_data import real_common  # pylint: disable=g-import-not-at-top
  vids = tmp_path / "videos"
  vids.mkdir()
  make_video(str(vids / "clipA.mp4"))
  (vids / "broken.mp4").write_bytes(b"not a video at all")
  out = tmp_path / "root"
  proc = _cli("asmp_jax.preprocess_videos", f"--videos={vids}", f"--out_dir={out}",
              "--label_map=asiw", "--num_windows=1", *_weight_flags(weights))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "clipA: detector fasterrcnn_resnet50_fpn: 8/8 frames" in proc.stderr  # progress
  assert "Loading weights" not in proc.stderr  # transformers' own per-tensor bar is off
  # The files read back through the raw builders' readers, on the frames they sample.
  frames, fps = media.read_video(str(vids / "clipA.mp4"))
  frames = real_common.resample_frames(frames, fps, real_common.FPS, 8)
  dets = graph_providers.load_detections(str(out / "detections" / "clipA.npz"))
  assert len(dets) > 0 and dets.feature.shape == (len(dets), 2048)
  assert dets.frame.min() >= 0 and dets.frame.max() < 8
  files = graph_providers.PrecomputedFiles(str(out / "detections" / "clipA.npz"),
                                           str(out / "depth" / "clipA.npz"),
                                           str(out / "flow" / "clipA.npz"))
  assert files.depth(frames).shape == (8, 48, 64) and files.flow(frames).shape == (8, 48, 64, 2)
  # The raw builders' vocabulary lookup maps COCO person to ASIW people.
  vocab = real_common.read_vocabulary(str(out / "detector_classes.txt"))
  cmap = real_common.load_class_map(os.path.join(REPO, "data", "asiw", "classes.tsv"))
  assert cmap.by_vocabulary(vocab)[1] == cmap.names.index("people")
  report = json.loads((out / "preprocess_report.json").read_text())
  assert report["videos"]["clipA"]["status"].startswith("done")
  assert report["videos"]["broken"]["status"] == "skipped"
  assert "broken.mp4" in report["videos"]["broken"]["reason"]
  assert report["providers"]["detections"]["sha256"] == weights_lib.sha256_file(
      weights["detector"])
  assert not [f for d in ("detections", "depth", "flow") for f in os.listdir(out / d)
              if f.startswith(".")]  # no temporary file left
  # Resumed: the done video is skipped, its files untouched.
  mtime = os.path.getmtime(out / "depth" / "clipA.npz")
  again = _cli("asmp_jax.preprocess_videos", f"--videos={vids}", f"--out_dir={out}",
               "--num_windows=1", *_weight_flags(weights))
  assert again.returncode == 0 and "clipA: already done, skipped" in again.stderr
  assert os.path.getmtime(out / "depth" / "clipA.npz") == mtime



@pytest.mark.slow
def test_separate_reads_the_files_preprocess_videos_writes(weights, tmp_path):
  """The 8 fps files of preprocess_videos feed separate (its own frame sampling); files that stop
  before the video does are refused in one line naming the --num_windows that covers it."""
  vids = tmp_path / "videos"
  vids.mkdir()
  video = make_video(str(vids / "clip.mp4"))  # 1.5 s
  run = str(tmp_path / "run")
  shutil.copytree(RUN, run)

  def separate(root, out):
    return _cli("asmp_jax.separate", f"--workdir={run}", f"--video={video}", f"--out_dir={out}",
                f"--detections={root}/detections/clip.npz", f"--depth={root}/depth/clip.npz",
                f"--flow={root}/flow/clip.npz")

  short = tmp_path / "short"
  proc = _cli("asmp_jax.preprocess_videos", f"--videos={vids}", f"--out_dir={short}",
              "--num_windows=1", *_weight_flags(weights))
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = separate(short, tmp_path / "out_short")
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "clip.npz" in last and "--num_windows=2" in last, last
  assert not (tmp_path / "out_short").exists()
  whole = tmp_path / "whole"
  proc = _cli("asmp_jax.preprocess_videos", f"--videos={vids}", f"--out_dir={whole}",
              "--num_windows=0", *_weight_flags(weights))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(whole / "depth" / "clip.npz") as f:
    assert len(f["source_frame"]) == len(f["depth"]) == 12  # 8 fps of 1.5 s
    assert float(f["source_fps"]) == 24.0
  out = tmp_path / "out"
  proc = separate(whole, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["providers"]["detections"] == f"file {whole}/detections/clip.npz"
  assert summary["providers"]["depth"] == "file" and summary["providers"]["flow"] == "file"
  assert summary["detected_objects"]  # random-init detections at threshold 0, mapped by name
  with open(os.path.join(RUN, "dataset_meta.json")) as f:
    meta = json.load(f)
  known = set(meta["auditory_classes"] + meta["context_classes"])
  assert all(o["name"] in known or o["name"].startswith("detector: ")
             for o in summary["detected_objects"])
  assert {"background.wav", "summary.json"} <= set(os.listdir(out))

def test_bad_weight_files_fail_in_one_line_before_any_video_is_read(weights, tmp_path):
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"\x00" * 64)
  out = tmp_path / "out"
  # The video and workdir do not even exist: the weights are checked first.
  cases = [("asmp_jax.preprocess_videos", [f"--videos={tmp_path}", f"--out_dir={out}",
                                           f"--detector_weights={bad}"], str(bad)),
           ("asmp_jax.separate", [f"--workdir={tmp_path}/run", f"--video={tmp_path}/v.mp4",
                                  f"--out_dir={out}", f"--flow_weights={weights['detector']}"],
            weights["detector"]),
           ("asmp_jax.separate", [f"--workdir={tmp_path}/run", f"--video={tmp_path}/v.mp4",
                                  f"--out_dir={out}", f"--depth_weights={tmp_path}/none"],
            f"{tmp_path}/none")]
  for module, args, named in cases:
    proc = _cli(module, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert lines[-1].startswith("error: ") and named in lines[-1] and "expected" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_separate_cli_with_the_three_learned_providers(weights, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(RUN, run)
  video = make_video(str(tmp_path / "clip.mp4"))
  out = tmp_path / "out"
  proc = _cli("asmp_jax.separate", f"--workdir={run}", f"--video={video}", f"--out_dir={out}",
              *_weight_flags(weights))
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  prov = summary["providers"]
  assert prov["detections"]["name"] == "fasterrcnn_resnet50_fpn"
  assert prov["detections"]["sha256"] == weights_lib.sha256_file(weights["detector"])
  assert prov["depth"]["sha256"] == weights_lib.sha256_file(
      os.path.join(weights["depth"], "model.safetensors"))
  assert prov["flow"]["name"] == "raft_small"
  assert prov["flow"]["sha256"] == weights_lib.sha256_file(weights["raft_small"])
  assert {"background.wav", "separation.png", "summary.json"} <= set(os.listdir(out))
  with open(os.path.join(RUN, "dataset_meta.json")) as f:
    meta = json.load(f)
  known = set(meta["auditory_classes"] + meta["context_classes"])
  assert summary["detected_objects"]  # random-init detections at threshold 0 are sources
  assert all(o["name"] in known or o["name"].startswith("detector: ")
             for o in summary["detected_objects"])
  assert summary["sources"][0]["measured_directions"]  # the flow measured the motion


@pytest.mark.slow
def test_paper_setting_checkpoint_separates_a_video_with_the_detector(weights, tmp_path):
  from asmp_jax import run_folder  # pylint: disable=g-import-not-at-top
  config = run_folder.load_saved_config(RUN)  # the saved config as restores read it
  with open(os.path.join(RUN, "dataset_meta.json")) as f:
    meta = json.load(f)
  config.graph.feature_extractor = "precomputed"
  config.model.node_feature_dim = 2048
  n = preprocess.MAX_NODES
  model = asmp_model.create_model(config.model)
  import jax  # pylint: disable=g-import-not-at-top
  variables = asmp_model.init_variables(
      model, jax.random.key(0), asmp_model.batch_shapes(config.model, 1, n, n * (n - 1)))
  sep = inference.Separator(config, dict(variables), meta)
  learned = vision.VisionProviders.load(weights["detector"], detector_score_threshold=0.0,
                                        detector_kwargs={k: v for k, v in DET_KW.items()
                                                         if k not in ("min_size", "max_size")},
                                        detector_min_size=64)
  vision.check_checkpoint(config, learned, None)
  video = make_video(str(tmp_path / "clip.mp4"))
  result = sep.separate(video, providers=inference.Providers(detections=learned.detector))
  assert result.graphs.node_features.shape[-1] == 2048
  assert result.graphs.node_mask[:, :-1].any()  # detector nodes, not only the background
  assert result.providers_used["detections"]["name"] == "fasterrcnn_resnet50_fpn"
  assert np.isfinite(result.sources).all() and result.sources.shape[0] == result.num_sources + 1
  # A checkpoint of another feature size, or one without a detector: one error naming both.
  config.model.node_feature_dim = 1024
  with pytest.raises(ValueError, match=r"1024-d .*fasterrcnn_resnet50_fpn .*2048-d"):
    vision.check_checkpoint(config, learned, None)
  with pytest.raises(ValueError, match="pass --detector_weights"):
    vision.check_checkpoint(config, vision.VisionProviders(), None)


@pytest.mark.slow
def test_preprocess_videos_reports_a_video_without_detections(weights, tmp_path):
  from asmp_jax import preprocess_videos  # pylint: disable=g-import-not-at-top
  vids = tmp_path / "videos"
  vids.mkdir()
  make_video(str(vids / "quiet.mp4"), seconds=1.0)
  learned = vision.VisionProviders.load(
      weights["detector"], detector_score_threshold=1.0, detector_min_size=64,
      detector_kwargs={"rpn_post_nms_top_n_test": 10})  # nothing scores 1.0
  report = preprocess_videos.run(str(vids), str(tmp_path / "out"), learned=learned,
                                 num_windows=1)
  assert report["videos"]["quiet"]["status"] == "done, no detections"
  dets = graph_providers.load_detections(str(tmp_path / "out" / "detections" / "quiet.npz"))
  assert len(dets) == 0 and dets.feature.shape == (0, 2048)
