"""Lineage of jobs submitted from real notebooks, read back from the real MLflow store.

A job submitted in a notebook's kernel must be logged to MLflow under the notebook itself (the
``.ipynb`` the user opened, not ``ipykernel_launcher.py`` nor papermill's output notebook), with
the git commit of the repository holding it, whether the tree was dirty, and papermill's
parameters. Each test runs a real notebook runner in its own processes against the embedded
MLflow SQLite store under ``QMLOPS_HOME``:

* the ``papermill`` command line;
* a ``jupyter server`` process, driven like JupyterLab drives it (a session through the REST
  API, code through the kernel's websocket);
* ``jupyter execute`` (nbclient's command line).

Nothing is mocked: the kernels are the venv's ipykernel, the jobs run on Aer, the runs are read
with ``MlflowClient`` and the jobs from the ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import qmlops_testing

BIN = Path(sys.executable).parent
NOTEBOOK = "exp.ipynb"

PARAMETERS_SOURCE = 'shots = 200\nlabel = "x"\n'
JOB_SOURCE = f'''import qmlops_jupyter

BELL = """{qmlops_testing.BELL_QASM2}"""
job = qmlops_jupyter.submit(BELL, backend="aer", shots=shots, name=label, wait=True)
print("JOB", job.id)
print("RUN", job.mlflow_run_id)
'''


# -- helpers ---------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        [
            "git",
            "-c",
            "user.email=tests@qmlops.invalid",
            "-c",
            "user.name=qmlops tests",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, f"git {' '.join(args)} failed: {out.stderr}"
    return out.stdout.strip()


def _run(cmd: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, (
        f"{' '.join(cmd)} exited {out.returncode}\n--- stdout ---\n{out.stdout[-4000:]}"
        f"\n--- stderr ---\n{out.stderr[-4000:]}"
    )
    return out


def _tool(name: str) -> Path:
    path = BIN / name
    assert path.is_file(), f"{name} is not installed in the venv ({BIN}): pip install -e '.[dev]'"
    return path


def _printed(text: str, prefix: str) -> str:
    """The value after ``prefix`` on the line the notebook printed (``JOB <id>``)."""
    values = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(prefix + " ")]
    assert len(values) == 1, f"expected one {prefix!r} line in the output:\n{text}"
    return values[0].strip()


def _mlflow_runs(home: Path) -> list[Any]:
    """Every run of experiment ``qmlops`` in the embedded store, oldest first."""
    from mlflow.tracking import MlflowClient

    db = home.resolve() / "mlflow" / "mlflow.db"
    assert db.is_file(), f"no embedded MLflow store at {db}"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("qmlops")
    assert experiment is not None, "experiment 'qmlops' was not created"
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return list(runs)


def _ledger_job(job_id: str) -> Any:
    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings

    client = Client(Settings.from_env())
    try:
        return client.get_job(job_id).record
    finally:
        if client._ledger is not None:
            client.ledger.close()


def _assert_notebook_run(run: Any, repo: Path, job_id: str, dirty: bool) -> None:
    """The run's tags name ``repo/exp.ipynb``, HEAD's commit and the dirty flag."""
    tags = run.data.tags
    notebook = str((repo / NOTEBOOK).resolve())
    assert tags.get("mlflow.source.name") == notebook, tags
    assert tags.get("qmlops.notebook") == notebook, tags
    assert tags.get("mlflow.source.type") == "NOTEBOOK", tags
    head = _git(repo, "rev-parse", "HEAD")
    assert tags.get("qmlops.git.commit") == head, tags
    assert tags.get("mlflow.source.git.commit") == head, tags
    assert tags.get("qmlops.git.dirty") == ("true" if dirty else "false"), tags
    assert tags.get("qmlops.job_id") == job_id, tags
    assert tags.get("mlflow.user"), tags


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a kernel that runs this venv's Python (where qmlops_jupyter is installed)."""
    return qmlops_testing.use_this_python_for_kernels(tmp_path, monkeypatch)


