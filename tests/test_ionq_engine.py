"""`qmlops engine` processes driving the `ionq` backend against the IonQ loopback emulator.

IonQ is reached offline through :mod:`qmlops_jupyter.testing.ionq_emulator`: a subprocess on
127.0.0.1 speaking IonQ's v0.3 REST API, keeping its jobs on disk and running them on Aer after a
queue delay. backends.yaml points ``ionq:qpu.aria-1`` (a QPU target: never resubmitted blindly)
at it. Engines are real processes, killed with SIGKILL as in tests/test_processes.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import qmlops_testing
from qiskit import QuantumCircuit
from qmlops_testing import wait_for

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.states import JobState
from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess

pytestmark = pytest.mark.slow

S = JobState
QPU = "ionq:qpu.aria-1"
API_KEY = "emulator-key-7f3a"


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def start_engine(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return qmlops_testing.start_engine(env, *extra, stdout=subprocess.DEVNULL)


def write_backends(home: Path, url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        "backends:\n"
        f"  {QPU}:\n"
        "    max_concurrent_jobs: 4\n"
        "    options:\n"
        f"      api_url: {url}\n"
        "      timeout: 5\n",
        encoding="utf-8",
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _setup(
    home: Path, tmp_path: Path, queue_seconds: float, engine_key: str = API_KEY
) -> tuple[EmulatorProcess, Client, dict[str, str]]:
    emulator = EmulatorProcess(tmp_path / "ionq", queue_seconds, api_key=API_KEY).start()
    write_backends(home, emulator.url)
    client = Client(Settings.from_env(home=home))
    env = {
        **os.environ,
        "QMLOPS_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "IONQ_API_KEY": engine_key,
    }
    return emulator, client, env


@pytest.fixture
def world(home: Path, tmp_path: Path) -> Iterator[tuple[EmulatorProcess, Client, dict]]:
    emulator, client, env = _setup(home, tmp_path, queue_seconds=3.0)
    yield emulator, client, env
    emulator.kill()
    client.ledger.close()


def test_engine_killed_while_job_queued_at_ionq_completes_it_once(world, procs) -> None:
    """SIGKILL the engine while the job waits in the emulator's queue; a new engine re-attaches
    by the IonQ job id and finishes it: one submission at IonQ, one result."""
    emulator, client, env = world
    first = start_engine(env, "--lease-ttl", "30")
    procs.append(first)
    job = client.submit(bell(), backend=QPU, shots=200, name="kill-me")
    wait_for(
        lambda: job.state is S.QUEUED and emulator.submission_count() == 1,
        60,
        "the first engine to submit the job to IonQ",
    )
    (remote,) = emulator.jobs()
    assert remote["status"] == "ready"  # still queued at the emulator
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert job.refresh().provider_job_id == remote["id"]
    second = start_engine(env, "--lease-ttl", "30")
    procs.append(second)
    wait_for(lambda: job.state.terminal, 60, "the restarted engine to finish the job")
    record = job.refresh()
    assert record.state is S.COMPLETED, record.error
    (counts,) = record.result.counts
    assert sum(counts.values()) == 200
    assert set(counts) <= {"00", "11"}
    assert len(emulator.jobs()) == 1
    assert emulator.stats()["post_requests"] == 1
    events = client.events(job.id)
    assert any(e.kind == "recovered" and remote["id"] in (e.message or "") for e in events)
    second.send_signal(signal.SIGTERM)
    assert second.wait(20) == 0


def test_rate_limit_and_server_error_are_retried_with_backoff(
    home: Path, tmp_path: Path, procs
) -> None:
    """A 429 (with Retry-After) on the submit and a 500 on a status poll are transient: the
    engine backs off and carries on; IonQ gets exactly one job."""
    emulator, client, env = _setup(home, tmp_path, queue_seconds=0.5)
    try:
        emulator.inject(
            {"on": "POST /v0.3/jobs", "status": 429, "retry_after": 1},
            {"on": "GET /v0.3/jobs/*", "status": 500},
        )
        procs.append(start_engine(env))
        job = client.submit(bell(), backend=QPU, shots=100)
        wait_for(lambda: job.state.terminal, 60, "the job to finish")
        record = job.refresh()
        assert record.state is S.COMPLETED, record.error
        retries = [e.message for e in client.events(job.id) if e.kind == "retry"]
        assert any("during submit" in m and "429" in m for m in retries), retries
        assert any("during poll" in m and "500" in m for m in retries), retries
        stats = emulator.stats()
        assert stats["submissions"] == 1 and stats["post_requests"] == 2
        assert stats["faults"] == []
    finally:
        emulator.kill()
        client.ledger.close()


def test_refused_api_key_fails_the_job_with_a_clear_message(
    home: Path, tmp_path: Path, procs
) -> None:
    """The emulator accepts one key only; the engine sends another: 401, the job FAILS with an
    auth message that never shows the key."""
    wrong = "wrong-key-5ecret"
    emulator, client, env = _setup(home, tmp_path, queue_seconds=0.5, engine_key=wrong)
    try:
        engine = start_engine(env)
        procs.append(engine)
        job = client.submit(bell(), backend=QPU, shots=100)
        wait_for(lambda: job.state.terminal, 60, "the job to fail")
        record = job.refresh()
        assert record.state is S.FAILED
        assert record.error_kind == "auth"
        assert "IonQ refused the API key (401" in record.error
        assert wrong not in record.error
        assert emulator.submission_count() == 0
        engine.send_signal(signal.SIGTERM)
        engine.wait(20)
        assert wrong not in engine.stderr.read().decode()
    finally:
        emulator.kill()
        client.ledger.close()


def test_connection_reset_after_submit_needs_attention_never_resubmits(
    home: Path, tmp_path: Path, procs
) -> None:
    """The emulator records the job, then resets the connection before answering: the outcome
    is unknown, so the QPU job goes to NEEDS_ATTENTION and is never sent a second time."""
    emulator, client, env = _setup(home, tmp_path, queue_seconds=0.5)
    try:
        emulator.inject({"on": "POST /v0.3/jobs", "reset": True, "after_accept": True})
        procs.append(start_engine(env))
        job = client.submit(bell(), backend=QPU, shots=100)
        wait_for(lambda: job.state is S.NEEDS_ATTENTION, 60, "the job to need attention")
        record = job.refresh()
        assert record.error_kind == "ambiguous"
        assert "may or may not have created it" in record.error
        time.sleep(1.5)  # several engine ticks: still nothing resubmitted
        assert job.refresh().state is S.NEEDS_ATTENTION
        stats = emulator.stats()
        assert stats["submissions"] == 1 and stats["post_requests"] == 1
        (remote,) = emulator.jobs()
        assert remote["metadata"]["qmlops_job_id"] == job.id  # findable by the person
    finally:
        emulator.kill()
        client.ledger.close()
