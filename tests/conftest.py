"""Shared pytest setup: CPU only, quiet TF/absl logs, and the tiny synthetic data set built once."""
import os
import subprocess
import sys

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One JAX persistent compilation cache for every subprocess the tests start.

  Most end-to-end tests run launch.py (or a worker) in fresh processes that compile the same
  tiny model; with the cache only the first compiles it (a tiny launch.py run: 73 s without,
  26 s with a warm cache, same results; docs/RESULTS.md, "Test suite"). The cache lives in this
  test run's temporary directory, so nothing carries over between test runs.
  """
  cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  saved = {k: os.environ.get(k) for k in cache}
  os.environ.update(cache)
  yield cache["JAX_COMPILATION_CACHE_DIR"]
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding the `asmp_synthetic/tiny` set (generated + preprocessed once)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  subprocess.run([sys.executable, "-m", "asmp_jax.datasets", "--config=configs/synthetic_tiny.py",
                  f"--config.data.data_dir={data_dir}"], check=True, cwd=REPO,
                 capture_output=True)
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


# Trains the tiny model for 2 steps on 4 simulated CPU devices (global batch 4) with launch's
# train.train_and_evaluate, then, in the same process and on the 4-device state, separates one
# test clip with asmp_jax.inference.Separator and saves the waveforms (used to check that a
# 1-device restore separates identically).
_TRAIN_AND_SEPARATE = r"""
import importlib.util, json, sys
import jax, numpy as np
from asmp_jax import inference, run_folder, train
workdir, data_dir, video, audio, out = sys.argv[1:6]
spec = importlib.util.spec_from_file_location("cfg", "configs/synthetic_tiny.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
config = mod.get_config()
config.data.data_dir = data_dir
config.train.batch_size = 4
config.train.num_train_steps = 2
config.train.checkpoint_every = 2
config.train.log_every = 1
config.eval.num_pairs = 0
state = train.train_and_evaluate(config, workdir)
leaf = jax.tree.leaves(state.params)[0]
with open(f"{workdir}/{run_folder.DATASET_META_FILE}") as f:
  meta = json.load(f)
sep = inference.Separator(config, {"params": state.params, "batch_stats": state.batch_stats}, meta)
result = sep.separate(video, audio)
np.savez(out, sources=result.sources, devices=jax.device_count(),
         param_devices=len(leaf.sharding.device_set))
"""


import glob  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session")
def trained_tiny_workdir(tiny_data_dir, tmp_path_factory):
  """(workdir, clip path stem, npz) of a tiny model trained on 4 simulated devices.

  The npz holds ``sources`` (the separation of ``<stem>.mp4`` + ``<stem>.wav`` computed in the
  training process on the 4-device state), ``devices`` and ``param_devices``.
  """
  root = tmp_path_factory.mktemp("trained_tiny")
  workdir, out = str(root / "run"), str(root / "train_process_separation.npz")
  clips = glob.glob(os.path.join(tiny_data_dir, "downloads", "asmp_synthetic_clips", "tiny-*",
                                 "test", "test_00000.mp4"))
  assert clips, f"no synthetic test clip under {tiny_data_dir}/downloads"
  stem = os.path.splitext(sorted(clips)[-1])[0]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _TRAIN_AND_SEPARATE, workdir, tiny_data_dir,
                         stem + ".mp4", stem + ".wav", out], cwd=REPO, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-4000:]
  return workdir, stem, out
