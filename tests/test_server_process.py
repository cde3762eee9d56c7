"""The jupyter server as a process: a crash in the middle of a job, and live job events.

Real components only: ``jupyter server`` processes with the qmlops extension (their engine runs
Aer in its worker processes), SIGKILL, a restart on the same ``QMLOPS_HOME``, the server's event
websocket (``/api/events/subscribe``) read as JupyterLab reads it, and an in-process client in
this test's own process making transitions on the same ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from qmlops_testing import (
    BELL_QASM2,
    JupyterServer,
    jupyter_env,
    process_cmdline,
    slow_circuits,
    wait_for,
)

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.states import JobState

S = JobState
JOB_STATUS = "https://events.qmlops-jupyter.dev/job_status/v1"


@pytest.fixture
def server(home: Path, tmp_path: Path) -> Iterator[JupyterServer]:
    """A server on ``home`` (tracking off), not started yet; always stopped afterwards."""
    srv = JupyterServer(tmp_path / "root", jupyter_env(home, tmp_path), tmp_path / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def ledger_client(home: Path) -> Iterator[Client]:
    """This test process's own client on the server's ledger."""
    client = Client(Settings.from_env(home=home))
    yield client
    client.close()


def _state(server: JupyterServer, job_id: str) -> str:
    return server.api("GET", f"/jobs/{job_id}")["state"]


@dataclass
class Crash:
    """A server SIGKILLed while its engine ran a job, and a new one on the same home."""

    server: JupyterServer
    ledger: Client
    job_id: str
    #: The killed server's engine (the job's lease holder when it died).
    first_engine: str
    #: The killed server's worker processes: pid -> start time.
    workers: dict[int, int | None]
    killed_at: float
    #: The job as the restarted server finished it.
    record: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    """One crash for the tests below: a job of several seconds on Aer submitted through the
    REST API, the server SIGKILLed half a second into the run, a new server started on the
    same home, and the job followed until it ends."""
    from qiskit import qasm3

    scratch = tmp_path_factory.mktemp("crash")
    home = scratch / "home"
    server = JupyterServer(scratch / "root", jupyter_env(home, scratch), scratch / "server.log")
    ledger = Client(
        Settings.from_env(home=home, database_url=f"sqlite:///{home / 'ledger.sqlite'}")
    )
    workers: dict[int, int | None] = {}
    try:
        server.start()
        circuits = [qasm3.dumps(c) for c in slow_circuits(count=3)]
        job_id = server.api("POST", "/jobs", {"backend": "aer", "circuits": circuits, "shots": 20})[
            "id"
        ]
        wait_for(lambda: _state(server, job_id) == "RUNNING", 120, "the server's engine to run it")
        first_engine = ledger.ledger.lease_holder(job_id)
        workers.update(
            (p, _started(p)) for p in server.children() if "multiprocessing" in process_cmdline(p)
        )
        time.sleep(0.5)  # well inside the run
        server.kill()
        killed = Crash(server, ledger, job_id, first_engine, dict(workers), time.monotonic())
        assert ledger.ledger.get_job(job_id).state is S.RUNNING  # nothing finished it
        server.start()
        killed.record = _wait_terminal(server, job_id, 300)
        yield killed
    finally:
        server.stop()
        for pid in _alive(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ledger.close()


@pytest.mark.slow
def test_a_server_killed_mid_job_finishes_it_once_after_restart(crash: Crash) -> None:
    """The new server's engine takes the job back from the dead one and runs it again (a
    simulator is safe to run again): one result, COMPLETED once, a 'recovered' note."""
    record, job_id = crash.record, crash.job_id
    assert record["state"] == "COMPLETED", record.get("error")
    assert [sum(c.values()) for c in record["result"]["counts"]] == [20, 20, 20]

    new_engine = crash.server.api("GET", "/health")["engine"]["holder"]
    assert new_engine != crash.first_engine
    ledger = crash.ledger.ledger
    with ledger.engine.connect() as conn:
        results = conn.execute(
            sa.text("SELECT count(*) FROM job_results WHERE job_id = :id"), {"id": job_id}
        ).scalar()
    assert results == 1
    events = ledger.events(job_id)
    moves = [(e.from_state, e.to_state) for e in events if e.kind == "transition"]
    assert [m for m in moves if m[1] is S.COMPLETED] == [(S.RUNNING, S.COMPLETED)]
    assert (S.RUNNING, S.SUBMITTING) in moves  # taken back and run again
    # The run after the restart took seconds: the kill, half a second in, cut one off.
    rerun = [e.at for e in events if e.kind == "transition" and e.to_state is S.RUNNING][-1]
    done = next(e.at for e in events if e.to_state is S.COMPLETED)
    assert (done - rerun).total_seconds() > 2.0
    recovered = [e for e in events if e.kind == "recovered"]
    assert recovered and all(e.actor == new_engine for e in recovered)
    movers = [e.actor for e in events if e.kind == "transition" and e.from_state]
    assert set(movers) == {crash.first_engine, new_engine}
    assert movers[-1] == new_engine


@pytest.mark.slow
def test_a_killed_server_leaves_no_worker_processes_behind(crash: Crash) -> None:
    """The killed server's Aer workers (one was simulating) and its multiprocessing resource
    tracker exit soon after it: no orphan keeps eating the CPU the new server needs."""
    assert crash.workers, "the engine runs Aer in worker processes"
    deadline = crash.killed_at + 30
    while (alive := _alive(crash.workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, [(p, _status(p), process_cmdline(p)) for p in alive]


def _wait_terminal(server: JupyterServer, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"job {job_id} did not finish in {timeout} s\n{server.log_tail()}"
        record = server.api("GET", f"/jobs/{job_id}?wait={min(left, 60):.0f}", timeout=90)
        if S(record["state"]).terminal:
            return record


def _started(pid: int) -> int | None:
    """When the process started (clock ticks since boot): tells it from a later one that got
    the same id."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def _alive(processes: dict[int, int | None]) -> list[int]:
    return [p for p, t in processes.items() if process_cmdline(p) and _started(p) == t]


