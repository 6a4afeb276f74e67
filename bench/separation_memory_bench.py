"""Peak memory of ``python -m asmp_jax.separate`` against the video's length.

Generates 320x240 videos of the given lengths (25 fps H.264, a textured background with a moving
square, and a 44.1 kHz AAC sound track of two tones, written frame by frame so that generating
them holds no whole video), separates each with the command in its own process, and prints that
process's peak resident memory (``ru_maxrss``) and wall time. Memory that does not grow with the
length is what the streamed separation promises (docs/inference.md).

  python launch.py --config=configs/synthetic_tiny.py --workdir=/tmp/asmp_tiny  # any checkpoint
  python bench/separation_memory_bench.py --workdir=/tmp/asmp_tiny --seconds 60 600 3600

(docs/inference.md, "Measured", gives the figures on the 2-core development VM.)
"""

from __future__ import annotations

import argparse
import fractions
import os
import subprocess
import sys
import tempfile
import time

import av
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_video(path: str, seconds: int, fps: int = 25, size: tuple[int, int] = (240, 320),
                sample_rate: int = 44100) -> None:
  """A synthetic clip written frame by frame (and its sound second by second)."""
  h, w = size
  rng = np.random.default_rng(0)
  background = np.repeat(np.repeat(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8), 8, 0),
                         8, 1)
  with av.open(path, mode="w") as container:
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = w, h, "yuv420p"
    video.options = {"preset": "ultrafast", "crf": "28"}
    audio = container.add_stream("aac", rate=sample_rate, layout="mono")
    apts = 0
    for second in range(seconds):
      for k in range(fps):
        t = second + k / fps
        frame = background.copy()
        x = int((w - 40) * (0.5 + 0.5 * np.sin(t)))
        frame[100:140, x:x + 40] = (255, 64, 0)
        container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
      n = np.arange(second * sample_rate, (second + 1) * sample_rate) / sample_rate
      tone = (0.3 * np.sin(2 * np.pi * 440 * n) + 0.2 * np.sin(2 * np.pi * 660 * n)
              * (0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * n))).astype(np.float32)
      for i in range(0, sample_rate, 1024):
        block = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="fltp", layout="mono")
        block.sample_rate, block.pts = sample_rate, apts
        block.time_base = fractions.Fraction(1, sample_rate)
        apts += block.samples
        container.mux(audio.encode(block))
    container.mux(video.encode(None))
    container.mux(audio.encode(None))


def separate(workdir: str, video: str, out_dir: str) -> tuple[float, float, int]:
  """(peak RSS in GB, wall seconds, exit status) of one ``asmp_jax.separate`` process."""
  cmd = [sys.executable, "-m", "asmp_jax.separate", f"--workdir={workdir}", f"--video={video}",
         f"--out_dir={out_dir}"]
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  _, status, usage = os.wait4(proc.pid, 0)
  err = proc.stderr.read()
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    print(err[-2000:], file=sys.stderr)
  return usage.ru_maxrss * 1024 / 1e9, time.time() - t0, proc.returncode  # ru_maxrss: KiB


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a training workdir (any checkpoint)")
  parser.add_argument("--seconds", type=int, nargs="+", default=[60, 600],
                      help="video lengths to measure")
  parser.add_argument("--tmp", default=None, help="where the videos go (default: a temp dir)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
    print(f"{'length':>8} {'peak RSS':>10} {'wall':>8}")
    for seconds in args.seconds:
      video = os.path.join(tmp, f"clip_{seconds}s.mp4")
      write_video(video, seconds)
      peak, wall, rc = separate(args.workdir, video, os.path.join(tmp, f"out_{seconds}"))
      status = "" if rc == 0 else f"  (exit status {rc})"
      print(f"{seconds:>7}s {peak:>8.2f} GB {wall:>7.0f}s{status}", flush=True)
      os.remove(video)


if __name__ == "__main__":
  main()
