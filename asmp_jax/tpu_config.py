"""What a Cloud TPU submission needs (asmp_jax.tpu_submit): slice geometry, the validated
submission config and its command line.

Slice sizes (Cloud TPU docs: tpu/docs/v4, v5e, v5p, v6e, system-architecture): the number in
``v2/v3/v4/v5p-N`` counts TensorCores (2 per chip, 4 chips per worker VM), so v4-8 is one worker and
v4-32 four; the number in ``v5litepod-N`` / ``v6e-N`` counts chips (1 TensorCore each); slices of up
to 8 chips are one VM, larger ones have 4 chips per VM (v5litepod-16: 4 workers). JAX sees one
device per chip on v4/v5p (megacore), so ``train.batch_size`` must be a multiple of 16 on a v4-32;
:func:`parse_args` checks it. docs/cloud_tpu.md gives the sources.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import runpy
import tempfile
from collections.abc import Sequence

# Remote layout, relative to the home directory of the ssh user on every worker.
REMOTE_SRC = "asmp-jax"
REMOTE_TARBALL = "asmp-jax.tar.gz"
REMOTE_VENV = "asmp-venv"
REMOTE_LOGS = "asmp_logs"
# etils.epath (used by TFDS and Orbax) reaches gs:// through fsspec/gcsfs when TensorFlow is not
# installed; tensorboardX writes gs:// event files through google-cloud-storage.
GCS_PACKAGES = ("gcsfs", "google-cloud-storage")
DEFAULT_JAX_VERSION = "0.10.2"  # must equal the jax pin in requirements.txt (checked by a test)
DEFAULT_PYTHON = "3.11"  # the project needs >= 3.11 (jax 0.10.2 does too)
QUEUED_ACTIVE = "ACTIVE"
QUEUED_FAILED = ("FAILED", "SUSPENDING", "SUSPENDED")


class SubmitArgumentError(ValueError):
  """An argument of the submission is invalid; the message names the flag."""


# ----------------------------------------------------------------------------- slice geometry


@dataclasses.dataclass(frozen=True)
class _Generation:
  counts: str  # what the number in the accelerator type counts: "tensorcores" or "chips"
  cores_per_chip: int
  chips_per_worker: int  # chips per VM in multi-host slices
  max_single_host_chips: int  # slices up to this many chips are one VM
  runtime_version: str  # Cloud TPU software version recommended for JAX (tpu/docs/runtimes)
  megacore: bool = False  # JAX sees the chip's 2 TensorCores as one device (v4, v5p)
  sizes: frozenset[int] | None = None  # allowed numbers; None: any multiple of one worker


_V5E_SIZES = frozenset({1, 4, 8, 16, 32, 64, 128, 256})
_GENERATIONS = {
    "v2": _Generation("tensorcores", 2, 4, 4, "tpu-ubuntu2204-base"),
    "v3": _Generation("tensorcores", 2, 4, 4, "tpu-ubuntu2204-base"),
    "v4": _Generation("tensorcores", 2, 4, 4, "tpu-ubuntu2204-base", megacore=True),
    "v5p": _Generation("tensorcores", 2, 4, 4, "v2-alpha-tpuv5", megacore=True),
    "v5litepod": _Generation("chips", 1, 4, 8, "v2-alpha-tpuv5-lite", sizes=_V5E_SIZES),
    "v6e": _Generation("chips", 1, 4, 8, "v2-alpha-tpuv6e", sizes=_V5E_SIZES),
}
_ACCELERATOR_RE = re.compile(r"^(?P<gen>[a-z0-9]+?)-(?P<n>[0-9]+)$")


@dataclasses.dataclass(frozen=True)
class SliceSpec:
  """Geometry of a TPU slice.

  ``workers`` is the number of TPU VMs (one JAX process each); ``jax_devices`` the global
  ``jax.device_count()``: one per chip on v4/v5p (megacore) and v5e/v6e, one per TensorCore on
  v2/v3.
  """
  accelerator_type: str
  generation: str
  chips: int
  tensorcores: int
  workers: int
  chips_per_worker: int
  jax_devices: int
  runtime_version: str

  def describe(self) -> str:
    return (f"{self.accelerator_type}: {self.chips} chips ({self.tensorcores} TensorCores, "
            f"{self.jax_devices} JAX devices), {self.workers} worker VM"
            f"{'s' if self.workers > 1 else ''} with {self.chips_per_worker} chips each")


def slice_spec(accelerator_type: str) -> SliceSpec:
  """Parses ``v4-32`` / ``v5litepod-16`` / ``v5p-8`` ... into the slice geometry.

  Raises:
    SubmitArgumentError: naming ``--accelerator_type`` when the type is unknown or its size is not
      a valid slice.
  """
  m = _ACCELERATOR_RE.match(accelerator_type)
  gen = _GENERATIONS.get(m.group("gen")) if m else None
  if m is None or gen is None:
    raise SubmitArgumentError(
        f"--accelerator_type={accelerator_type!r}: expected <generation>-<size> with generation "
        f"one of {sorted(_GENERATIONS)}, e.g. v4-32, v5litepod-16, v5p-8, v6e-8")
  n = int(m.group("n"))
  if gen.counts == "tensorcores":
    per_worker = gen.chips_per_worker * gen.cores_per_chip
    if n < per_worker or n % per_worker:
      raise SubmitArgumentError(
          f"--accelerator_type={accelerator_type!r}: the size of a {m.group('gen')} slice counts "
          f"TensorCores and must be a positive multiple of {per_worker} (one worker VM)")
    chips = n // gen.cores_per_chip
  else:
    if gen.sizes is not None and n not in gen.sizes:
      raise SubmitArgumentError(
          f"--accelerator_type={accelerator_type!r}: {m.group('gen')} slices have "
          f"{sorted(gen.sizes)} chips")
    chips = n
  if chips <= gen.max_single_host_chips:
    workers, per = 1, chips
  else:
    workers, per = chips // gen.chips_per_worker, gen.chips_per_worker
  cores = chips * gen.cores_per_chip
  devices = chips if gen.megacore else cores
  return SliceSpec(accelerator_type, m.group("gen"), chips, cores, workers, per, devices,
                   gen.runtime_version)


def worker_count(accelerator_type: str) -> int:
  """Number of TPU VMs (hosts, JAX processes) of a slice: v4-8 -> 1, v4-32 -> 4."""
  return slice_spec(accelerator_type).workers


# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class SubmitConfig:
  """Everything a submission needs; build with :func:`parse_args` (which validates)."""
  name: str
  zone: str
  accelerator_type: str
  launch_args: tuple[str, ...]
  runtime_version: str = ""  # "" -> the generation's recommended version
  project: str = ""
  spot: bool = False
  reserved: bool = False
  queued: bool = False
  bucket: str = ""
  data_dir: str = ""
  env: tuple[tuple[str, str], ...] = ()
  create_args: tuple[str, ...] = ()  # extra gcloud create flags, e.g. --service-account=...
  dry_run: bool = False
  skip_create: bool = False
  python: str = DEFAULT_PYTHON
  jax_version: str = DEFAULT_JAX_VERSION
  poll_seconds: float = 60.0
  staging_dir: str = ""  # local folder for the code tarball; "" -> the system temp folder
  repo_dir: str = ""  # git checkout to ship; "" -> the one holding this package

  @property
  def slice(self) -> SliceSpec:
    return slice_spec(self.accelerator_type)

  @property
  def version(self) -> str:
    return self.runtime_version or self.slice.runtime_version

  @property
  def tarball(self) -> str:
    return os.path.join(self.staging_dir or tempfile.gettempdir(), f"asmp-submit-{self.name}",
                        REMOTE_TARBALL)

  @property
  def repo(self) -> str:
    return self.repo_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_PROJECT_RE = re.compile(r"^([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$")  # optional domain:
_BUCKET_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PYTHON_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$|^/[A-Za-z0-9._/+-]+$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def launch_flag(launch_args: Sequence[str], flag: str) -> str | None:
  """Value of ``--flag=V`` or ``--flag V`` among launch.py arguments (the last one wins)."""
  value = None
  for i, arg in enumerate(launch_args):
    if arg.startswith(f"--{flag}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{flag}" and i + 1 < len(launch_args):
      value = launch_args[i + 1]
  return value


def validate(cfg: SubmitConfig) -> None:
  """Raises :class:`SubmitArgumentError` naming the offending flag."""
  if not _NAME_RE.match(cfg.name):
    raise SubmitArgumentError(
        f"--name={cfg.name!r}: 1-63 characters, lowercase letters, digits and '-', starting with a "
        "letter and not ending with '-'")
  if not _ZONE_RE.match(cfg.zone):
    raise SubmitArgumentError(f"--zone={cfg.zone!r}: expected a zone such as us-central2-b")
  spec = slice_spec(cfg.accelerator_type)
  if cfg.runtime_version and not _VERSION_RE.match(cfg.runtime_version):
    raise SubmitArgumentError(f"--runtime_version={cfg.runtime_version!r} is not a version name")
  if cfg.project and not _PROJECT_RE.match(cfg.project):
    raise SubmitArgumentError(f"--project={cfg.project!r} is not a Google Cloud project ID")
  if cfg.spot and cfg.reserved:
    raise SubmitArgumentError("--spot and --reserved are mutually exclusive")
  if cfg.bucket and not _BUCKET_RE.match(cfg.bucket):
    raise SubmitArgumentError(f"--bucket={cfg.bucket!r}: expected gs://BUCKET[/PATH]")
  if any(c in cfg.data_dir for c in "\n\0"):
    raise SubmitArgumentError(f"--data_dir={cfg.data_dir!r} contains a newline or NUL")
  for key, value in cfg.env:
    if not _ENV_KEY_RE.match(key) or any(c in value for c in "\n\0"):
      raise SubmitArgumentError(f"--env={key}={value!r}: expected NAME=VALUE with NAME a shell "
                                "variable name and VALUE on one line")
  for arg in cfg.create_args:
    if not arg.startswith("--") or any(c in arg for c in "\n\0"):
      raise SubmitArgumentError(f"--create_arg={arg!r}: expected a gcloud flag such as "
                                "--service-account=SA or --internal-ips")
  if not _PYTHON_RE.match(cfg.python):
    raise SubmitArgumentError(f"--python={cfg.python!r}: expected a version such as 3.11 or an "
                              "absolute interpreter path")
  if not _VERSION_RE.match(cfg.jax_version):
    raise SubmitArgumentError(f"--jax_version={cfg.jax_version!r} is not a version")
  if cfg.poll_seconds <= 0:
    raise SubmitArgumentError(f"--poll_seconds={cfg.poll_seconds}: must be positive")
  if any(c in arg for arg in cfg.launch_args for c in "\n\0"):
    raise SubmitArgumentError("launch.py arguments after '--' may not contain newlines or NUL")
  if launch_flag(cfg.launch_args, "config") is None:
    raise SubmitArgumentError("launch.py needs --config=configs/<name>.py after '--'")
  workdir = launch_flag(cfg.launch_args, "workdir")
  if workdir is None:
    raise SubmitArgumentError("launch.py needs --workdir=... after '--' (or give --bucket to use "
                              "<bucket>/runs/<name>)")
  if spec.workers > 1 and not workdir.startswith("gs://"):
    raise SubmitArgumentError(
        f"--workdir={workdir!r}: a {spec.workers}-worker slice checkpoints collectively, so the "
        "workdir must be shared by all workers: use a gs:// path")


def _split_argv(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
  """(our flags, launch.py arguments after the first '--' or None when there is no '--')."""
  argv = list(argv)
  if "--" not in argv:
    return argv, None
  i = argv.index("--")
  return argv[:i], argv[i + 1:]


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m asmp_jax.tpu_submit",
      description="Create a Cloud TPU VM slice, ship this repository and run launch.py on every "
                  "worker. Arguments after '--' go to launch.py unchanged.")
  p.add_argument("--name", required=True, help="TPU VM (and queued-resource) name.")
  p.add_argument("--zone", required=True, help="Zone, e.g. us-central2-b.")
  p.add_argument("--accelerator_type", required=True, help="e.g. v4-32, v5litepod-16, v5p-8.")
  p.add_argument("--runtime_version", default="",
                 help="TPU software version; default: the one Cloud TPU recommends for JAX on "
                      "this generation (tpu-ubuntu2204-base for v4 and older).")
  p.add_argument("--project", default="", help="Google Cloud project (default: gcloud config).")
  cap = p.add_mutually_exclusive_group()
  cap.add_argument("--spot", action="store_true", help="Spot capacity (preemptible).")
  cap.add_argument("--reserved", action="store_true", help="Reserved capacity.")
  p.add_argument("--queued", action="store_true",
                 help="Request the slice as a queued resource and wait until it is ACTIVE.")
  p.add_argument("--bucket", default="",
                 help="gs:// bucket; default --workdir <bucket>/runs/<name> and TFDS data dir "
                      "<bucket>/tensorflow_datasets when those are not given.")
  p.add_argument("--data_dir", default="",
                 help="TFDS data dir exported as TFDS_DATA_DIR on every worker.")
  p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                 help="Extra environment variable for launch.py (repeatable).")
  p.add_argument("--create_arg", action="append", default=[], metavar="--FLAG[=VALUE]",
                 help="Extra flag for the gcloud create command, e.g. "
                      "--create_arg=--service-account=SA (repeatable).")
  p.add_argument("--dry_run", action="store_true", help="Print the commands, run nothing.")
  p.add_argument("--skip_create", action="store_true",
                 help="Use an existing slice of this name (ship, install and run only).")
  p.add_argument("--python", default=DEFAULT_PYTHON,
                 help="Python for the workers' virtualenv (uv fetches it if missing).")
  p.add_argument("--jax_version", default=DEFAULT_JAX_VERSION,
                 help="Version of jax[tpu] installed on the workers.")
  p.add_argument("--poll_seconds", type=float, default=60.0,
                 help="Seconds between queued-resource state checks.")
  p.add_argument("--staging_dir", default="", help="Local folder for the code tarball.")
  p.add_argument("--repo_dir", default="", help="Git checkout to ship (default: this one).")
  return p


def parse_args(argv: Sequence[str]) -> SubmitConfig:
  """Parses and validates ``[flags] -- [launch.py arguments]``.

  Raises:
    SubmitArgumentError: an invalid value (the message names the flag).
    SystemExit: from argparse for unknown or missing flags (usage on stderr).
  """
  ours, launch_args = _split_argv(argv)
  ns = _parser().parse_args(ours)  # first, so that -h and missing flags are reported as usual
  if launch_args is None:
    raise SubmitArgumentError("put the launch.py arguments after '--', e.g. "
                              "-- --config=configs/asiw.py --workdir=gs://BUCKET/runs/asiw")
  env = []
  for item in ns.env:
    key, sep, value = item.partition("=")
    if not sep:
      raise SubmitArgumentError(f"--env={item!r}: expected NAME=VALUE")
    env.append((key, value))
  bucket = ns.bucket.rstrip("/")
  data_dir = ns.data_dir
  if bucket and _BUCKET_RE.match(bucket):
    if launch_flag(launch_args, "workdir") is None:
      launch_args = [*launch_args, f"--workdir={bucket}/runs/{ns.name}"]
    if not data_dir:
      data_dir = f"{bucket}/tensorflow_datasets"
  cfg = SubmitConfig(
      name=ns.name, zone=ns.zone, accelerator_type=ns.accelerator_type,
      launch_args=tuple(launch_args), runtime_version=ns.runtime_version, project=ns.project,
      spot=ns.spot, reserved=ns.reserved, queued=ns.queued, bucket=bucket, data_dir=data_dir,
      env=tuple(env), create_args=tuple(ns.create_arg), dry_run=ns.dry_run,
      skip_create=ns.skip_create, python=ns.python, jax_version=ns.jax_version,
      poll_seconds=ns.poll_seconds, staging_dir=ns.staging_dir, repo_dir=ns.repo_dir)
  validate(cfg)
  _check_batch_size(cfg)
  return cfg


def config_batch_size(cfg: SubmitConfig) -> int | None:
  """``train.batch_size`` launch.py will use: the override after '--', else the config file's.

  Returns None when the config file cannot be loaded here (it is then only checked on the slice).
  """
  override = launch_flag(cfg.launch_args, "config.train.batch_size")
  if override is not None:
    try:
      return int(override)
    except ValueError:
      return None
  path = (launch_flag(cfg.launch_args, "config") or "").split(":", 1)[0]
  try:
    config = runpy.run_path(os.path.join(cfg.repo, path))["get_config"]()
    return int(config.train.batch_size)
  except Exception:  # pylint: disable=broad-except
    return None


def _check_batch_size(cfg: SubmitConfig) -> None:
  """train.py shards the global batch over all devices, so it refuses sizes that do not divide."""
  batch, devices = config_batch_size(cfg), cfg.slice.jax_devices
  if batch is not None and batch % devices:
    raise SubmitArgumentError(
        f"--config.train.batch_size={batch} is not divisible by the {devices} JAX devices of "
        f"{cfg.accelerator_type} (train.py would stop at start-up): pass e.g. "
        f"--config.train.batch_size={-(-batch // devices) * devices} after '--'")
