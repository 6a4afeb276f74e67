"""The picture of a separation: the scene graph on a reference frame, and the spectrograms.

``save_picture(result, "out.png")`` writes one PNG (``picture_png`` returns its bytes,
``make_figure`` the matplotlib Figure; no pyplot state and no backend switch, so it works the
same in scripts, headless tests and notebooks) with

* left: the reference frame of one 1 s window with the graph's nodes (auditory sources in warm
  colours, context nodes blue, the background crop dashed grey), its edges drawn between box
  centres with opacity and width following the Chamfer edge weight, and for every separated source
  its predicted motion direction (and probability) in that window;
* right: log-magnitude spectrograms of the mixture and of every separated source (the background
  last), each titled with the sound class the consistency classifier predicts; a vertical line
  marks the chosen window.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from matplotlib import patches
from matplotlib.figure import Figure

from asmp_jax.graph import build as graph_build

_SOURCE_COLOURS = ("#e6194b", "#f58231", "#ffe119", "#bfef45")
_CONTEXT_COLOUR = "#4363d8"
_BACKGROUND_COLOUR = "#a9a9a9"
_MAX_FRAMES = 1500  # spectrogram columns drawn at most (the hop grows for long clips)
_MAX_HZ = 8000.0  # highest frequency drawn (the model separates below 5.5 kHz)


def log_spectrogram(wav: np.ndarray, sample_rate: int, n_fft: int = 1024,
                    max_frames: int = _MAX_FRAMES, ref: float | None = None
                    ) -> tuple[np.ndarray, float, float, float]:
  """dB magnitude spectrogram for display (Hann window, hop chosen so at most ``max_frames``).

  Args:
    wav: float [L] waveform.
    sample_rate: Hz.
    ref: magnitude of 0 dB (default: this spectrogram's peak), to draw several on one scale.

  Returns:
    (float32 [n_fft // 2 + 1, frames] dB relative to ``ref``, floored at -80; seconds per frame;
    Hz per bin; the ``ref`` used).
  """
  wav = np.asarray(wav, np.float32).reshape(-1)
  if wav.size < n_fft:
    wav = np.pad(wav, (0, n_fft - wav.size))
  hop = max(n_fft // 4, -(-(wav.size - n_fft) // max(1, max_frames - 1)))
  starts = np.arange(0, wav.size - n_fft + 1, hop)
  idx = starts[:, None] + np.arange(n_fft)[None]
  mag = np.abs(np.fft.rfft(wav[idx] * np.hanning(n_fft).astype(np.float32), axis=-1)).T
  ref = float(mag.max()) if ref is None else float(ref)
  db = 20.0 * np.log10((mag + 1e-8) / max(ref, 1e-8))
  return np.clip(db, -80.0, 0.0).astype(np.float32), hop / sample_rate, sample_rate / n_fft, ref


def default_window(result: Any) -> int:
  """The window with the most auditory sources present (first such window), else window 0."""
  g = result.graphs
  present = (g.node_mask & (g.node_type == graph_build.NODE_AUDITORY)).sum(-1)
  present = np.where(g.window_valid, present, -1)
  return int(np.argmax(present)) if present.size else 0


def _draw_graph(ax, result: Any, window: int) -> None:
  g = result.graphs
  frame = g.reference_frames[window]
  ax.imshow(frame)
  h, w = frame.shape[:2]
  boxes, mask, types = g.node_boxes[window], g.node_mask[window], g.node_type[window]
  centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
  adj = np.asarray(g.adjacency[window], np.float32)
  snd, rcv = np.nonzero(np.triu(np.maximum(adj, adj.T), 1) * (mask[:, None] & mask[None]))
  for i, j in zip(snd, rcv):  # at most 253 edges
    wt = float(max(adj[i, j], adj[j, i]))
    ax.plot(*zip(centres[i], centres[j]), color="white", alpha=0.2 + 0.6 * wt, lw=0.5 + 2 * wt)
  slot_of_node = {int(d): m for m, d in enumerate(result.detected_source) if d >= 0}
  for n in np.flatnonzero(mask):
    x0, y0, x1, y1 = boxes[n]
    if types[n] == graph_build.NODE_AUDITORY:
      colour, style = _SOURCE_COLOURS[n % len(_SOURCE_COLOURS)], "-"
      label = g.source_names[n] if n < len(g.source_names) else f"source node {n}"
      if n in slot_of_node:
        m = slot_of_node[n]
        p = result.direction_probabilities[m, window] if window < \
            result.direction_probabilities.shape[1] else np.full(1, np.nan)
        direction = (f"{result.direction_names[int(np.argmax(p))]} ({np.max(p):.2f})"
                     if np.all(np.isfinite(p)) else "n/a")
        label = f"{result.source_names[m]} [{label}]: {direction}"
      ax.text(x0, max(y0 - 2, 6), label, color="black", fontsize=7,
              bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0})
    elif types[n] == graph_build.NODE_BACKGROUND:
      colour, style = _BACKGROUND_COLOUR, "--"
    else:
      colour, style = _CONTEXT_COLOUR, "-"
    ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, ls=style,
                                   lw=1.5))
  ax.set_xlim(0, w)
  ax.set_ylim(h, 0)
  ax.set_title(f"window {window} ({window * result.window_seconds:.0f}-"
               f"{(window + 1) * result.window_seconds:.0f} s): scene graph", fontsize=9)
  ax.axis("off")


def _direction_text(result: Any, m: int, window: int) -> str:
  if m >= result.num_sources or window >= result.direction_probabilities.shape[1]:
    return ""
  p = result.direction_probabilities[m, window]
  if not np.all(np.isfinite(p)):
    return ""
  return f"; window {window}: {result.direction_names[int(np.argmax(p))]} ({np.max(p):.2f})"


def make_figure(result: Any, window: int | None = None) -> Figure:
  """The figure of the module docstring for an asmp_jax.inference.SeparationResult."""
  if window is None:
    window = default_window(result)
  if not 0 <= window < result.graphs.num_windows:
    raise ValueError(f"window must be in 0..{result.graphs.num_windows - 1}, got {window}")
  rows = [("mixture", result.mixture)] + list(zip(result.source_names, result.sources))
  fig = Figure(figsize=(13, 2.0 * len(rows) + 1), layout="constrained")
  grid = fig.add_gridspec(len(rows), 2, width_ratios=(1, 1.6))
  _draw_graph(fig.add_subplot(grid[:, 0]), result, window)
  classes = result.predicted_classes()
  ref = None  # every spectrogram on the mixture's dB scale
  for r, (name, wav) in enumerate(rows):
    ax = fig.add_subplot(grid[r, 1])
    db, sec, hz, ref = log_spectrogram(wav, result.sample_rate, ref=ref)
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
              extent=(0, db.shape[1] * sec, 0, db.shape[0] * hz / 1000))
    title = name
    if r > 0:
      c = classes[r - 1]
      title += f": {c['name']} ({c['probability']:.2f})" + _direction_text(result, r - 1, window)
    ax.set_title(title, fontsize=9, loc="left")
    ax.axvline(window * result.window_seconds, color="cyan", lw=0.8)
    ax.set_ylim(0, min(result.sample_rate / 2, _MAX_HZ) / 1000)
    ax.set_ylabel("kHz", fontsize=8)
    ax.tick_params(labelsize=7)
    if r == len(rows) - 1:
      ax.set_xlabel("time (s)", fontsize=8)
  return fig


def picture_png(result: Any, window: int | None = None, dpi: int = 100) -> bytes:
  """:func:`make_figure` encoded as PNG bytes."""
  buf = io.BytesIO()
  make_figure(result, window).savefig(buf, dpi=dpi, format="png")
  return buf.getvalue()


def save_picture(result: Any, path: str | os.PathLike[str], window: int | None = None,
                 dpi: int = 100) -> None:
  """Writes :func:`make_figure` as a PNG file."""
  with open(os.fspath(path), "wb") as f:
    f.write(picture_png(result, window, dpi))
