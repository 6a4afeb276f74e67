"""Two local JAX processes (gloo collectives) train like one process with the same global batch."""
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_launch

ARGS = ("--config.train.num_train_steps=4", "--config.train.log_every=1",
        "--config.train.batch_size=4", "--config.train.checkpoint_every=2",
        "--config.eval.num_pairs=0", "--config.train.eval_every=1000")


def _losses(text):
  return [float(x) for x in re.findall(r"step \d+/4  loss ([0-9.]+)", text)]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tiny_data_dir, tmp_path):
  single = run_launch(str(tmp_path / "single"), tiny_data_dir, *ARGS,
                      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert single.returncode == 0, single.stdout[-3000:]
  workdir = str(tmp_path / "multi")
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, ASMP_COORDINATOR=f"localhost:{port}", ASMP_NUM_PROCESSES="2",
               ASMP_PROCESS_ID=str(pid), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cmd = [sys.executable, "launch.py", "--config=configs/synthetic_tiny.py",
           f"--workdir={workdir}", f"--config.data.data_dir={tiny_data_dir}", *ARGS]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=1200)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "JAX process 0/2" in outs[0] and "JAX process 1/2" in outs[1]
  assert "global device count 4" in outs[0]
  one, two = _losses(single.stdout), _losses(outs[0])
  assert len(one) == len(two) == 4
  np.testing.assert_allclose(two, one, rtol=2e-4, atol=2e-4)  # logged with 4 decimals
  assert sorted(int(x) for x in os.listdir(os.path.join(workdir, "checkpoints"))
                if x.isdigit()) == [2, 4]
  # Only process 0 writes TensorBoard files.
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
