"""Shared pytest setup: CPU only, quiet TF/absl logs, and the tiny synthetic data set built once."""
import os
import subprocess
import sys

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding the `asmp_synthetic/tiny` set (generated + preprocessed once)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  code = ("from asmp_jax import config_lib, datasets\n"
          "c = config_lib.base_config(); c.data.builder_config = 'tiny'\n"
          f"c.data.data_dir = {data_dir!r}\n"
          "datasets.prepare(datasets.get_builder(c.data))\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
  return data_dir


def run_launch(workdir, data_dir, *overrides, config="configs/synthetic_tiny.py", env=None,
               timeout=900):
  """Runs launch.py in a subprocess; returns the CompletedProcess (stdout+stderr in .stdout)."""
  cmd = [sys.executable, "launch.py", f"--config={config}", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", *overrides]
  full_env = dict(os.environ)
  full_env.update(env or {})
  return subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=timeout, env=full_env)
