"""The team deployment for real: ``jupyterhub/jupyterhub_config.py`` started as ``jupyterhub`` on
loopback, with its configurable-http-proxy, the ``qmlops`` service on a fresh PostgreSQL ledger,
the ``mlflow`` service, the idle culler, and users' servers spawned by the hub.

Users: alice and bob (role user), carol (viewer, granted alice's work), dave (admin). They log in
with the shared-password authenticator, which the config allows only with QMLOPS_HUB_TESTING=1;
the tests hold each user's hub API token and call the qmlops API through the user's own server
(``/user/NAME/qmlops/api/v1/``), which forwards to the service, or at the service directly.

IonQ is reached through :mod:`qmlops_jupyter.testing.ionq_emulator`, a loopback emulator of IonQ's
v0.3 REST API (jobs queue for a few seconds, then run on Aer); the service's backends.yaml points
the QPU target ``ionq:qpu.aria-1`` at it. When CI=true, PostgreSQL missing is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from qmlops_testing import (
    child_pids,
    configurable_http_proxy,
    free_port,
    postgres_database,
    wait_for,
)

from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "jupyterhub" / "jupyterhub_config.py"
QPU = "ionq:qpu.aria-1"
IONQ_KEY = "ionq-emulator-key-5b1e"
PASSWORD = "shared-test-password"
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex  # at least 32 characters
TESTS_TOKEN = "tests-" + uuid.uuid4().hex
PROMETHEUS_TOKEN = "prometheus-" + uuid.uuid4().hex
BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    "h q[0]; cx q[0], q[1]; c = measure q;"
)
USERS = ("alice", "bob", "carol", "dave")


@dataclass
class Hub:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    state: Path
    ledger_url: str
    emulator: EmulatorProcess
    tokens: dict[str, str] = field(default_factory=dict)
    crypt_key: str = ""

    def hub_api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"token {TESTS_TOKEN}"}
        return httpx.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kw)

    def call(
        self, user: str, method: str, path: str, *, direct: bool = False, **kw: Any
    ) -> httpx.Response:
        """The qmlops API as ``user``: through their server, or at the service itself."""
        base = f"{self.url}/services/qmlops" if direct else f"{self.url}/user/{user}"
        headers = {"Authorization": f"token {self.tokens[user]}"}
        return httpx.request(
            method, f"{base}/qmlops/api/v1/{path}", headers=headers, timeout=120, **kw
        )

    def server_ready(self, user: str) -> bool:
        model = self.hub_api("GET", f"/users/{user}").json()
        return bool(model["servers"].get("", {}).get("ready"))

    def start_server(self, user: str) -> None:
        answer = self.hub_api("POST", f"/users/{user}/server")
        assert answer.status_code in (201, 202, 400), answer.text  # 400: already running
        wait_for(lambda: self.server_ready(user), 90, f"{user}'s server")

    def stop_server(self, user: str) -> None:
        answer = self.hub_api("DELETE", f"/users/{user}/server")
        assert answer.status_code in (202, 204), answer.text
        wait_for(lambda: not self.hub_api("GET", f"/users/{user}").json()["servers"], 60, "stop")

    def service_pid(self) -> int | None:
        for pid in _descendants(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"qmlops_jupyter.server.hub.service" in cmdline:
                return pid
        return None

    def job(self, user: str, job_id: str) -> dict[str, Any]:
        answer = self.call(user, "GET", f"jobs/{job_id}", direct=True)
        assert answer.status_code == 200, answer.text
        return answer.json()


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


@contextlib.contextmanager
def running_hub(root: Path, **settings: str) -> Iterator[Hub]:
    """``jupyterhub -f jupyterhub/jupyterhub_config.py`` on loopback, on fresh PostgreSQL
    databases and free ports, with the IonQ emulator behind the service's ``ionq:qpu.aria-1``;
    ``settings`` are more QMLOPS_HUB_* variables. Stopped, with everything it started."""
    state = root / "state"
    proxy = configurable_http_proxy()
    with (
        postgres_database("qmlops_hub") as ledger_url,
        postgres_database("qmlops_hub_mlflow") as mlflow_url,
    ):
        emulator = EmulatorProcess(root / "ionq", queue_seconds=4.0, api_key=IONQ_KEY).start()
        service_home = state / "qmlops"
        service_home.mkdir(parents=True)
        (service_home / "backends.yaml").write_text(
            f"backends:\n  {QPU}:\n    max_concurrent_jobs: 8\n    options:\n"
            f"      api_url: {emulator.url}\n      timeout: 5\n",
            encoding="utf-8",
        )
        port = free_port()
        crypt_key = Fernet.generate_key().decode()
        env = {
            **os.environ,
            "QMLOPS_HUB_STATE": str(state),
            "QMLOPS_HUB_PROXY": proxy,
            "QMLOPS_HUB_TEST_API_TOKEN": TESTS_TOKEN,
            "QMLOPS_HUB_PROMETHEUS_TOKEN": PROMETHEUS_TOKEN,
            "QMLOPS_DATABASE_URL": ledger_url,
            "QMLOPS_MLFLOW_BACKEND_URI": mlflow_url,
            "QMLOPS_CRYPT_KEY": crypt_key,
            "QMLOPS_HUB_PORT": str(port),
            "QMLOPS_HUB_API_PORT": str(free_port()),
            "QMLOPS_HUB_PROXY_API_PORT": str(free_port()),
            "QMLOPS_HUB_SERVICE_PORT": str(free_port()),
            "QMLOPS_HUB_MLFLOW_PORT": str(free_port()),
            "QMLOPS_LEASE_TTL": "3",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **settings,
        }
        for name in ("QMLOPS_HOME", "QMLOPS_OWNER", "QMLOPS_SERVICE_URL", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        log = root / "hub.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(CONFIG)],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        the_hub = Hub(f"http://127.0.0.1:{port}", proc, log, state, ledger_url, emulator)
        the_hub.crypt_key = crypt_key
        try:

            def service_answers() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    hub_up = the_hub.hub_api("GET", "/").status_code == 200
                    # The service answers (403 to nobody) once it listens behind the proxy.
                    health = f"{the_hub.url}/services/qmlops/qmlops/api/v1/health"
                    return hub_up and httpx.get(health, timeout=10).status_code == 403
                except httpx.HTTPError:
                    return False

            wait_for(service_answers, 60, "the hub")
            yield the_hub
        finally:
            leftovers = _descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            emulator.kill()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(
        tmp_path_factory.mktemp("hub"),
        QMLOPS_HUB_AUTHENTICATOR="shared-password",
        QMLOPS_HUB_TESTING="1",
        QMLOPS_HUB_TEST_PASSWORD=PASSWORD,
        QMLOPS_HUB_TEST_ADMIN_PASSWORD=ADMIN_PASSWORD,
        QMLOPS_HUB_USERS="alice,bob",
        QMLOPS_HUB_VIEWERS="carol",
        QMLOPS_HUB_ADMINS="dave",
        QMLOPS_HUB_GRANTS="carol=alice",
    ) as the_hub:
        for user in USERS:
            answer = the_hub.hub_api("POST", f"/users/{user}/tokens", json={"note": "tests"})
            assert answer.status_code == 201, answer.text
            the_hub.tokens[user] = answer.json()["token"]
        for user in USERS:
            the_hub.hub_api("POST", f"/users/{user}/server")
        for user in USERS:
            wait_for(lambda u=user: the_hub.server_ready(u), 90, f"{user}'s server")
        yield the_hub


def submit(hub: Hub, user: str, backend: str = "aer", **extra: Any) -> httpx.Response:
    body = {"circuits": [BELL], "backend": backend, "shots": extra.pop("shots", 100), **extra}
    query = "?wait=30" if backend == "aer" else ""
    return hub.call(user, "POST", f"jobs{query}", json=body)


def store_ionq_key(hub: Hub, user: str) -> None:
    answer = hub.call(
        user,
        "PUT",
        "credentials/ionq-main",
        json={"provider": "ionq", "secret": {"api_key": IONQ_KEY}},
    )
    assert answer.status_code in (200, 201), answer.text


# -- every user's server answers through the service --------------------------------------------


def test_each_users_server_answers_through_the_service(hub: Hub) -> None:
    holders = set()
    for user in USERS:
        answer = hub.call(user, "GET", "health")
        assert answer.status_code == 200, (user, answer.text)
        health = answer.json()
        assert health["ledger"]["url"].startswith("postgresql")
        assert health["engine"]["hosted"] and health["engine"]["running"]
        holders.add(health["engine"]["holder"])
        assert hub.call(user, "GET", "backends").status_code == 200
    # One engine for everybody: the service's, not one per user server.
    assert len(holders) == 1
    pid = hub.service_pid()
    assert pid is not None and f":{pid}:" in next(iter(holders))


# -- isolation ------------------------------------------------------------------------------------


def test_users_never_reach_each_others_jobs_credentials_or_runs(hub: Hub) -> None:
    store_ionq_key(hub, "alice")
    made = submit(hub, "alice")
    assert made.status_code == 201, made.text
    job = made.json()
    assert job["owner"] == "alice" and job["state"] == "COMPLETED"
    job_id = job["id"]

    # bob: not listed, not readable, not cancellable, not even by a prefix of its id.
    assert job_id not in [j["id"] for j in hub.call("bob", "GET", "jobs").json()["jobs"]]
    for method, path in (
        ("GET", f"jobs/{job_id}"),
        ("GET", f"jobs/{job_id[:6]}"),
        ("GET", f"jobs/{job_id}?events=true&qasm=true"),
        ("POST", f"jobs/{job_id}/cancel"),
    ):
        for direct in (False, True):
            answer = hub.call("bob", method, path, direct=direct)
            assert answer.status_code == 404, (method, path, direct, answer.text)
            assert "alice" not in answer.text
    assert hub.call("bob", "GET", "jobs?owner=alice").status_code == 403
    assert hub.call("bob", "GET", "runs?owner=alice").status_code == 403
    assert hub.call("bob", "GET", "budget?owner=alice").status_code == 403
    assert (
        hub.call("bob", "PUT", "budget?owner=alice", json={"shots_per_day": 1}).status_code == 403
    )
    assert hub.call("bob", "GET", "audit?owner=alice").status_code == 403
    # ... nor her credential: not listed, not testable, not usable for his own job.
    assert hub.call("bob", "GET", "credentials").json() == []
    assert hub.call("bob", "POST", "credentials/ionq-main/test").status_code == 404
    used = submit(hub, "bob", QPU, credential="ionq-main")
    assert used.status_code == 404 and "ionq-main" in used.json()["message"], used.text
    # ... nor her changes on the event stream.
    events = hub.call("bob", "GET", "events?after=0").json()["events"]
    assert all(e["job_id"] != job_id for e in events)
    assert any(
        e["job_id"] == job_id for e in hub.call("alice", "GET", "events?after=0").json()["events"]
    )
    # ... nor her runs: the service logs her job to the team's MLflow, as hers.

    def her_runs() -> list[dict[str, Any]]:
        answer = hub.call("alice", "GET", "runs")
        assert answer.status_code == 200, answer.text
        return answer.json()["runs"]

    wait_for(lambda: job_id in json.dumps(her_runs()), 90, "alice's job in her MLflow runs")
    assert job_id not in hub.call("bob", "GET", "runs").text


def test_a_viewer_reads_what_is_granted_and_changes_nothing(hub: Hub) -> None:
    alices = submit(hub, "alice").json()["id"]
    bobs = submit(hub, "bob").json()["id"]
    listed = {j["id"] for j in hub.call("carol", "GET", "jobs?limit=1000").json()["jobs"]}
    assert alices in listed and bobs not in listed
    assert hub.call("carol", "GET", f"jobs/{alices}").status_code == 200
    assert hub.call("carol", "GET", f"jobs/{bobs}").status_code == 404
    assert hub.call("carol", "GET", "jobs?owner=bob").status_code == 403
    refused = submit(hub, "carol")
    assert refused.status_code == 403, refused.text
    for method, path, body in (
        ("GET", "credentials", None),
        ("PUT", "credentials/mine", {"provider": "ionq", "secret": {"api_key": "x" * 12}}),
        ("POST", f"jobs/{alices}/cancel", None),
        ("PUT", "budget", {"shots_per_day": 10}),
    ):
        answer = hub.call("carol", method, path, json=body)
        assert answer.status_code == 403, (method, path, answer.text)


def test_the_admin_sees_every_job_and_no_secret(hub: Hub) -> None:
    store_ionq_key(hub, "bob")
    queued = submit(hub, "bob", QPU, shots=10, credential="ionq-main")
    assert queued.status_code == 201, queued.text
    owners = {j["owner"] for j in hub.call("dave", "GET", "jobs?limit=1000").json()["jobs"]}
    assert {"alice", "bob"} <= owners
    # Another user's job is readable, cancellable (audited), never with anyone's secret.
    job_id = queued.json()["id"]
    shown = hub.call("dave", "GET", f"jobs/{job_id}?events=true")
    assert shown.status_code == 200 and IONQ_KEY not in shown.text
    cancelled = hub.call("dave", "POST", f"jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] in ("CANCELLING", "CANCELLED")
    assert hub.call("dave", "GET", "credentials").json() == []  # his own: none
    audit = hub.call("dave", "GET", "audit?limit=1000").json()["entries"]
    actions = {(e["actor"], e["action"], e["owner"]) for e in audit}
    assert ("user:alice", "credential.stored", "alice") in actions
    assert ("admin:dave", "admin.cancel", "bob") in actions
    assert IONQ_KEY not in json.dumps(audit)
    # A user reads the entries about their own things only.
    alices = hub.call("alice", "GET", "audit").json()["entries"]
    assert alices and {e["owner"] for e in alices} == {"alice"}
    # The ledger holds ciphertext only; the hub's log holds neither secret nor key.
    assert IONQ_KEY not in hub.log.read_text(errors="replace")
    assert hub.crypt_key not in hub.log.read_text(errors="replace")


def test_a_token_without_the_service_scope_is_refused(hub: Hub) -> None:
    made = hub.hub_api(
        "POST", "/users/alice/tokens", json={"note": "narrow", "scopes": ["read:users:name!user"]}
    )
    assert made.status_code == 201, made.text
    narrow = {"Authorization": f"token {made.json()['token']}"}
    for base in (f"{hub.url}/services/qmlops", f"{hub.url}/user/alice"):
        answer = httpx.get(f"{base}/qmlops/api/v1/jobs", headers=narrow, timeout=30)
        assert answer.status_code == 403, (base, answer.text)
    assert httpx.get(f"{hub.url}/services/qmlops/qmlops/api/v1/jobs", timeout=30).status_code == 403
    # The service is a jupyter server with the qmlops API alone: nothing else opens.
    dave = {"Authorization": f"token {hub.tokens['dave']}"}
    for path in ("api/contents", "api/kernels", "api/sessions", "api/events/subscribe"):
        answer = httpx.get(f"{hub.url}/services/qmlops/{path}", headers=dave, timeout=30)
        assert answer.status_code in (403, 404), (path, answer.status_code)


# -- budgets hold per user under concurrent submissions -----------------------------------------


def test_budgets_per_user_hold_when_two_users_submit_together(hub: Hub) -> None:
    for user in ("alice", "bob"):
        store_ionq_key(hub, user)
        answer = hub.call(user, "PUT", "budget", json={"backend": QPU, "shots_per_day": 1000})
        assert answer.status_code == 200, answer.text
    spent = {u: _shots_today(hub, u) for u in ("alice", "bob")}
    results: dict[str, list[int]] = {"alice": [], "bob": []}
    go = threading.Barrier(16)

    def one(user: str) -> None:
        go.wait()
        answer = submit(hub, user, QPU, shots=200, credential="ionq-main")
        results[user].append(answer.status_code)

    threads = [threading.Thread(target=one, args=(u,)) for u in ("alice", "bob") for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for user in ("alice", "bob"):
        allowed = (1000 - spent[user]) // 200
        assert results[user].count(201) == allowed, (user, results[user])
        assert results[user].count(422) == 8 - allowed, (user, results[user])
        assert _shots_today(hub, user) <= 1000
    # An admin raises a user's budget: the user sees it in the audit log.
    raised = hub.call(
        "dave", "PUT", "budget?owner=alice", json={"backend": QPU, "shots_per_day": 10**6}
    )
    assert raised.status_code == 200, raised.text
    assert all(b["owner"] == "alice" for b in raised.json())
    audit = hub.call("dave", "GET", "audit?action=admin.budget").json()["entries"]
    assert audit[0]["owner"] == "alice" and audit[0]["actor"] == "admin:dave"
    assert hub.call("alice", "GET", "audit?action=admin.").json()["entries"][0]["action"] == (
        "admin.budget"
    )


def _shots_today(hub: Hub, user: str) -> int:
    budgets = hub.call(user, "GET", "budget").json()
    for budget in budgets:
        if budget["backend"] == QPU and budget["shots_per_day"]:
            return int(budget["shots_per_day"]["used"])
    return 0


# -- jobs and schedules live on while a user's server is stopped --------------------------------

NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "parameters",
            "metadata": {"tags": ["parameters"]},
            "outputs": [],
            "source": "label = 'default'",
        },
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "work",
            "metadata": {},
            "outputs": [],
            "source": "print('scheduled run', label)",
        },
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_jobs_and_schedules_run_while_the_users_server_is_stopped(hub: Hub) -> None:
    store_ionq_key(hub, "alice")
    job = submit(hub, "alice", QPU, shots=50, credential="ionq-main")
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    saved = hub.call(
        "alice",
        "POST",
        "pipelines",
        json={
            "notebook": "nightly.ipynb",
            "content": NOTEBOOK,
            "cron": "* * * * *",
            "parameters": {"label": "away"},
        },
    )
    assert saved.status_code == 201, saved.text
    hub.stop_server("alice")

    # Away: the service runs the job and the schedule (read at the service, as alice).
    wait_for(lambda: hub.job("alice", job_id)["state"] == "COMPLETED", 90, "the IonQ job")

    def a_run_completed() -> bool:
        runs = hub.call("alice", "GET", "pipeline-runs", direct=True).json()["pipeline_runs"]
        return any(r["state"] == "COMPLETED" for r in runs)

    wait_for(a_run_completed, 150, "the scheduled run")
    assert not hub.hub_api("GET", "/users/alice").json()["servers"]  # still away

    hub.start_server("alice")
    shown = hub.call("alice", "GET", f"jobs/{job_id}")
    assert shown.status_code == 200 and shown.json()["state"] == "COMPLETED"
    assert sum(shown.json()["result"]["counts"][0].values()) == 50
    pipelines = hub.call("alice", "GET", "pipelines").json()["pipelines"]
    assert [p["name"] for p in pipelines] == ["nightly"]
    runs = hub.call("alice", "GET", "pipeline-runs").json()["pipeline_runs"]
    assert any(r["state"] == "COMPLETED" for r in runs)
    assert hub.call("bob", "GET", "pipelines").json()["pipelines"] == []


# -- the service killed mid-job -----------------------------------------------------------------


def test_killing_the_service_mid_job_loses_nothing_and_submits_once(hub: Hub) -> None:
    store_ionq_key(hub, "alice")
    before = len(hub.emulator.jobs())
    job = submit(hub, "alice", QPU, shots=64, credential="ionq-main")
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    wait_for(lambda: hub.job("alice", job_id)["provider_job_id"] is not None, 30, "submission")
    pid = hub.service_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: hub.service_pid() not in (None, pid), 60, "the hub restarting the service")

    def done() -> bool:
        try:
            return hub.job("alice", job_id)["state"] == "COMPLETED"
        except (AssertionError, httpx.HTTPError):
            return False  # the new service still starting

    wait_for(done, 120, "the job after the restart")
    record = hub.job("alice", job_id)
    assert sum(record["result"]["counts"][0].values()) == 64
    # One submission to IonQ for the one job: the new engine re-attached, never resubmitted.
    mine = [j for j in hub.emulator.jobs() if j["id"] == record["provider_job_id"]]
    assert len(mine) == 1
    assert len(hub.emulator.jobs()) == before + 1
    # ... and it is still there for alice, through her server.
    assert hub.call("alice", "GET", f"jobs/{job_id}").json()["state"] == "COMPLETED"


# -- a notebook on a user's server submits through the service ----------------------------------


def run_in_kernel(hub: Hub, user: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a kernel that ``user``'s server starts (its Jupyter REST API and kernel
    websocket, with the user's token); the kernel's printed output."""
    from websockets.sync.client import connect

    headers = {"Authorization": f"token {hub.tokens[user]}"}
    base = f"{hub.url}/user/{user}/api/kernels"
    kernel = httpx.post(base, headers=headers, json={"name": "python3"}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": user,
            "session": uuid.uuid4().hex,
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False},
        "channel": "shell",
    }
    out: list[str] = []
    url = f"{base.replace('http', 'ws', 1)}/{kernel_id}/channels"
    try:
        with connect(url, additional_headers=headers, open_timeout=60) as ws:
            ws.send(json.dumps(request))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise AssertionError("\n".join(msg["content"]["traceback"])[-3000:])
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
            raise AssertionError(f"the kernel did not finish: {''.join(out)}")
    finally:
        httpx.delete(f"{base}/{kernel_id}", headers=headers, timeout=30)


