"""Tests of asmp_jax.tpu_submit: command builders, dry run, validation, and the shell it generates.

No test runs the real gcloud: the dry-run subprocess and the live-mode tests put a fake `gcloud`
(a shell script that records its arguments) first on PATH. The remote scripts are executed by bash
in a sandbox HOME with a stand-in interpreter that prints what launch.py would receive.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from asmp_jax import tpu_config as tc
from asmp_jax import tpu_submit as ts

REPO = str(pathlib.Path(ts.__file__).resolve().parents[1])
NAME = "asmp-test"
ZONE = "us-central2-b"
LAUNCH = ["--config=configs/asiw.py", "--workdir=gs://my-bucket/runs/asiw",
          "--config.train.num_train_steps=100", "--config.data.manual_dir=/data/my clips",
          "--config.model.dtype", "bfloat16", "--config.train.batch_size=32"]


def _argv(*flags, launch=LAUNCH, staging="/tmp/stage"):
  return [f"--name={NAME}", f"--zone={ZONE}", "--accelerator_type=v4-32",
          f"--staging_dir={staging}", *flags, "--", *launch]


def _cfg(*flags, **kw):
  return tc.parse_args(_argv(*flags, **kw))


def _command_of(argv):
  (cmd,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return cmd


# ----------------------------------------------------------------------------- slice geometry


@pytest.mark.parametrize("acc, chips, cores, workers, devices", [
    ("v4-8", 4, 8, 1, 4), ("v4-16", 8, 16, 2, 8), ("v4-32", 16, 32, 4, 16),
    ("v4-128", 64, 128, 16, 64), ("v2-8", 4, 8, 1, 8), ("v2-32", 16, 32, 4, 32),
    ("v3-8", 4, 8, 1, 8), ("v5p-8", 4, 8, 1, 4), ("v5p-16", 8, 16, 2, 8),
    ("v5litepod-1", 1, 1, 1, 1), ("v5litepod-4", 4, 4, 1, 4), ("v5litepod-8", 8, 8, 1, 8),
    ("v5litepod-16", 16, 16, 4, 16), ("v5litepod-256", 256, 256, 64, 256),
    ("v6e-8", 8, 8, 1, 8), ("v6e-16", 16, 16, 4, 16),
])
def test_slice_geometry(acc, chips, cores, workers, devices):
  spec = tc.slice_spec(acc)
  assert (spec.chips, spec.tensorcores, spec.workers) == (chips, cores, workers)
  assert spec.jax_devices == devices
  assert spec.chips_per_worker * spec.workers == chips
  assert tc.worker_count(acc) == workers


def test_default_runtime_versions():
  assert _cfg().version == "tpu-ubuntu2204-base"
  assert tc.slice_spec("v5litepod-16").runtime_version == "v2-alpha-tpuv5-lite"
  assert tc.slice_spec("v5p-8").runtime_version == "v2-alpha-tpuv5"
  assert tc.slice_spec("v6e-8").runtime_version == "v2-alpha-tpuv6e"
  assert _cfg("--runtime_version=v2-alpha-tpuv4").version == "v2-alpha-tpuv4"


def test_default_jax_version_matches_requirements_pin():
  text = pathlib.Path(REPO, "requirements.txt").read_text()
  (pin,) = re.findall(r"^jax==(\S+)$", text, flags=re.M)
  assert tc.DEFAULT_JAX_VERSION == pin


# ----------------------------------------------------------------------------- commands


def test_v4_32_commands_in_order(tmp_path):
  cfg = _cfg("--spot", staging=str(tmp_path))
  tarball = f"{tmp_path}/asmp-submit-{NAME}/asmp-jax.tar.gz"
  cmds = ts.build_commands(cfg)
  assert cmds[:4] == [
      ["gcloud", "compute", "tpus", "tpu-vm", "create", NAME, f"--zone={ZONE}",
       "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"],
      ["mkdir", "-p", f"{tmp_path}/asmp-submit-{NAME}"],
      ["git", "-C", REPO, "archive", "--format=tar.gz", f"--output={tarball}", "HEAD"],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, f"{NAME}:", "--recurse",
       "--worker=all", f"--zone={ZONE}"],
  ]
  assert len(cmds) == 6
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", NAME, f"--zone={ZONE}", "--worker=all"]
  assert cmds[4][:-1] == ssh and _command_of(cmds[4]) == ts.install_script(cfg)
  assert cmds[5][:-1] == ssh and _command_of(cmds[5]) == ts.run_script(cfg)


def test_install_script_contents():
  script = ts.install_script(_cfg())
  parts = script.split("; ")
  assert parts[:5] == ["set -e", "rm -rf ~/asmp-jax", "mkdir -p ~/asmp-jax",
                       "tar -xzf ~/asmp-jax.tar.gz -C ~/asmp-jax", "cd ~/asmp-jax"]
  assert ("python3 -m uv pip install --python ~/asmp-venv/bin/python -r requirements.txt -e . "
          "gcsfs google-cloud-storage") in parts
  assert 'python3 -m uv pip install --python ~/asmp-venv/bin/python "jax[tpu]==0.10.2"' in parts
  assert "python3 -m uv venv --python 3.11 ~/asmp-venv" in script
  assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


def test_project_flag_on_every_gcloud_command():
  cfg = _cfg("--project=my-proj-123", "--queued")
  gcloud = [c for c in ts.build_commands(cfg) if c[0] == "gcloud"]
  gcloud += [ts.delete_command(cfg), ts.stop_command(cfg), ts.tail_command(cfg, 2)]
  assert all("--project=my-proj-123" in c and f"--zone={ZONE}" in c for c in gcloud)


def test_spot_reserved_and_queued_variants():
  create = ts.create_command(_cfg("--queued", "--spot"))
  assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", NAME,
                    f"--node-id={NAME}", f"--zone={ZONE}", "--accelerator-type=v4-32",
                    "--runtime-version=tpu-ubuntu2204-base", "--spot"]
  assert ts.create_command(_cfg("--reserved"))[-1] == "--reserved"
  plain = ts.create_command(_cfg())
  assert "--spot" not in plain and "--reserved" not in plain
  extra = ts.create_command(_cfg("--create_arg=--service-account=sa@p.iam.gserviceaccount.com",
                                 "--create_arg=--internal-ips"))
  assert extra[-2:] == ["--service-account=sa@p.iam.gserviceaccount.com", "--internal-ips"]

  steps = ts.build_steps(_cfg("--queued"))
  assert steps[1].argv == ("gcloud", "compute", "tpus", "queued-resources", "describe", NAME,
                           f"--zone={ZONE}", "--format=value(state.state)")
  assert steps[1].until == "ACTIVE"
  # After the queued resource is ACTIVE, its node is reached with the tpu-vm commands.
  assert steps[3].argv[:5] == ("git", "-C", REPO, "archive", "--format=tar.gz")
  assert steps[4].argv[3:5] == ("tpu-vm", "scp")
  assert ts.delete_command(_cfg("--queued")) == [
      "gcloud", "compute", "tpus", "queued-resources", "delete", NAME, f"--zone={ZONE}", "--force"]
  assert ts.delete_command(_cfg()) == [
      "gcloud", "compute", "tpus", "tpu-vm", "delete", NAME, f"--zone={ZONE}"]


def test_skip_create_starts_at_packing():
  cmds = ts.build_commands(_cfg("--skip_create", "--queued"))
  assert cmds[0][0] == "mkdir" and len(cmds) == 5


def test_bucket_defaults_workdir_and_data_dir():
  launch = ["--config=configs/asiw.py", "--config.train.batch_size=48"]
  cfg = _cfg("--bucket=gs://my-bucket/", launch=launch)
  assert cfg.launch_args == (*launch, f"--workdir=gs://my-bucket/runs/{NAME}")
  assert ts.run_env(cfg) == [("ASMP_DISTRIBUTED", "1"),
                             ("TFDS_DATA_DIR", "gs://my-bucket/tensorflow_datasets")]
  cfg = _cfg("--bucket=gs://my-bucket", "--data_dir=gs://other/tfds")
  assert cfg.launch_args == tuple(LAUNCH)  # an explicit --workdir is kept unchanged
  assert ts.run_env(cfg) == [("ASMP_DISTRIBUTED", "1"), ("TFDS_DATA_DIR", "gs://other/tfds")]


def test_dry_run_output_is_the_commands_as_a_script(tmp_path):
  cfg = _cfg("--queued", "--spot", "--data_dir=gs://my-bucket/tfds", staging=str(tmp_path))
  text = ts.render_dry_run(cfg)
  code = [l for l in text.splitlines() if l and not l.startswith("#")]
  assert code[0] == "set -e"
  steps = ts.build_steps(cfg)
  assert code[1:] == [ts.render_step(s, cfg.poll_seconds) for s in steps]
  assert code[2] == (
      f'until [ "$(gcloud compute tpus queued-resources describe {NAME} --zone={ZONE} '
      "'--format=value(state.state)')\" = ACTIVE ]; do sleep 60; done")
  for line, step in zip(code[1:], steps):
    if step.until is None:  # every plain line splits back into exactly the argv
      assert shlex.split(line) == list(step.argv)
  assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
  assert "4 worker VMs" in text
  for i in range(4):
    assert f"--worker={i} " in text
  assert shlex.join(ts.delete_command(cfg)) in text


def test_epilogue_for_large_slices_names_first_and_last_worker():
  cfg = tc.parse_args(["--name=big", f"--zone={ZONE}", "--accelerator_type=v5litepod-256", "--",
                       *LAUNCH, "--config.train.batch_size=256"])
  tails = [cmd for what, cmd in ts.epilogue(cfg) if "log" in what]
  assert [re.search(r"--worker=(\d+)", c).group(1) for c in tails] == ["0", "63"]


# ----------------------------------------------------------------------------- remote run script


def _sandbox(tmp_path):
  """A HOME with the unpacked tree and a stand-in venv python printing its argv and env."""
  home = tmp_path / "home"
  (home / "asmp-jax").mkdir(parents=True)
  py = home / "asmp-venv" / "bin" / "python"
  py.parent.mkdir(parents=True)
  py.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\necho "TFDS_DATA_DIR=$TFDS_DATA_DIR"\n'
                'echo "XLA_FLAGS=$XLA_FLAGS"\necho "CWD=$(pwd)"\n')
  py.chmod(py.stat().st_mode | stat.S_IXUSR)
  return home


def _wait_for_exit(pidfile: pathlib.Path) -> None:
  pid = int(pidfile.read_text())
  for _ in range(600):  # the stand-in exits at once; wait for it to flush its output
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return
    time.sleep(0.05)
  raise AssertionError(f"process {pid} did not exit")


def test_run_script_passes_arguments_env_and_logs_per_worker(tmp_path):
  cfg = _cfg("--data_dir=gs://my-bucket/tfds", "--env=XLA_FLAGS=--xla_a=1 --xla_b='x y'")
  script = ts.run_script(cfg)
  home = _sandbox(tmp_path)
  env = {"HOME": str(home), "PATH": os.environ["PATH"]}
  host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
  log = home / "asmp_logs" / f"{NAME}-{host}.log"
  for run in range(2):  # a second start appends to the same per-worker log
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{host}: launch.py started" in res.stdout
    _wait_for_exit(log.with_suffix(".pid"))
  lines = log.read_text().splitlines()
  expected = ["launch.py", *LAUNCH, "TFDS_DATA_DIR=gs://my-bucket/tfds",
              "XLA_FLAGS=--xla_a=1 --xla_b='x y'", f"CWD={home}/asmp-jax"]
  assert lines == expected * 2
  assert "nohup " in script and '>> "$log" 2>&1 < /dev/null &' in script


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("change, flag", [
    ({"--accelerator_type": "v4-30"}, "--accelerator_type"),
    ({"--accelerator_type": "v9-8"}, "--accelerator_type"),
    ({"--accelerator_type": "v5litepod-12"}, "--accelerator_type"),
    ({"--accelerator_type": "tpu"}, "--accelerator_type"),
    ({"--name": "My_TPU"}, "--name"),
    ({"--name": "tpu-"}, "--name"),
    ({"--zone": "uscentral"}, "--zone"),
    ({"--project": "X"}, "--project"),
    ({"--bucket": "s3://bucket"}, "--bucket"),
    ({"--env": "1BAD=x"}, "--env"),
    ({"--env": "NOVALUE"}, "--env"),
    ({"--python": "python3; rm -rf /"}, "--python"),
    ({"--jax_version": "0.10.2 extra"}, "--jax_version"),
    ({"--runtime_version": "a b"}, "--runtime_version"),
    ({"--poll_seconds": "0"}, "--poll_seconds"),
    ({"--create_arg": "spot"}, "--create_arg"),
])
def test_invalid_flags_are_rejected_by_name(change, flag):
  base = {"--name": NAME, "--zone": ZONE, "--accelerator_type": "v4-32"}
  base.update(change)
  with pytest.raises(tc.SubmitArgumentError, match=re.escape(flag)):
    tc.parse_args([f"{k}={v}" for k, v in base.items()] + ["--", *LAUNCH])


def test_launch_arguments_are_checked():
  with pytest.raises(tc.SubmitArgumentError, match="after '--'"):
    tc.parse_args([f"--name={NAME}", f"--zone={ZONE}", "--accelerator_type=v4-32"])
  with pytest.raises(tc.SubmitArgumentError, match="--workdir"):
    _cfg(launch=["--config=configs/asiw.py"])
  with pytest.raises(tc.SubmitArgumentError, match="--config"):
    _cfg(launch=["--workdir=gs://b/r"])
  with pytest.raises(tc.SubmitArgumentError, match="gs://"):  # 4 workers need a shared workdir
    _cfg(launch=["--config=configs/asiw.py", "--workdir=/tmp/run"])
  single = tc.parse_args(["--name=one", f"--zone={ZONE}", "--accelerator_type=v4-8", "--",
                          "--config=configs/asiw.py", "--workdir", "/tmp/run",
                          "--config.train.batch_size=32"])
  assert tc.launch_flag(single.launch_args, "workdir") == "/tmp/run"


def test_batch_size_must_divide_the_jax_devices():
  # configs/asiw.py keeps the paper's 25 pairs; v4-32 has 16 JAX devices (one per chip).
  with pytest.raises(tc.SubmitArgumentError, match=r"batch_size=25 .* 16 JAX devices.*=32"):
    _cfg(launch=["--config=configs/asiw.py", "--workdir=gs://b/r"])
  with pytest.raises(tc.SubmitArgumentError, match="--config.train.batch_size=40"):
    _cfg(launch=[*LAUNCH, "--config.train.batch_size=40"])
  one_chip = tc.parse_args(["--name=one", f"--zone={ZONE}", "--accelerator_type=v5litepod-1",
                            "--", "--config=configs/asiw.py", "--workdir=/tmp/run"])
  assert tc.config_batch_size(one_chip) == 25


def test_spot_and_reserved_are_exclusive(capsys):
  with pytest.raises(SystemExit) as e:
    _cfg("--spot", "--reserved")
  assert e.value.code == 2
  assert "--reserved" in capsys.readouterr().err
  cfg = tc.SubmitConfig(name=NAME, zone=ZONE, accelerator_type="v4-32", launch_args=tuple(LAUNCH),
                        spot=True, reserved=True)
  with pytest.raises(tc.SubmitArgumentError, match="--spot and --reserved"):
    ts.build_commands(cfg)


# ----------------------------------------------------------------------------- running


def _fake_gcloud(tmp_path) -> pathlib.Path:
  """A `gcloud` that logs its arguments; describe prints WAITING then ACTIVE; FAIL_ON fails."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "gcloud"
  fake.write_text(
      '#!/bin/sh\n'
      'printf "%s\\n" "$*" >> "$FAKE_GCLOUD_LOG"\n'
      'case "$*" in *"$FAKE_GCLOUD_FAIL"*) [ -n "$FAKE_GCLOUD_FAIL" ] && exit 3;; esac\n'
      'case "$*" in\n'
      '  *"queued-resources describe"*)\n'
      '    if [ -e "$FAKE_GCLOUD_LOG.polled" ]; then echo ACTIVE; '
      'else touch "$FAKE_GCLOUD_LOG.polled"; echo WAITING_FOR_RESOURCES; fi;;\n'
      '  *"tpu-vm scp"*) cp "$5" "$FAKE_GCLOUD_LOG.tar.gz";;\n'
      'esac\n')
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  return bin_dir