@pytest.fixture
def repo(tracking: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venv_kernel: str) -> Path:
    """A git repository with one commit: ``exp.ipynb`` (a papermill ``parameters`` cell and a
    cell submitting a Bell circuit to Aer and printing the job's MLflow run) and a README."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    # Jupyter's own per-user state goes to the test's folder, not the user's.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # What says where a job comes from must come from the runner, not from the shell that
    # started pytest (a terminal in JupyterLab has JPY_SESSION_NAME, a pipeline its own).
    for var in (
        "QMLOPS_NOTEBOOK_PATH",
        "QMLOPS_PIPELINE_PARAMETERS",
        "QMLOPS_PIPELINE_RUN_ID",
        "JPY_SESSION_NAME",
    ):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "repo"
    path.mkdir()
    nb = new_notebook(
        cells=[
            new_code_cell(PARAMETERS_SOURCE, metadata={"tags": ["parameters"]}),
            new_code_cell(JOB_SOURCE),
        ],
        metadata={
            "kernelspec": {"name": venv_kernel, "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(nb)
    nbformat.write(nb, path / NOTEBOOK)
    (path / "README.md").write_text("an experiment\n", encoding="utf-8")
    _git(path, "init", "-q")
    _git(path, "add", NOTEBOOK, "README.md")
    _git(path, "commit", "-q", "-m", "experiment")
    return path


# -- papermill -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_papermill_run_is_logged_under_the_source_notebook_with_its_parameters(
    repo: Path, tracking: Path, venv_kernel: str
) -> None:
    """Real component: the ``papermill`` CLI executing the notebook in the venv's ipykernel.

    The run names ``exp.ipynb`` (not ``out.ipynb``, the untracked output, which does not make
    the tree dirty), HEAD's commit, and papermill's ``-p`` parameters typed as papermill types
    them; the ledger's job points at that run."""
    papermill = _tool("papermill")
    _run(
        [
            str(papermill),
            NOTEBOOK,
            "out.ipynb",
            "-p",
            "shots",
            "123",
            "-p",
            "label",
            "hello",
            "-k",
            venv_kernel,
            "--no-progress-bar",
        ],
        cwd=repo,
    )

    import nbformat

    out = nbformat.read(repo / "out.ipynb", as_version=4)
    printed = "".join(
        o.get("text", "")
        for cell in out.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    job_id = _printed(printed, "JOB")
    run_id = _printed(printed, "RUN")
    assert run_id != "None", f"the job was not sent to MLflow:\n{printed}"

    runs = _mlflow_runs(tracking)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.run_id == run_id
    _assert_notebook_run(run, repo, job_id, dirty=False)
    tags = run.data.tags
    for wrong in ("out.ipynb", "ipykernel_launcher"):
        assert not any(wrong in v for v in tags.values()), tags
    params = run.data.params
    assert params.get("papermill.shots") == "123", params
    assert params.get("papermill.label") == "hello", params

    record = _ledger_job(job_id)
    assert record.mlflow_run_id == run.info.run_id
    assert record.shots == 123
    assert record.name == "hello"
    assert record.state.value == "COMPLETED"
    lineage = record.lineage
    assert lineage["notebook"] == str((repo / NOTEBOOK).resolve())
    assert lineage["via"] == "papermill"
    assert lineage["parameters"] == {"shots": 123, "label": "hello"}
    assert lineage["git"]["commit"] == _git(repo, "rev-parse", "HEAD")
    assert lineage["git"]["dirty"] is False


# -- a Jupyter server --------------------------------------------------------------------------


@pytest.mark.slow
def test_jupyter_server_kernel_is_logged_under_the_notebook_and_its_git_state(
    repo: Path, tracking: Path, tmp_path: Path, venv_kernel: str
) -> None:
    """Real component: a ``jupyter server`` process and a kernel it starts for a notebook
    session (``POST /api/sessions``), driven through the kernel websocket as JupyterLab does.

    The kernel knows its notebook only from ``JPY_SESSION_NAME``. A first job in the clean tree
    is logged as not dirty; after a tracked file changes, a second job in the same kernel is
    logged as dirty, same commit."""
    from qmlops_jupyter.tracking.lineage import GIT_CACHE_SECONDS

    code = PARAMETERS_SOURCE + JOB_SOURCE
    # The shared helper; the environment is this test's (tracking on, the venv's kernel).
    server = qmlops_testing.JupyterServer(repo, dict(os.environ), tmp_path / "jupyter-server.log")
    try:
        server.start()
        kernel_id = server.start_session(NOTEBOOK, venv_kernel)

        output, errors = server.execute(kernel_id, code)
        assert not errors, "\n".join(errors)
        clean_job, clean_run = _printed(output, "JOB"), _printed(output, "RUN")
        assert clean_run != "None", f"the job was not sent to MLflow:\n{output}"

        (repo / "README.md").write_text("an experiment, edited\n", encoding="utf-8")
        time.sleep(GIT_CACHE_SECONDS + 0.2)  # the kernel reuses a git answer this long
        output, errors = server.execute(kernel_id, code)
        assert not errors, "\n".join(errors)
        dirty_job, dirty_run = _printed(output, "JOB"), _printed(output, "RUN")
        assert dirty_run != "None", f"the job was not sent to MLflow:\n{output}"
    finally:
        server.stop()

    runs = {r.info.run_id: r for r in _mlflow_runs(tracking)}
    assert set(runs) == {clean_run, dirty_run}
    _assert_notebook_run(runs[clean_run], repo, clean_job, dirty=False)
    _assert_notebook_run(runs[dirty_run], repo, dirty_job, dirty=True)
    for run in runs.values():
        assert not any(k.startswith("papermill.") for k in run.data.params), run.data.params

    for job_id, run_id in ((clean_job, clean_run), (dirty_job, dirty_run)):
        record = _ledger_job(job_id)
        assert record.mlflow_run_id == run_id
        assert record.lineage["via"] == "jupyter-server"
        assert record.lineage["notebook"] == str((repo / NOTEBOOK).resolve())
        assert record.lineage["parameters"] is None
        assert record.shots == 200


# -- jupyter execute -------------------------------------------------------------------------------


@pytest.mark.slow
def test_jupyter_execute_run_is_logged_under_the_notebook(
    repo: Path, tracking: Path, venv_kernel: str
) -> None:
    """Real component: ``jupyter execute`` (nbclient's command line) running the notebook; the
    run names ``exp.ipynb`` and the clean tree's commit."""
    _tool("jupyter-execute")
    _run([str(_tool("jupyter")), "execute", f"--kernel_name={venv_kernel}", NOTEBOOK], cwd=repo)

    runs = _mlflow_runs(tracking)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    job_id = run.data.tags.get("qmlops.job_id")
    assert job_id, run.data.tags
    _assert_notebook_run(run, repo, job_id, dirty=False)

    record = _ledger_job(job_id)
    assert record.mlflow_run_id == run.info.run_id
    assert record.lineage["via"] == "jupyter-execute"
    assert record.lineage["parameters"] is None
