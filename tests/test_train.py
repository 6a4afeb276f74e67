"""launch.py end to end on the tiny synthetic set: train, evaluate, checkpoint, resume, refuse."""
import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from conftest import REPO, run_launch


def changes(saved, current, step):
  from asmp_jax import optimizer, run_folder  # pylint: disable=g-import-not-at-top
  return run_folder.resume_changes(saved, current, step, optimizer.learning_rate_schedule)


def _ckpt_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit())


@pytest.mark.slow
def test_train_evaluate_checkpoint_and_resume(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  first = run_launch(workdir, tiny_data_dir)
  assert first.returncode == 0, first.stdout[-3000:]
  assert "step 6/6" in first.stdout
  assert "evaluation on test (" in first.stdout  # the evaluation's summary line, in the run's log
  assert _ckpt_steps(workdir) == [3, 6]  # checkpoint_every=3, max_to_keep=2
  # The console: the compilation named and timed, plain lines, the result in one line.
  assert re.search(r"Compiled the train step in [\d.]+ s", first.stdout), first.stdout[-3000:]
  assert "\x1b" not in first.stdout
  assert "Unable to initialize backend" not in first.stdout
  assert re.search(r"Result at step 6: test, 2 pairs: SDR gain over the mixture [+-][\d.]+ ± "
                   r"[\d.]+ dB .*ideal-mask ceiling .* gain over the majority vote \([\d.]+\) "
                   r"[+-][\d.]+ ± [\d.]+", first.stdout), first.stdout[-3000:]
  with open(os.path.join(workdir, "eval_test_step6.json")) as f:
    results = json.load(f)
  for key in ("model", "mixture", "oracle_ibm", "oracle_irm"):
    assert results[key]["num_valid"] > 0
    per_source = np.array(results[key]["sdr_per_source"], dtype=float)  # None -> NaN
    assert per_source.shape == (results["num_pairs"], 2)
    assert np.isfinite(per_source).sum() == results[key]["num_valid"]
    np.testing.assert_allclose(np.nanmean(per_source), results[key]["sdr"], atol=1e-3)
  # Direction figures agree with each other: the label counts give the majority vote, no class
  # can be right more often than it is both predicted and the label, and the any-order
  # matching can only find more correct answers than the consistency matching.
  nd = next(k.removeprefix("direction_accuracy_") for k in results
            if k.removeprefix("direction_accuracy_").isdigit())
  n = results["direction_count"]
  assert n > 0
  pred_counts = np.array(results[f"direction_predicted_counts_{nd}"])
  label_counts = np.array(results[f"direction_label_counts_{nd}"])
  assert pred_counts.sum() == label_counts.sum() == n
  np.testing.assert_allclose(label_counts[results["majority_class"]] / n,
                             results[f"majority_vote_{nd}"])
  assert results[f"direction_accuracy_{nd}"] <= np.minimum(pred_counts, label_counts).sum() / n
  assert (results[f"direction_accuracy_{nd}_any_order"]
          >= results[f"direction_accuracy_{nd}"] - 1e-9)
  # The per-clip record adds up to the totals; the clip-clustered errors are there.
  per_clip = np.array(results["direction_per_clip"])  # [clip, counted, correct]
  pair_clips = {c for pair in results["pairs"] for c in pair}
  assert set(per_clip[:, 0]) <= pair_clips and len(per_clip) == results["direction_num_clips"]
  assert per_clip[:, 1].sum() == n
  np.testing.assert_allclose(per_clip[:, 2].sum() / n, results[f"direction_accuracy_{nd}"])
  np.testing.assert_allclose(results[f"direction_gain_over_majority_{nd}"],
                             results[f"direction_accuracy_{nd}"] - results[f"majority_vote_{nd}"])
  # The accuracy's error, clustered by clip, follows from the per-clip totals alone.
  acc, g = results[f"direction_accuracy_{nd}"], len(per_clip)
  residuals = per_clip[:, 2] - acc * per_clip[:, 1]
  expected_se = np.sqrt(g / (g - 1) * np.sum(residuals ** 2)) / n if g > 1 else np.nan
  np.testing.assert_allclose(results[f"direction_accuracy_{nd}_se"], expected_se, rtol=1e-9)
  # The ideal binary mask separates far better than leaving the mixture alone.
  assert results["oracle_ibm"]["sdr"] > results["mixture"]["sdr"] + 5
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  # A saved checkpoint evaluates on its own: the step-6 state gives the in-training figures.
  ev = subprocess.run([sys.executable, "-m", "asmp_jax.evaluate", f"--workdir={workdir}",
                       "--step=6"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True, timeout=600)
  assert ev.returncode == 0, ev.stdout[-3000:]
  assert "step 6, test" in ev.stdout
  # Reading the state alone says nothing of the data iterator's item it leaves unread.
  assert "could not be restored" not in ev.stdout and "setting create=False" not in ev.stdout
  # The run's own record of step 6 is kept; this one goes beside it.
  assert "eval_test_step6.2.json" in ev.stdout
  with open(os.path.join(workdir, "eval_test_step6.2.json")) as f:
    again = json.load(f)
  assert again["pairs"] == results["pairs"] and again["checkpoint_step"] == 6
  np.testing.assert_allclose(again["model"]["sdr"], results["model"]["sdr"], atol=1e-3)
  ev = subprocess.run([sys.executable, "-m", "asmp_jax.evaluate", f"--workdir={workdir}",
                       "--step=5"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True, timeout=600)
  assert ev.returncode != 0 and "no checkpoint for step 5" in ev.stdout
  # Another sliding-window hop goes to its own file; the same seeded pairs come first, and
  # the mixture, averaged over any set of windows, is still the mixture.
  ev = subprocess.run([sys.executable, "-m", "asmp_jax.evaluate", f"--workdir={workdir}",
                       "--num_pairs=2", "--window_hop_s=0.5"], cwd=REPO, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, text=True, timeout=600)
  assert ev.returncode == 0, ev.stdout[-3000:]
  assert "evaluation on test: 1/2 pairs" in ev.stdout  # progress while it runs
  with open(os.path.join(workdir, "eval_test_step6_hop0.5.json")) as f:
    hop = json.load(f)
  assert hop["window_hop_s"] == 0.5 and results["window_hop_s"] != 0.5
  assert hop["pairs"] == results["pairs"][:2]
  np.testing.assert_allclose(hop["mixture"]["sdr_per_source"],
                             results["mixture"]["sdr_per_source"][:2], atol=1e-6)
  # Run again with more steps: it resumes from step 6 instead of restarting.
  second = run_launch(workdir, tiny_data_dir, "--config.train.num_train_steps=8",
                      "--config.eval.num_pairs=0")
  assert second.returncode == 0, second.stdout[-3000:]
  assert "Resuming from the checkpoint of step 6" in second.stdout
  assert "train.num_train_steps: 6 -> 8" in second.stdout  # the resume names what it changes
  assert "step 8/8" in second.stdout and "step 2/8" not in second.stdout
  assert _ckpt_steps(workdir)[-1] == 8
  # An incompatible model in the same workdir is refused with the differing key.
  third = run_launch(workdir, tiny_data_dir, "--config.model.embed_dim=16",
                     "--config.eval.num_pairs=0")
  assert third.returncode != 0
  assert "incompatible config" in third.stdout and "model.embed_dim" in third.stdout
  # Another workdir starts from this run's latest checkpoint (step 8): the step carries over,
  # and with a zero learning rate at step 8 (a piecewise schedule given on the command line)
  # the parameters it saves at step 9 are the source's.
  fork = str(tmp_path / "fork")
  fourth = run_launch(fork, tiny_data_dir, f"--config.train.init_from={workdir}",
                      "--config.train.num_train_steps=9", "--config.train.lr_boundaries=(9,)",
                      "--config.train.lr_values=(0.0,1.0)", "--config.eval.num_pairs=0")
  assert fourth.returncode == 0, fourth.stdout[-3000:]
  assert f"Initialised from the checkpoint of step 8 in {workdir}" in fourth.stdout
  assert "(from step 8)" in fourth.stdout and _ckpt_steps(fork) == [9]
  assert re.search(r"learning rate at step 8: \S+ -> 0$", fourth.stdout,
                   re.M), fourth.stdout[-2000:]
  assert re.search(r"step 9/9 .* lr 0 ", fourth.stdout), fourth.stdout[-2000:]  # step 8's update
  # The source's checkpoints are opened read-only without Orbax's warnings about forced options.
  assert "setting create=False" not in fourth.stdout
  from asmp_jax import inference  # pylint: disable=g-import-not-at-top
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  src_vars, _ = inference.restore_variables(workdir, run_folder.load_saved_config(workdir), step=8)
  fork_vars, _ = inference.restore_variables(fork, run_folder.load_saved_config(fork), step=9)
  leaves = zip(jax.tree.leaves(src_vars["params"]), jax.tree.leaves(fork_vars["params"]))
  assert all(np.array_equal(a, b) for a, b in leaves)
  # ... and refuses a source with another model, or one already at num_train_steps.
  for args, message in ((("--config.model.embed_dim=16",), "model.embed_dim"),
                        (("--config.train.num_train_steps=8",), "not before num_train_steps=8")):
    bad_fork = tmp_path / "bad_fork"
    bad = run_launch(str(bad_fork), tiny_data_dir, f"--config.train.init_from={workdir}",
                     "--config.eval.num_pairs=0", *args)
    assert bad.returncode != 0 and message in bad.stdout, bad.stdout[-2000:]
    assert "init_from" in bad.stdout
    assert not (bad_fork / "config.json").exists()  # refused before writing to the workdir


def test_resume_changes_names_settings_and_the_learning_rate_it_changes():
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  saved = tiny.get_config()
  saved.train.update(learning_rate=1e-3, lr_decay_every=100, lr_decay_factor=0.1)
  saved = type(saved)(json.loads(saved.to_json()))  # as read back from config.json
  same = type(saved)(saved.to_dict())
  assert changes(saved, same, 250) == []
  longer = type(saved)(saved.to_dict())
  longer.train.num_train_steps = saved.train.num_train_steps + 10
  assert changes(saved, longer, 250) == [
      f"train.num_train_steps: {saved.train.num_train_steps} -> {longer.train.num_train_steps}"]
  # Raising the decay interval at step 250 puts the rate back from 1e-5 to 1e-4.
  later_decay = type(saved)(saved.to_dict())
  later_decay.train.lr_decay_every = 200
  assert changes(saved, later_decay, 250) == [
      "train.lr_decay_every: 100 -> 200", "learning rate at step 250: 1e-05 -> 0.0001"]
  # A piecewise schedule is a schedule change too.
  piecewise = type(saved)(saved.to_dict())
  piecewise.train.lr_boundaries, piecewise.train.lr_values = (200,), (1e-3, 2e-4)
  assert changes(saved, piecewise, 250) == [
      "train.lr_boundaries: () -> (200,)", "train.lr_values: () -> (0.001, 0.0002)",
      "learning rate at step 250: 1e-05 -> 0.0002"]
  # A config.json from before a key existed holds its default: resuming with the key at its
  # default is no change, setting it is one.
  old = type(saved)(saved.to_dict())
  del old.train["lr_boundaries"], old.train["lr_values"], old.train["init_from"]
  assert changes(old, same, 250) == []
  assert changes(old, piecewise, 250)[-1] == (
      "learning rate at step 250: 1e-05 -> 0.0002")
  # The same for a model key: absent means the default (no node BatchNorm), which this tiny
  # config changes.
  del old.model["node_batch_norm"]
  with pytest.raises(run_folder.RunFolderError, match="model.node_batch_norm: checkpoint False"):
    run_folder.check_compatible(old, same)
  no_norm = type(saved)(saved.to_dict())
  no_norm.model.node_batch_norm = False
  run_folder.check_compatible(old, no_norm)
  # A saved key the code no longer has is named as ignored on resume; a state-defining one is
  # refused with the way out.
  removed = type(saved)(saved.to_dict())
  removed.train.retired_option = 3
  assert changes(removed, same, 250) == [
      "train.retired_option: 3 (no longer a setting; ignored)"]
  removed.model.retired_layer = True
  with pytest.raises(run_folder.RunFolderError,
                     match=(r"model.retired_layer: checkpoint True vs now "
                            r"<not a setting of this code>(.|\n)*delete")):
    run_folder.check_compatible(removed, same)
  # Model settings that only change how the same parameters are used are resumable changes.
  switched = type(saved)(saved.to_dict())
  switched.model.dir_window_graphs = not saved.model.dir_window_graphs
  switched.model.dtype = "bfloat16"
  run_folder.check_compatible(saved, switched)
  run_folder.check_compatible(saved, switched, source="/elsewhere")
  assert changes(saved, switched, 250) == [
      f"model.dir_window_graphs: {saved.model.dir_window_graphs} -> "
      f"{switched.model.dir_window_graphs}", "model.dtype: 'float32' -> 'bfloat16'"]
  switched.model.embed_dim += 1  # one that does define the state is still refused
  with pytest.raises(run_folder.RunFolderError, match="model.embed_dim") as err:
    run_folder.check_compatible(saved, switched)
  assert "dir_window_graphs" not in str(err.value) and "dtype" not in str(err.value)
  # A saved schedule this code cannot evaluate is reported, not fatal.
  bad = type(saved)(saved.to_dict())
  bad.train.lr_values = (1e-3,)
  bad.train.lr_boundaries = (100,)  # one value short
  assert changes(bad, same, 250)[-1] == "learning rate at step 250: unknown -> 1e-05"


def test_init_from_refuses_a_directory_that_is_not_a_run(tmp_path):
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  with pytest.raises(run_folder.RunFolderError, match="no config.json there"):
    run_folder.check_init_source(str(tmp_path / "missing"), config)
  run_folder.save_config(str(tmp_path), config)  # a config but no checkpoint yet
  with pytest.raises(run_folder.RunFolderError, match="no checkpoint in"):
    run_folder.check_init_source(str(tmp_path), config)


def test_unknown_config_key_is_refused(tmp_path):
  proc = run_launch(str(tmp_path / "run"), str(tmp_path / "nodata"), "--config.train.no_such_key=1")
  assert proc.returncode != 0
  assert "no_such_key" in proc.stdout


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  # An absurd learning rate after the first checkpoint (step 3) overflows the parameters.
  ok = run_launch(workdir, tiny_data_dir, "--config.train.num_train_steps=3",
                  "--config.eval.num_pairs=0")
  assert ok.returncode == 0, ok.stdout[-3000:]
  # This run compiles a new train step anyway (another learning rate), so it also checks that
  # --compilation_cache_dir replaces the suite's shared cache: the new directory gets entries.
  cache = tmp_path / "jax_cache"
  bad = run_launch(workdir, tiny_data_dir, "--config.train.learning_rate=1e38",
                   "--config.train.num_train_steps=12", "--config.eval.num_pairs=0",
                   f"--compilation_cache_dir={cache}", env={"JAX_COMPILATION_CACHE_DIR": ""})
  assert bad.returncode != 0
  assert "non-finite loss" in bad.stdout
  assert _ckpt_steps(workdir) == [3]
  assert cache.is_dir() and any(cache.iterdir())


@pytest.mark.slow
def test_a_diverging_run_saves_no_checkpoint_it_cannot_continue_from(tiny_data_dir, tmp_path):
  """lr=1e9: step 1's parameters are finite (about 1e9) but step 2 from them is not, so step 1
  is not saved; rerunning with a sane learning rate then trains."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  common = ("--config.train.num_train_steps=3", "--config.train.checkpoint_every=1",
            "--config.train.log_every=1", "--config.eval.num_pairs=0")
  bad = run_launch(workdir, tiny_data_dir, "--config.train.learning_rate=1e9", *common)
  assert bad.returncode != 0 and "non-finite loss or state at step 2" in bad.stdout, (
      bad.stdout[-3000:])
  ckpt_dir = os.path.join(workdir, "checkpoints")
  for step in _ckpt_steps(workdir) if os.path.isdir(ckpt_dir) else []:
    state = ocp.CheckpointManager(ckpt_dir).restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state)), step
    assert all(np.abs(x).max() < 1e6 for x in jax.tree.leaves(state["params"])), step
  good = run_launch(workdir, tiny_data_dir, *common)
  assert good.returncode == 0, good.stdout[-3000:]
  assert _ckpt_steps(workdir)[-1] == 3


def test_the_no_tpu_warning_of_jax_becomes_one_explaining_line():
  import logging  # pylint: disable=g-import-not-at-top
  from asmp_jax import console  # pylint: disable=g-import-not-at-top

  def record(platform):
    return logging.LogRecord("jax._src.xla_bridge", logging.WARNING, __file__, 1,
                             "Unable to initialize backend '%s': %s",
                             (platform, "libtpu.so: cannot open shared object file"), None)
  assert console.NoTpuHere().filter(record("tpu")) is False
  assert console.NoTpuHere().filter(record("cuda")) is True


def test_numeric_config_values_are_checked_before_anything_runs(tmp_path):
  for override, message in (("--config.train.learning_rate=1e39", "config.train.learning_rate="
                             "1e+39 is not a finite float32 number"),
                            ("--config.train.b2=1.0", "config.train.b2=1.0 is out of range")):
    proc = run_launch(str(tmp_path / "run"), str(tmp_path / "nodata"), override)
    assert proc.returncode != 0 and f"error: {message}" in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stdout and not (tmp_path / "nodata").exists()


def _check_run_record(path, workdir):
  """The record the run wrote: what was run, on what, how long, and its test figures (equal to
  the evaluation file's)."""
  from asmp_jax import files, metrics, run_record  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    record = json.load(f)
  assert "launch.py" in record["command"] and "--run_record=" in record["command"]
  assert record["config_file"] == "configs/synthetic_tiny.py"
  assert record["config_sha256"] == files.sha256_file(
      os.path.join(REPO, "configs", "synthetic_tiny.py"))
  assert record["config_overrides"]["model.dir_window_graphs"] is True
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
  if head.returncode == 0:
    assert record["commit"].split("-")[0] == head.stdout.strip()
  assert record["machine"]["logical_cpus"] >= 1 and record["machine"]["jax_backend"] == "cpu"
  wall = record["wall_s"]
  assert all(wall[k] >= 0 for k in ("build", "train", "eval"))
  assert abs(wall["total"] - (wall["build"] + wall["train"] + wall["eval"])) < 0.2
  assert (record["start_step"], record["steps"]) == (1, 2)  # resumed: this invocation only
  with open(os.path.join(workdir, "eval_test_step2.json")) as f:
    results = json.load(f)
  assert record["evaluation_file"].endswith("eval_test_step2.json")
  test = record["test"]
  for m in ("sdr", "sir", "sar"):
    per = (np.array(results["model"][f"{m}_per_source"], float)
           - np.array(results["mixture"][f"{m}_per_source"], float))
    np.testing.assert_allclose(test[f"{m}_gain"], np.nanmean(per))
    ok = np.isfinite(per)  # standard error clustered by pair (the rows)
    pair = np.broadcast_to(np.arange(per.shape[0])[:, None], per.shape)
    np.testing.assert_allclose(test[f"{m}_gain_se"],
                               metrics.clustered_mean_se(per[ok], pair[ok])[1])
  nd = test["direction_classes"]
  assert test["direction_accuracy"] == results[f"direction_accuracy_{nd}"]
  assert test["direction_gain"] == results[f"direction_gain_over_majority_{nd}"]
  np.testing.assert_allclose(test["direction_gain_points"], 100 * test["direction_gain"])
  assert test["majority_vote"] == results[f"majority_vote_{nd}"]
  np.testing.assert_allclose(test["ideal_mask_sdr_gain"],
                             results["oracle_ibm"]["sdr"] - results["mixture"]["sdr"])
  assert run_record.test_figures(results) == test


@pytest.mark.slow
def test_dir_window_graphs_train_and_evaluate(tiny_data_dir, tmp_path):
  """The per-window direction conditioning end to end: pipeline, train step, test evaluation,
  resuming a run trained without it (the same parameters; the switch is logged as a change)."""
  workdir = str(tmp_path / "run")
  record_path = str(tmp_path / "docs" / "run.json")
  first = run_launch(workdir, tiny_data_dir, "--config.train.num_train_steps=1",
                     "--config.train.checkpoint_every=1", "--config.eval.num_pairs=0",
                     f"--run_record={record_path}")
  assert first.returncode == 0, first.stdout[-3000:]
  assert "No run record written" in first.stdout and not os.path.exists(record_path)
  proc = run_launch(workdir, tiny_data_dir, "--config.model.dir_window_graphs=True",
                    "--config.train.num_train_steps=2", "--config.eval.num_pairs=2",
                    f"--run_record={record_path}")
  assert proc.returncode == 0, proc.stdout[-3000:]
  _check_run_record(record_path, workdir)
  assert "Resuming from the checkpoint of step 1" in proc.stdout
  assert "model.dir_window_graphs: False -> True" in proc.stdout
  assert "step 2/2" in proc.stdout and _ckpt_steps(workdir)[-1] == 2
  with open(os.path.join(workdir, "eval_test_step2.json")) as f:
    results = json.load(f)
  assert results["direction_count"] > 0 and results["model"]["num_valid"] > 0
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["dir_window_graphs"] is True


def test_piecewise_learning_rate_and_its_refusals():
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  t = tiny.get_config().train
  t.lr_boundaries, t.lr_values = (2, 5), (0.1, 0.01, 0.5)
  rates = np.asarray(optimizer.learning_rate_schedule(t)(np.arange(7)))
  np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.01, 0.5, 0.5], rtol=1e-6)
  t.lr_boundaries, t.lr_values = (), (0.25,)  # one value, no boundary: constant
  assert float(optimizer.learning_rate_schedule(t)(10**6)) == 0.25
  for bounds, values in (((2, 5), (0.1, 0.01)), ((5, 2), (0.1, 0.01, 0.5)),
                         ((0,), (0.1, 0.01)), ((2.5,), (0.1, 0.01)), ((2,), (0.1, -1.0))):
    t.lr_boundaries, t.lr_values = bounds, values
    with pytest.raises(ValueError, match="lr_boundaries"):
      optimizer.learning_rate_schedule(t)


def test_cosine_schedule_warm_up_and_their_refusals():
  from asmp_jax import config_lib, optimizer  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  t = config.train
  t.learning_rate, t.num_train_steps, t.lr_schedule, t.lr_end_fraction = 0.2, 10, "cosine", 0.1
  steps = np.arange(12)
  expected = 0.2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(steps, 10) / 10)))
  np.testing.assert_allclose(optimizer.learning_rate_schedule(t)(steps), expected, rtol=1e-5)
  # Warm-up: linear from 0 over 4 steps, then the cosine over the remaining 6.
  t.warmup_steps = 4
  rates = np.asarray(optimizer.learning_rate_schedule(t)(steps))
  np.testing.assert_allclose(rates[:4], 0.2 * np.arange(1, 5) / 4, rtol=1e-5)
  after = np.minimum(steps[4:] - 4, 6)
  np.testing.assert_allclose(
      rates[4:], 0.2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * after / 6))), rtol=1e-5)
  # Warm-up on the staircase ramps the same rate the staircase gives at that step.
  t.lr_schedule, t.lr_decay_every, t.lr_decay_factor = "staircase", 6, 0.5
  rates = np.asarray(optimizer.learning_rate_schedule(t)(steps))
  np.testing.assert_allclose(rates, np.minimum(1, (steps + 1) / 4) * 0.2 * 0.5 ** (steps // 6),
                             rtol=1e-5)
  # An unknown name is refused when the config is validated, before any work.
  t.lr_schedule = "linear"
  with pytest.raises(config_lib.ConfigError, match="lr_schedule must be one of"):
    config_lib.validate(config)
  t.lr_schedule = "piecewise"  # by name, without lr_values: the piecewise refusal
  with pytest.raises(config_lib.ConfigError, match="lr_boundaries"):
    config_lib.validate(config)
  t.lr_schedule, t.warmup_steps = "cosine", -1
  with pytest.raises(config_lib.ConfigError, match="warmup_steps"):
    config_lib.validate(config)


def test_the_mask_loss_is_checked_before_any_work():
  from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config_lib.validate(config)
  config.loss.mask_loss = "bce"
  config_lib.validate(config)
  config.loss.mask_target = "ratio"  # BCE needs a binary target
  with pytest.raises(config_lib.ConfigError, match="mask_loss='bce' needs"):
    config_lib.validate(config)
  config.loss.mask_loss = "l2"
  with pytest.raises(config_lib.ConfigError, match="mask_loss must be one of"):
    config_lib.validate(config)


def test_resuming_a_cosine_run_for_longer_names_its_new_rate():
  from asmp_jax import optimizer, run_folder  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  saved = tiny.get_config()
  saved.train.update(learning_rate=1e-3, num_train_steps=100, lr_schedule="cosine")
  longer = type(saved)(saved.to_dict())
  longer.train.num_train_steps = 200
  lines = run_folder.resume_changes(saved, longer, 50, optimizer.learning_rate_schedule)
  assert lines == ["train.num_train_steps: 100 -> 200",
                   "learning rate at step 50: 0.0005 -> 0.000854"], lines


def test_a_config_json_from_before_a_key_existed_loads_with_the_default(tmp_path):
  """Evaluation, inference and resumes read config.json through load_saved_config: keys added to
  the code since a run was written come back at their defaults instead of failing."""
  from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  written = json.loads(tiny.get_config().to_json())
  del written["eval"]["window_hop_s"], written["model"]["graph_mode"]
  (tmp_path / "config.json").write_text(json.dumps(written))
  loaded = run_folder.load_saved_config(str(tmp_path))
  base = config_lib.base_config()
  assert loaded.eval.window_hop_s == base.eval.window_hop_s
  assert loaded.model.graph_mode == base.model.graph_mode
  assert loaded.model.embed_dim == written["model"]["embed_dim"] != base.model.embed_dim
  assert loaded.data.builder_config == "tiny"


def test_a_config_json_with_a_retired_key_loads_and_resumes(tmp_path):
  """model.num_videos (the model now reads the number of videos from its batch) in a run's
  config.json is dropped on load: the run evaluates and resumes under the current config."""
  from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
  from asmp_jax import run_folder  # pylint: disable=g-import-not-at-top
  import configs.synthetic_tiny as tiny  # pylint: disable=g-import-not-at-top
  current = tiny.get_config()
  written = json.loads(current.to_json())
  written["model"]["num_videos"] = 2
  (tmp_path / "config.json").write_text(json.dumps(written))
  loaded = run_folder.load_saved_config(str(tmp_path))
  assert "num_videos" not in loaded.model and loaded.data.num_videos == 2
  run_folder.check_compatible(ml_collections.ConfigDict(written), current)
  assert changes(ml_collections.ConfigDict(written), current, 5) == []
  assert "model.num_videos" in config_lib.RETIRED_KEYS and "num_videos" not in current.model


def test_keep_if_finite_takes_the_new_tree_only_when_finite():
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  old = {"step": np.int32(3), "w": np.zeros((2, 3), np.float32)}
  new = {"step": np.int32(4), "w": np.full((2, 3), np.nan, np.float32)}
  guard = jax.jit(train.keep_if_finite)
  kept = guard(np.bool_(False), new, old)
  taken = guard(np.bool_(True), new, old)
  assert int(kept["step"]) == 3 and np.array_equal(kept["w"], old["w"])
  assert int(taken["step"]) == 4 and np.isnan(taken["w"]).all()