def test_a_notebook_on_a_users_server_submits_through_the_service(hub: Hub) -> None:
    printed = run_in_kernel(
        hub,
        "bob",
        "import os, qmlops_jupyter as q\n"
        "client = q.get_client()\n"
        'job = q.submit(\'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; x q[0]; '
        "measure q[0] -> c[0];', backend='aer', shots=20, wait=True)\n"
        "print(type(client).__name__, job.id, job.record.owner, job.result().counts[0])\n"
        "print('DB' if os.environ.get('QMLOPS_DATABASE_URL') else 'no-db',"
        " 'KEY' if os.environ.get('QMLOPS_CRYPT_KEY') else 'no-key')\n",
    )
    first, second = printed.strip().splitlines()[-2:]
    kind, job_id, owner, counts = first.split(" ", 3)
    assert kind == "RemoteClient" and owner == "bob" and counts == "{'1': 20}", printed
    # The job is in the service's ledger, as bob's; the kernel holds neither ledger nor key.
    assert hub.job("bob", job_id)["state"] == "COMPLETED"
    assert hub.call("alice", "GET", f"jobs/{job_id}").status_code == 404
    assert second == "no-db no-key"


def test_a_notebooks_credentials_and_budgets_live_in_the_service(hub: Hub) -> None:
    """What the credential form and ``%qmlops creds``/``budget`` use (the client's vault and
    budgets) goes to the service's vault and ledger: nothing in the user's home."""
    printed = run_in_kernel(
        hub,
        "bob",
        "import qmlops_jupyter as q\n"
        "client = q.get_client()\n"
        f"info = client.vault.set('from-kernel', 'ionq', {{'api_key': {IONQ_KEY!r}}})\n"
        "client.set_budget(backend=None, shots_per_day=123456)\n"
        "print(info.alias, info.hint, [c.alias for c in client.vault.list()])\n"
        "print([b.shots_per_day.limit for b in client.budgets() if b.backend == '*'])\n"
        "try:\n    client.vault.resolve('from-kernel')\nexcept Exception as exc:\n"
        "    print('refused', type(exc).__name__)\n",
    )
    assert IONQ_KEY not in printed
    lines = printed.strip().splitlines()
    assert lines[-3].startswith("from-kernel …") and "'from-kernel'" in lines[-3], printed
    assert lines[-2] == "[123456]" and lines[-1] == "refused InvalidRequest", printed
    stored = [c["alias"] for c in hub.call("bob", "GET", "credentials").json()]
    assert "from-kernel" in stored
    audit = hub.call("bob", "GET", "audit?action=credential.stored").json()["entries"]
    assert audit[0]["target"] == "from-kernel" and audit[0]["actor"] == "user:bob"
    # The user's home holds no ledger row of it (no vault, no key file there).
    home = hub.state / "users" / "bob"
    for path in home.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert IONQ_KEY.encode() not in path.read_bytes(), path
    assert not list(home.rglob("vault.key"))


