"""The notebooks in ``notebooks/`` run top to bottom on the CPU, and are committed without outputs.

The quickstart makes a small store (its own sweep); the other notebooks run against the
same store, so the suite trains those four short runs once. The ensembles notebook adds
one run of its own to that store (a three-member ensemble, two epochs). A raising cell
fails the test. The distillation notebook adds two runs (an MLP student, alone and
distilled from a quickstart run). The merging notebook adds seven (a base run, three
fine-tunes of it, two soups and an interpolation, under ``merging/``). The NAS notebook adds
a small supernet and three standalone subnets under ``nas/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
QUICKSTART = NOTEBOOKS / "01_quickstart.ipynb"
CELL_TIMEOUT_S = 240


def execute(notebook: nbformat.NotebookNode, store: Path) -> float:
    """Run every cell in a fresh kernel started in ``notebooks/``; returns the seconds it took.

    Raises :class:`CellExecutionError` (with the cell and its traceback) when a cell raises.
    """
    env = {**os.environ, "SWEEPLAB_RUNS_DIR": str(store), "OMP_NUM_THREADS": "1"}
    env.pop("SWEEPLAB_HOME", None)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute(env=env)
    return time.perf_counter() - start


@pytest.fixture(scope="session")
def notebook_store(tmp_path_factory) -> tuple[Path, float]:
    """The store the quickstart's sweep makes, and how long the quickstart took."""
    store = tmp_path_factory.mktemp("notebooks") / "runs"
    seconds = execute(nbformat.read(QUICKSTART, as_version=4), store)
    return store, seconds


def test_every_notebook_is_tested():
    assert [p.name for p in ALL] == [
        "01_quickstart.ipynb",
        "02_calibration_ood.ipynb",
        "03_paper_table.ipynb",
        "04_ensembles.ipynb",
        "05_distillation.ipynb",
        "06_merging.ipynb",
        "07_nas.ipynb",
    ]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them"


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, notebook_store):
    store, quickstart_s = notebook_store
    seconds = (
        quickstart_s if path == QUICKSTART else execute(nbformat.read(path, as_version=4), store)
    )
    print(f"{path.name}: {seconds:.1f}s")
    assert list(store.glob("digits_small_cnn/*/record.json"))  # the notebooks' store, not runs/


@pytest.mark.slow
def test_a_raising_cell_fails(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("value = 1"),
            nbformat.v4.new_code_cell("raise ValueError('cell 2 broke')"),
            nbformat.v4.new_code_cell("never = True"),
        ]
    )
    with pytest.raises(CellExecutionError, match="cell 2 broke"):
        execute(notebook, tmp_path / "runs")
