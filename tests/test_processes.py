"""Real processes: `qmlops engine` killed with SIGKILL mid-run and restarted; two engines on
one ledger; SIGTERM stops an engine cleanly; 20 concurrent submits with one idempotency key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from qmlops_testing import (
    BELL_QASM2,
    QMLOPS,
    slow_circuits,
    start_engine,
    submit_together,
    wait_for,
)

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.states import JobState

S = JobState


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return {**os.environ, "QMLOPS_HOME": str(home), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_engine_killed_mid_run_recovers_the_job(client: Client, env, procs) -> None:
    job = client.submit(slow_circuits(count=4), shots=20, seed=11)
    first = start_engine(env, "--lease-ttl", "30")
    procs.append(first)
    wait_for(lambda: job.state is S.RUNNING, 60, "the first engine to start the job")
    time.sleep(0.5)  # well inside the several-second run
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert job.state is S.RUNNING  # nothing finished it
    # The lease (30 s) has not expired; the new engine sees its predecessor's process is gone
    # and takes the job back at once.
    second = start_engine(env, "--lease-ttl", "30")
    procs.append(second)
    wait_for(lambda: job.state.terminal, 90, "the restarted engine to finish the job")
    record = job.refresh()
    assert record.state is S.COMPLETED, record.error
    assert len(record.result.counts) == 4
    assert all(sum(c.values()) == 20 for c in record.result.counts)
    with client.ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_results")).scalar() == 1
    events = client.events(job.id)
    moves = [(e.from_state, e.to_state) for e in events if e.kind == "transition"]
    assert (S.RUNNING, S.SUBMITTING) in moves  # the cut-off run was re-run
    assert any(e.kind == "recovered" for e in events)
    holders = {e.actor for e in events if e.kind == "transition" and e.from_state}
    assert len(holders) == 2  # the dead engine, then the new one
    second.send_signal(signal.SIGTERM)
    assert second.wait(20) == 0


def test_two_engines_never_advance_the_same_job(client: Client, env, procs) -> None:
    for _ in range(2):
        procs.append(start_engine(env, "--lease-ttl", "10"))
    jobs = [client.submit(BELL_QASM2, shots=32, seed=i, name=f"j{i}") for i in range(30)]
    wait_for(lambda: all(j.state.terminal for j in jobs), 120, "all jobs to finish")
    for job in jobs:
        assert job.state is S.COMPLETED
        events = client.events(job.id)
        actors = {e.actor for e in events if e.kind == "transition" and e.from_state}
        assert len(actors) == 1, (job.id, events)
        assert not any(e.kind == "lease" for e in events)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.wait(20) == 0


def test_sigterm_stops_engine_cleanly_and_frees_leases(client: Client, env, procs) -> None:
    engine = start_engine(env)
    procs.append(engine)
    wait_for(lambda: client.engine_alive(), 30, "the engine heartbeat")
    engine.send_signal(signal.SIGTERM)
    assert engine.wait(20) == 0
    stderr = engine.stderr.read().decode()
    assert "stopping" in stderr
    assert not client.engine_alive()


def test_engine_logs_transitions_as_json(client: Client, env, procs) -> None:
    import json

    engine = start_engine(env)
    procs.append(engine)
    job = client.submit(BELL_QASM2, shots=16)
    wait_for(lambda: job.state.terminal, 60, "the job")
    engine.send_signal(signal.SIGTERM)
    engine.wait(20)
    lines = [
        json.loads(line)
        for line in engine.stderr.read().decode().splitlines()
        if line.startswith("{")
    ]
    moves = [r for r in lines if r.get("event") == "transition" and r.get("job_id") == job.id]
    assert {(r["old_state"], r["new_state"]) for r in moves} >= {
        ("CREATED", "SUBMITTING"),
        ("RUNNING", "COMPLETED"),
    }
    assert all(r["backend"] == "aer" for r in moves)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_twenty_concurrent_submits_with_one_key_make_one_job(
    home: Path, tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """Twenty `qmlops submit` processes at once, one idempotency key: one job, one id."""
    url = None if database == "sqlite" else request.getfixturevalue("postgres_url")
    settings = Settings.from_env(home=home, database_url=url)
    Client(settings).ledger.close()  # migrate once, up front
    circuit = tmp_path / "bell.qasm"
    circuit.write_text(BELL_QASM2)
    env = {"QMLOPS_HOME": str(home)}
    if url:
        env["QMLOPS_DATABASE_URL"] = url
    args = ["submit", str(circuit), "--shots", "8", "--idempotency-key", "same-key", "--json"]
    outcomes = submit_together(env, args, 20, tmp_path / "go")
    assert [code for code, _, _ in outcomes] == [0] * 20, [e.decode()[-300:] for *_, e in outcomes]
    import json

    ids = {json.loads(out)["id"] for _, out, _ in outcomes}
    assert len(ids) == 1
    check = Client(settings)
    with check.ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM job_payloads")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM job_events")).scalar() == 1
    check.ledger.close()


def test_kernel_killed_while_waiting_does_not_strand_its_job(client: Client, env) -> None:
    """A notebook kernel that dies while running a local job in-process holds a lease; the next
    waiter sees the holder's process is gone and takes the job over at once."""
    script = (
        "import qmlops_jupyter as q\n"
        "from qmlops_testing import slow_circuits\n"
        "q.submit(slow_circuits(count=4), shots=10, wait=True)\n"
    )
    tests_dir = str(Path(__file__).parent)
    kernel = subprocess.Popen([sys.executable, "-c", script], env={**env, "PYTHONPATH": tests_dir})
    try:
        wait_for(
            lambda: any(j.record.state is S.RUNNING for j in client.jobs()),
            60,
            "the kernel to start its job",
        )
    finally:
        kernel.kill()
        kernel.wait(10)
    job = client.jobs()[0]
    assert client.ledger.lease_holder(job.id).startswith("client:")
    started = time.monotonic()
    result = subprocess.run(
        [*QMLOPS, "wait", job.id, "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 25  # not the 30 s lease
    assert job.refresh().state is S.COMPLETED