def test_prometheus_scrapes_the_service_with_its_own_token(hub: Hub) -> None:
    headers = {"Authorization": f"Bearer {PROMETHEUS_TOKEN}"}
    scraped = httpx.get(f"{hub.url}/services/qmlops/metrics", headers=headers, timeout=30)
    assert scraped.status_code == 200, scraped.text[:300]
    assert "quantum_jobs_total" in scraped.text and "qmlops_" in scraped.text
    for user in ("alice", "bob"):
        assert f'"{user}"' not in scraped.text  # no user as a label
    # The token opens nothing else of the service: not a user's jobs.
    jobs = httpx.get(f"{hub.url}/services/qmlops/qmlops/api/v1/jobs", headers=headers, timeout=30)
    assert jobs.status_code == 200 and jobs.json()["jobs"] == []
    assert httpx.get(f"{hub.url}/services/qmlops/metrics", timeout=30).status_code == 403


# -- a lab's login: NativeAuthenticator, as `make hub` starts it --------------------------------


def _form(browser: httpx.Client, url: str, path: str, **fields: str) -> httpx.Response:
    """Submit a hub form the way a browser does: the page first (for its _xsrf), then the POST."""
    page = browser.get(url + path)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    return browser.post(url + path, data={**fields, "_xsrf": xsrf.group(1) if xsrf else ""})


