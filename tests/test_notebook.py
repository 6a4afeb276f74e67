"""notebooks/restore_and_separate.ipynb runs top to bottom headless against a trained checkpoint."""
import os

import nbclient
import nbformat
import pytest

from conftest import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "restore_and_separate.ipynb")


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert "pip" in code[0].source and "ASMP_PACKAGE" in code[0].source   # the setup cell
  assert "WORKDIR" in code[1].source and "VIDEO" in code[1].source


def _run_notebook(monkeypatch, workdir, stem):
  """Executes the notebook headless on ``<stem>.mp4`` (sound from ``<stem>.wav``: the synthetic
  mp4s carry no sound); returns (outputs, the printed text) and checks no cell failed."""
  monkeypatch.setenv("ASMP_WORKDIR", workdir)
  monkeypatch.setenv("ASMP_VIDEO", stem + ".mp4")
  monkeypatch.setenv("ASMP_AUDIO", stem + ".wav")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": REPO}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  return outputs, "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.mark.slow
def test_notebook_restores_separates_plays_and_shows(trained_tiny_workdir, monkeypatch):
  workdir, stem, _ = trained_tiny_workdir
  outputs, text = _run_notebook(monkeypatch, workdir, stem)
  assert f"restored step 2 of {workdir}" in text
  assert "background: sounds like" in text
  html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
  assert sum("<audio" in h for h in html) == 4  # the mixture and 3 sources
  assert any("image/png" in o.get("data", {}) for o in outputs)


def _setup_cell():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  return [c for c in nb.cells if c.cell_type == "code"][0].source


def test_setup_cell_installs_the_package_only_where_it_is_missing(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  calls = []
  real_find_spec = importlib.util.find_spec
  missing = {"asmp_jax": True}

  def find_spec(name, *args):
    if name == "asmp_jax" and missing["asmp_jax"]:
      return None
    return real_find_spec(name, *args)

  def fake_run(cmd, check):
    calls.append(cmd)
    missing["asmp_jax"] = False   # "installed"

  monkeypatch.setattr(importlib.util, "find_spec", find_spec)
  monkeypatch.setattr(subprocess, "run", fake_run)
  monkeypatch.delenv("ASMP_PACKAGE", raising=False)
  with pytest.raises(RuntimeError, match="ASMP_PACKAGE"):
    exec(_setup_cell(), {})  # pylint: disable=exec-used
  assert not calls
  monkeypatch.setenv("ASMP_PACKAGE", "/some/checkout[vision]")
  exec(_setup_cell(), {})  # pylint: disable=exec-used
  assert len(calls) == 1 and calls[0][1:] == ["-m", "pip", "install", "-q",
                                              "/some/checkout[vision]"]
  exec(_setup_cell(), {})  # pylint: disable=exec-used  # importable now: nothing installed
  assert len(calls) == 1


@pytest.mark.slow
def test_notebook_restores_a_converted_release(tiny_data_dir, tmp_path, monkeypatch):
  """The authors' networks, converted from a small release in their format, separate a clip."""
  import glob  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  torch = pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
  import authors_torch  # pylint: disable=g-import-not-at-top
  from asmp_jax import convert_authors  # pylint: disable=g-import-not-at-top
  meta_path = glob.glob(os.path.join(tiny_data_dir, "asmp_synthetic", "tiny", "*",
                                     "metadata.json"))
  meta = json.load(open(meta_path[0]))
  torch.manual_seed(0)
  net = authors_torch.Release(feat_dim=int(meta["feature_dim"]), ngf=8, nhid=32, res_width=8,
                              num_classes=len(meta["auditory_classes"]) + 1)
  net.eval().save(str(tmp_path / "rel"))
  run = str(tmp_path / "run")
  convert_authors.main([f"--checkpoint_dir={tmp_path / 'rel'}", f"--workdir={run}",
                        f"--config={os.path.join(REPO, 'configs', 'synthetic_tiny.py')}",
                        f"--data_dir={tiny_data_dir}"])
  clips = glob.glob(os.path.join(tiny_data_dir, "downloads", "asmp_synthetic_clips", "tiny-*",
                                 "test", "test_00000.mp4"))
  stem = os.path.splitext(sorted(clips)[-1])[0]
  _, text = _run_notebook(monkeypatch, run, stem)
  assert f"restored step 0 of {run}" in text
  assert "background: sounds like" in text
