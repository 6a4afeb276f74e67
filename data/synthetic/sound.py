"""Procedural timbres of the sounding classes and the background bed (numpy, float64).

Every synthesiser has the signature ``fn(rng, t, sr, f_max) -> (signal, params)``:

  * ``t``: ``[N]`` uniformly spaced times in seconds (the source's own "emission" time; it may
    start before 0 because sound emitted before the clip starts is still arriving at t = 0),
  * ``sr``: the sampling rate of ``t`` (samples/s),
  * ``f_max``: no partial is synthesised above this frequency (Hz), so the received signal is
    band-limited for the output rate,
  * returns a float64 ``[N]`` signal with unit RMS (or, for very peaky sounds, a peak of
    ``MAX_CREST``; see :func:`normalise`) and a JSON-ready dict of the instance's drawn
    parameters (pitch, rates, brightness, envelope).

Each call draws its parameters from ``rng``, so two instances of a class differ in pitch, rate,
brightness and envelope while keeping the class's character.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.signal

TimbreFn = Callable[[np.random.Generator, np.ndarray, float, float],
                    tuple[np.ndarray, dict[str, Any]]]

# Peak-to-RMS ratio above which a sound is normalised by its peak instead of its RMS (so that
# sparse click trains do not get huge peaks).
MAX_CREST = 6.0


def _r(x: float, digits: int = 4) -> float:
  """Rounds a drawn parameter for the JSON sidecar."""
  return float(round(float(x), digits))


def normalise(x: np.ndarray) -> np.ndarray:
  """Scales ``x`` to unit RMS, or to peak ``MAX_CREST`` if that is smaller (peaky sounds)."""
  rms = float(np.sqrt(np.mean(np.square(x))))
  peak = float(np.max(np.abs(x)))
  if peak == 0.0:
    return x
  return x / max(rms, peak / MAX_CREST)


def band_limit(x: np.ndarray, sr: float, f_pass: float, f_stop: float) -> np.ndarray:
  """Zero-phase low-pass in the frequency domain with a raised-cosine transition.

  Args:
    x: ``[N]`` signal.
    sr: its sampling rate (Hz).
    f_pass: frequencies below pass unchanged (Hz).
    f_stop: frequencies above are removed (Hz).
  """
  spec = np.fft.rfft(x)
  f = np.fft.rfftfreq(x.shape[0], 1.0 / sr)
  s = np.clip((f - f_pass) / max(f_stop - f_pass, 1e-9), 0.0, 1.0)
  return np.fft.irfft(spec * 0.5 * (1.0 + np.cos(np.pi * s)), n=x.shape[0])


def band_noise(rng: np.random.Generator, n: int, sr: float, lo: float, hi: float,
               tilt: float = 0.0) -> np.ndarray:
  """Unit-RMS noise band-passed to ``[lo, hi]`` Hz with soft (10 %) edges.

  Args:
    rng: random generator.
    n: number of samples.
    sr: sampling rate (Hz).
    lo, hi: band edges (Hz).
    tilt: spectral slope exponent (amplitude ~ f^-tilt; 0.5 gives pink noise).
  """
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1.0 / sr)
  edge_lo = np.clip((f - 0.9 * lo) / (0.2 * lo + 1e-9), 0.0, 1.0)
  edge_hi = np.clip((1.1 * hi - f) / (0.2 * hi), 0.0, 1.0)
  shape = edge_lo * edge_hi / np.maximum(f, 1.0) ** tilt
  y = np.fft.irfft(spec * shape, n=n)
  rms = np.sqrt(np.mean(y * y))
  return y / rms if rms > 0 else y


def smooth_random(rng: np.random.Generator, t: np.ndarray, rate_hz: float) -> np.ndarray:
  """A random wiggle in about [-1, 1]: uniform knots every 1/rate_hz s, cosine-interpolated."""
  n_knots = int(np.ceil((t[-1] - t[0]) * rate_hz)) + 2
  knots = rng.uniform(-1.0, 1.0, n_knots)
  x = (t - t[0]) * rate_hz
  i = np.floor(x).astype(np.int64)
  a = 0.5 - 0.5 * np.cos(np.pi * (x - i))
  return knots[i] * (1.0 - a) + knots[i + 1] * a


def phase_of(freq: np.ndarray, sr: float) -> np.ndarray:
  """Instantaneous phase (radians) of a time-varying frequency ``freq [N]`` (Hz)."""
  return 2.0 * np.pi * np.cumsum(freq) / sr


def additive(phase: np.ndarray, amps: np.ndarray, f0: np.ndarray, f_max: float) -> np.ndarray:
  """Sum of harmonics ``sum_k amps[k] sin((k+1) phase)`` with partials above f_max faded out.

  Args:
    phase: ``[N]`` fundamental phase (radians).
    amps: ``[K]`` harmonic amplitudes.
    f0: ``[N]`` fundamental frequency (Hz), used to drop partials above ``f_max``.
    f_max: highest allowed partial frequency (Hz); partials fade out over the last 10 %.
  """
  k = np.arange(1, amps.shape[0] + 1)[:, None]
  fade = np.clip((f_max - k * f0[None, :]) / (0.1 * f_max), 0.0, 1.0)
  return np.sum(amps[:, None] * fade * np.sin(k * phase[None, :]), axis=0)


def pulse_train(phase: np.ndarray, num_harmonics: int) -> np.ndarray:
  """Band-limited pulse train ``sum_{k=1..K} cos(k phase)`` (closed-form Dirichlet kernel)."""
  p = np.mod(phase, 2.0 * np.pi)
  half = np.sin(0.5 * p)
  safe = np.where(np.abs(half) < 1e-9, 1.0, half)
  value = np.sin((num_harmonics + 0.5) * p) / (2.0 * safe) - 0.5
  return np.where(np.abs(half) < 1e-9, float(num_harmonics), value)


def melody(rng: np.random.Generator, t: np.ndarray, low_hz: float, high_hz: float,
           note_s: tuple[float, float], glide_s: float, attack_s: float, release_s: float,
           sr: float) -> tuple[np.ndarray, np.ndarray, int]:
  """A random pentatonic melody: frequency track and note envelope.

  Returns:
    (f0, env, num_notes): ``[N]`` fundamental in Hz (log-frequency glides of ``glide_s`` between
    notes), ``[N]`` envelope in [0, 1] (attack/release per note) and the number of notes.
  """
  steps = np.array([0, 2, 4, 7, 9])
  octaves = np.arange(-1, 5)
  root = low_hz * 2.0 ** (rng.integers(0, 12) / 12.0)
  table = (root * 2.0 ** ((steps[None, :] + 12 * octaves[:, None]) / 12.0)).ravel()
  table = np.sort(table[(table >= low_hz) & (table <= high_hz)])
  span = t[-1] - t[0]
  n_max = int(np.ceil(span / note_s[0])) + 1
  durs = rng.uniform(*note_s, n_max)
  onsets = t[0] - rng.uniform(0, note_s[0]) + np.concatenate([[0.0], np.cumsum(durs[:-1])])
  # A random walk over the scale, so the melody moves by small steps.
  idx = np.clip(rng.integers(0, len(table)) + np.cumsum(rng.integers(-2, 3, n_max)), 0,
                len(table) - 1)
  note = np.clip(np.searchsorted(onsets, t, side="right") - 1, 0, n_max - 1)
  log_f = np.log(table[idx[note]])
  width = max(int(glide_s * sr), 1)
  padded = np.concatenate([np.full(width, log_f[0]), log_f])
  c = np.cumsum(padded)
  log_f = (c[width:] - c[:-width]) / width
  local = t - onsets[note]
  env = (np.clip(local / attack_s, 0.0, 1.0)
         * np.clip((durs[note] - local) / release_s, 0.0, 1.0) ** 0.5)
  num_notes = int(np.count_nonzero((onsets < t[-1]) & (onsets + durs > t[0])))
  return np.exp(log_f), env, num_notes


def event_train(t: np.ndarray, sr: float, times: np.ndarray, amps: np.ndarray,
                ir: np.ndarray) -> np.ndarray:
  """Impulses at ``times`` (s) with ``amps``, convolved with the impulse response ``ir``.

  Events up to ``len(ir)`` samples before ``t[0]`` still ring into the signal.
  """
  n, m = t.shape[0], ir.shape[0]
  train = np.zeros(n + m)
  idx = np.round((times - t[0]) * sr).astype(np.int64) + m
  keep = (idx >= 0) & (idx < n + m)
  np.add.at(train, idx[keep], amps[keep])
  return scipy.signal.oaconvolve(train, ir)[m:m + n]


def regular_events(rng: np.random.Generator, t: np.ndarray, interval: tuple[float, float],
                   lead_s: float) -> np.ndarray:
  """Event times from ``t[0] - lead_s`` to ``t[-1]`` with gaps uniform in ``interval``."""
  span = t[-1] - t[0] + lead_s
  n = int(np.ceil(span / interval[0])) + 1
  times = t[0] - lead_s + rng.uniform(0, interval[1]) + np.cumsum(rng.uniform(*interval, n))
  return times[times <= t[-1]]


# ----------------------------------------------------------------------------------- timbres
def bowed_string(rng, t, sr, f_max):
  """Sawtooth-like harmonic tone (1/k^brightness partials) with vibrato, legato notes, bow noise."""
  f0, env, notes = melody(rng, t, 196.0, 660.0, (0.35, 1.0), 0.04, rng.uniform(0.05, 0.12),
                          0.08, sr)
  vib_hz, vib_depth = rng.uniform(4.5, 6.5), rng.uniform(0.003, 0.008)
  f = f0 * (1.0 + vib_depth * np.sin(2 * np.pi * vib_hz * t + rng.uniform(0, 2 * np.pi)))
  rolloff = rng.uniform(0.8, 1.5)
  amps = 1.0 / np.arange(1, 17) ** rolloff
  tone = additive(phase_of(f, sr), amps, f, f_max)
  noise_level = rng.uniform(0.02, 0.06)
  bow = band_noise(rng, t.shape[0], sr, 1000.0, min(4000.0, f_max)) * noise_level
  env = 0.25 + 0.75 * env
  return normalise(env * (tone / np.sqrt(np.sum(amps ** 2) / 2) + bow)), {
      "f0_range_hz": [196.0, 660.0], "vibrato_hz": _r(vib_hz), "vibrato_depth": _r(vib_depth),
      "rolloff": _r(rolloff), "bow_noise": _r(noise_level), "num_notes": notes}


def flute(rng, t, sr, f_max):
  """Few harmonics over a breathy noise band, gentle vibrato and tremolo, detached notes."""
  f0, env, notes = melody(rng, t, 440.0, 1050.0, (0.3, 0.9), 0.03, rng.uniform(0.04, 0.1),
                          0.06, sr)
  f = f0 * (1.0 + 0.003 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t))
  amps = np.array([1.0, rng.uniform(0.15, 0.5), rng.uniform(0.05, 0.25), rng.uniform(0.0, 0.08)])
  tone = additive(phase_of(f, sr), amps, f, f_max)
  breath_level = rng.uniform(0.05, 0.15)
  breath = band_noise(rng, t.shape[0], sr, 800.0, min(4000.0, f_max)) * breath_level
  tremolo = 1.0 + 0.1 * smooth_random(rng, t, 4.0)
  return normalise(env * tremolo * (tone + breath)), {
      "f0_range_hz": [440.0, 1050.0], "harmonics": [_r(a) for a in amps],
      "breath": _r(breath_level), "num_notes": notes}


_BELL_RATIOS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.1])
_BELL_AMPS = np.array([0.6, 1.0, 0.7, 0.5, 0.8, 0.4, 0.35, 0.3, 0.2])


def bell(rng, t, sr, f_max):
  """Inharmonic partials with exponential decays, struck repeatedly."""
  base = rng.uniform(250.0, 800.0)
  ratios = _BELL_RATIOS * (1.0 + rng.normal(0.0, 0.005, _BELL_RATIOS.shape[0]))
  freqs = base * ratios
  amps = _BELL_AMPS * rng.uniform(0.7, 1.3, freqs.shape[0]) * (freqs < 0.95 * f_max)
  decay = rng.uniform(0.8, 2.0)
  taus = decay / ratios ** 0.6
  ir_t = np.arange(int(min(4.0 * taus.max(), 4.0) * sr)) / sr
  ir = np.sum(amps[:, None] * np.exp(-ir_t[None, :] / taus[:, None])
              * np.sin(2 * np.pi * freqs[:, None] * ir_t[None, :]), axis=0)
  interval = (rng.uniform(0.4, 0.7), rng.uniform(0.8, 1.3))
  times = regular_events(rng, t, interval, ir_t[-1])
  x = event_train(t, sr, times, rng.uniform(0.6, 1.0, times.shape[0]), ir)
  return normalise(x), {"base_hz": _r(base, 2), "decay_s": _r(decay),
                        "strike_interval_s": [_r(v) for v in interval]}


def engine(rng, t, sr, f_max):
  """Low pulse-train buzz (firing rate with slow RPM wander), low-passed, plus a noise band."""
  rpm_hz = rng.uniform(28.0, 60.0)
  wander = rng.uniform(0.05, 0.15)
  f = rpm_hz * (1.0 + wander * smooth_random(rng, t, 0.5)) * (
      1.0 + 0.01 * smooth_random(rng, t, 30.0))
  k = int(min(40, 0.5 * f_max // f.max()))
  phase = phase_of(f, sr)
  buzz = pulse_train(phase, k) / np.sqrt(k / 2.0)
  cutoff = rng.uniform(300.0, 900.0)
  b, a = scipy.signal.butter(1, cutoff, fs=sr)
  buzz = scipy.signal.lfilter(b, a, buzz)
  noise_level = rng.uniform(0.2, 0.5)
  rumble = band_noise(rng, t.shape[0], sr, 80.0, 600.0) * (1.0 + 0.5 * np.cos(phase))
  x = buzz / np.sqrt(np.mean(buzz ** 2)) + noise_level * rumble
  return normalise(x), {"firing_hz": _r(rpm_hz, 2), "rpm_wander": _r(wander),
                        "cutoff_hz": _r(cutoff, 1), "noise": _r(noise_level)}


def bird(rng, t, sr, f_max):
  """Groups of fast FM chirps (sweeps with a trill) separated by pauses."""
  f_top = 0.95 * f_max
  start_hz = rng.uniform(1800.0, min(3200.0, 0.8 * f_top))
  sweep = rng.uniform(0.7, 1.35)
  chirp_s = rng.uniform(0.04, 0.14)
  trill_hz, trill_depth = rng.uniform(15.0, 40.0), rng.uniform(50.0, 400.0)
  group_gap = rng.uniform(0.2, 0.8)
  per_group = int(rng.integers(3, 9))
  # Chirp onsets: groups of `per_group` chirps separated by short gaps, then a longer pause.
  span = t[-1] - t[0]
  n_groups = int(np.ceil(span / group_gap)) + 1
  inner = chirp_s + rng.uniform(0.03, 0.1, (n_groups, per_group))
  starts = np.cumsum(inner, axis=1) - inner[:, :1]
  lengths = starts[:, -1] + chirp_s + group_gap * rng.uniform(0.7, 1.3, n_groups)
  starts = (starts + np.concatenate([[0.0], np.cumsum(lengths[:-1])])[:, None]).ravel()
  starts = t[0] - rng.uniform(0, 0.3) + starts
  i = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, starts.shape[0] - 1)
  local = t - starts[i]
  active = (local >= 0) & (local < chirp_s)
  frac = np.clip(local / chirp_s, 0.0, 1.0)
  f = start_hz * (1.0 + (sweep - 1.0) * frac) + trill_depth * np.sin(2 * np.pi * trill_hz * local)
  f = np.clip(f, 200.0, f_top)
  amp = np.where(active, np.sin(np.pi * frac) ** 2, 0.0)
  ph = phase_of(f, sr)
  x = amp * (np.sin(ph) + 0.1 * np.sin(2 * ph) * (2 * f < f_max))
  return normalise(x), {"start_hz": _r(start_hz, 1), "sweep_ratio": _r(sweep),
                        "chirp_s": _r(chirp_s), "trill_hz": _r(trill_hz),
                        "chirps_per_group": per_group, "group_gap_s": _r(group_gap)}


def drum(rng, t, sr, f_max):
  """Kick (pitch-dropping sine) and snare (decaying noise burst) hits on a tempo grid."""
  tempo = rng.uniform(80.0, 170.0)
  eighth = 30.0 / tempo
  n = int(np.ceil((t[-1] - t[0] + 1.0) / eighth)) + 1
  grid = t[0] - 1.0 + rng.uniform(0, eighth) + eighth * np.arange(n)
  slot = np.arange(n) % 8  # one bar of 8 eighths
  kick = rng.random(n) < np.where(slot % 4 == 0, 0.9, 0.12)
  snare = rng.random(n) < np.where(slot % 4 == 2, 0.85, 0.1)
  ir_t = np.arange(int(0.5 * sr)) / sr
  kick_decay, snare_decay = rng.uniform(0.08, 0.2), rng.uniform(0.04, 0.12)
  kick_f = 55.0 + 100.0 * np.exp(-ir_t / 0.03)
  kick_ir = np.exp(-ir_t / kick_decay) * np.sin(phase_of(kick_f, sr))
  snare_ir = np.exp(-ir_t / snare_decay) * (
      band_noise(rng, ir_t.shape[0], sr, 200.0, min(5000.0, f_max)) * 0.5
      + np.sin(2 * np.pi * rng.uniform(180.0, 250.0) * ir_t))
  x = (event_train(t, sr, grid[kick], rng.uniform(0.6, 1.0, kick.sum()), kick_ir)
       + event_train(t, sr, grid[snare], rng.uniform(0.5, 0.9, snare.sum()), snare_ir))
  return normalise(x), {"tempo_bpm": _r(tempo, 1), "kick_decay_s": _r(kick_decay),
                        "snare_decay_s": _r(snare_decay)}


def siren(rng, t, sr, f_max):
  """Slow FM sweep (sine or triangle modulation) of a few-harmonic tone."""
  centre, depth = rng.uniform(600.0, 1100.0), rng.uniform(150.0, 450.0)
  period = rng.uniform(0.8, 3.0)
  shape = "triangle" if rng.random() < 0.5 else "sine"
  cyc = t / period + rng.uniform(0, 1)
  mod = (np.sin(2 * np.pi * cyc) if shape == "sine"
         else 2.0 * np.abs(2.0 * (cyc - np.floor(cyc + 0.5))) - 1.0)
  f = centre + depth * mod
  x = additive(phase_of(f, sr), np.array([1.0, 0.35, 0.15, 0.08]), f, f_max)
  return normalise(x), {"centre_hz": _r(centre, 1), "depth_hz": _r(depth, 1),
                        "period_s": _r(period), "modulation": shape}


def clock(rng, t, sr, f_max):
  """Tick-tock: alternating short resonant clicks at a steady rate."""
  rate = rng.uniform(1.5, 4.0)
  tick_hz = rng.uniform(1500.0, min(3500.0, 0.95 * f_max))
  tock_hz = tick_hz * rng.uniform(0.7, 0.9)
  decay = rng.uniform(0.008, 0.025)
  ir_t = np.arange(int(8 * decay * sr)) / sr
  env = np.exp(-ir_t / decay)
  click_noise = band_noise(rng, ir_t.shape[0], sr, 1000.0, min(5000.0, f_max)) * 0.3
  tick_ir = env * (np.sin(2 * np.pi * tick_hz * ir_t) + click_noise)
  tock_ir = env * (np.sin(2 * np.pi * tock_hz * ir_t) + click_noise)
  n = int(np.ceil((t[-1] - t[0] + 1.0) * rate)) + 1
  times = t[0] - 1.0 + rng.uniform(0, 1.0 / rate) + np.arange(n) / rate
  amps = rng.uniform(0.85, 1.0, n)
  x = (event_train(t, sr, times[0::2], amps[0::2], tick_ir)
       + event_train(t, sr, times[1::2], amps[1::2], tock_ir))
  return normalise(x), {"rate_hz": _r(rate), "tick_hz": _r(tick_hz, 1),
                        "tock_hz": _r(tock_hz, 1), "decay_s": _r(decay)}


def buzz(rng, t, sr, f_max):
  """Bee-like buzz: bright sawtooth with fast frequency jitter, amplitude flutter and noise."""
  f0 = rng.uniform(160.0, 260.0)
  jitter = rng.uniform(0.03, 0.08)
  f = f0 * (1.0 + jitter * smooth_random(rng, t, rng.uniform(8.0, 15.0))) * (
      1.0 + 0.05 * smooth_random(rng, t, 0.7))
  rolloff = rng.uniform(0.6, 1.0)
  amps = 1.0 / np.arange(1, 17) ** rolloff
  tone = additive(phase_of(f, sr), amps, f, f_max) / np.sqrt(np.sum(amps ** 2) / 2)
  flutter = 1.0 + 0.3 * smooth_random(rng, t, 20.0)
  x = flutter * tone + 0.05 * band_noise(rng, t.shape[0], sr, 200.0, min(4000.0, f_max))
  return normalise(x), {"f0_hz": _r(f0, 2), "jitter": _r(jitter), "rolloff": _r(rolloff)}


TIMBRES: dict[str, TimbreFn] = {
    "bowed_string": bowed_string,
    "flute": flute,
    "bell": bell,
    "engine": engine,
    "bird": bird,
    "drum": drum,
    "siren": siren,
    "clock": clock,
    "buzz": buzz,
}


def synthesize(timbre: str, rng: np.random.Generator, t: np.ndarray, sr: float,
               f_max: float) -> tuple[np.ndarray, dict[str, Any]]:
  """Runs the synthesiser ``timbre`` (a key of :data:`TIMBRES`); see the module docstring."""
  if timbre not in TIMBRES:
    raise ValueError(f"unknown timbre {timbre!r}; known: {sorted(TIMBRES)}")
  x, params = TIMBRES[timbre](rng, np.asarray(t, dtype=np.float64), float(sr), float(f_max))
  return x, {"timbre": timbre, **params}


def background_bed(rng: np.random.Generator, n: int, sr: float) -> tuple[np.ndarray,
                                                                       dict[str, Any]]:
  """Room tone: pink-ish noise with a random low-pass plus mains hum; unit RMS.

  Returns:
    (signal ``[n]``, params) where params records the hum frequency and relative levels.
  """
  t = np.arange(n) / sr
  top = rng.uniform(1500.0, 4000.0)
  noise = band_noise(rng, n, sr, 40.0, top, tilt=0.5)
  hum_hz = float(rng.choice([50.0, 60.0]))
  hum_level = rng.uniform(0.1, 0.5)
  hum = (np.sin(2 * np.pi * hum_hz * t) + 0.5 * np.sin(4 * np.pi * hum_hz * t)
         + 0.3 * np.sin(6 * np.pi * hum_hz * t)) / np.sqrt((1 + 0.25 + 0.09) / 2)
  drift = 1.0 + 0.2 * smooth_random(rng, t, 0.3)
  x = drift * (noise + hum_level * hum)
  x = x / np.sqrt(np.mean(x * x))
  return x, {"noise_top_hz": _r(top, 1), "hum_hz": hum_hz, "hum_level": _r(hum_level)}
