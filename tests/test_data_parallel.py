"""The same global batch on 1 device and on 4 simulated devices gives the same update."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


def _run(devices, out):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "tests/helpers/one_step.py", str(out)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return np.load(out)


@pytest.mark.slow
def test_one_vs_four_devices(tmp_path):
  one = _run(1, tmp_path / "one.npz")
  four = _run(4, tmp_path / "four.npz")
  assert int(one["devices"]) == 1 and int(four["devices"]) == 4
  np.testing.assert_allclose(one["losses"], four["losses"], rtol=1e-5)
  # The gradient is the same up to float32 reduction order (7.8e-5 of the largest entry on the
  # 2-core development CPU; other CPUs reorder reductions differently).
  g1, g4 = one["grads"], four["grads"]
  assert np.abs(g1 - g4).max() <= 3e-4 * np.abs(g1).max(), np.abs(g1 - g4).max()
  # BatchNorm statistics are global-batch statistics on both (not per-device ones). Compared after
  # the first step, where they depend only on the shared initial parameters and the batch: after
  # the second, the two runs' parameters already differ by up to 2 * lr in coordinates whose
  # gradient is zero up to rounding (see below), which moves the statistics by ~1e-4.
  bs1, bs4, names = one["batch_stats1"], four["batch_stats1"], one["batch_stat_names"]
  worst = np.argmax(np.abs(bs1 - bs4))
  assert np.abs(bs1 - bs4).max() <= 1e-5 * np.abs(bs1).max(), (names[worst], bs1[worst], bs4[worst])
  # The first Adam update: Adam normalises each coordinate, so a gradient that is zero up to
  # rounding may move by +-lr on either run; every other coordinate moves identically.
  big = np.abs(g1) > 1e-3 * np.abs(g1).max()
  np.testing.assert_allclose(one["params1"][big], four["params1"][big], atol=1e-6)
