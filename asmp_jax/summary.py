"""Metrics to TensorBoard (tensorboardX: event files without TensorFlow) from process 0 only, and
the console lines of a run (progress, final result)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from asmp_jax import metrics as metrics_lib


class Writer:
  """Scalars, audio and images to ``<workdir>/tensorboard``; a no-op when ``enabled`` is False."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._w = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._w = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    if self._w is None:
      return
    for k, v in values.items():
      self._w.add_scalar(k, float(v), global_step=int(step))
    self._w.flush()

  def audio(self, step: int, tag: str, wav: np.ndarray, sample_rate: int) -> None:
    if self._w is not None:
      wav = np.clip(np.asarray(wav, np.float32), -1.0, 1.0)
      self._w.add_audio(tag, wav, global_step=int(step), sample_rate=sample_rate)

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """``image``: uint8 or float [H, W, 3] (or [H, W])."""
    if self._w is not None:
      img = np.asarray(image)
      self._w.add_image(tag, img, global_step=int(step),
                        dataformats="HWC" if img.ndim == 3 else "HW")

  def hparams(self, config) -> None:
    if self._w is not None:
      self._w.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=1, default=str)
                       + "\n```", global_step=0)

  def close(self) -> None:
    if self._w is not None:
      self._w.close()


class Progress:
  """Steps/s and the time left, measured from the first step after compilation."""

  def __init__(self, num_steps: int, start_step: int, batch_size: int):
    self.num_steps, self.batch_size = num_steps, batch_size
    self._t, self._step = time.time(), start_step

  def rates(self, step: int) -> dict[str, float]:
    """Steps and examples per second since the last call (or the start)."""
    now = time.time()
    rate = (step - self._step) / max(now - self._t, 1e-9)
    self._t, self._step = now, step
    self._rate = rate
    return {"steps_per_sec": rate, "examples_per_sec": rate * self.batch_size}

  def line(self, step: int, scalars: dict[str, float], learning_rate: float) -> str:
    """One plain console line for ``step`` (after :meth:`rates`)."""
    eta = (self.num_steps - step) / max(self._rate, 1e-9)
    return (f"step {step}/{self.num_steps}  loss {scalars['loss']:.4f}  cyc "
            f"{scalars.get('loss_cyc', np.nan):.4f}  cons {scalars.get('loss_cons', np.nan):.4f}  "
            f"dir {scalars.get('loss_dir', np.nan):.4f}  lr {learning_rate:.3g}  "
            f"{self._rate:.2f} steps/s  ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")


def gain_over_mixture_se(results: dict[str, Any], metric: str = "sdr") -> tuple[float, float]:
  """Mean and standard error (clustered by pair) of the model's ``metric`` (sdr, sir or sar)
  minus the mixture's, over the sources both score."""
  model = np.asarray(results["model"][f"{metric}_per_source"], np.float64)
  mixture = np.asarray(results["mixture"][f"{metric}_per_source"], np.float64)
  gain = model - mixture
  pair = np.broadcast_to(np.arange(gain.shape[0])[:, None], gain.shape)
  ok = np.isfinite(gain)
  mean, se = metrics_lib.clustered_mean_se(gain[ok], pair[ok])
  return float(mean), float(se)


def final_line(results: dict[str, Any]) -> str:
  """An evaluation in one line: SDR gain over the mixture, the ideal-mask ceiling and the
  direction accuracy's gain over the training majority vote, with standard errors (clustered by
  pair, and by test clip for directions)."""
  gain, gain_se = gain_over_mixture_se(results)
  nd = next(k for k in results if k.removeprefix("direction_accuracy_").isdigit())
  dgain = nd.replace("direction_accuracy", "direction_gain_over_majority")
  majority = results.get(nd.replace("direction_accuracy", "majority_vote"), float("nan"))
  return (f"{results['split']}, {results['num_pairs']} pairs: SDR gain over the mixture "
          f"{gain:+.2f} ± {gain_se:.2f} dB (model {results['model']['sdr']:.2f}, mixture "
          f"{results['mixture']['sdr']:.2f}, ideal-mask ceiling {results['oracle_ibm']['sdr']:.2f}"
          f" dB); {nd} {results[nd]:.3f} ± {results[nd + '_se']:.3f}, gain over the majority "
          f"vote ({majority:.3f}) {results.get(dgain, float('nan')):+.3f} ± "
          f"{results.get(dgain + '_se', float('nan')):.3f}")
