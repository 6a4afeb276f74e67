"""A killed (SIGKILL) or preempted (SIGTERM) run resumes and ends exactly as an unbroken one."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, run_launch

STEPS = 8
COMMON = (f"--config.train.num_train_steps={STEPS}", "--config.train.checkpoint_every=2",
          "--config.train.log_every=1", "--config.train.eval_every=1000",
          "--config.train.max_to_keep=10", "--config.eval.num_pairs=0",
          "--config.train.record_examples=True")


def _final_params(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = mngr.latest_step()
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(state["params"])]
  return step, leaves


def _examples(workdir):
  seen = {}
  with open(os.path.join(workdir, "examples_seen.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      seen[rec["step"]] = rec["clip_index"]  # a replayed step after a resume overwrites
  return [seen[s] for s in sorted(seen)], sorted(seen)


def _start(workdir, data_dir):
  cmd = [sys.executable, "launch.py", "--config=configs/synthetic_tiny.py", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", *COMMON]
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait_for_checkpoint(workdir, step, proc, timeout=900):
  path = os.path.join(workdir, "checkpoints", str(step))
  t0 = time.time()
  while not os.path.isdir(path):
    if proc.poll() is not None:
      raise AssertionError(f"training ended before checkpoint {step}: {proc.stdout.read()[-2000:]}")
    if time.time() - t0 > timeout:
      raise AssertionError(f"no checkpoint {step} after {timeout} s")
    time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  proc = run_launch(workdir, tiny_data_dir, *COMMON)
  assert proc.returncode == 0, proc.stdout[-3000:]
  return workdir


def _compare(workdir, reference):
  step, params = _final_params(workdir)
  ref_step, ref_params = _final_params(reference)
  assert step == ref_step == STEPS
  for a, b in zip(params, ref_params):
    np.testing.assert_array_equal(a, b)
  seen, steps = _examples(workdir)
  ref_seen, ref_steps = _examples(reference)
  assert steps == ref_steps == list(range(1, STEPS + 1))
  assert seen == ref_seen


@pytest.mark.slow
def test_sigkill_then_resume(tiny_data_dir, tmp_path, reference):
  workdir = str(tmp_path / "killed")
  proc = _start(workdir, tiny_data_dir)
  _wait_for_checkpoint(workdir, 4, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = run_launch(workdir, tiny_data_dir, *COMMON)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  assert "Resuming from the checkpoint of step" in resumed.stdout
  _compare(workdir, reference)


@pytest.mark.slow
def test_sigterm_saves_exits_zero_then_resume(tiny_data_dir, tmp_path, reference):
  workdir = str(tmp_path / "preempted")
  proc = _start(workdir, tiny_data_dir)
  _wait_for_checkpoint(workdir, 2, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-3000:]
  assert "Stopped by SIGTERM" in out
  stopped_at = max(int(x) for x in os.listdir(os.path.join(workdir, "checkpoints")) if x.isdigit())
  assert 2 <= stopped_at < STEPS
  resumed = run_launch(workdir, tiny_data_dir, *COMMON)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  assert f"Resuming from the checkpoint of step {stopped_at}" in resumed.stdout
  _compare(workdir, reference)


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_stops_it_and_the_rerun_evaluates(tiny_data_dir,
                                                                              tmp_path,
                                                                              monkeypatch):
  """SIGTERM after the loop saved its last checkpoint stops the final evaluation where it is (no
  run record: the outcome says stopped); the same call then restores that checkpoint, trains
  nothing and evaluates."""
  from asmp_jax import evaluate, stopping, train  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(stopping._STATE, "installed", False)  # pylint: disable=protected-access
  previous = signal.getsignal(signal.SIGTERM)
  config = tiny.get_config()
  config.data.data_dir = tiny_data_dir
  config.train.num_train_steps = 2
  config.eval.num_pairs = 2
  workdir = str(tmp_path / "run")
  real_evaluate = evaluate.evaluate
  calls = []

  def preempted(*args, **kwargs):
    calls.append("preempted")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises in this frame before the sleep ends
    calls.append("not stopped")
    return real_evaluate(*args, **kwargs)

  try:
    monkeypatch.setattr(evaluate, "evaluate", preempted)
    outcome = {}
    assert train.train_and_evaluate(config, workdir, outcome) is None
    assert calls == ["preempted"]
    assert outcome["stopped"] and outcome["results"] is None and outcome["steps"] == 2
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "2"
    assert not [f for f in os.listdir(workdir) if f.startswith("eval_test")]
    monkeypatch.setattr(evaluate, "evaluate", real_evaluate)
    outcome = {}
    state = train.train_and_evaluate(config, workdir, outcome)
    assert int(state.step) == 2 and outcome["start_step"] == 2 and not outcome["stopped"]
    assert outcome["results"] is not None
    assert os.path.exists(os.path.join(workdir, "eval_test_step2.json"))
  finally:
    signal.signal(signal.SIGTERM, previous)


def _corrupt(checkpoint_dir):
  """Overwrites every file of a checkpoint's train state with bytes of the same length."""
  for root, _, files in os.walk(os.path.join(checkpoint_dir, "state")):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      with open(path, "wb") as f:
        f.write(b"\x5a" * size)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_data_dir, tmp_path,
                                                                   reference):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(reference, workdir)
  _corrupt(os.path.join(workdir, "checkpoints", str(STEPS)))
  config_before = open(os.path.join(workdir, "config.json")).read()
  resumed = run_launch(workdir, tiny_data_dir, *COMMON)
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  assert re.search(rf"Checkpoint \S+/checkpoints/{STEPS} cannot be restored", resumed.stdout)
  assert f"Resuming from the checkpoint of step {STEPS - 2}" in resumed.stdout
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))  # kept, not deleted
  _compare(workdir, reference)  # and the run still ends exactly as the unbroken one
  # With no intact checkpoint: one line, and config.json is not rewritten.
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    _corrupt(os.path.join(workdir, "checkpoints", step))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config_before)
  mtime = os.path.getmtime(os.path.join(workdir, "config.json"))
  failed = run_launch(workdir, tiny_data_dir, *COMMON, "--config.train.num_train_steps=12")
  assert failed.returncode != 0
  assert re.search(r"^error: no intact checkpoint in \S+/checkpoints: ", failed.stdout, re.M)
  assert "Traceback" not in failed.stdout
  assert os.path.getmtime(os.path.join(workdir, "config.json")) == mtime


@pytest.mark.slow
def test_sigterm_while_building_the_data_stops_cleanly_then_the_rerun_continues(tmp_path):
  """SIGTERM during start-up (here the first build of the data set) ends the run with status 0
  and a message; the same command then builds, trains and prints a console a log file can
  hold (no escape codes, no TFDS size banner, the compilation timed)."""
  data_dir, workdir = str(tmp_path / "tfds"), str(tmp_path / "run")
  args = [sys.executable, "launch.py", "--config=configs/synthetic_tiny.py",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          "--config.train.num_train_steps=1", "--config.eval.num_pairs=0"]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if "Preparing asmp_synthetic" in line:
      time.sleep(2)
      proc.send_signal(signal.SIGTERM)
      break
  out = "".join(lines) + proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out[-3000:]
  assert "Stopped by SIGTERM while preparing the data set" in out, out[-3000:]
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  rerun = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=1800)
  assert rerun.returncode == 0, rerun.stdout[-3000:]
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["1"]
  assert "\x1b" not in rerun.stdout and "Unknown size" not in rerun.stdout
  assert re.search(r"Compiled the train step in [\d.]+ s", rerun.stdout)
