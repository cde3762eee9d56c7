"""``qmlops pipeline run``: real papermill runs of small notebooks in real ipykernel kernels.

Each notebook is written with nbformat into the test's folder, with a cell tagged
``parameters``. The CLI runs in-process (click's runner); papermill and the kernel run in the
child processes the run starts, exactly as from a terminal. The MLflow test reads the embedded
MLflow store back with ``MlflowClient``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
import qmlops_testing
from pipeline_helpers import cli_invoker, parameterised_notebook, pipeline_rows

from qmlops_jupyter.client import reset_client

SECRET = "sk-pipeline-test-0123456789abcdef"


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    return parameterised_notebook(path, parameters, *cells, title="A test pipeline.")


@pytest.fixture
def run(home: Path, monkeypatch: pytest.MonkeyPatch):
    return cli_invoker(monkeypatch)


def processes_of_run(run_id: str) -> list[int]:
    """Live processes (not zombies) whose environment names the pipeline run."""
    found = []
    marker = f"QMLOPS_PIPELINE_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def output_text(path: str) -> str:
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    return "".join(o.get("text", "") + o.get("evalue", "") for o in outputs)


# -- success ---------------------------------------------------------------------------------------


def test_the_kernel_uses_the_runners_settings_not_the_environments(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client built with settings of its own (a sweep's point, an engine host) gives them
    to the notebook's kernel, so the jobs it submits land in that ledger."""
    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings
    from qmlops_jupyter.pipelines.runner import PipelineRequest, run_pipeline

    monkeypatch.setenv("QMLOPS_TRACKING", "off")
    other = tmp_path / "other-home"
    notebook = write_notebook(
        tmp_path / "env.ipynb",
        "x = 1",
        "import os\n"
        "print('HOME', os.environ['QMLOPS_HOME'])\n"
        "print('OWNER', os.environ['QMLOPS_OWNER'])\n"
        "print('LEDGER', os.environ['QMLOPS_DATABASE_URL'])",
    )
    client = Client(Settings.from_env(home=other, owner="someone-else"))
    try:
        done = run_pipeline(client, PipelineRequest(str(notebook)))
    finally:
        client.close()
    text = output_text(done.output_path)
    assert f"HOME {other}" in text and "OWNER someone-else" in text
    assert f"LEDGER sqlite:///{other / 'ledger.sqlite'}" in text
    assert os.environ["QMLOPS_HOME"] == str(home)  # this process's environment is untouched