def test_a_lab_signs_up_logs_in_and_submits_through_its_server(tmp_path: Path) -> None:
    """The default authenticator (NativeAuthenticator): the admin signs up and is in at once;
    anyone else waits for the admin's approval; a logged-in browser opens JupyterLab with the
    extension and submits through its server to the service (cookie and XSRF token)."""
    password = "Lab-password-4471"
    with running_hub(tmp_path, QMLOPS_HUB_ADMINS="dave", QMLOPS_HUB_USERS="dave") as lab:
        dave = httpx.Client(follow_redirects=True, timeout=120)
        signed = _form(
            dave,
            lab.url,
            "/hub/signup",
            username="dave",
            signup_password=password,
            signup_password_confirmation=password,
        )
        assert signed.status_code == 200, signed.text[-500:]
        logged = _form(dave, lab.url, "/hub/login?next=", username="dave", password=password)
        assert logged.status_code == 200, logged.text[-500:]
        # The spawn page first, then JupyterLab itself, with the labextension in its page.
        wait_for(
            lambda: "qmlops-jupyter" in dave.get(f"{lab.url}/user/dave/lab").text, 90, "JupyterLab"
        )
        xsrf = dave.cookies.get("_xsrf", path="/user/dave/") or ""
        made = dave.post(
            f"{lab.url}/user/dave/qmlops/api/v1/jobs?wait=30",
            headers={"X-XSRFToken": xsrf},
            json={"circuits": [BELL], "backend": "aer", "shots": 10},
        )
        assert made.status_code == 201 and made.json()["owner"] == "dave", made.text

        erin = httpx.Client(follow_redirects=True, timeout=60)
        _form(
            erin,
            lab.url,
            "/hub/signup",
            username="erin",
            signup_password=password,
            signup_password_confirmation=password,
        )
        refused = _form(erin, lab.url, "/hub/login?next=", username="erin", password=password)
        assert "has not been authorized" in refused.text
        assert dave.get(f"{lab.url}/hub/authorize/erin").status_code == 200
        allowed = _form(erin, lab.url, "/hub/login?next=", username="erin", password=password)
        assert "/hub/spawn" in str(allowed.url) or "/user/erin" in str(allowed.url), allowed.url


