"""What every media reader and writer shares: the error type, file checks, small waveform
utilities and :func:`probe`."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import soxr

DEFAULT_SAMPLE_RATE = 11025


class MediaError(ValueError):
  """A media file is missing, unreadable, empty or not what the caller asked for."""

  def __init__(self, path: str | os.PathLike[str], problem: str):
    self.path = os.fspath(path)
    self.problem = " ".join(str(problem).split())  # keep the message on one line
    super().__init__(f"{self.path}: {self.problem}")


def downmix(wav: np.ndarray) -> np.ndarray:
  """Averages the channels of a waveform.

  Args:
    wav: ``[L]`` (returned as float32 unchanged) or ``[L, C]`` samples.

  Returns:
    float32 ``[L]``, the mean over channels.
  """
  wav = np.asarray(wav)
  if wav.ndim == 1:
    return wav.astype(np.float32, copy=False)
  if wav.ndim != 2:
    raise ValueError(f"downmix: expected wav of shape [L] or [L, C], got {wav.shape}")
  return wav.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  """Resamples with soxr's high-quality ("HQ") filter.

  Args:
    wav: ``[L]`` or ``[L, C]`` float samples.
    sr_in: sample rate of ``wav`` in Hz.
    sr_out: wanted sample rate in Hz.

  Returns:
    float32 ``[round(L * sr_out / sr_in)]`` (or ``[..., C]``). Returned as is when the rates match.
  """
  if sr_in <= 0 or sr_out <= 0:
    raise ValueError(f"resample: sample rates must be positive, got sr_in={sr_in}, sr_out={sr_out}")
  wav = np.asarray(wav, dtype=np.float32)
  if wav.ndim not in (1, 2):
    raise ValueError(f"resample: expected wav of shape [L] or [L, C], got {wav.shape}")
  if int(sr_in) == int(sr_out) or wav.shape[0] == 0:
    return wav
  out = soxr.resample(wav, int(sr_in), int(sr_out), quality="HQ")
  return np.asarray(out, dtype=np.float32)


def is_silent(wav: np.ndarray, threshold_db: float = -60.0) -> bool:
  """Whether the RMS level of ``wav`` is below ``threshold_db`` dB relative to full scale (1.0).

  An empty waveform counts as silent. A full-scale sine has an RMS level of about -3 dBFS.
  """
  wav = np.asarray(wav, dtype=np.float64)
  if wav.size == 0:
    return True
  rms = float(np.sqrt(np.mean(np.square(wav))))
  if rms == 0.0:
    return True
  return 20.0 * np.log10(rms) < threshold_db


def _to_float32(data: np.ndarray) -> np.ndarray:
  """Integer PCM -> float32 in [-1, 1]; float input is cast."""
  if np.issubdtype(data.dtype, np.floating):
    return data.astype(np.float32, copy=False)
  if data.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128.
    return ((data.astype(np.float32) - 128.0) / 128.0)
  if np.issubdtype(data.dtype, np.signedinteger):
    return (data.astype(np.float64) / float(-np.iinfo(data.dtype).min)).astype(np.float32)
  raise TypeError(f"unsupported sample dtype {data.dtype}")


def _check_readable(path: str) -> None:
  if not os.path.exists(path):
    raise MediaError(path, "file not found")
  if os.path.isdir(path):
    raise MediaError(path, "is a directory, expected a media file")
  if os.path.getsize(path) == 0:
    raise MediaError(path, "file is empty (0 bytes)")


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[Any]:
  """Opens ``path`` with PyAV for reading, turning FFmpeg errors into MediaError."""
  try:
    container = av.open(path, mode="r")
  except av.FFmpegError as e:
    raise MediaError(path, f"cannot open as a media container ({_ffmpeg_reason(e)})") from e
  try:
    yield container
  finally:
    container.close()


def _ffmpeg_reason(e: Exception) -> str:
  strerror = getattr(e, "strerror", None)
  return strerror or str(e) or type(e).__name__


def _require_decoder(path: str, stream: Any) -> None:
  """Raises MediaError if FFmpeg has no decoder for ``stream`` (PyAV leaves codec_context None)."""
  if stream.codec_context is None:
    tag = getattr(stream, "codec_tag", None) or "unknown"
    raise MediaError(path, f"the {stream.type} stream's codec (tag {tag!r}) is not one this "
                     "FFmpeg build can decode")


def _first_stream(path: str, container: Any, kind: str) -> Any:
  """The container's first ``kind`` ("audio" | "video") stream, checked to be decodable."""
  streams = getattr(container.streams, kind)
  if not streams:
    kinds = ", ".join(s.type for s in container.streams) or "none"
    raise MediaError(path, f"no {kind} stream in the container (streams: {kinds})")
  _require_decoder(path, streams[0])
  return streams[0]


def stream_fps(stream: Any) -> float:
  """A PyAV stream's frame rate: its average rate, else the guessed, else the base rate; 0.0 when
  none is known."""
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  return float(rate) if rate else 0.0


@contextlib.contextmanager
def _atomic_target(path: str) -> Iterator[str]:
  """Yields a temporary path in ``path``'s directory; renames it onto ``path`` on success.

  The temporary name keeps ``path``'s extension so writers that infer the format from it work.
  The writer creates the file itself, so it gets the usual permissions (0666 minus the umask;
  ``tempfile.mkstemp`` would leave it owner-only). On any exception the temporary file is removed
  and ``path`` is left untouched.
  """
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise MediaError(path, f"output directory {directory} does not exist")
  base, ext = os.path.splitext(os.path.basename(path))
  tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp{ext}")
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def probe(path: str | os.PathLike[str]) -> dict[str, Any]:
  """Describes a media file without decoding it.

  Returns:
    dict with ``duration`` (seconds, float; 0.0 if unknown), ``fps`` (float or None),
    ``width``/``height`` (int or None), ``num_frames`` (int or None; from the header, may be 0
    when the container does not record it), ``has_video``, ``has_audio`` (bool),
    ``audio_sample_rate`` (Hz or None), ``audio_channels`` (int or None).

  Raises:
    MediaError: missing or unreadable file.
  """
  path = os.fspath(path)
  _check_readable(path)
  with _open_input(path) as container:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    vcc = video.codec_context if video is not None else None  # None: no decoder for the codec
    acc = audio.codec_context if audio is not None else None
    if container.duration is not None:
      duration = container.duration / av.time_base
    else:
      durations = [
          float(s.duration * s.time_base) for s in (video, audio)
          if s is not None and s.duration is not None and s.time_base is not None
      ]
      duration = max(durations, default=0.0)
    return {
        "duration": float(duration),
        "fps": stream_fps(video) if video is not None else None,
        "width": int(vcc.width) if vcc is not None else None,
        "height": int(vcc.height) if vcc is not None else None,
        "num_frames": int(video.frames) if video is not None else None,
        "has_video": video is not None,
        "has_audio": audio is not None,
        "audio_sample_rate": int(acc.sample_rate) if acc is not None else None,
        "audio_channels": int(acc.channels) if acc is not None else None,
    }
