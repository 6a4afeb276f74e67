"""Audio files in and out: whole (:func:`load_audio`, :func:`write_wav`) or block by block
(:class:`MonoAudio`, :class:`WavWriter`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import av
import numpy as np
import soundfile as sf

from asmp_jax.media.common import _check_readable
from asmp_jax.media.common import _ffmpeg_reason
from asmp_jax.media.common import _first_stream
from asmp_jax.media.common import _open_input
from asmp_jax.media.common import _atomic_target
from asmp_jax.media.common import _to_float32
from asmp_jax.media.common import DEFAULT_SAMPLE_RATE
from asmp_jax.media.common import downmix
from asmp_jax.media.common import MediaError
from asmp_jax.media.common import resample

# Extensions soundfile is tried on first; anything else (or a soundfile failure) goes to PyAV.
_SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au"})
# Longest tail of encoder padding load_audio trims to the declared stream length (samples).
_MAX_CODEC_PADDING = 4096



def _soundfile_blocks(path: str, block: int = 1 << 16) -> Iterator[np.ndarray]:
  """Reads with libsndfile: float32 blocks [n, C] (integer PCM scaled to [-1, 1)).

  Raises sf.LibsndfileError / RuntimeError.
  """
  with sf.SoundFile(path) as f:
    yield from f.blocks(blocksize=block, dtype="float32", always_2d=True)


def _pyav_audio_info(path: str) -> tuple[int, int | None]:
  """(sample rate, samples the header declares or None) of the first audio stream."""
  with _open_input(path) as container:
    stream = _first_stream(path, container, "audio")
    sr = int(stream.codec_context.sample_rate or stream.rate or 0)
    if sr <= 0:
      raise MediaError(path, "audio stream has no sample rate")
    return sr, _declared_num_samples(stream, sr)


def _pyav_blocks(path: str) -> Iterator[np.ndarray]:
  """Decodes the first audio stream with PyAV: float32 blocks [n, C], one per decoded frame."""
  with _open_input(path) as container:
    stream = container.streams.audio[0]
    # Convert every decoded frame to planar float32 with the stream's channel count, so frames
    # with differing sample formats (s16, s32p, fltp, ...) come out alike.
    resampler = None
    try:
      for frame in container.decode(stream):
        if resampler is None:
          resampler = av.AudioResampler(format="fltp", layout=frame.layout.name,
                                        rate=frame.sample_rate)
        for out in resampler.resample(frame):
          yield _to_float32(out.to_ndarray().T)
      if resampler is not None:
        for out in resampler.resample(None):
          yield _to_float32(out.to_ndarray().T)
    except av.FFmpegError as e:
      raise MediaError(path, f"corrupt or unreadable audio stream ({_ffmpeg_reason(e)})") from e


def _trimmed_length(decoded: int, declared: int | None) -> int:
  """Frame-based codecs (AAC, ...) pad the last frame; the container's declared duration (mp4
  edit list) says where the real signal ends. Trim only codec-sized overshoots, so a wrong
  header estimate (e.g. VBR mp3) never cuts real audio."""
  if declared is not None and 0 < decoded - declared <= _MAX_CODEC_PADDING:
    return declared
  return decoded


def _read_pyav_audio(path: str) -> tuple[np.ndarray, int]:
  """Decodes the first audio stream with PyAV. Returns ([L, C] float32, sr)."""
  sr, declared = _pyav_audio_info(path)
  chunks = list(_pyav_blocks(path))
  if not chunks:
    raise MediaError(path, "audio stream decodes to zero samples")
  data = np.concatenate(chunks, axis=0)
  return np.ascontiguousarray(data[:_trimmed_length(data.shape[0], declared)]), sr


def _declared_num_samples(stream: Any, sr: int) -> int | None:
  """Number of samples the container header declares for ``stream`` (None if it does not)."""
  if stream.duration is None or stream.time_base is None or stream.duration <= 0:
    return None
  return int(round(float(stream.duration * stream.time_base) * sr))


class MonoAudio:
  """A file's audio, downmixed to mono, read block by block (memory does not grow with length).

  Opening makes one decoding pass that checks every sample (the errors of :func:`load_audio`)
  and counts them; :meth:`blocks` then yields exactly ``num_samples`` samples, the ones
  ``load_audio(path, target_sr=None)`` returns, at ``sample_rate``.

  Raises:
    MediaError: missing/empty/corrupt file, no audio stream, zero samples, NaN/inf samples.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = os.fspath(path)
    _check_readable(self.path)
    self._soundfile = False
    if os.path.splitext(self.path)[1].lower() in _SOUNDFILE_EXTENSIONS:
      try:
        self.sample_rate, declared = int(sf.info(self.path).samplerate), None
        self._soundfile = True
      except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    if not self._soundfile:
      self.sample_rate, declared = _pyav_audio_info(self.path)
    decoded = 0
    try:
      for block in self._decoded():
        if not np.all(np.isfinite(block)):
          raise MediaError(self.path, "audio contains NaN or infinite samples")
        decoded += block.shape[0]
    except (sf.LibsndfileError, RuntimeError) as e:
      raise MediaError(self.path, f"unreadable audio file ({e})") from e
    if decoded == 0:
      raise MediaError(self.path, "audio has zero samples" if self._soundfile
                       else "audio stream decodes to zero samples")
    self.num_samples = _trimmed_length(decoded, declared)

  def _decoded(self) -> Iterator[np.ndarray]:
    return _soundfile_blocks(self.path) if self._soundfile else _pyav_blocks(self.path)

  def blocks(self) -> Iterator[np.ndarray]:
    """float32 mono blocks in order, ``num_samples`` samples in all."""
    left = self.num_samples
    for block in self._decoded():
      if left <= 0:
        break
      yield downmix(block[:left])
      left -= min(left, block.shape[0])


