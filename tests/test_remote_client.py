"""Notebooks submit through the jupyter server that started their kernel.

Real components only: a ``jupyter server`` process with the qmlops extension, a kernel it starts
for a notebook session (``POST /api/sessions``) and driven through the kernel's websocket as
JupyterLab drives it, Aer run by the server's engine, the ledger read back from SQLite. A kernel
that no server answers for (or told ``QMLOPS_REMOTE=off``) is a real ipykernel too, started
with ``jupyter_client``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import BELL_QASM2, JupyterServer, free_port, jupyter_env, running_server

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings

BELL = f'BELL = """{BELL_QASM2}"""\n'

SUBMIT = (
    BELL
    + """
import json
import qmlops_jupyter as q

job = q.submit(BELL, shots=200, wait=True)
print("CLIENT", type(q.get_client()).__name__)
print("JOB", job.id)
print("STATE", job.state.value)
print("COUNTS", json.dumps(job.result().counts))
print("IS_JOB", isinstance(job, q.Job))
"""
)

SAME_API = (
    BELL
    + """
import json, os
import qmlops_jupyter as q
from qiskit import QuantumCircuit
from qmlops_jupyter import errors

qc = QuantumCircuit(2, name="bell")
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
objects = q.submit([qc, qc], shots=100, seed=7, tags={"from": "kernel"}, wait=True)
print("OBJECTS", objects.state.value, json.dumps(objects.result().counts))

def caught(call):
    try:
        call()
    except errors.QmlopsError as exc:
        return type(exc).__name__
    return "nothing"

done = q.jobs(limit=1)[0]
print("E_BACKEND", caught(lambda: q.submit(BELL, backend="no-such-backend")))
print("E_JOB", caught(lambda: q.get_job("no-such-job")))
print("E_CIRCUIT", caught(lambda: q.submit("OPENQASM 2.0;\\nqreg q[1];\\nnonsense q[0];\\n")))
print("E_SHOTS", caught(lambda: q.submit(BELL, shots=0)))
first = q.submit(BELL, shots=10, idempotency_key="key-1")
print("E_KEY", caught(lambda: q.submit(BELL, shots=20, idempotency_key="key-1")))
print("E_CANCEL", caught(lambda: done.cancel()))
print("E_WAIT", caught(lambda: q.get_client().wait(done.id, timeout=0)))
again = q.submit(BELL, shots=10, idempotency_key="key-1")
print("AGAIN", again.id == first.id)
print("EVENTS", " ".join(e.to_state.value for e in done.events() if e.kind == "transition"))
client = q.get_client()
print("BACKENDS", "aer" in [b.name for b in client.backends()])
print("ESTIMATE", client.estimate([qc, BELL], backend="aer", shots=100).usd)
token = open(os.environ["QMLOPS_SERVER_TOKEN_FILE"]).read().strip()
print("TOKEN_IN_ENV", any(token in value for value in os.environ.values()))
print("TOKEN_IN_REPR", token in repr(q.get_client()))
"""
)

LOCAL_AGAIN = (
    BELL
    + """
import os
import qmlops_jupyter as q

os.environ["QMLOPS_REMOTE"] = "off"
q.reset_client()
job = q.submit(BELL, shots=50, wait=True)
print("OFF", type(q.get_client()).__name__, job.state.value, job.id)
del os.environ["QMLOPS_REMOTE"]
q.reset_client()
print("ON", type(q.get_client()).__name__)
"""
)


def _printed(text: str, key: str) -> str:
    values = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(key + " ")]
    assert len(values) == 1, f"expected one {key!r} line in the kernel's output:\n{text}"
    return values[0].strip()


def _events(home: Path, job_id: str) -> tuple[Any, list[Any]]:
    """The job and its event log, read from the server's ledger."""
    url = f"sqlite:///{home / 'ledger.sqlite'}"
    client = Client(Settings.from_env(home=home, database_url=url))
    try:
        return client.ledger.get_job(job_id), client.ledger.events(job_id)
    finally:
        client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterServer, Path]]:
    """One server (QMLOPS_HOME in a temporary folder, tracking off) for the module's tests."""
    with running_server(tmp_path_factory.mktemp("remote")) as served:
        yield served


@pytest.fixture(scope="module")
def kernel(served: tuple[JupyterServer, Path]) -> str:
    server, _ = served
    return server.start_session("remote.ipynb")


