"""python -m asmp_jax.separate: outputs on a real clip, one-line errors, no partial outputs."""
import json
import os
import struct
import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import REPO
from asmp_jax import media
from asmp_jax import separate


def _separate(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "asmp_jax.separate", *args], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        timeout=timeout)


def _leftovers(parent, name):
  return [f for f in os.listdir(parent) if f.startswith(name) or f.startswith("." + name)]


@pytest.mark.slow
def test_cli_writes_sources_summary_and_picture(trained_tiny_workdir, tmp_path):
  workdir, stem, _ = trained_tiny_workdir
  wav, _ = media.load_audio(stem + ".wav", target_sr=44100)
  stereo = np.stack([wav, 0.5 * wav], -1)[:44100 * 8]
  audio = str(tmp_path / "mix.wav")
  media.write_wav(audio, stereo, 44100, subtype="FLOAT")
  out = str(tmp_path / "out")
  proc = _separate(f"--workdir={workdir}", f"--video={stem}.mp4", f"--audio={audio}",
                   f"--out_dir={out}", "--num_sources=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "separation: batch" in proc.stderr  # progress is logged
  assert (f"Reading video {stem}.mp4; audio {audio}; checkpoint step 2 of {workdir}; "
          "detections: none given") in proc.stderr
  assert "read only" not in proc.stderr and "<array>" not in proc.stderr
  assert sorted(os.listdir(out)) == [separate.MARKER_FILE, "background.wav", "separation.png",
                                     "source_0.wav", "source_1.wav", "summary.json"]
  for name in ("source_0", "source_1", "background"):
    info = sf.info(os.path.join(out, name + ".wav"))
    assert info.samplerate == 44100 and info.frames == 44100 * 8 and info.channels == 1
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["sample_rate"] == 44100 and summary["num_samples"] == 44100 * 8
  assert summary["num_windows"] == 10 and summary["checkpoint_step"] == 2
  assert [s["name"] for s in summary["sources"]] == ["source 0", "source 1", "background"]
  directions = summary["sources"][0]["directions"]
  assert [d["window"] for d in directions] == list(range(8))  # windows covered by the 8 s audio
  assert all(0 <= d["probability"] <= 1 for d in directions)
  assert summary["providers"]["detections"].startswith("motion proposals")
  assert any("flat depth" in w for w in summary["warnings"])
  with Image.open(os.path.join(out, "separation.png")) as im:
    assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 400
  assert _leftovers(str(tmp_path), "out") == ["out"]


@pytest.mark.slow
def test_a_synthetic_clip_separates_from_its_mp4_alone_and_overwrite_replaces_it(
    trained_tiny_workdir, tmp_path):
  """The generated clip's mp4 carries the mixture: --video alone separates what the training
  process separated from mp4 + wav; a second run with --overwrite replaces the first's outputs."""
  workdir, stem, ref_npz = trained_tiny_workdir
  out = tmp_path / "out"
  for extra in ([], ["--overwrite"]):
    proc = _separate(f"--workdir={workdir}", f"--video={stem}.mp4", f"--out_dir={out}", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"audio: the sound track of {stem}.mp4" in proc.stderr
  with open(out / "summary.json") as f:
    summary = json.load(f)
  assert summary["audio"] == f"{stem}.mp4"
  ref = np.load(ref_npz)["sources"]
  got = np.stack([sf.read(str(out / s["file"]), dtype="float32")[0] for s in summary["sources"]])
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, atol=2.0 / 32768 + 1e-5 * np.abs(ref).max())  # PCM_16
  assert _leftovers(str(tmp_path), "out") == ["out"]


@pytest.mark.slow
def test_cli_failure_after_writing_leaves_no_partial_outputs(trained_tiny_workdir, tmp_path):
  workdir, stem, _ = trained_tiny_workdir
  out = str(tmp_path / "out")
  # The picture window is checked only after the wav files were written to the staging dir.
  proc = _separate(f"--workdir={workdir}", f"--video={stem}.mp4", f"--audio={stem}.wav",
                   f"--out_dir={out}", "--picture_window=99")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == "error: window must be in 0..9, got 99"
  assert "Traceback" not in proc.stderr
  assert os.listdir(tmp_path) == []


def _bad_inputs(d):
  """name -> (flags, expected message part): each must fail with one line."""
  frames = np.zeros((8, 32, 32, 3), np.uint8)
  media.write_video(str(d / "silent.mp4"), frames, 8)  # a video without an audio stream
  tone = (0.3 * np.sin(np.arange(11025) / 7)).astype(np.float32)
  media.write_wav(str(d / "tone.wav"), tone, 11025)
  data = (d / "silent.mp4").read_bytes()
  (d / "corrupt.mp4").write_bytes(data[:len(data) // 3])
  sf.write(str(d / "empty.wav"), np.zeros((0,), np.float32), 11025)
  pcm = (tone * 3000).astype("<i2").tobytes()
  fmt = struct.pack("<HHIIHH", 0x1234, 1, 11025, 22050, 2, 16)  # an unknown sample format tag
  (d / "odd_format.wav").write_bytes(
      b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(pcm)) + b"WAVE" + b"fmt "
      + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm)
  with av.open(str(d / "zero_frames.mkv"), "w") as c:  # a video stream holding no frame
    s = c.add_stream("ffv1", rate=8)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    c.start_encoding()
  return {
      "missing file": ([f"--video={d}/nope.mp4"], "nope.mp4: file not found"),
      "no video stream": ([f"--video={d}/tone.wav"], "tone.wav: no video stream"),
      "no audio anywhere": ([f"--video={d}/silent.mp4"], "silent.mp4: no audio stream"),
      "corrupt container": ([f"--video={d}/corrupt.mp4", f"--audio={d}/tone.wav"],
                            "corrupt.mp4: cannot open as a media container"),
      "zero-length audio": ([f"--video={d}/silent.mp4", f"--audio={d}/empty.wav"],
                            "empty.wav: audio has zero samples"),
      "zero-length video": ([f"--video={d}/zero_frames.mkv", f"--audio={d}/tone.wav"],
                            "zero_frames.mkv: "),
      "unsupported sample format": ([f"--video={d}/silent.mp4", f"--audio={d}/odd_format.wav"],
                                    "odd_format.wav: the audio stream's codec (tag 'unknown') is "
                                    "not one this FFmpeg build can decode"),
  }


def test_bad_inputs_fail_with_one_line_and_no_outputs(tmp_path):
  """Each bad input raises an expected error (main prints it as one line), leaves no outputs."""
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  runs = tmp_path / "runs"
  runs.mkdir()
  # The inputs are checked before the checkpoint is read, so no trained workdir is needed.
  for name, (flags, message) in _bad_inputs(inputs).items():
    kwargs = dict(f[2:].split("=", 1) for f in flags)
    with pytest.raises(separate.expected_errors()) as e:
      separate.run(str(tmp_path / "no_run"), kwargs.pop("video"),
                   str(runs / name.replace(" ", "_")), **kwargs)
    line = separate.error_line(e.value)
    assert "\n" not in line and message in line, (name, line)
    assert os.listdir(runs) == [], (name, os.listdir(runs))


def test_cli_process_prints_one_line_and_exits_1(tmp_path):
  frames = np.zeros((8, 32, 32, 3), np.uint8)
  media.write_video(str(tmp_path / "silent.mp4"), frames, 8)
  proc = _separate(f"--workdir={tmp_path}/run", f"--video={tmp_path}/silent.mp4",
                   f"--out_dir={tmp_path}/out")
  assert proc.returncode == 1
  assert proc.stdout == ""
  assert proc.stderr.splitlines() == [
      f"error: {tmp_path}/silent.mp4: no audio stream in the video and no separate audio file "
      "given"]
  assert sorted(os.listdir(tmp_path)) == ["silent.mp4"]


def test_cli_refuses_a_non_empty_out_dir_and_a_missing_workdir(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  proc = _separate(f"--workdir={tmp_path}/run", "--video=x.mp4", f"--out_dir={out}")
  assert proc.returncode == 1 and "is not empty (pass --overwrite" in proc.stderr
  assert (out / "keep.txt").read_text() == "mine"
  frames = np.zeros((8, 32, 32, 3), np.uint8)
  video = str(tmp_path / "v.mp4")
  media.write_video(video, frames, 8, audio=(np.zeros(11025, np.float32), 11025))
  proc = _separate(f"--workdir={tmp_path}/run", f"--video={video}", f"--out_dir={tmp_path}/o2")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].endswith("run: workdir not found")
  assert not os.path.exists(tmp_path / "o2")


# ----------------------------------------------------------------------- --overwrite


def _stage(out, names, overwrite=False):
  with separate.staged_output(str(out), overwrite) as tmp:
    for n in names:
      with open(os.path.join(tmp, n), "w") as f:
        f.write(n)


def test_overwrite_replaces_only_what_a_separation_wrote(tmp_path):
  out = tmp_path / "out"
  _stage(out, ["source_0.wav", "background.wav", "summary.json"])
  marker = json.loads((out / separate.MARKER_FILE).read_text())
  assert marker["files"] == ["background.wav", "source_0.wav", "summary.json"]
  with pytest.raises(separate.UsageError, match="is not empty"):
    separate._check_out_dir(str(out), overwrite=False)
  _stage(out, ["source_0.wav", "source_1.wav", "background.wav"], overwrite=True)
  assert sorted(os.listdir(out)) == [separate.MARKER_FILE, "background.wav", "source_0.wav",
                                     "source_1.wav"]
  assert _leftovers(str(tmp_path), "out") == ["out"]
  (out / "notes.txt").write_text("mine")
  with pytest.raises(separate.UsageError, match=r"holds files no separation wrote \(notes.txt\)"):
    separate._check_out_dir(str(out), overwrite=True)
  os.remove(out / "notes.txt")
  os.remove(out / separate.MARKER_FILE)
  with pytest.raises(separate.UsageError, match="holds no previous separation"):
    separate._check_out_dir(str(out), overwrite=True)


def test_overwrite_refuses_a_dir_that_changed_while_separating(tmp_path):
  out = tmp_path / "out"
  _stage(out, ["source_0.wav"])
  with pytest.raises(separate.UsageError, match="notes.txt"):
    with separate.staged_output(str(out), True) as tmp:
      (out / "notes.txt").write_text("added meanwhile")
      (tmp_path / "staged").write_text(tmp)
  assert sorted(os.listdir(out)) == [separate.MARKER_FILE, "notes.txt", "source_0.wav"]
  assert _leftovers(str(tmp_path), "out") == ["out"]


def _video_with_audio(path):
  media.write_video(str(path), np.zeros((8, 32, 32, 3), np.uint8), 8,
                    audio=(np.zeros(11025, np.float32), 11025))
  return str(path)


def _forge_marker(d):
  names = sorted(os.listdir(d))
  (d / separate.MARKER_FILE).write_text(json.dumps({"written_by": separate.MARKER_WRITER,
                                                    "files": names}))


@pytest.mark.parametrize("where", ["workdir", "cwd", "parent_of_cwd", "home"])
def test_overwrite_never_replaces_a_workdir_the_current_or_home_directory(tmp_path, monkeypatch,
                                                                          where):
  """Refused before anything is read, even when a marker lists every file there."""
  video = _video_with_audio(tmp_path / "v.mp4")
  target = tmp_path / "target"
  (target / "checkpoints" / "3").mkdir(parents=True)
  (target / "config.json").write_text("{}")
  (target / "checkpoints" / "3" / "state").write_text("weights")
  if where != "workdir":
    os.remove(target / "config.json")
    os.rename(target / "checkpoints", target / "kept")
  _forge_marker(target)
  before = sorted(str(p) for p in target.rglob("*"))
  out_dir = str(target)
  if where == "cwd":
    monkeypatch.chdir(target)
    out_dir = "."
  elif where == "parent_of_cwd":
    monkeypatch.chdir(target / "kept")
  elif where == "home":
    monkeypatch.setenv("HOME", str(target))
  why = {"workdir": "is a training workdir", "cwd": "is the current directory",
         "parent_of_cwd": "holds the current directory", "home": "is your home directory"}[where]
  with pytest.raises(separate.UsageError) as e:
    separate.run(str(tmp_path / "no_run"), video, out_dir, overwrite=True)
  line = separate.error_line(e.value)
  assert why in line and "never replaced" in line and "\n" not in line
  assert sorted(str(p) for p in target.rglob("*")) == before


def test_cli_overwrite_refuses_a_dir_of_other_files_in_one_line(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  proc = _separate(f"--workdir={tmp_path}/run", "--video=x.mp4", f"--out_dir={out}",
                   "--overwrite")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      f"error: --out_dir {out} holds no previous separation (no {separate.MARKER_FILE}); "
      "--overwrite replaces only a separation's outputs: name a new directory"]
  assert (out / "keep.txt").read_text() == "mine"


def test_inputs_line_names_every_file_read():
  line = separate.inputs_line("clip.mp4", None, "runs/x", 7,
                              {"detections": "d.h5", "depth": None, "flow": "f.npz"})
  assert line == ("Reading video clip.mp4; audio: the sound track of clip.mp4; checkpoint step 7 "
                  "of runs/x; detections d.h5; depth: none given; flow f.npz")
  assert "audio mix.wav;" in separate.inputs_line("clip.mp4", "mix.wav", "r", 1, {})


def test_orbax_read_only_warning_is_dropped_other_warnings_kept():
  import logging  # pylint: disable=g-import-not-at-top
  quiet = separate._QuietLibraries()

  def record(path, level, msg):
    return logging.LogRecord("absl", level, path, 1, msg, (), None)

  orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert not quiet.filter(record(orbax, logging.WARNING, "Given directory is read only=/r/ck"))
  assert quiet.filter(record(orbax, logging.WARNING, "Something unexpected"))
  assert not quiet.filter(record(orbax, logging.INFO, "Saving item"))
  assert quiet.filter(record("/x/asmp_jax/inference.py", logging.INFO, "Restored step 2"))
