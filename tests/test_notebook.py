"""docs/notebooks/quickstart.ipynb runs top to bottom (a few training steps, small data) and
shows the results table, the accuracy plot and the attention maps."""

import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "docs", "notebooks", "quickstart.ipynb")


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("LENGGEN_NOTEBOOK_STEPS", "4")
    monkeypatch.setenv("LENGGEN_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("LENGGEN_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The committed notebook carries no outputs (they would go stale).
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "* = a training length" in text and "step 4/4" in text
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 2  # accuracy vs length, attention maps
    assert os.path.exists(tmp_path / "run" / "results.json")
