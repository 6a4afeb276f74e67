"""The clip's sound: each sounding object propagated to the microphone, plus a background bed.

Per sounding object: draw a timbre instance and a level, synthesise the dry signal at twice the
output rate over the emission times needed, band-limit it, and propagate it with the Doppler delay
and ``r_ref / r`` attenuation of :mod:`propagation`. A stem that is silent in more than
``1 - min_active_fraction`` of the windows is re-drawn from the next keyed stream (so the redraw
is deterministic), up to ``max_redraws`` times. The mixture is the sum of the stems and the bed,
scaled so its peak is ``peak_level``; the stems get the same scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from asmp_data.synthetic import propagation
from asmp_data.synthetic import scene as scene_lib
from asmp_data.synthetic import sound
from asmp_data.synthetic.config import GeneratorConfig

# Dry signals are synthesised at this multiple of the output rate and band-limited to
# [0, F_PASS * sr] (transition to F_STOP * sr), so cubic interpolation at the retarded times is
# accurate and nothing aliases.
OVERSAMPLE = 2
F_PASS, F_STOP = 0.42, 0.47


# Peak headroom below ``peak_level`` (two 16-bit quantisation steps).
PCM_HEADROOM = 2.0 / 32768


class SilentSourceError(RuntimeError):
  """A sounding object stayed silent after ``max_redraws`` re-draws."""


@dataclasses.dataclass(frozen=True)
class Soundscape:
  """Audio of one clip.

  Attributes:
    wav: float32 ``[N]`` mixture, peak ``peak_level - PCM_HEADROOM``.
    stems: float32 ``[S + 1, N]``: sounding objects in stem order, then the background bed;
      ``stems.sum(0) == wav`` up to float32 rounding.
    sources: per sounding object (stem order), a JSON-ready dict of its drawn sound parameters.
    background: JSON-ready dict of the background bed's parameters.
    scale: the peak-normalisation factor that was applied.
  """

  wav: np.ndarray
  stems: np.ndarray
  sources: list[dict[str, Any]]
  background: dict[str, Any]
  scale: float


def window_rms(x: np.ndarray, num_windows: int) -> np.ndarray:
  """RMS of each of ``num_windows`` equal consecutive windows of ``x [N]``."""
  n = (x.shape[0] // num_windows) * num_windows
  return np.sqrt(np.mean(np.square(x[:n].reshape(num_windows, -1)), axis=1))


def _source(seed: int, obj: scene_lib.SceneObject, cfg: GeneratorConfig, t: np.ndarray,
            ) -> tuple[np.ndarray, dict[str, Any]]:
  """Received signal ``[N]`` of one sounding object and its parameters (with re-draws)."""
  sr = cfg.sample_rate
  dry_sr = OVERSAMPLE * sr
  for attempt in range(cfg.max_redraws + 1):
    rng = scene_lib.stream(seed, scene_lib.KEY_SOUND, obj.track, attempt)
    level_db = float(rng.uniform(*cfg.source_level_db_range))
    params: dict[str, Any] = {}

    def synth(tau_grid: np.ndarray) -> np.ndarray:
      x, p = sound.synthesize(obj.object_class.timbre, rng, tau_grid, dry_sr, F_PASS * sr)
      params.update(p)
      return sound.band_limit(x, dry_sr, F_PASS * sr, F_STOP * sr)

    received, _, distance = propagation.propagate(
        synth, obj.trajectory.position, t, cfg.speed_of_sound, cfg.reference_distance,
        oversample=OVERSAMPLE)
    received *= 10.0 ** (level_db / 20.0)
    active = window_rms(received, cfg.num_windows) >= cfg.silence_rms
    if np.mean(active) >= cfg.min_active_fraction:
      params.update(level_db=round(level_db, 3), redraws=attempt,
                    distance_range=[round(float(distance.min()), 3),
                                    round(float(distance.max()), 3)])
      return received, params
  raise SilentSourceError(
      f"clip seed {seed}: sounding object {obj.track} ({obj.object_class.name}) was silent in "
      f"more than {1 - cfg.min_active_fraction:.0%} of its windows after {cfg.max_redraws} "
      f"re-draws (silence_rms={cfg.silence_rms})")


def render_soundscape(seed: int, scene: scene_lib.Scene, cfg: GeneratorConfig) -> Soundscape:
  """Synthesises, propagates and mixes the sound of ``scene``."""
  t = np.arange(cfg.num_samples) / cfg.sample_rate
  sounding = sorted((o for o in scene.objects if o.stem is not None), key=lambda o: o.stem)
  stems, sources = [], []
  for obj in sounding:
    received, params = _source(seed, obj, cfg, t)
    stems.append(received)
    sources.append(params)
  bed, bed_params = sound.background_bed(scene_lib.stream(seed, scene_lib.KEY_BED),
                                         cfg.num_samples, cfg.sample_rate)
  stems.append(bed * 10.0 ** (cfg.background_level_db / 20.0))
  bed_params["level_db"] = cfg.background_level_db
  stems = np.stack(stems)
  peak = float(np.max(np.abs(stems.sum(axis=0))))
  # Two PCM_16 steps of headroom so rounding in the 16-bit wav cannot push the peak above.
  scale = (cfg.peak_level - PCM_HEADROOM) / peak
  stems = (stems * scale).astype(np.float32)
  wav = stems.sum(axis=0, dtype=np.float64).astype(np.float32)
  return Soundscape(wav, stems, sources, bed_params, scale)
