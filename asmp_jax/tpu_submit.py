"""Runs `launch.py` training on a Cloud TPU VM slice, driving `gcloud` step by step.

  python -m asmp_jax.tpu_submit --name=asmp-asiw --zone=us-central2-b --accelerator_type=v4-32 \\
      --spot --bucket=gs://my-bucket --dry_run \\
      -- --config=configs/asiw.py --workdir=gs://my-bucket/runs/asiw --config.train.batch_size=32

Everything after ``--`` is passed to ``launch.py`` unchanged, on every worker. The steps:

  1. create the slice: ``gcloud compute tpus tpu-vm create`` or, with ``--queued``, a queued
     resource (``gcloud compute tpus queued-resources create``) followed by a ``describe`` polling
     loop until the request is ACTIVE;
  2. ship the code: ``git archive`` of HEAD (the committed, git-tracked files only) copied to every
     worker with ``gcloud compute tpus tpu-vm scp --worker=all``;
  3. install on every worker: a Python 3.11 virtual environment (made with ``uv``, since the TPU
     images' system Python can be older), ``requirements.txt`` + the project, GCS file-system
     packages and the TPU build of JAX;
  4. start ``launch.py`` under ``nohup`` on every worker (``gcloud compute tpus tpu-vm ssh
     --worker=all``), each worker appending to its own log ``~/asmp_logs/<name>-<hostname>.log``;
  5. print how to follow each worker's log, stop the run and delete the slice.

With ``--dry_run`` the commands are printed, one per line, as a shell script (explanations are
``#`` comments) and nothing is run. Without it they run in order and the first failure stops the
submission with the failing command. The command builders are pure functions of a
submission config (asmp_jax.tpu_config.SubmitConfig) so they can be checked without gcloud.

Slice sizes and the submission's arguments are checked in asmp_jax.tpu_config (docs/cloud_tpu.md
gives the sources).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from asmp_jax import tpu_config


class StepFailedError(RuntimeError):
  """A command of the submission failed; the message names the step and the command."""


# ----------------------------------------------------------------------------- command builders


@dataclasses.dataclass(frozen=True)
class Step:
  """One command of the submission. With ``until`` set, ``argv`` is re-run until it prints it."""
  title: str
  argv: tuple[str, ...]
  until: str | None = None


def _scope(cfg: tpu_config.SubmitConfig) -> list[str]:
  return [f"--zone={cfg.zone}"] + ([f"--project={cfg.project}"] if cfg.project else [])


def create_command(cfg: tpu_config.SubmitConfig) -> list[str]:
  """``gcloud compute tpus tpu-vm create`` (or ``queued-resources create`` with --queued)."""
  capacity = ["--spot"] if cfg.spot else ["--reserved"] if cfg.reserved else []
  if cfg.queued:
    return ["gcloud", "compute", "tpus", "queued-resources", "create", cfg.name,
            f"--node-id={cfg.name}", *_scope(cfg), f"--accelerator-type={cfg.accelerator_type}",
            f"--runtime-version={cfg.version}", *capacity, *cfg.create_args]
  return ["gcloud", "compute", "tpus", "tpu-vm", "create", cfg.name, *_scope(cfg),
          f"--accelerator-type={cfg.accelerator_type}", f"--version={cfg.version}", *capacity,
          *cfg.create_args]


def queued_state_command(cfg: tpu_config.SubmitConfig) -> list[str]:
  """Prints the queued resource's state (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, FAILED...)."""
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", cfg.name, *_scope(cfg),
          "--format=value(state.state)"]


def archive_command(cfg: tpu_config.SubmitConfig) -> list[str]:
  """``git archive`` of HEAD: the committed, git-tracked files (uncommitted edits are not sent)."""
  return ["git", "-C", cfg.repo, "archive", "--format=tar.gz", f"--output={cfg.tarball}", "HEAD"]


def copy_command(cfg: tpu_config.SubmitConfig) -> list[str]:
  """Copies the tarball into the home directory of every worker."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "scp", cfg.tarball, f"{cfg.name}:",
          "--recurse", "--worker=all", *_scope(cfg)]


def ssh_command(cfg: tpu_config.SubmitConfig, script: str, worker: str = "all") -> list[str]:
  """Runs ``script`` (one shell line) on ``worker`` ("all", or an index) of the slice."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", cfg.name, *_scope(cfg),
          f"--worker={worker}", f"--command={script}"]


