"""``qmlops pipeline sweep``: a grid of real papermill runs on a real Dask cluster.

Real: the Dask ``LocalCluster`` (the sweep's own, whose workers are threads of the sweep's
process; and one of worker processes, reached by its scheduler address on 127.0.0.1),
papermill and ipykernel kernels, the SQLite ledger, and (with the ``tracking`` fixture) the
embedded MLflow store, read back with ``MlflowClient``. A worker process is killed with
SIGKILL, as the kernel's OOM killer would. Notebooks are written with nbformat into the test's
folder, each with a cell tagged ``parameters``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import cli_invoker, parameterised_notebook, pipeline_rows

from qmlops_jupyter.pipelines.execute import processes_of

SECRET = "sk-sweep-test-0123456789abcdef"
QMLOPS = Path(sys.executable).parent / "qmlops"


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    return parameterised_notebook(path, parameters, *cells, title="A swept notebook.")


@pytest.fixture
def run(home: Path, monkeypatch: pytest.MonkeyPatch):
    return cli_invoker(monkeypatch)


def rows(home: Path) -> list[dict[str, Any]]:
    return pipeline_rows(home, order_by="sweep_point, created_at")


def wait_gone(pids_of: Any, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = pids_of()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = pids_of()
    return left


def children(pid: int) -> list[int]:
    """Live descendants of a process (Dask's worker processes, their kernels), but not the
    resource tracker multiprocessing keeps for the life of its parent."""
    import psutil

    found = []
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for kid in kids:
        try:
            if kid.status() == psutil.STATUS_ZOMBIE:
                continue
            if "multiprocessing.resource_tracker" in " ".join(kid.cmdline()):
                continue
        except psutil.NoSuchProcess:
            continue
        found.append(kid.pid)
    return found


# -- a grid, nested MLflow runs ------------------------------------------------------------------


@pytest.mark.slow
def test_a_2x2_grid_runs_4_points_nested_under_one_mlflow_parent(
    run, tracking: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = write_notebook(
        tmp_path / "fit.ipynb",
        'lr = 0.0\nlayers = 0\nlabel = "none"',
        # Half the points log a metric (the other half spare the test MLflow's import).
        "if layers == 2:\n"
        "    import qmlops_jupyter\n"
        "    with qmlops_jupyter.track(run_name=f'fit lr={lr}') as r:\n"
        "        r.log_metrics({'score': lr * 10 + layers})\n"
        "print('SCORE', lr * 10 + layers, label)\n"
        "import os\n"
        "print('THREADS', os.environ.get('OMP_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'))",
    )
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text("lr: [0.1, 0.2]\nlayers: [1, 2]\n")
    before = set(children(os.getpid()))  # servers other tests started for the whole run
    started = time.monotonic()
    result = run(
        "pipeline", "sweep", str(notebook), "--grid", str(grid), "-p", "label", "sweep",
        "--workers", "2", "--experiment", "sweeps-test", "--json",
    )  # fmt: skip
    took = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    sweep_id, parent = data["sweep_id"], data["mlflow_parent_run_id"]
    assert len(sweep_id) == 16 and parent
    points = data["points"]
    assert [p["sweep_point"] for p in points] == [0, 1, 2, 3]
    assert [(p["parameters"]["lr"], p["parameters"]["layers"]) for p in points] == [
        (0.1, 1),
        (0.1, 2),
        (0.2, 1),
        (0.2, 2),
    ]
    assert all(p["state"] == "COMPLETED" and p["sweep_id"] == sweep_id for p in points)
    assert all(p["parameters"]["label"] == "sweep" for p in points)
    assert all(p["mlflow_parent_run_id"] == parent for p in points)
    assert {p["experiment"] for p in points} == {"sweeps-test"}
    for p in points:
        text = Path(p["output_path"]).read_text()
        score = p["parameters"]["lr"] * 10 + p["parameters"]["layers"]
        assert f"SCORE {score} sweep" in text
        # A point's kernel runs its numeric libraries on one thread: the points are parallel.
        assert "THREADS 1 1" in text
    # The ledger: exactly these 4 runs, one per point.
    ledger = rows(tracking)
    assert sorted((r["sweep_point"], r["state"]) for r in ledger) == [
        (i, "COMPLETED") for i in range(4)
    ]
    # Progress went to stderr, one line per point.
    assert result.stderr.count(f"sweep {sweep_id}: point ") == 4
    # MLflow: one parent, 4 pipeline runs nested under it.
    from mlflow.tracking import MlflowClient

    from qmlops_jupyter.tracking.config import embedded_uri

    ml = MlflowClient(tracking_uri=embedded_uri(tracking))
    top = ml.get_run(parent)
    assert top.info.status == "FINISHED"
    assert ml.get_experiment(top.info.experiment_id).name == "sweeps-test"
    assert top.data.tags["qmlops.sweep"] == sweep_id
    assert top.data.params["grid.lr"] == "[0.1, 0.2]"
    assert top.data.params["grid.layers"] == "[1, 2]"
    assert top.data.params["papermill.label"] == "sweep"
    assert top.data.metrics["points"] == 4 and top.data.metrics["points_completed"] == 4
    nested = ml.search_runs(
        [top.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert sorted(r.info.run_id for r in nested) == sorted(p["mlflow_run_id"] for p in points)
    assert all(r.info.status == "FINISHED" for r in nested)
    assert {r.data.tags["qmlops.sweep"] for r in nested} == {sweep_id}
    # The notebooks' own metric, per point (step = the point's index) and summarised.
    history = ml.get_metric_history(parent, "score")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(1, 3.0), (3, 4.0)]
    assert top.data.metrics["score.min"] == pytest.approx(3.0)
    assert top.data.metrics["score.max"] == pytest.approx(4.0)
    assert top.data.metrics["score.mean"] == pytest.approx(3.5)
    # Nothing left running: no worker, no kernel.
    assert wait_gone(lambda: processes_of({p["id"] for p in points})) == []
    assert wait_gone(lambda: sorted(set(children(os.getpid())) - before)) == []
    assert took < 90, f"the sweep took {took:.0f} s"


# -- a worker dies ------------------------------------------------------------------------------


@pytest.mark.slow
def test_killing_a_worker_mid_sweep_still_completes_every_point_once(
    home: Path, tmp_path: Path
) -> None:
    """A scheduler and 2 workers of our own (so the test can find a worker's pid), reached with
    --dask-scheduler; the sweep runs as a real ``qmlops`` process."""
    import distributed

    notebook = write_notebook(
        tmp_path / "slow.ipynb",
        "n = 0\nseconds = 0.0",
        "import time\ntime.sleep(seconds)\nprint('DONE', n)",
    )
    grid = tmp_path / "grid.yaml"
    grid.write_text("n: [0, 1, 2]\n")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            worker_dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as dask,
    ):
        command = subprocess.Popen(
            [
                str(QMLOPS),
                "pipeline",
                "sweep",
                str(notebook),
                "--grid",
                str(grid),
                "-p",
                "seconds",
                "3",
                "--dask-scheduler",
                cluster.scheduler_address,
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            running: list[dict[str, Any]] = []
            while not running and time.monotonic() < deadline:
                assert command.poll() is None, command.communicate()
                running = [r for r in rows(home) if r["state"] == "RUNNING" and r["runner_pid"]]
                time.sleep(0.1)
            assert running, "no point started running"
            victim = running[0]
            worker_pids = dask.run(os.getpid)  # the scheduler's workers, by address
            assert set(worker_pids) == set(dask.scheduler_info()["workers"])
            assert victim["runner_pid"] in worker_pids.values()
            time.sleep(0.5)  # inside the notebook's 3 s sleep
            os.kill(victim["runner_pid"], signal.SIGKILL)
            stdout, stderr = command.communicate(timeout=120)
        finally:
            if command.poll() is None:
                command.kill()
                command.wait()
    assert command.returncode == 0, stderr
    data = json.loads(stdout)
    assert [p["state"] for p in data["points"]] == ["COMPLETED"] * 3
    assert [p["sweep_point"] for p in data["points"]] == [0, 1, 2]
    ledger = rows(home)
    completed = [r for r in ledger if r["state"] == "COMPLETED"]
    assert sorted(r["sweep_point"] for r in completed) == [0, 1, 2]  # each exactly once
    assert {p["id"] for p in data["points"]} == {r["id"] for r in completed}
    # The killed point's first run is kept, ended FAILED; nothing else failed.
    (dead,) = [r for r in ledger if r["state"] != "COMPLETED"]
    assert dead["id"] == victim["id"] and dead["state"] == "FAILED"
    assert dead["sweep_point"] == victim["sweep_point"]
    assert "its worker died" in dead["error"] and dead["finished_at"] is not None
    for p in data["points"]:
        assert f"DONE {p['parameters']['n']}" in Path(p["output_path"]).read_text()
    # Tracking is off here: no MLflow at all.
    assert data["mlflow_parent_run_id"] is None
    assert all(p["mlflow_run_id"] is None for p in data["points"])
    assert not (home / "mlflow").exists()
    # What the dead worker's point had started (its notebook runner, its kernel) is gone too.
    assert wait_gone(lambda: processes_of({r["id"] for r in ledger})) == []


# -- failures, interrupts, bad input -------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_point_fails_the_sweep_with_exit_8(run, home: Path, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "picky.ipynb",
        "x = 0",
        "if x == 2:\n    raise ValueError(f'x may not be {x}')\nprint('ok', x)",
    )
    grid = tmp_path / "grid.yaml"
    grid.write_text("points:\n  - {x: 1}\n  - {x: 2}\n")
    result = run("pipeline", "sweep", str(notebook), "--grid", str(grid))
    assert result.exit_code == 8
    ledger = rows(home)
    assert [(r["sweep_point"], r["state"]) for r in ledger] == [(0, "COMPLETED"), (1, "FAILED")]
    failed = ledger[1]
    assert result.stderr.strip().splitlines()[-1] == (
        f"qmlops: error: sweep {failed['sweep_id']}: 1 of 2 points did not complete; point 1: "
        f"pipeline run {failed['id']} failed at cell 2: ValueError: x may not be 2"
    )
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "POINT",
        "PARAMETERS",
        "STATE",
        "DURATION",
        "MLFLOW",
        "RUN",
        "ERROR",
    ]
    assert lines[1].split()[:3] == ["0", "x=1", "COMPLETED"]
    assert lines[2].split()[:3] == ["1", "x=2", "FAILED"]
    assert "cell 2: ValueError: x may not be 2" in lines[2]
    assert lines[3] == f"sweep {failed['sweep_id']}: 1 of 2 points completed"


@pytest.mark.slow
def test_sigterm_stops_the_sweep_its_workers_and_kernels(home: Path, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "long.ipynb", "n = 0", "import time\ntime.sleep(60)\nprint('never')"
    )
    grid = tmp_path / "grid.yaml"
    grid.write_text("n: [1, 2, 3]\n")
    command = subprocess.Popen(
        [str(QMLOPS), "pipeline", "sweep", str(notebook), "--grid", str(grid), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert command.poll() is None, command.communicate()
            running = [r for r in rows(home) if r["state"] == "RUNNING"]
            if len(running) == 2 and processes_of({r["id"] for r in running}):
                break
            time.sleep(0.1)
        assert len(running) == 2
        workers = children(command.pid)
        # The local cluster's workers are threads of the command: its only children are the
        # running points' kernels.
        assert workers and set(workers) == set(processes_of({r["id"] for r in running}))
        # The scheduler (in the command), the workers and the kernels listen on loopback only.
        import psutil

        listening = [
            c.laddr.ip
            for pid in [command.pid, *workers]
            for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and set(listening) == {"127.0.0.1"}, listening
        command.send_signal(signal.SIGTERM)
        _, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "qmlops: interrupted"
    ledger = rows(home)
    assert sorted(r["state"] for r in ledger) == ["CANCELLED", "CANCELLED"]  # the 3rd never ran
    assert all(r["finished_at"] is not None for r in ledger)
    assert wait_gone(lambda: processes_of({r["id"] for r in ledger})) == []

    def alive_workers() -> list[int]:
        from qmlops_jupyter.pipelines.execute import _alive

        return [p for p in workers if _alive(p)]

    assert wait_gone(alive_workers) == []


def test_bad_grids_and_options_are_refused_before_anything_is_written(
    run, tracking: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", "x = 1", "print(x)")

    def grid(text: str) -> str:
        path = tmp_path / f"grid-{abs(hash(text))}.yaml"
        path.write_text(text)
        return str(path)

    cases = [
        ((str(tmp_path / "missing.yaml"),), "no such grid file"),
        ((grid("x: [1, 2\n"),), "not valid YAML (line 2)"),
        ((grid("- 1\n- 2\n"),), "expected a mapping of parameter name to a list of values"),
        ((grid("{}\n"),), "the grid has no parameters"),
        ((grid("x: 3\n"),), "'x' must be a list of values, not an int (3)"),
        ((grid("x: []\n"),), "'x' has an empty list of values"),
        ((grid("not-a-name: [1]\n"),), "parameter name 'not-a-name' is not a Python identifier"),
        ((grid("x: [1]\nx: [2]\n"),), "'x' is given twice"),
        ((grid("when: [2024-01-01]\n"),), "'when' has a value of type date"),
        ((grid("points: {x: 1}\n"),), "'points' must be a non-empty list of mappings"),
        ((grid("points: [3]\n"),), "points[0] must be a mapping of parameter name to value"),
        ((grid("x: [1]\npoints: [{x: 1}]\n"),), "point 1 (x=1) repeats point 0"),
        ((grid("x: [1, 2]\n"), "-p", "x", "3"), "'x' is both in the grid and given with -p"),
        ((grid("qmlops_pipeline_run_id: [1]\n"),), "set by the pipeline run itself"),
        ((grid("x: [1]\n"), "--workers", "0"), "--workers must be 1 or more"),
        (
            (grid("x: [1]\n"), "--workers", "2", "--dask-scheduler", "tcp://127.0.0.1:1"),
            "give --workers or --dask-scheduler, not both",
        ),
        ((grid("x: [1]\n"), "--timeout", "0"), "--timeout must be more than 0 seconds"),
        ((grid("backend: [aer]\n"), "--backend", "aer"), "give backend with --backend or with -p"),
    ]
    for args, message in cases:
        path, *options = args
        result = run("pipeline", "sweep", str(notebook), "--grid", path, *options)
        assert result.exit_code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qmlops: error: "), (args, lines)
        assert message in lines[0], (args, lines)
    # A secret in the grid: a stored credential's, or a provider's from the environment.
    assert run("creds", "set", "lab", "--provider", "ionq", input=SECRET + "\n").exit_code == 0
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "ibm-token-from-the-environment-42")
    for value in (SECRET, "ibm-token-from-the-environment-42"):
        result = run("pipeline", "sweep", str(notebook), "--grid", grid(f"token: [a, {value}]\n"))
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [
            "qmlops: error: parameter 'token' holds a secret; store it with 'qmlops creds set' "
            "and pass its alias with --credential"
        ]
        assert value not in result.output
    # Unknown names exit 3, as for pipeline run; an unreachable scheduler exits 5.
    monkeypatch.setattr("qmlops_jupyter.pipelines.sweep.SCHEDULER_TIMEOUT", 2.0)
    result = run("pipeline", "sweep", str(notebook), "--grid", grid("x: [1]\n"), "-b", "nope")
    assert result.exit_code == 3 and "unknown backend 'nope'" in result.stderr
    result = run(
        "pipeline", "sweep", str(notebook), "--grid", grid("x: [1]\n"),
        "--dask-scheduler", "tcp://127.0.0.1:9",
    )  # fmt: skip
    assert result.exit_code == 5, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no Dask scheduler answered at tcp://127.0.0.1:9" in result.stderr
    # Nothing was written: no run, no run folder, no MLflow store (so no parent run).
    assert rows(tracking) == []
    assert not (tracking / "pipelines").exists()
    assert not (tracking / "mlflow").exists()
