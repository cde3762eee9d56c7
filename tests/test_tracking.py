"""Tracking to MLflow, read back with ``MlflowClient``: the embedded store (MLflow's SQLite store
under QMLOPS_HOME, the default) and a real ``mlflow server`` process on 127.0.0.1 with a SQLite
backend and proxied artifacts. No MLflow call is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import BELL_QASM2, QMLOPS, MlflowServer, free_port, wait_for
from qmlops_testing import GHZ3_QASM2 as GHZ3

from qmlops_jupyter import profile, track
from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.errors import ConfigError
from qmlops_jupyter.states import JobState
from qmlops_jupyter.tracking.outbox import pending


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def all_runs(ml: Any, filter_string: str = "") -> list[Any]:
    ids = [e.experiment_id for e in ml.search_experiments()]
    return ml.search_runs(ids, filter_string=filter_string, max_results=1000) if ids else []


def embedded(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def read_artifact(ml: Any, run_id: str, path: str, dst: Path) -> bytes:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(ml.download_artifacts(run_id, path, str(dst))).read_bytes()


_made: list[Client] = []


def new_client(home: Path) -> Client:
    client = Client(Settings.from_env(home=home))
    _made.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while _made:
        _made.pop().close()


# -- configuration -------------------------------------------------------------------------------


def test_default_is_the_embedded_store_under_qmlops_home(tracking: Path, client: Client) -> None:
    cfg = client.tracking.config
    assert cfg.enabled and cfg.embedded
    assert cfg.uri == embedded(tracking)
    assert cfg.artifact_root == (tracking / "mlflow" / "artifacts").as_uri()
    assert cfg.experiment == "qmlops"


def test_uri_and_experiment_come_from_env_then_config_file(
    tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking.mkdir(parents=True, exist_ok=True)
    (tracking / "config.yaml").write_text(
        "tracking:\n  uri: http://127.0.0.1:5999\n  experiment: lab\n", encoding="utf-8"
    )
    cfg = new_client(tracking).tracking.config
    assert (cfg.uri, cfg.experiment, cfg.embedded) == ("http://127.0.0.1:5999", "lab", False)
    assert cfg.artifact_root is None  # a server decides where artifacts go
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:pw-secret@127.0.0.1:6001")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    cfg = new_client(tracking).tracking.config
    assert cfg.uri.endswith(":6001") and cfg.experiment == "from-env"
    assert cfg.safe_uri == "http://127.0.0.1:6001"  # what the ledger keeps
    monkeypatch.setenv("QMLOPS_TRACKING", "off")
    cfg = new_client(tracking).tracking.config
    assert not cfg.enabled and "QMLOPS_TRACKING" in cfg.reason
    (tracking / "config.yaml").write_text("tracking:\n  enabld: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.yaml: tracking.enabld: Extra inputs"):
        _ = new_client(tracking).tracking.config


def test_tracking_off_records_nothing(home: Path, client: Client) -> None:
    job = client.submit(BELL_QASM2, shots=100, wait=True)
    assert job.record.lineage is None and job.mlflow_run_id is None
    assert pending(client.ledger)["count"] == 0
    assert not (home / "mlflow").exists()


# -- the embedded store --------------------------------------------------------------------------


def test_completed_job_is_logged_to_its_own_run(
    tracking: Path, client: Client, tmp_path: Path
) -> None:
    job = client.submit(BELL_QASM2, shots=500, wait=True, seed=7, name="bell-1")
    assert job.state is JobState.COMPLETED
    run_id = job.mlflow_run_id
    assert run_id
    # The job records its run, in its JSON too.
    assert client.ledger.get_job(job.id).model_dump(mode="json")["mlflow_run_id"] == run_id
    ml = mlflow_client(embedded(tracking))
    (found,) = all_runs(ml, f"tags.`qmlops.job_id` = '{job.id}'")
    assert found.info.run_id == run_id and found.info.status == "FINISHED"
    assert found.info.run_name == "bell-1"
    assert ml.get_experiment(found.info.experiment_id).name == "qmlops"
    params, metrics, tags = found.data.params, found.data.metrics, found.data.tags
    assert params["backend"] == "aer" and params["shots"] == "500" and params["seed"] == "7"
    assert params["circuit.width"] == "2" and params["num_circuits"] == "1"
    assert params["gates.cx"] == "1" and params["gates.h"] == "1"
    counts = job.result().counts[0]
    assert metrics["p_00"] == pytest.approx(counts["00"] / 500)
    assert metrics["p_00"] + metrics["p_11"] == pytest.approx(1.0)
    assert metrics["entropy_bits"] == pytest.approx(1.0, abs=0.05)
    assert metrics["shots_total"] == 500 and metrics["estimated_cost_usd"] == 0
    for phase in ("validate", "queue", "run", "post_process"):
        assert metrics[f"{phase}_seconds"] >= 0
    assert tags["qmlops.job_ids"] == job.id and tags["qmlops.backend"] == "aer"
    assert tags["mlflow.user"] == client.owner
    assert tags["qmlops.run_key"] == f"job-{job.id}"
    names = {a.path for a in ml.list_artifacts(run_id)}
    assert names == {"circuit_0.qasm", "counts.json", "histogram.png", "job.json"}
    qasm = read_artifact(ml, run_id, "circuit_0.qasm", tmp_path / "a").decode()
    assert qasm == client.ledger.circuit_qasm3(job.id)[0]
    assert json.loads(read_artifact(ml, run_id, "counts.json", tmp_path / "b"))["counts"] == [
        counts
    ]
    png = read_artifact(ml, run_id, "histogram.png", tmp_path / "c")
    from PIL import Image

    image = Image.open(tmp_path / "c" / "histogram.png")
    assert png.startswith(b"\x89PNG") and image.size == (640, 360)
    assert json.loads(read_artifact(ml, run_id, "job.json", tmp_path / "d"))["id"] == job.id


def test_a_batch_job_logs_each_circuit_and_its_expectation_values(
    tracking: Path, client: Client
) -> None:
    job = client.submit([BELL_QASM2, GHZ3], shots=400, wait=True, seed=3, observables=["ZZ", "ZZI"])
    run = mlflow_client(embedded(tracking)).get_run(job.mlflow_run_id)
    metrics, params = run.data.metrics, run.data.params
    assert params["num_circuits"] == "2" and params["circuit.width"] == "3"
    assert params["circuit_0.width"] == "2" and params["circuit_1.width"] == "3"
    assert metrics["circuit_0.expectation_value"] == pytest.approx(1.0)
    assert metrics["circuit_1.expectation_value"] == pytest.approx(1.0)
    assert metrics["circuit_1.distinct_outcomes"] == 2
    assert params["observables"] == '["ZZ", "ZZI"]'
    names = {a.path for a in mlflow_client(embedded(tracking)).list_artifacts(run.info.run_id)}
    assert {"circuit_0.qasm", "circuit_1.qasm", "histogram.png", "histogram_1.png"} <= names


def test_track_groups_jobs_logs_steps_and_nests_runs(tracking: Path, client: Client) -> None:
    ml = mlflow_client(embedded(tracking))
    jobs = []
    with track("training", run_name="loop", params={"lr": 0.1}, client=client) as run:
        assert run.run_id  # the run exists as soon as the block starts
        for step in range(3):
            jobs.append(client.submit(BELL_QASM2, shots=100, wait=True, seed=step))
            run.log_step(step, loss=1.0 / (step + 1), accuracy=0.5 + 0.1 * step)
        with track(run_name="inner", client=client) as inner:
            inner_job = client.submit(GHZ3, shots=50, wait=True)
    assert {j.mlflow_run_id for j in jobs} == {run.run_id}
    assert inner_job.mlflow_run_id == inner.run_id != run.run_id
    outer = ml.get_run(run.run_id)
    assert outer.info.status == "FINISHED" and outer.info.run_name == "loop"
    assert ml.get_experiment(outer.info.experiment_id).name == "training"
    assert outer.data.params["lr"] == "0.1" and outer.data.params["shots"] == "100"
    assert outer.data.tags["qmlops.job_ids"].split(",") == [j.id for j in jobs]
    assert outer.data.tags["qmlops.job_count"] == "3"
    loss = ml.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in loss] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    shots = ml.get_metric_history(run.run_id, "cumulative_shots")
    assert [m.value for m in sorted(shots, key=lambda m: m.step)] == [100, 200, 300]
    per_job = ml.get_metric_history(run.run_id, "job.shots_total")
    assert sorted(m.step for m in per_job) == [0, 1, 2]
    names = {a.path for a in ml.list_artifacts(run.run_id, "jobs")}
    assert names == {f"jobs/{j.id}" for j in jobs}
    child = ml.get_run(inner.run_id)
    assert child.data.tags["mlflow.parentRunId"] == run.run_id
    assert ml.get_experiment(child.info.experiment_id).name == "training"
    # A block that raises ends its run FAILED.
    with pytest.raises(RuntimeError), track(run_name="broken", client=client) as broken:
        raise RuntimeError("boom")
    assert ml.get_run(broken.run_id).info.status == "FAILED"


def test_profile_times_the_phases_and_logs_them_to_the_run(
    tracking: Path, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        track(run_name="profiled", client=client) as run,
        profile("vqe_optimization", client=client) as p,
    ):
        for seed in range(3):
            client.submit(BELL_QASM2, shots=100, wait=True, seed=seed)
            time.sleep(0.05)  # the optimiser's own Python work
    stats = p.stats()
    assert stats["jobs"] == 3 and stats["unfinished_jobs"] == 0
    for phase in ("validate", "queue", "run", "post_process"):
        assert stats["phases"][phase]["count"] == 3
    assert stats["phases"]["run"]["total"] > 0
    assert stats["python_seconds"] >= 0.14
    assert stats["qmlops_seconds"] + stats["python_seconds"] == pytest.approx(stats["wall_seconds"])
    p.print_stats()
    out = capsys.readouterr().out
    assert "profile vqe_optimization: 3 job(s)" in out
    for label in ("validate", "transpile", "queue", "run", "post_process", "python around"):
        assert label in out
    assert run.flush()
    metrics = mlflow_client(embedded(tracking)).get_run(run.run_id).data.metrics
    assert metrics["profile.vqe_optimization.jobs"] == 3
    assert metrics["profile.vqe_optimization.python_seconds"] >= 0.14


def test_qmlops_runs_lists_runs_with_their_jobs(tracking: Path, client: Client) -> None:
    env = {**os.environ, "QMLOPS_HOME": str(tracking)}
    with track("sweep", run_name="point-1", client=client):
        job = client.submit(BELL_QASM2, shots=100, wait=True)
    alone = client.submit(BELL_QASM2, shots=100, wait=True)
    assert alone.mlflow_run_id

    def qmlops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*QMLOPS, *args], env=env, capture_output=True, text=True, timeout=120
        )

    listed = json.loads(qmlops("runs", "--json").stdout)
    assert [r["job_ids"] for r in listed] == [[alone.id], [job.id]]
    only = json.loads(qmlops("runs", "--experiment", "sweep", "--json").stdout)
    assert len(only) == 1 and only[0]["run_name"] == "point-1"
    assert only[0]["experiment"] == "sweep" and only[0]["status"] == "FINISHED"
    text = qmlops("runs").stdout
    assert "point-1" in text and "sweep" in text
    missing = qmlops("runs", "--experiment", "nope")
    assert missing.returncode == 3
    assert missing.stderr.strip() == "qmlops: error: no MLflow experiment named 'nope'"
    bad = qmlops("runs", "--limit", "0")
    assert bad.returncode == 2 and "--limit" in bad.stderr


@pytest.mark.slow
def test_qmlops_mlflow_ui_serves_the_embedded_store_on_loopback(
    tracking: Path, client: Client
) -> None:
    """A real ``qmlops mlflow-ui`` process: the MLflow UI and its API answer on 127.0.0.1 with
    the runs of the embedded store."""
    import signal
    import urllib.request

    job = client.submit(BELL_QASM2, shots=100, wait=True)
    assert job.mlflow_run_id
    env = {**os.environ, "QMLOPS_HOME": str(tracking)}
    port = free_port()
    proc = subprocess.Popen(
        [*QMLOPS, "mlflow-ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            return False

    try:
        wait_for(up, 90, "the MLflow UI")
        with urllib.request.urlopen(f"{base}/", timeout=10) as resp:
            assert resp.status == 200 and b"MLflow" in resp.read()
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/get?run_id={job.mlflow_run_id}"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            run = json.loads(resp.read())["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["qmlops.job_id"] == job.id
        # Listening on loopback only.
        listening = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout
        assert listening.strip() and all(
            line.split()[3].startswith("127.0.0.1:") for line in listening.strip().splitlines()
        ), listening
        # The port is taken now: a second UI says so, in one line, exit 2.
        again = subprocess.run(
            [*QMLOPS, "mlflow-ui", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 2
        assert again.stderr.strip() == (
            f"qmlops: error: port {port} on 127.0.0.1 is in use; pick another with --port"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    remote = subprocess.run(
        [*QMLOPS, "mlflow-ui"],
        env={**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 2 and "open its UI there" in remote.stderr


def test_a_lost_acknowledgement_never_makes_a_second_run(tracking: Path, client: Client) -> None:
    """The run was made and logged, but the ledger never heard (a crash in between): the retry
    finds the run by its key instead of making another."""
    from sqlalchemy import update

    from qmlops_jupyter.tracking.outbox import jobs as jobs_table
    from qmlops_jupyter.tracking.outbox import outbox

    job = client.submit(BELL_QASM2, shots=100, wait=True)
    first = job.mlflow_run_id
    with client.ledger._write() as conn:
        conn.execute(update(outbox).values(done_at=None, attempts=1))
        conn.execute(update(jobs_table).values(mlflow_run_id=None))
    assert pending(client.ledger)["count"] == 1
    assert client.tracking.flush()
    ml = mlflow_client(embedded(tracking))
    assert [r.info.run_id for r in all_runs(ml)] == [first]
    assert client.ledger.get_job(job.id).mlflow_run_id == first


def test_concurrent_senders_make_exactly_one_run_per_job(
    tracking: Path, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ``qmlops runs --sync`` processes send the same eight queued jobs at once."""
    monkeypatch.setattr(client.tracking, "kick", lambda: None)  # leave them queued here
    ids = [client.submit(BELL_QASM2, shots=50, wait=True, seed=i).id for i in range(8)]
    assert pending(client.ledger)["count"] == 8
    env = {**os.environ, "QMLOPS_HOME": str(tracking)}
    procs = [
        subprocess.Popen([*QMLOPS, "runs", "--sync", "--json"], env=env, stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        proc.communicate(timeout=180)
        assert proc.returncode == 0
    ml = mlflow_client(embedded(tracking))
    logged = [r.data.tags["qmlops.job_id"] for r in all_runs(ml)]
    assert sorted(logged) == sorted(ids)
    assert pending(client.ledger)["count"] == 0


def test_engine_host_sends_jobs_it_ran(tracking: Path, client: Client) -> None:
    """A real ``qmlops engine`` process runs the job and sends it to MLflow; no client waits."""
    from qmlops_testing import start_engine

    env = {**os.environ, "QMLOPS_HOME": str(tracking)}
    engine = start_engine(env, stdout=subprocess.DEVNULL)
    try:
        wait_for(client.engine_alive, 60, "the engine host")
        job = client.submit(BELL_QASM2, shots=100)
        wait_for(lambda: client.ledger.get_job(job.id).mlflow_run_id, 60, "the job's run")
    finally:
        engine.terminate()
        engine.wait(30)
    run_id = client.ledger.get_job(job.id).mlflow_run_id
    run = mlflow_client(embedded(tracking)).get_run(run_id)
    assert run.data.tags["qmlops.job_id"] == job.id


# -- a real MLflow tracking server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_jobs_and_runs_reach_a_real_mlflow_server(
    tracking: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    client = new_client(tracking)
    alone = client.submit(BELL_QASM2, shots=300, wait=True, seed=1)
    with track("team", run_name="epoch-1", client=client) as run:
        grouped = client.submit(GHZ3, shots=200, wait=True, seed=2)
        run.log_step(0, loss=0.25)
    # The jobs' tracking is sent in the background: wait until it has all reached the server.
    assert client.tracking.flush(timeout=60)
    alone, grouped = client.get_job(alone.id), client.get_job(grouped.id)
    ml = mlflow_client(mlflow_server.url)
    (single,) = all_runs(ml, f"tags.`qmlops.job_id` = '{alone.id}'")
    assert single.info.run_id == alone.mlflow_run_id
    assert single.data.params["shots"] == "300" and single.data.metrics["p_max"] > 0.4
    counts = json.loads(read_artifact(ml, single.info.run_id, "counts.json", tmp_path / "x"))
    assert counts["counts"] == alone.result().counts
    (team,) = all_runs(ml, f"tags.`qmlops.job_ids` = '{grouped.id}'")
    assert team.info.run_id == run.run_id == grouped.mlflow_run_id
    assert team.data.metrics["loss"] == 0.25
    png = read_artifact(ml, team.info.run_id, f"jobs/{grouped.id}/histogram.png", tmp_path / "y")
    assert png.startswith(b"\x89PNG")
    # Artifacts went through the server (proxied), into its own artifact store.
    stored = {p.name for p in (mlflow_server.folder / "artifacts").rglob("*") if p.is_file()}
    assert {"counts.json", "histogram.png", "circuit_0.qasm", "job.json"} <= stored
    # Nothing was written to a local store.
    assert not (tracking / "mlflow").exists()


@pytest.mark.slow
def test_outbox_holds_jobs_while_the_server_is_down_and_sends_each_once(
    tracking: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = MlflowServer(tmp_path / "server", port=free_port()).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        client = new_client(tracking)
        server.stop()
        jobs = [client.submit(BELL_QASM2, shots=100, wait=True, seed=i) for i in range(5)]
        # The jobs completed while MLflow was away; they wait in the outbox.
        assert all(j.state is JobState.COMPLETED for j in jobs)
        assert jobs[0].mlflow_run_id is None  # tried now, the store is down: stays queued
        waiting = pending(client.ledger)
        assert waiting["count"] == 5 and waiting["failed"] == 0
        assert "Connection" in waiting["last_error"] or "connect" in waiting["last_error"]
        finished = {j.id: client.ledger.get_job(j.id).finished_at for j in jobs}
        server.start()
        done = subprocess.run(
            [*QMLOPS, "runs", "--sync", "--json"],
            env={**os.environ, "QMLOPS_HOME": str(tracking)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        assert sorted(j for r in listed for j in r["job_ids"]) == sorted(finished)
        # Exactly once each, even after another round of sending.
        assert client.tracking.flush()
        ml = mlflow_client(server.url)
        logged = [r.data.tags["qmlops.job_id"] for r in all_runs(ml)]
        assert sorted(logged) == sorted(finished)
        for job in jobs:
            record = client.ledger.get_job(job.id)
            assert record.state is JobState.COMPLETED and record.finished_at == finished[job.id]
            assert record.mlflow_run_id and job.mlflow_run_id == record.mlflow_run_id
            transitions = [e for e in client.events(job.id) if e.kind == "transition"]
            assert transitions[-1].to_state is JobState.COMPLETED
        assert pending(client.ledger) == {"count": 0, "failed": 0, "last_error": None}
    finally:
        server.stop()


def test_secret_in_a_tracking_uri_stays_out_of_the_ledger(
    tracking: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens: the record just waits
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:tr4ck-s3cret-pw@127.0.0.1:{port}")
    client = new_client(tracking)
    job = client.submit(BELL_QASM2, shots=10, wait=True)
    assert job.record.lineage["uri"] == f"http://127.0.0.1:{port}"
    client.tracking.flush()
    waiting = pending(client.ledger)
    assert waiting["count"] == 1 and "tr4ck-s3cret-pw" not in (waiting["last_error"] or "")
    listed = subprocess.run(
        [*QMLOPS, "--log-level", "DEBUG", "runs", "--json"],
        env={**os.environ, "QMLOPS_HOME": str(tracking)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 5, listed.stderr
    assert f"tracking store http://127.0.0.1:{port}: connecting failed" in listed.stderr or (
        f"tracking store http://127.0.0.1:{port}:" in listed.stderr
    )
    assert "tr4ck-s3cret-pw" not in listed.stderr + listed.stdout
    client.close()
    for path in tracking.rglob("*"):
        if path.is_file():
            assert b"tr4ck-s3cret-pw" not in path.read_bytes(), path


@pytest.mark.postgres
def test_tracking_with_a_postgresql_ledger(
    tracking: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox lives in the ledger: on PostgreSQL too (claims under an advisory lock)."""
    monkeypatch.setenv("QMLOPS_DATABASE_URL", postgres_url)
    client = new_client(tracking)
    with track("pg", run_name="on postgres", client=client) as run:
        jobs = [client.submit(BELL_QASM2, shots=64, wait=True, seed=i) for i in range(3)]
    alone = client.submit(BELL_QASM2, shots=64, wait=True)
    assert {j.mlflow_run_id for j in jobs} == {run.run_id}
    assert alone.mlflow_run_id and alone.mlflow_run_id != run.run_id
    ml = mlflow_client(embedded(tracking))
    assert ml.get_run(run.run_id).data.tags["qmlops.job_count"] == "3"
    assert pending(client.ledger)["count"] == 0
    client.close()


def test_import_stays_light() -> None:
    """Tracking adds no MLflow import to ``import qmlops_jupyter`` or to making a client."""
    code = (
        "import sys, qmlops_jupyter, qmlops_jupyter.client, qmlops_jupyter.tracking;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'PIL')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_store_left_half_migrated_by_a_killed_process_opens_on_the_next_try(
    tmp_path: Path,
) -> None:
    """A kernel that ends while its tracking thread creates a new local store leaves Alembic's
    ``_alembic_tmp_<table>`` copy behind (seen with a SIGKILL three seconds into a new store's
    creation), and MLflow's migration then fails on it every time. The next opening, under the
    store's file lock, drops the leftover and migrates again. The factory stands in for
    ``MlflowClient``: it fails as MLflow does while such a table exists."""
    import sqlite3

    from qmlops_jupyter.tracking.mlflow_io import _open_sqlite_store

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE tags (key TEXT)")
        con.execute("CREATE TABLE _alembic_tmp_tags (key TEXT)")
    calls = []

    class Store:
        def __init__(self, tracking_uri: str) -> None:
            calls.append(tracking_uri)
            with sqlite3.connect(db) as con:
                names = [r[0] for r in con.execute("SELECT name FROM sqlite_master")]
            if "_alembic_tmp_tags" in names:
                raise RuntimeError(
                    "(sqlite3.OperationalError) table _alembic_tmp_tags already exists"
                )

        def search_experiments(self, max_results: int) -> list[Any]:
            return []

    opened = _open_sqlite_store(Store, f"sqlite:///{db}")
    assert isinstance(opened, Store) and len(calls) == 2
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"tags"}

    class Broken(Store):
        def __init__(self, tracking_uri: str) -> None:
            raise RuntimeError("database disk image is malformed")

    with pytest.raises(RuntimeError, match="malformed"):  # anything else is not repaired
        _open_sqlite_store(Broken, f"sqlite:///{db}")