def install_script(cfg: tpu_config.SubmitConfig) -> str:
  """Shell line run on every worker: unpack the code, make the venv, install everything."""
  venv_python = f"~/{tpu_config.REMOTE_VENV}/bin/python"
  uv_pip = "python3 -m uv pip"
  uv_install = f"{uv_pip} install --python {venv_python}"
  # Versions are validated to [A-Za-z0-9._+-]: double quotes only stop the shell's [] globbing.
  return "; ".join([
      "set -e",
      f"rm -rf ~/{tpu_config.REMOTE_SRC}",
      f"mkdir -p ~/{tpu_config.REMOTE_SRC}",
      f"tar -xzf ~/{tpu_config.REMOTE_TARBALL} -C ~/{tpu_config.REMOTE_SRC}",
      f"cd ~/{tpu_config.REMOTE_SRC}",
      # PEP 668 images refuse user installs unless told (pip >= 23.0.1 knows the flag).
      "{ python3 -m pip install --user --upgrade uv || "
      "python3 -m pip install --user --upgrade --break-system-packages uv; }",
      f"[ -x {venv_python} ] || python3 -m uv venv --python {shlex.quote(cfg.python)} "
      f"~/{tpu_config.REMOTE_VENV}",
      f"{uv_install} -r requirements.txt -e . {' '.join(tpu_config.GCS_PACKAGES)}",
      f'{uv_install} "jax[tpu]=={cfg.jax_version}"',
      f"{uv_pip} show --python {venv_python} jax jaxlib libtpu",
  ])


def log_path(cfg: tpu_config.SubmitConfig) -> str:
  """Per-worker log file, as a shell word evaluated on the worker."""
  return f"~/{tpu_config.REMOTE_LOGS}/{cfg.name}-$(hostname).log"


def run_env(cfg: tpu_config.SubmitConfig) -> list[tuple[str, str]]:
  """Environment exported for launch.py on every worker."""
  # ASMP_DISTRIBUTED makes launch.py call jax.distributed.initialize() (asmp_jax.distributed).
  env = [("ASMP_DISTRIBUTED", "1")]
  env += [("TFDS_DATA_DIR", cfg.data_dir)] if cfg.data_dir else []
  return env + list(cfg.env)


def run_script(cfg: tpu_config.SubmitConfig) -> str:
  """Shell line run on every worker: start launch.py in the background, logging per worker."""
  exports = [f"export {k}={shlex.quote(v)}" for k, v in run_env(cfg)]
  launch = shlex.join(["launch.py", *cfg.launch_args])
  return "; ".join([
      "set -e",
      f"cd ~/{tpu_config.REMOTE_SRC}",
      f"mkdir -p ~/{tpu_config.REMOTE_LOGS}",
      f"log={log_path(cfg)}",
      *exports,
      # `&` ends the background command; `;` right after it would be a syntax error.
      f'nohup ~/{tpu_config.REMOTE_VENV}/bin/python {launch} >> "$log" 2>&1 < /dev/null & '
      'echo $! > "${log%.log}.pid"',
      'echo "$(hostname): launch.py started (pid $!), log $log"',
  ])


def tail_command(cfg: tpu_config.SubmitConfig, worker: int) -> list[str]:
  """Follows the log of one worker."""
  return ssh_command(cfg, f"tail -n 200 -f {log_path(cfg)}", worker=str(worker))


def stop_command(cfg: tpu_config.SubmitConfig) -> list[str]:
  """Sends SIGTERM to launch.py on every worker (it saves a checkpoint and exits)."""
  return ssh_command(cfg, f"kill $(cat ~/{tpu_config.REMOTE_LOGS}/{cfg.name}-$(hostname).pid)")


def delete_command(cfg: tpu_config.SubmitConfig) -> list[str]:
  """Deletes the slice (and its queued resource, with --queued)."""
  if cfg.queued:
    return ["gcloud", "compute", "tpus", "queued-resources", "delete", cfg.name, *_scope(cfg),
            "--force"]
  return ["gcloud", "compute", "tpus", "tpu-vm", "delete", cfg.name, *_scope(cfg)]


def build_steps(cfg: tpu_config.SubmitConfig) -> list[Step]:
  """The submission's commands in order (validates ``cfg`` first)."""
  tpu_config.validate(cfg)
  steps = []
  if not cfg.skip_create:
    kind = "queued resource" if cfg.queued else "TPU VM slice"
    steps.append(Step(f"create the {kind} {cfg.name} ({cfg.slice.describe()})",
                      tuple(create_command(cfg))))
    if cfg.queued:
      steps.append(Step(f"wait until the queued resource is {tpu_config.QUEUED_ACTIVE}",
                        tuple(queued_state_command(cfg)), until=tpu_config.QUEUED_ACTIVE))
  steps += [
      Step("make the local staging folder", ("mkdir", "-p", os.path.dirname(cfg.tarball))),
      Step("pack the git-tracked files at HEAD", tuple(archive_command(cfg))),
      Step("copy the code to every worker", tuple(copy_command(cfg))),
      Step("install Python, the project and jax[tpu] on every worker",
           tuple(ssh_command(cfg, install_script(cfg)))),
      Step("start launch.py on every worker", tuple(ssh_command(cfg, run_script(cfg)))),
  ]
  return steps


def build_commands(cfg: tpu_config.SubmitConfig) -> list[list[str]]:
  """The argv of every step, in order (the queued-resource poll appears as its describe)."""
  return [list(s.argv) for s in build_steps(cfg)]


def render_step(step: Step, poll_seconds: float) -> str:
  """One copy-pasteable shell line for ``step``."""
  line = shlex.join(step.argv)
  if step.until is None:
    return line
  return (f'until [ "$({line})" = {shlex.quote(step.until)} ]; do sleep {poll_seconds:g}; done')


