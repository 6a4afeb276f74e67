"""Every config file: a docstring with its launch command and a `get_config()` whose model
settings validate. (launch.py refusing an unknown key: tests/test_train.py.)"""
import importlib.util
import pathlib

import ml_collections
import pytest

from asmp_data.synthetic import synthetic_dataset_builder as sdb
from asmp_jax import models

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(f"cfg_{path.stem}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_the_four_configs_are_there():
  assert {p.stem for p in CONFIGS} >= {"synthetic", "synthetic_tiny", "asiw", "ave"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_documents_its_command_and_validates(path):
  mod = _load(path)
  assert f"python launch.py --config=configs/{path.name}" in (mod.__doc__ or "")
  config = mod.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  # The data-dependent sizes are filled from the data set at run time; any valid values do here.
  config.model.node_feature_dim = config.model.node_feature_dim or 12
  config.model.num_classes = config.model.num_classes or 5
  models.create_model(config.model)  # raises, naming the key, on an invalid model setting
  assert config.train.batch_size > 0 and config.train.num_train_steps > 0
  assert config.eval.val_batches >= 1


def test_benchmark_variants_override_existing_keys():
  """bench/synthetic_results.py's variants only set keys configs/synthetic.py has, to values of
  the key's type (a typo there would fail only after a long build and training)."""
  bench = _load(REPO / "bench" / "synthetic_results.py")
  config = _load(REPO / "configs" / "synthetic.py").get_config()
  builds = {c.name for c in sdb.BUILDER_CONFIGS}
  assert bench.VARIANTS
  for name, (_, overrides) in bench.VARIANTS.items():
    for flag in overrides:
      assert flag.startswith("--config."), (name, flag)
      path, value = flag[len("--config."):].split("=", 1)
      *parents, leaf = path.split(".")
      node = config
      for p in parents:
        node = node[p]
      assert leaf in node, (name, flag)
      current = node[leaf]
      if isinstance(current, bool):
        assert value in ("True", "False", "true", "false"), (name, flag)
      elif isinstance(current, (int, float)):
        type(current)(value)  # raises on a malformed number
      else:
        assert isinstance(current, str), (name, flag)
      if path == "data.builder_config":  # a build that does not exist fails only at run time
        assert value in builds, (name, flag)


def test_synthetic_wide_is_the_measured_recipe():
  """configs/synthetic_wide.py differs from configs/synthetic.py only in the settings of the run
  docs/RESULTS.md measured ("3200 training clips"), and its schedule gives, at every step, the
  learning rate that run's hand-set resumes gave (launch.py commands quoted there)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from asmp_jax import optimizer, run_folder  # pylint: disable=g-import-not-at-top
  base = _load(REPO / "configs" / "synthetic.py").get_config()
  wide = _load(REPO / "configs" / "synthetic_wide.py").get_config()
  assert set(run_folder.config_differences(base, wide)) == {
      "data.builder_config", "model.unet_width_mult", "train.num_train_steps",
      "train.lr_boundaries", "train.lr_values"}
  assert (wide.data.builder_config, wide.model.unet_width_mult) == ("xlarge", 0.25)
  # (first step, learning_rate, lr_decay_every) of each stage of the measured run.
  stages = [(0, 1e-3, 1500), (4000, 1e-3, 2750), (6000, 1e-4, 7500), (8000, 1e-4, 9500)]
  steps = np.arange(wide.train.num_train_steps)
  expected = np.zeros(len(steps))
  for first, lr, every in stages:
    stage = base.train.copy_and_resolve_references()
    stage.learning_rate, stage.lr_decay_every = lr, every
    rates = np.asarray(optimizer.learning_rate_schedule(stage)(steps))
    expected[steps >= first] = rates[steps >= first]
  got = np.asarray(optimizer.learning_rate_schedule(wide.train)(steps))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert got[0] == np.float32(1e-3) and got[-1] == np.float32(1e-5)


def test_synthetic_benchmark_is_wide_on_octant_clips_with_window_graphs():
  """configs/synthetic_benchmark.py is configs/synthetic_wide.py with the three settings of the
  direction result (docs/RESULTS.md, "Direction labels set by the motion"), on a build that
  exists."""
  from asmp_jax import run_folder  # pylint: disable=g-import-not-at-top
  wide = _load(REPO / "configs" / "synthetic_wide.py").get_config()
  bench = _load(REPO / "configs" / "synthetic_benchmark.py").get_config()
  assert run_folder.config_differences(wide, bench) == {
      "data.builder_config": ("xlarge", "octant_xlarge"),
      "model.dir_window_graphs": (False, True),
      "loss.share_direction_permutation": (False, True),
      "eval.window_hop_s": (1.0, 0.05)}
  builds = {c.name: c for c in sdb.BUILDER_CONFIGS}
  assert builds["octant_xlarge"].num_train == builds["xlarge"].num_train


def test_synthetic_quick_is_the_benchmark_with_the_faster_recipe():
  """configs/synthetic_quick.py is configs/synthetic_benchmark.py on the 1600-clip octant build,
  the classifiers on a 4-bin pooled frequency axis, and a warmed-up cosine rate that ends at its
  last step."""
  from asmp_jax import optimizer, run_folder  # pylint: disable=g-import-not-at-top
  bench = _load(REPO / "configs" / "synthetic_benchmark.py").get_config()
  quick = _load(REPO / "configs" / "synthetic_quick.py").get_config()
  diff = run_folder.config_differences(bench, quick)
  assert diff.pop("data.builder_config") == ("octant_xlarge", "octant_large")
  assert diff.pop("model.cls_freq_pool") == (1, 4)
  assert diff.pop("train.lr_schedule") == ("staircase", "cosine")
  assert diff.pop("train.num_train_steps") == (10_000, 4500)
  assert diff.pop("train.warmup_steps") == (0, 100)
  assert diff.pop("train.lr_boundaries")[1] == () and diff.pop("train.lr_values")[1] == ()
  assert not diff, diff
  rate = optimizer.learning_rate_schedule(quick.train)
  assert float(rate(0)) == pytest.approx(1e-5) and float(rate(49)) == pytest.approx(5e-4)
  assert float(rate(99)) == pytest.approx(1e-3) and float(rate(100)) == pytest.approx(1e-3)
  assert float(rate(2300)) == pytest.approx(5e-4, rel=1e-5)  # half way down the cosine
  assert float(rate(4500)) == pytest.approx(0.0, abs=1e-12)
  builds = {c.name: c for c in sdb.BUILDER_CONFIGS}
  assert builds["octant_large"].num_train == 1600