def _token(home: Path) -> str:
    files = list((home / "run").glob("server-*.token"))
    assert len(files) == 1, files
    return files[0].read_text().strip()


@pytest.mark.slow
def test_a_notebook_job_is_run_by_the_server_engine(
    served: tuple[JupyterServer, Path], kernel: str
) -> None:
    server, home = served
    output, errors = server.execute(kernel, SUBMIT)
    assert not errors, "\n".join(errors)
    assert _printed(output, "CLIENT") == "RemoteClient"
    assert _printed(output, "STATE") == "COMPLETED"
    assert _printed(output, "IS_JOB") == "True"
    (counts,) = json.loads(_printed(output, "COUNTS"))
    assert sum(counts.values()) == 200
    assert set(counts) <= {"00", "11"}

    engine = server.api("GET", "/health")["engine"]["holder"]
    record, events = _events(home, _printed(output, "JOB"))
    moves = [e for e in events if e.kind == "transition"]
    assert [e.to_state.value for e in moves] == ["CREATED", "SUBMITTING", "RUNNING", "COMPLETED"]
    assert moves[0].actor == f"user:{record.owner}"
    assert {e.actor for e in moves[1:]} == {engine}, [e.actor for e in events]
    assert not any(e.actor.startswith("client:") for e in events)
    assert _token(home) not in output


@pytest.mark.slow
def test_the_remote_api_matches_the_in_process_one(
    served: tuple[JupyterServer, Path], kernel: str
) -> None:
    """Circuit objects become OpenQASM in the kernel; every error comes back as the class the
    in-process client raises; the token stays out of the environment and of all output."""
    server, home = served
    output, errors = server.execute(kernel, SAME_API)
    assert not errors, "\n".join(errors)
    state, counts = _printed(output, "OBJECTS").split(" ", 1)
    assert state == "COMPLETED"
    assert [sum(c.values()) for c in json.loads(counts)] == [100, 100]
    expected = {
        "E_BACKEND": "UnknownBackend",
        "E_JOB": "JobNotFound",
        "E_CIRCUIT": "InvalidCircuit",
        "E_SHOTS": "InvalidRequest",
        "E_KEY": "IdempotencyConflict",
        "E_CANCEL": "IllegalTransition",
        "E_WAIT": "nothing",  # a finished job needs no waiting
        "AGAIN": "True",
        "EVENTS": "CREATED SUBMITTING RUNNING COMPLETED",
        "BACKENDS": "True",
        "ESTIMATE": "0.0",  # a local simulator is free
        "TOKEN_IN_ENV": "False",
        "TOKEN_IN_REPR": "False",
    }
    assert {k: _printed(output, k) for k in expected} == expected
    assert _token(home) not in output
    assert _token(home) not in server.log_tail(10**7)


@pytest.mark.slow
def test_qmlops_remote_off_keeps_a_kernel_in_process(
    served: tuple[JupyterServer, Path], kernel: str
) -> None:
    server, home = served
    output, errors = server.execute(kernel, LOCAL_AGAIN)
    assert not errors, "\n".join(errors)
    client_type, state, job_id = _printed(output, "OFF").split()
    assert (client_type, state) == ("Client", "COMPLETED")
    assert _printed(output, "ON") == "RemoteClient"
    _, events = _events(home, job_id)
    actors = {e.actor for e in events if e.from_state is not None}
    assert len(actors) == 1 and actors.pop().startswith("client:")  # run by the kernel itself


