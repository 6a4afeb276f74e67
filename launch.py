"""Trains and evaluates ASMP.

  python launch.py --config=configs/synthetic.py --workdir=runs/synthetic
  python launch.py --config=configs/synthetic_tiny.py --workdir=/tmp/tiny \\
      --config.train.num_train_steps=20

Rerunning the same command resumes from the newest intact checkpoint in --workdir; SIGTERM at
any stage stops the run cleanly (exit status 0) so that the same command continues it. With
--compilation_cache_dir=DIR (any directory, kept between runs) a resumed or repeated run loads its
compiled programs instead of compiling them again. With --run_record=FILE the finished run writes
its record there (asmp_jax/run_record.py: command, commit, config sha256, machine, wall times,
test figures with standard errors).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from asmp_jax import console

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                lock_config=True)
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    "JAX persistent compilation cache directory, reused across runs (default: no cache, or "
    "$JAX_COMPILATION_CACHE_DIR if set).")
_RUN_RECORD = flags.DEFINE_string(
    "run_record", None,
    "Where the finished run writes its record (command, commit, config sha256, machine, wall "
    "times of build/train/evaluation, steps, test figures with standard errors; "
    "asmp_jax/run_record.py), e.g. docs/benchmark_run.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from asmp_jax import stopping  # pylint: disable=g-import-not-at-top
  stopping.install()  # first: SIGTERM from now on stops the run cleanly
  # Imported here so --helpfull stays fast and JAX is configured by flags first.
  import logging as py_logging  # pylint: disable=g-import-not-at-top
  py_logging.getLogger("jax._src.xla_bridge").addFilter(console.NoTpuHere())
  try:
    import jax  # pylint: disable=g-import-not-at-top
    from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
    from asmp_jax import distributed  # pylint: disable=g-import-not-at-top
    from asmp_jax import run_folder  # pylint: disable=g-import-not-at-top
    from asmp_jax import train  # pylint: disable=g-import-not-at-top
    from asmp_jax import train_loop  # pylint: disable=g-import-not-at-top
  except stopping.Stopped:
    logging.warning("Stopped by SIGTERM while starting; rerun the same command to continue.")
    return

  logging.get_absl_handler().addFilter(console.QuietLibraries())
  if _CACHE_DIR.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE_DIR.value)
    logging.info("JAX compilation cache: %s", _CACHE_DIR.value)
  distributed.initialize()
  logging.info("JAX process %d/%d, local devices %s, global device count %d",
               jax.process_index(), jax.process_count(), jax.local_devices(), jax.device_count())
  outcome = {}
  started = _run_record_start() if _RUN_RECORD.value else None
  try:
    train.train_and_evaluate(FLAGS.config, _WORKDIR.value, outcome)
  except (config_lib.ConfigError, train_loop.TrainingError, run_folder.RunFolderError) as e:
    raise SystemExit(f"error: {e}") from None
  if _RUN_RECORD.value and jax.process_index() == 0:
    _write_run_record(_RUN_RECORD.value, outcome, started)


def _run_record_start() -> dict:
  """The commit and config sha256 the run starts from (asmp_jax.run_record.provenance)."""
  from asmp_jax import run_record  # pylint: disable=g-import-not-at-top
  return run_record.provenance(config_flags.get_config_filename(FLAGS["config"]))


def _write_run_record(path: str, outcome: dict, started: dict | None) -> None:
  import sys  # pylint: disable=g-import-not-at-top
  from asmp_jax import run_record  # pylint: disable=g-import-not-at-top
  if outcome.get("stopped") or outcome.get("results") is None:
    logging.warning("No run record written to %s: the run %s.", path,
                    "was stopped" if outcome.get("stopped") else "had no final evaluation")
    return
  flag = FLAGS["config"]
  record = run_record.build(argv=sys.argv, config_file=config_flags.get_config_filename(flag),
                            overrides=config_flags.get_override_values(flag), outcome=outcome,
                            evaluation_file=outcome["results"].get("evaluation_file"),
                            started=started)
  run_record.write(path, record)
  logging.info("Run record: %s", path)


if __name__ == "__main__":
  app.run(main)
