"""A run written by an earlier version of the code still restores and separates identically.

tests/data/pre_redesign/ holds a configs/synthetic_tiny.py run trained for one step (config.json,
dataset_meta.json, one Orbax checkpoint) and, in separation.npz, a fixed waveform, fixed scene
graphs and what that version's Separator made of them (make_fixture.py there wrote both).
"""
import importlib.util
import os
import shutil

import numpy as np
import pytest

from asmp_jax import inference

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pre_redesign")


@pytest.fixture(scope="module")
def saved():
  with np.load(os.path.join(FIXTURE, "separation.npz")) as f:
    return dict(f)


def _fixture_module():
  spec = importlib.util.spec_from_file_location("make_fixture",
                                                os.path.join(FIXTURE, "make_fixture.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_pre_redesign_run_restores_and_separates_identically(saved, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(os.path.join(FIXTURE, "run"), run)  # nothing may write into the fixture
  sep = inference.Separator.from_checkpoint(run)
  assert sep.step == 1
  out = sep.separate_waveform(saved["wav"], _fixture_module().scene_graphs(saved), 2)
  # float32 tolerance: waveforms to 1e-5 of the mixture's peak, probabilities to 1e-5.
  peak = float(np.abs(saved["wav"]).max())
  assert out["slots"].shape == saved["out_slots"].shape
  np.testing.assert_allclose(out["slots"], saved["out_slots"], rtol=0, atol=1e-5 * peak)
  np.testing.assert_allclose(out["class_probs"], saved["out_class_probs"], rtol=0, atol=1e-5)
  np.testing.assert_allclose(out["dir_probs"], saved["out_dir_probs"], rtol=0, atol=1e-5)
  assert int(out["num_crops"]) == int(saved["out_num_crops"])


def test_pre_redesign_train_state_restores_for_training(tmp_path):
  """Its train state (which still holds the RNG key the state has since dropped) restores into
  the current TrainState, as a resume does."""
  import jax  # pylint: disable=g-import-not-at-top
  from asmp_jax import optimizer, run_folder, train  # pylint: disable=g-import-not-at-top
  from asmp_jax.models import asmp as asmp_model  # pylint: disable=g-import-not-at-top
  run = str(tmp_path / "run")
  shutil.copytree(os.path.join(FIXTURE, "run"), run)
  config = run_folder.load_saved_config(run)
  model = asmp_model.create_model(config.model)
  tx = optimizer.create_optimizer(config.train)
  batch = _fixture_module().example_batch(config, 2)
  abstract = train.abstract_state(config, model, tx, batch)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  mngr = run_folder.read_only_checkpoints(run_folder.checkpoints_path(run))
  try:
    assert "rng" in mngr.item_metadata(1)["state"].tree  # the old layout
    state = train.restore_checkpoint(mngr, 1, abstract, jax.tree.map(lambda _: device, abstract))
  finally:
    mngr.close()
  assert isinstance(state, train.TrainState) and int(state.step) == 1
  variables, _ = inference.restore_variables(run, config)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(variables["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert len(jax.tree.leaves(state.opt_state)) == len(jax.tree.leaves(abstract.opt_state))
