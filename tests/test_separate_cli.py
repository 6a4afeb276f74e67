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
  assert sorted(os.listdir(out)) == ["background.wav", "separation.png", "source_0.wav",
                                     "source_1.wav", "summary.json"]
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
