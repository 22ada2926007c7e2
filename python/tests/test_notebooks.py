"""The seed notebooks, reproduced on aicsim (examples/notebooks), executed end to end:
every cell runs without an error and the plots come out."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "examples", "notebooks")


@pytest.mark.parametrize("name", ["resnet50_performance_tuning.ipynb", "bert_profiling.ipynb"])
def test_the_notebook_runs_end_to_end(name, monkeypatch):
    path = os.path.join(NOTEBOOKS, name)
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs are stripped in the repo"
    monkeypatch.setenv("AICSIM_ROOT", ROOT)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs), "the plot is drawn"
