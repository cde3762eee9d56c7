"""The tutorial notebooks run top to bottom in a real kernel, and are committed without outputs.

Each notebook under ``notebooks/`` (except those in ``dashboards`` folders) is executed with
nbclient in a fresh ``python3`` kernel whose ``QMLOPS_HOME`` is a throwaway folder; afterwards
the ledger in that folder must hold the notebook's jobs, all COMPLETED.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qmlops_testing import use_this_python_for_kernels

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
#: Folders whose notebooks need a running server or an engine host: not executed here.
SKIPPED_FOLDERS = {"dashboards", ".ipynb_checkpoints"}


def _notebooks() -> list[Path]:
    if not NOTEBOOKS_DIR.is_dir():
        return []
    return sorted(
        path
        for path in NOTEBOOKS_DIR.rglob("*.ipynb")
        if not SKIPPED_FOLDERS.intersection(path.relative_to(NOTEBOOKS_DIR).parts[:-1])
    )


NOTEBOOKS = _notebooks()
IDS = [str(path.relative_to(NOTEBOOKS_DIR)) for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_and_its_jobs_complete(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbclient
    import nbformat

    from qmlops_jupyter.ledger import Ledger
    from qmlops_jupyter.states import JobState

    home = tmp_path / "qmlops-home"
    # The kernel (and anything it starts, such as the qmlops CLI) inherits this environment.
    monkeypatch.setenv("QMLOPS_HOME", str(home))
    for var in ("QMLOPS_DATABASE_URL", "QMLOPS_BACKENDS_FILE", "QMLOPS_OWNER"):
        monkeypatch.delenv(var, raising=False)
    use_this_python_for_kernels(tmp_path, monkeypatch)
    assert os.environ["QMLOPS_HOME"] == str(home)

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}")

    errors = [
        (i, out.get("ename"), out.get("evalue"))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{path.name}: cells raised {errors}"

    ledger = Ledger.open(f"sqlite:///{home}/ledger.sqlite")
    try:
        jobs = ledger.list_jobs(None, limit=1000).jobs
    finally:
        ledger.close()
    assert jobs, f"{path.name} submitted no job to the ledger in {home}"
    unfinished = {job.id: job.state.value for job in jobs if job.state is not JobState.COMPLETED}
    assert not unfinished, f"{path.name} left jobs that did not complete: {unfinished}"
    for job in jobs:
        assert job.result is not None
        assert len(job.result.counts) == len(job.circuits), job.id