def test_dry_run_subprocess_runs_no_gcloud(tmp_path):
  bin_dir = _fake_gcloud(tmp_path)
  log = tmp_path / "gcloud.log"
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_GCLOUD_LOG": str(log)}
  res = subprocess.run([sys.executable, "-m", "asmp_jax.tpu_submit", *_argv("--spot", "--dry_run",
                                                                            staging=str(tmp_path))],
                       env=env, cwd=tmp_path, capture_output=True, text=True)
  assert res.returncode == 0, res.stderr
  assert shlex.join(ts.create_command(_cfg("--spot"))) in res.stdout.splitlines()
  assert res.stdout.count("--worker=all") >= 3
  assert not log.exists() and not (tmp_path / f"asmp-submit-{NAME}").exists()


def test_execute_runs_steps_in_order_and_polls(tmp_path, monkeypatch):
  bin_dir = _fake_gcloud(tmp_path)
  log = tmp_path / "gcloud.log"
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))
  cfg = _cfg("--queued", "--spot", staging=str(tmp_path))
  out, sleeps = io.StringIO(), []
  ts.execute(cfg, sleep=sleeps.append, out=out)
  calls = log.read_text().splitlines()
  assert [c.split()[2:4] for c in calls] == [
      ["queued-resources", "create"], ["queued-resources", "describe"],
      ["queued-resources", "describe"], ["tpu-vm", "scp"], ["tpu-vm", "ssh"], ["tpu-vm", "ssh"]]
  assert sleeps == [cfg.poll_seconds]  # one wait while WAITING_FOR_RESOURCES
  with tarfile.open(f"{log}.tar.gz") as tar:  # the shipped tarball holds the tracked tree
    names = set(tar.getnames())
  assert {"launch.py", "requirements.txt", "asmp_jax/distributed.py"} <= names
  assert not os.path.exists(cfg.tarball)  # the local tarball is cleaned up
  assert "--worker=3" in out.getvalue() and "delete" in out.getvalue()


def test_execute_stops_at_the_first_failure(tmp_path, monkeypatch):
  bin_dir = _fake_gcloud(tmp_path)
  log = tmp_path / "gcloud.log"
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))
  monkeypatch.setenv("FAKE_GCLOUD_FAIL", "tpu-vm scp")
  with pytest.raises(ts.StepFailedError, match=r"copy the code.*exit code 3.*tpu-vm scp"):
    ts.execute(_cfg(staging=str(tmp_path)), sleep=lambda s: None, out=io.StringIO())
  assert [c.split()[3] for c in log.read_text().splitlines()] == ["create", "scp"]


def test_missing_gcloud_is_reported(tmp_path, monkeypatch, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ts.StepFailedError, match="gcloud is not on PATH"):
    ts.require_gcloud(path=str(empty))
  monkeypatch.setenv("PATH", str(empty))
  assert ts.main(_argv(staging=str(tmp_path))) == 1
  assert "gcloud is not on PATH" in capsys.readouterr().err
  assert ts.main(_argv("--accelerator_type=v4-31", staging=str(tmp_path))) == 2
  assert "--accelerator_type" in capsys.readouterr().err