def test_qmlops_pipeline_schedule_on_a_users_server_saves_it_in_the_service(hub: Hub) -> None:
    printed = run_in_kernel(
        hub,
        "bob",
        "import json, subprocess, sys\n"
        f"open('weekly.ipynb', 'w').write(json.dumps({NOTEBOOK!r}))\n"
        "done = subprocess.run([sys.executable, '-m', 'qmlops_jupyter.cli', 'pipeline', "
        "'schedule', 'weekly.ipynb', '--cron', '0 6 * * 1', '-p', 'label', 'w', '--json'], "
        "capture_output=True, text=True)\n"
        "print(done.returncode, json.loads(done.stdout)['name'] if done.returncode == 0 "
        "else done.stderr)\n",
    )
    assert printed.strip().splitlines()[-1] == "0 weekly", printed
    pipelines = hub.call("bob", "GET", "pipelines", direct=True).json()["pipelines"]
    saved = next(p for p in pipelines if p["name"] == "weekly")
    assert saved["schedule"]["cron"] == "0 6 * * 1" and saved["parameters"]["label"] == "w"
    # The service keeps its own copy of the notebook, under its home.
    assert Path(saved["notebook"]).is_relative_to(hub.state / "qmlops")


def test_each_users_server_streams_only_their_own_job_events(hub: Hub) -> None:
    """The sidebar's live updates in service mode: a user's server follows the service's event
    long poll and re-emits the user's job changes on its own event bus (the websocket JupyterLab
    subscribes to); another user's changes never reach it."""
    from websockets.sync.client import connect

    def subscribe(user: str) -> Any:
        url = f"{hub.url.replace('http', 'ws', 1)}/user/{user}/api/events/subscribe"
        return connect(url, additional_headers={"Authorization": f"token {hub.tokens[user]}"})

    with subscribe("alice") as alices, subscribe("bob") as bobs:
        time.sleep(1.0)  # the subscriptions attach once the sockets are open
        job_id = submit(hub, "alice").json()["id"]

        def job_events(socket: Any, seconds: float) -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    event = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
                except TimeoutError:
                    break
                if event.get("schema_id", "").endswith("/job_status/v1"):
                    seen.append(event)
                    if socket is alices and event.get("new_state") == "COMPLETED":
                        break
            return seen

        hers = job_events(alices, 30)
        assert [e["new_state"] for e in hers if e["job_id"] == job_id][-1] == "COMPLETED", hers
        assert all(e["job_id"] != job_id for e in job_events(bobs, 3))


def test_the_service_answers_under_the_hubs_public_name(hub: Hub) -> None:
    """Behind a TLS front end the hub is reached by its public name: the service (on loopback)
    answers a request under that name, with a token as ever, and without one not at all."""
    named = {"Host": "hub.example.org", "Authorization": f"token {hub.tokens['alice']}"}
    url = f"{hub.url}/services/qmlops/qmlops/api/v1/jobs"
    answer = httpx.get(url, headers=named, timeout=30)
    assert answer.status_code == 200, answer.text
    assert httpx.get(url, headers={"Host": "hub.example.org"}, timeout=30).status_code == 403