@pytest.mark.slow
def test_a_kernel_whose_server_is_gone_runs_jobs_in_process(
    served: tuple[JupyterServer, Path], tmp_path: Path
) -> None:
    """A kernel that outlived its server keeps the variables it was started with: the URL
    answers no more (or, after a restart, refuses the old token). It falls back to the
    in-process client at once, and goes remote again when pointed at a live server."""
    server, home = served
    stale = home / "run" / "server-999999999.token"
    stale.write_text("a-token-no-server-knows")
    stale.chmod(0o600)
    env = jupyter_env(
        home,
        tmp_path,
        QMLOPS_SERVER_URL=f"http://127.0.0.1:{free_port()}/",
        QMLOPS_SERVER_TOKEN_FILE=str(stale),
    )
    live_token_file = next(p for p in (home / "run").glob("server-*.token") if p != stale)
    code = (
        BELL
        + f"""
import os, time
import qmlops_jupyter as q

started = time.monotonic()
client = q.get_client()
print("GONE", type(client).__name__, round(time.monotonic() - started, 2))
print("GONE_JOB", q.submit(BELL, shots=30, wait=True).state.value)
os.environ["QMLOPS_SERVER_URL"] = {server.base + "/"!r}
q.reset_client()
print("OLD_TOKEN", type(q.get_client()).__name__)
os.environ["QMLOPS_SERVER_TOKEN_FILE"] = {str(live_token_file)!r}
q.reset_client()
print("LIVE", type(q.get_client()).__name__)
"""
    )
    try:
        output = _run_in_kernel(env, code)
    finally:
        stale.unlink()
    client_type, seconds = _printed(output, "GONE").split()
    assert client_type == "Client"
    assert float(seconds) < 3.0
    assert _printed(output, "GONE_JOB") == "COMPLETED"
    assert _printed(output, "OLD_TOKEN") == "Client"
    assert _printed(output, "LIVE") == "RemoteClient"


def test_importing_the_package_does_not_import_httpx() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, qmlops_jupyter; print('httpx' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "QMLOPS_SERVER_URL"},
        check=True,
    )
    assert out.stdout.strip() == "False"


def _run_in_kernel(env: dict[str, str], code: str, timeout: float = 180) -> str:
    """Run ``code`` in a fresh ipykernel started with ``env`` by jupyter_client: its stream
    output (an error fails the test)."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env)
    kc = manager.client()
    output: list[str] = []
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            output.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)
    assert not errors, "\n".join(errors)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(output)


@pytest.mark.slow
def test_job_events_through_the_server_match_the_in_process_ones(
    served: tuple[JupyterServer, Path], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RemoteClient.job_events`` reads ``GET /events``: a waiting call ends when a job moves,
    changes come in order, past ``after``, for the jobs asked; the in-process client reading
    the same ledger sees the very same changes."""
    import threading
    import time

    from qmlops_jupyter import remote as remote_module
    from qmlops_jupyter.errors import InvalidRequest
    from qmlops_jupyter.remote import RemoteClient

    server, server_home = served
    (token_file,) = (server_home / "run").glob("server-*.token")
    settings = Settings.from_env(home=server_home)
    remote = RemoteClient(server.base, token_file, settings=settings)
    local = Client(settings)
    try:
        nothing, position = remote.job_events()
        assert nothing == [] and position <= local.job_events()[1]
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(remote.job_events(position, 30)))
        begun = time.monotonic()
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # nothing moved yet
        job = server.api("POST", "/jobs", {"backend": "aer", "circuits": [BELL_QASM2], "shots": 20})
        waiter.join(30)
        assert not waiter.is_alive() and time.monotonic() - begun < 8
        (first, after) = got[0]
        assert first and first[0]["job_id"] == job["id"] and first[0]["new_state"] == "CREATED"
        assert after >= first[-1]["seq"]

        # Follow that job alone to its end, as a monitor would.
        seen = list(first)
        while seen[-1]["new_state"] != "COMPLETED":
            more, after = remote.job_events(after, wait=10, job_ids=[job["id"]])
            assert more, "no change within 10 s"
            seen.extend(more)
        assert [e["new_state"] for e in seen] == ["CREATED", "SUBMITTING", "RUNNING", "COMPLETED"]
        assert {e["job_id"] for e in seen} == {job["id"]}
        in_process, _ = local.job_events(position, job_ids=[job["id"]])
        assert in_process == seen

        # Nothing more: the wait runs out with nothing, and a long wait is made of short polls.
        monkeypatch.setattr(remote_module, "MAX_EVENTS_WAIT", 0.2)
        calls = []
        real_call = remote._call
        monkeypatch.setattr(remote, "_call", lambda *a, **k: calls.append(k) or real_call(*a, **k))
        begun = time.monotonic()
        assert remote.job_events(after, wait=0.7, job_ids=[job["id"]]) == ([], after)
        assert time.monotonic() - begun >= 0.6 and len(calls) >= 3
        assert all(c["extra_time"] <= 0.2 for c in calls)
        with pytest.raises(InvalidRequest):
            remote.job_events(-1)
    finally:
        remote.close()
        local.close()
