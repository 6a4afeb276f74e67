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
  assert "WORKDIR" in code[0].source and "VIDEO" in code[0].source


@pytest.mark.slow
def test_notebook_restores_separates_plays_and_shows(trained_tiny_workdir, monkeypatch):
  workdir, stem, _ = trained_tiny_workdir
  monkeypatch.setenv("ASMP_WORKDIR", workdir)
  monkeypatch.setenv("ASMP_VIDEO", stem + ".mp4")
  monkeypatch.setenv("ASMP_AUDIO", stem + ".wav")  # the synthetic mp4s carry no sound
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": REPO}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert f"restored step 2 of {workdir}" in text
  assert "background: sounds like" in text
  html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
  assert sum("<audio" in h for h in html) == 4  # the mixture and 3 sources
  assert any("image/png" in o.get("data", {}) for o in outputs)