@pytest.mark.slow
def test_a_run_injects_its_parameters_and_keeps_the_output(run, home: Path, tmp_path: Path) -> None:
    result = run("creds", "set", "lab", "--provider", "ionq", input=SECRET + "\n")
    assert result.exit_code == 0, result.stderr
    notebook = write_notebook(
        tmp_path / "hello.ipynb",
        'shots = 100\nlabel = "none"\nratio = 0.0\nflag = False\nbackend = None\n'
        "credential = None\nqmlops_pipeline_run_id = None",
        "import json, os\n"
        "print('PARAMS', json.dumps({'shots': shots, 'label': label, 'ratio': ratio, "
        "'flag': flag, 'backend': backend, 'credential': credential, "
        "'run': qmlops_pipeline_run_id}))\n"
        "print('ENV', os.environ['QMLOPS_PIPELINE_RUN_ID'], os.environ['QMLOPS_NOTEBOOK_PATH'])",
    )
    started = time.monotonic()
    result = run(
        "pipeline", "run", str(notebook),
        "-p", "shots", "250", "-p", "label", "bell", "-p", "ratio", "0.5", "-p", "flag", "True",
        "--backend", "aer", "--credential", "lab", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    run_id = data["id"]
    assert len(run_id) == 16 and data["state"] == "COMPLETED"
    assert data["parameters"] == {
        "shots": 250,
        "label": "bell",
        "ratio": 0.5,
        "flag": True,
        "backend": "aer",
        "credential": "lab",
        "qmlops_pipeline_run_id": run_id,
    }
    assert data["notebook"] == str(notebook.resolve())
    assert data["attempts"] == 1 and data["error"] is None and data["error_cell"] is None
    assert data["mlflow_run_id"] is None  # tracking is off in this test
    assert 0 < data["duration_s"] < time.monotonic() - started + 1
    output = Path(data["output_path"])
    assert output == home / "pipelines" / "runs" / run_id / "output.ipynb"
    assert (output.parent / "attempt-1.ipynb").is_file()
    text = output_text(str(output))
    injected = json.loads(text.split("PARAMS ", 1)[1].splitlines()[0])
    assert injected == {
        "shots": 250,
        "label": "bell",
        "ratio": 0.5,
        "flag": True,
        "backend": "aer",
        "credential": "lab",
        "run": run_id,
    }
    assert f"ENV {run_id} {notebook.resolve()}" in text
    # The credential went by alias: its secret is nowhere in the run's files or its row.
    for path in output.parent.iterdir():
        assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in result.output
    (row,) = pipeline_rows(home)
    assert row["id"] == run_id and row["state"] == "COMPLETED" and SECRET not in str(row)
    # Read back.
    shown = run("pipeline", "show", run_id[:8], "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout) == data
    listed = run("pipeline", "runs", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    human = run("pipeline", "runs")
    assert run_id in human.stdout and "COMPLETED" in human.stdout


# -- a failing cell, retries ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_cell_fails_the_run_with_the_cell_and_the_error(
    run, home: Path, tmp_path: Path
) -> None:
    notebook = write_notebook(
        tmp_path / "bad.ipynb",
        "n = 1",
        "print('before')",
        "raise ValueError(f'no good value: {n}')",
        "print('never')",
    )
    result = run("pipeline", "run", str(notebook), "-p", "n", "7")
    assert result.exit_code == 8
    (row,) = pipeline_rows(home)
    run_id = row["id"]
    # Cells: 0 markdown, 1 parameters, 2 print, 3 the raise (papermill's injected cell is not
    # counted: the index is the input notebook's).
    assert result.stderr.strip().splitlines() == [
        f"qmlops: error: pipeline run {run_id} failed at cell 3: ValueError: no good value: 7"
    ]
    data = json.loads(run("pipeline", "show", run_id, "--json").stdout)
    assert data["state"] == "FAILED" and data["attempts"] == 1
    assert data["error_cell"] == 3 and data["error_ename"] == "ValueError"
    assert data["error"] == "ValueError: no good value: 7"
    text = output_text(data["output_path"])
    assert "before" in text and "never" not in text


@pytest.mark.slow
def test_a_failed_attempt_is_retried_and_each_attempt_kept(run, home: Path, tmp_path: Path) -> None:
    counter = tmp_path / "attempts.txt"
    notebook = write_notebook(
        tmp_path / "flaky.ipynb",
        'counter = ""',
        "from pathlib import Path\n"
        "p = Path(counter)\n"
        "seen = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(seen + 1))\n"
        "if seen == 0:\n"
        "    raise RuntimeError('first attempt fails')\n"
        "print('attempt', seen + 1, 'done')",
    )
    result = run(
        "pipeline", "run", str(notebook), "-p", "counter", str(counter),
        "--retries", "3", "--retry-delay", "0.2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "COMPLETED" and data["attempts"] == 2 and data["max_retries"] == 3
    assert counter.read_text() == "2"
    assert f"pipeline run {data['id']}: attempt 1 failed (cell 2: RuntimeError)" in result.stderr
    folder = Path(data["output_path"]).parent
    assert sorted(p.name for p in folder.glob("*.ipynb")) == [
        "attempt-1.ipynb",
        "attempt-2.ipynb",
        "output.ipynb",
    ]
    assert "first attempt fails" in output_text(str(folder / "attempt-1.ipynb"))
    assert "attempt 2 done" in output_text(data["output_path"])
    # Without retries left, the same notebook fails on its first attempt.
    counter.unlink()
    again = run("pipeline", "run", str(notebook), "-p", "counter", str(counter), "--json")
    assert again.exit_code == 8 and json.loads(again.stdout)["attempts"] == 1


# -- timeout ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_timeout_kills_the_kernel_and_is_not_retried(run, home: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "kernel.pid"
    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        'pid_file = ""',
        "import os, time\nopen(pid_file, 'w').write(str(os.getpid()))\ntime.sleep(60)",
    )
    started = time.monotonic()
    result = run(
        "pipeline", "run", str(notebook), "-p", "pid_file", str(pid_file),
        "--timeout", "5", "--retries", "2", "--json",
    )  # fmt: skip
    took = time.monotonic() - started
    assert result.exit_code == 8
    data = json.loads(result.stdout)
    assert data["state"] == "TIMED_OUT" and data["attempts"] == 1
    assert took < 20, f"the run took {took:.1f} s"
    assert result.stderr.strip().splitlines() == [
        f"qmlops: error: pipeline run {data['id']} timed out: the run took longer than its "
        "timeout of 5 s; its kernel was stopped"
    ]
    kernel_pid = int(pid_file.read_text())  # the kernel really ran the sleeping cell
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and processes_of_run(data["id"]):
        time.sleep(0.1)
    assert processes_of_run(data["id"]) == []
    assert kernel_pid not in processes_of_run(data["id"])
    try:
        os.kill(kernel_pid, 0)
        state = Path(f"/proc/{kernel_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "Z", f"kernel {kernel_pid} still running"
    except ProcessLookupError:
        pass


# -- tracking ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_jobs_inside_link_to_the_run_and_the_output_goes_to_mlflow(
    run, tracking: Path, tmp_path: Path
) -> None:
    job_file = tmp_path / "job.txt"
    notebook = write_notebook(
        tmp_path / "bell.ipynb",
        'job_file = ""\nshots = 100\nbackend = "aer"',
        "import qmlops_jupyter\n"
        f'BELL = """{qmlops_testing.BELL_QASM2}"""\n'
        "job = qmlops_jupyter.submit(BELL, backend=backend, shots=shots, wait=True)\n"
        "open(job_file, 'w').write(job.id)\n"
        "print(sum(job.result().counts[0].values()))",
    )
    result = run(
        "pipeline", "run", str(notebook), "-p", "job_file", str(job_file), "-p", "shots", "300",
        "--backend", "aer", "--experiment", "pipelines-test", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["state"] == "COMPLETED" and data["experiment"] == "pipelines-test"
    assert data["mlflow_run_id"], result.stderr  # stderr says why MLflow was not written
    # The job submitted inside the notebook records the pipeline run in its lineage.
    from qmlops_jupyter.client import get_client

    reset_client()
    job = get_client().get_job(job_file.read_text()).record
    assert job.state.value == "COMPLETED" and job.shots == 300
    assert job.lineage["pipeline_run"] == data["id"]
    assert job.lineage["notebook"] == str(notebook.resolve())
    # The pipeline run's MLflow run: params, tags, metrics and the executed notebook.
    from mlflow.tracking import MlflowClient

    from qmlops_jupyter.tracking.config import embedded_uri

    ml = MlflowClient(tracking_uri=embedded_uri(tracking))
    mlrun = ml.get_run(data["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    assert ml.get_experiment(mlrun.info.experiment_id).name == "pipelines-test"
    assert mlrun.data.params["papermill.shots"] == "300"
    assert mlrun.data.params["papermill.backend"] == "aer"
    assert mlrun.data.params["papermill.job_file"] == str(job_file)
    assert mlrun.data.tags["qmlops.pipeline_run"] == data["id"]
    assert mlrun.data.tags["qmlops.notebook"] == str(notebook.resolve())
    assert mlrun.data.metrics["attempts"] == 1 and mlrun.data.metrics["duration_s"] > 0
    assert [a.path for a in ml.list_artifacts(mlrun.info.run_id)] == ["output.ipynb"]
    local = ml.download_artifacts(mlrun.info.run_id, "output.ipynb", str(tmp_path))
    assert output_text(local).strip().endswith("300")
    assert Path(local).read_bytes() == Path(data["output_path"]).read_bytes()


# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_refused_before_anything_is_written(
    run, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_notebook(tmp_path / "good.ipynb", "x = 1", "print(x)")
    script = tmp_path / "script.py"
    script.write_text("print(1)\n")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    cases = [
        ((str(tmp_path / "missing.ipynb"),), 2, "no such notebook"),
        ((str(script),), 2, "not a notebook"),
        ((str(broken),), 2, "not a readable notebook"),
        ((str(good), "--retries", "-1"), 2, "--retries must be 0 or more"),
        ((str(good), "--timeout", "0"), 2, "--timeout must be more than 0 seconds"),
        ((str(good), "-p", "not-a-name", "1"), 2, "not a Python identifier"),
        ((str(good), "-p", "qmlops_pipeline_run_id", "x"), 2, "set by the pipeline run"),
        ((str(good), "--backend", "nosuchbackend"), 3, "unknown backend"),
        ((str(good), "--credential", "nope"), 3, "no credential named 'nope'"),
    ]
    for args, code, message in cases:
        result = run("pipeline", "run", *args)
        assert result.exit_code == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qmlops: error: "), (args, lines)
        assert message in lines[0], (args, lines)
    # A secret as a parameter: a stored credential's, or a provider's from the environment.
    assert run("creds", "set", "lab", "--provider", "ionq", input=SECRET + "\n").exit_code == 0
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "ibm-token-from-the-environment-42")
    for value in (SECRET, "ibm-token-from-the-environment-42"):
        result = run("pipeline", "run", str(good), "-p", "token", value)
        assert result.exit_code == 2
        assert "parameter 'token' holds a secret" in result.stderr
        assert value not in result.output
    assert pipeline_rows(home) == []
    assert not (home / "pipelines").exists()
    assert run("pipeline", "show", "0123456789abcdef").exit_code == 3


def test_stopping_a_run_kills_descendants_in_their_own_sessions(tmp_path: Path) -> None:
    """A kernel leads a session of its own and, unlike ipykernel, a grandchild may not watch
    its parent: the stop reaches it anyway, through its own process group."""
    import subprocess
    import sys

    from qmlops_jupyter.pipelines.runner import stop_process_tree

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'], "
        "start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(kid.pid))\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    started = time.monotonic()
    stop_process_tree(child, grace=0.5)
    assert child.returncode is not None and time.monotonic() - started < 5
    end = time.monotonic() + 5
    alive = True
    while alive and time.monotonic() < end:
        try:
            state = Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0]
            alive = state != "Z"
        except OSError:
            alive = False
        time.sleep(0.05)
    assert not alive, "the grandchild (which ignores SIGTERM) outlived the stop"


def test_the_runs_table_on_sqlite_and_postgres(ledger) -> None:
    """Rows are per owner, listed newest first, found by a unique id prefix."""
    from qmlops_jupyter.errors import PipelineRunNotFound
    from qmlops_jupyter.pipelines.models import PipelineRunState
    from qmlops_jupyter.pipelines.store import PipelineRuns

    store = PipelineRuns(ledger)
    made = [
        store.create(
            owner=owner,
            notebook="/nb/a.ipynb",
            parameters={"n": i, "qmlops_pipeline_run_id": None},
            max_retries=1,
            timeout=30.0,
            experiment="e",
        )
        for i, owner in enumerate(["alice", "alice", "bob"])
    ]
    assert made[0].state is PipelineRunState.QUEUED and made[0].attempts == 0
    assert made[0].parameters == {"n": 0, "qmlops_pipeline_run_id": None}
    done = store.update(
        made[0].id,
        state=PipelineRunState.FAILED,
        attempts=2,
        started_at=made[0].created_at,
        finished_at=made[0].created_at + timedelta(seconds=3),
        error="ValueError: x",
        error_cell=4,
        error_ename="ValueError",
    )
    assert done.state is PipelineRunState.FAILED and done.error_cell == 4
    assert done.duration_s == 3.0
    assert [r.id for r in store.list("alice")] == [made[1].id, made[0].id]
    assert [r.id for r in store.list("bob")] == [made[2].id]
    assert store.get(made[0].id[:10], "alice").id == made[0].id
    with pytest.raises(PipelineRunNotFound):
        store.get(made[2].id, "alice")  # other owners' runs are invisible


@pytest.mark.slow
def test_sigterm_to_the_command_cancels_the_run_and_its_kernel(home: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "kernel.pid"
    notebook = write_notebook(
        tmp_path / "long.ipynb",
        'pid_file = ""',
        "import os, time\nopen(pid_file, 'w').write(str(os.getpid()))\ntime.sleep(60)",
    )
    qmlops = Path(sys.executable).parent / "qmlops"
    command = subprocess.Popen(
        [str(qmlops), "pipeline", "run", str(notebook), "-p", "pid_file", str(pid_file), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            assert command.poll() is None, command.communicate()
            time.sleep(0.1)
        kernel_pid = int(pid_file.read_text())
        command.send_signal(signal.SIGTERM)
        _, stderr = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == 130, stderr
    (row,) = pipeline_rows(home)
    assert row["state"] == "CANCELLED" and row["finished_at"] is not None
    end = time.monotonic() + 5
    while processes_of_run(row["id"]) and time.monotonic() < end:
        time.sleep(0.1)
    assert processes_of_run(row["id"]) == []
    assert not Path(f"/proc/{kernel_pid}").exists() or (
        Path(f"/proc/{kernel_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    )
