"""Media I/O: read and write audio and video files (numpy, not JAX).

Everything the project reads from or writes to disk as sound or pictures goes through this
package, so that a bad file fails in one place with one readable message.

Conventions:
  * Waveforms are float32 numpy arrays with values in [-1, 1]. Mono audio is ``[L]``;
    multichannel audio is ``[L, C]`` (soundfile's frames-by-channels layout).
  * Video frames are uint8 RGB arrays ``[T, H, W, 3]``; ``fps`` is frames per second (float).
  * Every failure raises :class:`MediaError` (a ``ValueError``) whose message is one line that
    names the file and says what is wrong with it. Silence is *not* an error: callers check
    :func:`is_silent` and decide.

Back ends: soundfile (libsndfile) for wav/flac/ogg; PyAV (FFmpeg) for everything else (mp3, m4a,
the audio stream of mp4/mkv/webm containers) and for all video; soxr for resampling.

Modules: ``common`` (MediaError, checks, small utilities, probe), ``audio``, ``video``.
"""

from asmp_jax.media.audio import load_audio
from asmp_jax.media.audio import MonoAudio
from asmp_jax.media.audio import WavWriter
from asmp_jax.media.audio import write_wav
from asmp_jax.media.common import DEFAULT_SAMPLE_RATE
from asmp_jax.media.common import downmix
from asmp_jax.media.common import is_silent
from asmp_jax.media.common import MediaError
from asmp_jax.media.common import probe
from asmp_jax.media.common import resample
from asmp_jax.media.video import read_video
from asmp_jax.media.video import RGB_FLAGS
from asmp_jax.media.video import write_video