def load_audio(
    path: str | os.PathLike[str],
    target_sr: int | None = DEFAULT_SAMPLE_RATE,
    mono: bool = True,
) -> tuple[np.ndarray, int]:
  """Reads an audio file (or a video file's audio stream) as float32.

  wav/flac/ogg go through soundfile; anything soundfile cannot read (mp3, m4a, the audio of
  mp4/mkv/webm, ...) through PyAV. Integer PCM is scaled to [-1, 1].

  Args:
    path: the file.
    target_sr: output sample rate in Hz (soxr high quality); None keeps the file's rate.
    mono: average the channels (a silent file stays silent; phase-cancelling stereo stays quiet).

  Returns:
    ``(wav, orig_sr)``: float32 ``[L]`` if ``mono`` else ``[L, C]``, at ``target_sr``, and the
    file's own sample rate in Hz.

  Raises:
    MediaError: missing/empty/corrupt file, no audio stream, zero samples.
  """
  path = os.fspath(path)
  _check_readable(path)
  ext = os.path.splitext(path)[1].lower()
  data = sr = None
  sf_error: Exception | None = None
  if ext in _SOUNDFILE_EXTENSIONS:
    try:
      sr = int(sf.info(path).samplerate)
      data = np.concatenate(list(_soundfile_blocks(path)) or [np.zeros((0, 1), np.float32)])
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
      sf_error = e
  if data is None:
    try:
      data, sr = _read_pyav_audio(path)
    except MediaError as e:
      if sf_error is not None and "cannot open" in e.problem:
        raise MediaError(path, f"unreadable audio file (soundfile: {sf_error}; "
                               f"FFmpeg: {e.problem})") from e
      raise
  if data.shape[0] == 0:
    raise MediaError(path, "audio has zero samples")
  if not np.all(np.isfinite(data)):
    raise MediaError(path, "audio contains NaN or infinite samples")
  wav = downmix(data) if mono else data.astype(np.float32, copy=False)
  if target_sr is not None:
    wav = resample(wav, sr, int(target_sr))
  return wav, int(sr)


def _prepare_wav_for_writing(path: str, wav: np.ndarray) -> np.ndarray:
  wav = np.asarray(wav)
  if wav.ndim not in (1, 2):
    raise MediaError(path, f"expected audio of shape [L] or [L, C], got {wav.shape}")
  if not np.issubdtype(wav.dtype, np.floating):
    wav = _to_float32(wav)
  if not np.all(np.isfinite(wav)):
    raise MediaError(path, "refusing to write audio that contains NaN or infinite samples")
  peak = float(np.max(np.abs(wav))) if wav.size else 0.0
  if peak > 1.0:
    warnings.warn(f"{path}: audio peak {peak:.3f} exceeds 1.0; clipping to [-1, 1]", stacklevel=3)
    wav = np.clip(wav, -1.0, 1.0)
  return wav.astype(np.float32, copy=False)


def _audio_format(path: str, sr: int, subtype: str | None) -> str:
  """soundfile's format name for ``path``'s extension; refuses a bad rate, extension or subtype."""
  if int(sr) <= 0:
    raise MediaError(path, f"sample rate must be positive, got {sr}")
  ext = os.path.splitext(path)[1].lstrip(".").upper()
  fmt = {"OGA": "OGG", "AIF": "AIFF"}.get(ext, ext)
  if fmt not in sf.available_formats():
    raise MediaError(path, f"unsupported audio file extension '.{ext.lower()}'")
  if subtype is not None and not sf.check_format(fmt, subtype):
    raise MediaError(path, f"format {fmt} cannot hold sample subtype {subtype}")
  return fmt


def write_wav(
    path: str | os.PathLike[str], wav: np.ndarray, sr: int, subtype: str | None = "PCM_16"
) -> None:
  """Writes audio atomically (temp file in the same directory, then ``os.replace``).

  The format follows the extension (.wav, .flac, .ogg, ...), as in soundfile.

  Args:
    path: destination.
    wav: float ``[L]`` or ``[L, C]`` in [-1, 1]; values outside are clipped with a warning.
    sr: sample rate in Hz.
    subtype: soundfile subtype, e.g. "PCM_16", "PCM_24", "FLOAT"; None for the format's default
      (needed for .ogg, which takes "VORBIS").

  Raises:
    MediaError: NaN/inf samples, bad shape, unknown format or a subtype the format cannot hold.
  """
  path = os.fspath(path)
  fmt = _audio_format(path, sr, subtype)
  wav = _prepare_wav_for_writing(path, wav)
  with _atomic_target(path) as tmp:
    sf.write(tmp, wav, int(sr), subtype=subtype, format=fmt)


class WavWriter:
  """Writes a mono audio file block by block (the format from the extension, as
  :func:`write_wav`, whose checks and clipping each block gets); memory holds one block.

  Not atomic: write into a staging directory (the caller renames it when everything is written).
  """

  def __init__(self, path: str | os.PathLike[str], sr: int, subtype: str | None = "PCM_16"):
    self.path = os.fspath(path)
    fmt = _audio_format(self.path, sr, subtype)
    self._file = sf.SoundFile(self.path, "w", samplerate=int(sr), channels=1, subtype=subtype,
                              format=fmt)

  def write(self, wav: np.ndarray) -> None:
    """Appends float ``[n]`` samples."""
    self._file.write(_prepare_wav_for_writing(self.path, wav))

  def close(self) -> None:
    self._file.close()