def _status(pid: int) -> str:
    """State and parent of a process, for a failure message."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return "gone"
    return " ".join(line for line in lines if line.startswith(("State:", "PPid:")))


class EventStream:
    """The server's event websocket, read in a thread of its own: every event, in order."""

    def __init__(self, server: JupyterServer) -> None:
        self.url = f"ws://127.0.0.1:{server.port}/api/events/subscribe"
        self.token = server.token
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def __enter__(self) -> EventStream:
        self._thread.start()
        assert self.opened.wait(30), f"the event websocket did not open: {self.error!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._conn is not None:
            self._loop.call_soon_threadsafe(self._conn.close)
        self._thread.join(10)

    def job(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("job_id") == job_id]

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # reported by __enter__ or by the test's asserts
            self.error = exc
            self.opened.set()

    async def _read(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        self._loop = asyncio.get_running_loop()
        request = HTTPRequest(self.url, headers={"Authorization": f"token {self.token}"})
        self._conn = await asyncio.wait_for(websocket_connect(request), 30)
        self.opened.set()
        while True:
            raw = await self._conn.read_message()
            if raw is None:
                return
            self.events.append(json.loads(raw))


@pytest.mark.slow
def test_the_event_websocket_carries_every_transition_of_every_process(
    server: JupyterServer, ledger_client: Client
) -> None:
    """A subscriber sees job_status v1 events CREATED → SUBMITTING → RUNNING → COMPLETED, once
    each and in the ledger's order, for a job submitted through the REST API (run by the
    server's engine) and for one run entirely by another process (this test's in-process
    client) on the same ledger."""
    server.start()
    with EventStream(server) as stream:
        time.sleep(0.5)  # the subscription is attached once the socket has opened
        rest_id = server.api(
            "POST", "/jobs", {"backend": "aer", "circuits": [BELL_QASM2], "shots": 64}
        )["id"]
        local = ledger_client.submit(BELL_QASM2, shots=64, wait=True)
        assert local.record.state is S.COMPLETED

        def finished(job_id: str) -> bool:
            return any(e["new_state"] == "COMPLETED" for e in stream.job(job_id))

        wait_for(lambda: finished(rest_id) and finished(local.id), 60, "both jobs' COMPLETED event")
        time.sleep(0.5)  # anything more (a repeat) would arrive now
    assert stream.error is None, stream.error

    expected = ["CREATED", "SUBMITTING", "RUNNING", "COMPLETED"]
    for job_id in (rest_id, local.id):
        seen = stream.job(job_id)
        assert [e["new_state"] for e in seen] == expected, seen
        assert [e["old_state"] for e in seen] == [None, *expected[:-1]], seen
        assert {e["schema_id"] for e in seen} == {JOB_STATUS}
        assert all(e["backend"] == "aer" for e in seen)
        logged = [e for e in ledger_client.ledger.events(job_id) if e.kind == "transition"]
        assert [e["seq"] for e in seen] == [e.seq for e in logged]
    actors = {e.actor for e in ledger_client.ledger.events(local.id) if e.from_state}
    assert len(actors) == 1 and actors.pop().startswith("client:")  # not the server's engine