def epilogue(cfg: tpu_config.SubmitConfig) -> list[tuple[str, str]]:
  """(description, command line) pairs for monitoring, stopping and deleting the run."""
  n = cfg.slice.workers
  shown = range(n) if n <= 8 else (0, n - 1)
  out = [(f"follow worker {i}'s log" + (f" (workers are 0..{n - 1})" if n > 8 else ""),
          shlex.join(tail_command(cfg, i))) for i in shown]
  out.append(("stop the run (SIGTERM: checkpoint and exit)", shlex.join(stop_command(cfg))))
  out.append(("delete the slice when done", shlex.join(delete_command(cfg))))
  return out


def render_dry_run(cfg: tpu_config.SubmitConfig) -> str:
  """The whole submission as a shell script: commands one per line, the rest ``#`` comments."""
  lines = ["#!/usr/bin/env bash",
           "# python -m asmp_jax.tpu_submit --dry_run: nothing was run.",
           f"# Slice {cfg.slice.describe()}; software version {cfg.version}.",
           "set -e"]
  for i, step in enumerate(build_steps(cfg), 1):
    lines.append(f"# {i}. {step.title}")
    lines.append(render_step(step, cfg.poll_seconds))
  lines.append("# Afterwards (not run by this script):")
  for what, cmd in epilogue(cfg):
    lines.append(f"#   {what}:")
    lines.append(f"#     {cmd}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- execution


def require_gcloud(path: str | None = None) -> str:
  """Path of the gcloud executable, or a :class:`StepFailedError` saying how to get it."""
  found = shutil.which("gcloud", path=path)
  if found is None:
    raise StepFailedError("gcloud is not on PATH: install the Google Cloud CLI "
                          "(https://cloud.google.com/sdk/docs/install), run `gcloud init`, or "
                          "use --dry_run to only print the commands")
  return found


Runner = Callable[..., subprocess.CompletedProcess]


def _run_step(step: Step, cfg: tpu_config.SubmitConfig, runner: Runner,
              sleep: Callable[[float], None], out) -> None:
  print(f"+ {render_step(step, cfg.poll_seconds)}", file=out, flush=True)
  if step.until is None:
    rc = runner(list(step.argv)).returncode
    if rc != 0:
      raise StepFailedError(f"step '{step.title}' failed (exit code {rc}): "
                            f"{shlex.join(step.argv)}")
    return
  while True:
    res = runner(list(step.argv), stdout=subprocess.PIPE, text=True)
    state = (res.stdout or "").strip()
    if res.returncode != 0:
      raise StepFailedError(f"step '{step.title}' failed (exit code {res.returncode}): "
                            f"{shlex.join(step.argv)}")
    if state == step.until:
      return
    if state in tpu_config.QUEUED_FAILED:
      raise StepFailedError(f"the queued resource {cfg.name} is {state}; see "
                            f"`{shlex.join(queued_state_command(cfg)[:-1])}`")
    print(f"  state {state or '?'}; checking again in {cfg.poll_seconds:g} s", file=out,
          flush=True)
    sleep(cfg.poll_seconds)


def _warn_uncommitted(cfg: tpu_config.SubmitConfig, runner: Runner, out) -> None:
  res = runner(["git", "-C", cfg.repo, "status", "--porcelain", "--untracked-files=no"],
               stdout=subprocess.PIPE, text=True)
  if res.returncode != 0:
    raise StepFailedError(f"{cfg.repo} is not a git checkout: the code is shipped with "
                          "`git archive HEAD` (use --repo_dir)")
  changed = [l for l in (res.stdout or "").splitlines() if l.strip()]
  if changed:
    print(f"warning: {len(changed)} tracked file(s) have uncommitted changes; only HEAD is "
          "shipped (commit them first to include them)", file=out, flush=True)


def execute(cfg: tpu_config.SubmitConfig, runner: Runner = subprocess.run,
            sleep: Callable[[float], None] = time.sleep, out=None) -> None:
  """Runs the submission; stops at the first failing step with :class:`StepFailedError`."""
  out = out or sys.stdout
  require_gcloud()
  steps = build_steps(cfg)
  _warn_uncommitted(cfg, runner, out)
  print(f"Slice {cfg.slice.describe()}; software version {cfg.version}.", file=out, flush=True)
  try:
    for step in steps:
      _run_step(step, cfg, runner, sleep, out)
  finally:
    if os.path.exists(cfg.tarball):
      os.remove(cfg.tarball)
  print("Submitted. Next:", file=out)
  for what, cmd in epilogue(cfg):
    print(f"  {what}:\n    {cmd}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    cfg = tpu_config.parse_args(argv)
    if cfg.dry_run:
      print(render_dry_run(cfg))
      return 0
    execute(cfg)
  except tpu_config.SubmitArgumentError as e:
    print(f"tpu_submit: error: {e}", file=sys.stderr)
    return 2
  except StepFailedError as e:
    print(f"tpu_submit: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
