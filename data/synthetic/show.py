r"""Draws one synthetic clip: frames with ground truth, depth, flow and spectrograms.

  python -m asmp_data.synthetic.show --out=docs/img/synthetic_example.png [--seed=N]

Without ``--seed`` the first clip seed (0, 1, 2, ...) with two sources, a moving camera and a
companion context object is drawn. Top row: four frames with the exact boxes, class labels (a
note sign marks sounding objects) and, for sounding objects, the window's camera-motion-free
image displacement as an arrow (x1.5) with its depth change. Middle: the exact depth and flow of a
frame and the mixture's spectrogram. Bottom: the spectrogram of each stem.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import scipy.signal
from absl import app
from absl import flags

from asmp_data.synthetic import generator
from asmp_data.synthetic.config import GeneratorConfig

_OUT = flags.DEFINE_string("out", "docs/img/synthetic_example.png", "Output PNG.")
_SEED = flags.DEFINE_integer("seed", None, "Clip seed (default: first seed with a rich scene).")

_COLOURS = plt.get_cmap("tab10").colors
ARROW_SCALE = 1.5


def pick_seed(cfg: GeneratorConfig, limit: int = 200) -> int:
  """First seed whose clip has 2 sources, a moving camera and a companion object."""
  for seed in range(limit):
    clip = generator.generate_clip(seed, cfg)
    objs = clip.sidecar["objects"]
    if (sum(o["sounding"] for o in objs) == 2 and clip.sidecar["camera"]["moving"]
        and any(o["companion_of"] is not None for o in objs)):
      return seed
  raise RuntimeError(f"no seed below {limit} gives the wanted scene")


def flow_to_rgb(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
  """Colour-codes ``flow [H, W, 2]``: hue = direction, brightness = magnitude."""
  mag = np.hypot(flow[..., 0], flow[..., 1])
  max_mag = max_mag or max(float(mag.max()), 1e-6)
  hsv = np.stack([(np.arctan2(flow[..., 1], flow[..., 0]) / (2 * np.pi)) % 1.0,
                  np.full(mag.shape, 0.9), np.clip(mag / max_mag, 0, 1)], axis=-1)
  return matplotlib.colors.hsv_to_rgb(hsv)


def _spectrogram(ax, x: np.ndarray, sr: int, title: str, num_windows: int) -> None:
  f, t, z = scipy.signal.stft(x, fs=sr, nperseg=512, noverlap=384)
  db = 20 * np.log10(np.abs(z) + 1e-6)
  ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 70, vmax=db.max(),
            extent=[t[0], t[-1], f[0] / 1000, f[-1] / 1000])
  for w in range(1, num_windows):
    ax.axvline(w * t[-1] / num_windows, color="w", lw=0.4, alpha=0.5)
  ax.set_title(title, fontsize=8)
  ax.set_xlabel("time (s)", fontsize=7)
  ax.set_ylabel("kHz", fontsize=7)
  ax.tick_params(labelsize=6)


def draw(clip: generator.Clip, out: str) -> None:
  """Renders the figure of ``clip`` to ``out`` (PNG)."""
  meta, arr, cfg = clip.sidecar, clip.arrays, clip.config
  objs = meta["objects"]
  wf = cfg.window_frames
  sounding = [o["track"] for o in objs if o["sounding"]]
  # Show the four windows with the most motion of the sounding objects, in time order.
  motion = np.abs(arr["window_displacement"][:, sounding]).sum(axis=(1, 2))
  windows = np.sort(np.argsort(-motion, kind="stable")[:4])
  shown = [int(wf * w + 2) for w in windows]
  lateral = np.abs(arr["window_displacement"][windows][:, sounding, :2]).sum(axis=(1, 2))
  flow_t = shown[int(np.argmax(lateral))]
  fig = plt.figure(figsize=(12, 9.2), dpi=110)
  grid = fig.add_gridspec(3, 12, height_ratios=[1.0, 0.85, 0.7], hspace=0.38, wspace=0.9)
  for k, t in enumerate(shown):
    ax = fig.add_subplot(grid[0, 3 * k:3 * k + 3])
    ax.imshow(clip.frames[t], extent=[0, cfg.width, cfg.height, 0])
    w = t // wf
    for o in objs:
      i = o["track"]
      if not arr["visible"][t, i]:
        continue
      x0, y0, x1, y1 = arr["boxes"][t, i]
      col = _COLOURS[i % 10]
      ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=col, lw=1.2))
      label = ("\u266a " if o["sounding"] else "") + o["class_name"]
      ax.text(x0, max(y0 - 1.5, 5), label, color="w", fontsize=6.5,
              bbox=dict(fc=col, ec="none", pad=0.8, alpha=0.85))
      if o["sounding"]:
        du, dv, dz = arr["window_displacement"][w, i]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        tip = (np.clip(cx + ARROW_SCALE * du * cfg.width, 1, cfg.width - 1),
               np.clip(cy + ARROW_SCALE * dv * cfg.height, 1, cfg.height - 1))
        ax.annotate("", xy=tip, xytext=(cx, cy),
                    arrowprops=dict(arrowstyle="->", color="yellow", lw=1.6))
        ax.text(cx, min(y1 + 7, cfg.height - 2), f"\u0394Z {dz:+.1f}", color="yellow",
                fontsize=6.5, ha="center", fontweight="bold")
    kinds = "; ".join(f"{o['class_name']}: {o['motion'][w]}" for o in objs if o["sounding"])
    ax.set_title(f"frame {t} (window {w})\n{kinds}", fontsize=7.5)
    ax.set_axis_off()

  t = flow_t
  ax = fig.add_subplot(grid[1, 0:3])
  im = ax.imshow(arr["depth"][t], cmap="viridis_r")
  ax.set_title(f"exact depth Z, frame {t}", fontsize=8)
  ax.set_axis_off()
  cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
  cbar.ax.tick_params(labelsize=6)
  ax = fig.add_subplot(grid[1, 3:6])
  flow = arr["flow"][t]
  ax.imshow(flow_to_rgb(flow))
  step = 8
  yy, xx = np.mgrid[step // 2:cfg.height:step, step // 2:cfg.width:step]
  ax.quiver(xx, yy, flow[yy, xx, 0], flow[yy, xx, 1], color="w", angles="xy", scale_units="xy",
            scale=0.25, width=0.005)
  moving = "moving camera" if meta["camera"]["moving"] else "static camera"
  ax.set_title(f"exact flow {t}\u2192{t + 1} (arrows x4, {moving})", fontsize=8)
  ax.set_axis_off()
  ax = fig.add_subplot(grid[1, 6:12])
  _spectrogram(ax, clip.audio, cfg.sample_rate, "mixture (received at the camera)",
               cfg.num_windows)

  stems = arr["stems"]
  span = 12 // stems.shape[0]
  names = {o["stem"]: o for o in objs if o["sounding"]}
  for k in range(stems.shape[0]):
    ax = fig.add_subplot(grid[2, k * span:(k + 1) * span])
    if k in names:
      o = names[k]
      title = f"stem {k}: {o['class_name']} ({o['sound']['timbre']})"
    else:
      title = "background bed"
    _spectrogram(ax, stems[k], cfg.sample_rate, title, cfg.num_windows)
  fig.suptitle(f"synthetic clip (seed {meta['seed']}): {cfg.num_frames} frames at {cfg.fps} fps, "
               f"{cfg.width}x{cfg.height} px, {cfg.sample_rate} Hz, c = {cfg.speed_of_sound} "
               "units/s", fontsize=10)
  fig.savefig(out, bbox_inches="tight")
  plt.close(fig)


def main(argv):
  del argv
  cfg = GeneratorConfig()
  seed = _SEED.value if _SEED.value is not None else pick_seed(cfg)
  clip = generator.generate_clip(seed, cfg)
  draw(clip, _OUT.value)
  print(f"wrote {_OUT.value} (clip seed {seed})")
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
