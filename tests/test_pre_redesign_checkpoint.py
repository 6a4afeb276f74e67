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
