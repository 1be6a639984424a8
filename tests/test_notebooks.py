"""Every notebook runs top to bottom on small defaults, so they never rot."""
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, request):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DISCOPOSE_NB_SIZE", "64")
    # What this claims is that every cell runs, not that the tiny models learn (nothing asserts their error):
    # 48 training frames and crops (3 steps a stage at batch 16, against 18 and 12 at the notebooks' 300 and
    # 200) and 24 test frames (60) exercise the same calls.
    monkeypatch.setenv("DISCOPOSE_NB_TRAIN", "48")
    monkeypatch.setenv("DISCOPOSE_NB_TEST", "24")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if path.stem == "03_live_tracking":
        # The tracking notebook on a model of the user's (its DISCOPOSE_MODEL path; the suite's shared run) rather
        # than training its own: those render-and-train calls are notebook 02's, and this saves ~8 s.
        run, _ = request.getfixturevalue("trained_run")
        monkeypatch.setenv("DISCOPOSE_MODEL", str(run / "best"))
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert len(notebook.cells) >= 4
