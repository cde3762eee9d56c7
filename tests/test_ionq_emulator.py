"""The IonQ loopback emulator itself: IonQ's v0.3 routes and error bodies, the API key header,
jobs kept on disk across a restart, and every injectable fault.

Everything runs offline: the emulator is a subprocess on 127.0.0.1 (stdlib http.server, Aer)
and these tests talk to it with plain httpx calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess, start_emulator, to_qiskit

KEY = {"Authorization": "apiKey test-key"}
GHZ = {
    "target": "simulator",
    "shots": 400,
    "name": "ghz",
    "metadata": {"who": "test"},
    "input": {
        "format": "ionq.circuit.v0",
        "gateset": "qis",
        "qubits": 3,
        "circuit": [
            {"gate": "h", "target": 0},
            {"gate": "cnot", "control": 0, "target": 1},
            {"gate": "cnot", "control": 0, "target": 2},
        ],
    },
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with start_emulator(tmp_path_factory.mktemp("ionq"), queue_seconds=0.2) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _no_faults_left(emulator: EmulatorProcess) -> Iterator[None]:
    yield
    emulator.clear_faults()


def wait_status(url: str, job_id: str, statuses: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", headers=KEY).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def test_a_job_queues_runs_and_gives_a_probability_histogram(emulator) -> None:
    reply = httpx.post(f"{emulator.url}/jobs", json=GHZ, headers=KEY)
    assert reply.status_code == 200
    created = reply.json()
    assert created["status"] == "ready" and created["id"]
    job = wait_status(emulator.url, created["id"], {"completed"})
    assert job["target"] == "simulator" and job["shots"] == 400 and job["qubits"] == 3
    assert job["metadata"] == {"who": "test"} and job["circuits"] == 1
    assert job["results_url"] == f"/v0.3/jobs/{created['id']}/results"
    assert "input" not in job and "results" not in job  # the emulator's own fields stay hidden
    histogram = httpx.get(f"{emulator.url}/jobs/{created['id']}/results", headers=KEY).json()
    assert set(histogram) == {"0", "7"}  # |000> and |111>, as qubit-state integers
    assert sum(histogram.values()) == pytest.approx(1.0)
    listed = httpx.get(f"{emulator.url}/jobs", headers=KEY).json()
    assert created["id"] in [j["id"] for j in listed["jobs"]] and listed["next"] is None


def test_qubit_zero_is_the_least_significant_bit(emulator) -> None:
    body = {
        **GHZ,
        "input": {
            "format": "ionq.circuit.v0",
            "qubits": 3,
            "circuit": [{"gate": "x", "target": 1}],
        },
    }
    job_id = httpx.post(f"{emulator.url}/jobs", json=body, headers=KEY).json()["id"]
    wait_status(emulator.url, job_id, {"completed"})
    assert httpx.get(f"{emulator.url}/jobs/{job_id}/results", headers=KEY).json() == {"2": 1.0}


def test_multicircuit_job_has_one_histogram_per_child(emulator) -> None:
    body = {
        "target": "simulator",
        "shots": 50,
        "input": {
            "format": "ionq.circuit.v0",
            "gateset": "qis",
            "qubits": 2,
            "circuits": [
                {"name": "a", "circuit": [{"gate": "x", "targets": [0]}]},
                {"name": "b", "circuit": [{"gate": "x", "target": 1}]},
            ],
        },
    }
    job_id = httpx.post(f"{emulator.url}/jobs", json=body, headers=KEY).json()["id"]
    job = wait_status(emulator.url, job_id, {"completed"})
    assert job["circuits"] == 2 and len(job["children"]) == 2
    results = httpx.get(f"{emulator.url}/jobs/{job_id}/results", headers=KEY).json()
    assert [results[c] for c in job["children"]] == [{"1": 1.0}, {"2": 1.0}]


@pytest.mark.parametrize("header", [None, "apiKey", "Bearer test-key", "test-key"])
def test_every_api_call_needs_the_api_key_header(emulator, header) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/x"),
        ("PUT", "/jobs/x/status/cancel"),
    ]:
        reply = httpx.request(method, emulator.url + path, headers=headers, json=GHZ)
        assert reply.status_code == 401, (method, path)
        assert reply.json() == {
            "error": "Unauthorized",
            "statusCode": 401,
            "message": "the request failed to authenticate the supplied API key",
        }


def test_only_the_configured_key_when_started_with_one(tmp_path: Path) -> None:
    with start_emulator(tmp_path, api_key="the-key") as emu:
        assert httpx.get(f"{emu.url}/jobs", headers=KEY).status_code == 401
        ok = httpx.get(f"{emu.url}/jobs", headers={"Authorization": "apiKey the-key"})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {
                "input": {
                    "format": "ionq.circuit.v0",
                    "qubits": 1,
                    "circuit": [{"gate": "toffoli", "target": 0}],
                }
            },
            "unsupported gate",
        ),
        (
            {
                "input": {
                    "format": "ionq.circuit.v0",
                    "qubits": 1,
                    "circuit": [{"gate": "x", "target": 3}],
                }
            },
            "outside",
        ),
        ({"shots": 0}, "shots"),
        ({"metadata": {"n": 1}}, "strings"),
        ({"target": "qpu.nowhere-1", "input": {"qubits": 0}}, "qubits"),
    ],
)
def test_bad_jobs_are_refused_with_ionq_error_bodies(emulator, change, message) -> None:
    reply = httpx.post(f"{emulator.url}/jobs", json={**GHZ, **change}, headers=KEY)
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"] == "Bad Request" and body["statusCode"] == 400
    assert message in body["message"]


def test_unknown_job_is_404_and_early_results_are_refused(emulator) -> None:
    assert httpx.get(f"{emulator.url}/jobs/nope", headers=KEY).status_code == 404
    emulator.inject({"on": "run", "failure": {"code": "PreflightError", "error": "no"}})
    job_id = httpx.post(f"{emulator.url}/jobs", json=GHZ, headers=KEY).json()["id"]
    assert httpx.get(f"{emulator.url}/jobs/{job_id}/results", headers=KEY).status_code == 400
    job = wait_status(emulator.url, job_id, {"failed"})
    assert job["failure"] == {"code": "PreflightError", "error": "no"}


def test_cancel_a_queued_job(tmp_path: Path) -> None:
    with start_emulator(tmp_path, queue_seconds=30) as emu:
        job_id = httpx.post(f"{emu.url}/jobs", json=GHZ, headers=KEY).json()["id"]
        reply = httpx.put(f"{emu.url}/jobs/{job_id}/status/cancel", headers=KEY)
        assert reply.json() == {"id": job_id, "status": "canceled"}
        assert emu.job(job_id)["status"] == "canceled"


def test_jobs_survive_a_restart_and_queued_ones_still_run(tmp_path: Path) -> None:
    emu = EmulatorProcess(tmp_path, queue_seconds=1.0).start()
    try:
        job_id = httpx.post(f"{emu.url}/jobs", json=GHZ, headers=KEY).json()["id"]
        emu.kill()  # SIGKILL while the job is queued
        stored = json.loads((tmp_path / "jobs" / f"{job_id}.json").read_text())
        assert stored["status"] == "ready"
        assert not list((tmp_path / "jobs").glob("*.tmp"))
        port = emu.port
        emu.start()
        assert emu.port == port  # same address: clients holding the URL carry on
        job = wait_status(emu.url, job_id, {"completed"})
        assert job["shots"] == 400
        assert [j["id"] for j in emu.jobs()] == [job_id]
        assert emu.submission_count() == 1
    finally:
        emu.kill()


def test_rate_limit_fault_sends_retry_after_then_clears(emulator) -> None:
    emulator.inject({"on": "POST /v0.3/jobs", "status": 429, "retry_after": 2, "times": 2})
    for _ in range(2):
        reply = httpx.post(f"{emulator.url}/jobs", json=GHZ, headers=KEY)
        assert reply.status_code == 429 and reply.headers["Retry-After"] == "2"
        assert reply.json()["error"] == "Too Many Requests"
    assert httpx.post(f"{emulator.url}/jobs", json=GHZ, headers=KEY).status_code == 200
    assert emulator.stats()["faults"] == []


def test_faults_match_method_and_path(emulator) -> None:
    emulator.inject({"on": "GET /v0.3/jobs/*", "status": 500})
    assert httpx.get(f"{emulator.url}/jobs", headers=KEY).status_code == 200  # not matched
    assert httpx.get(f"{emulator.url}/jobs/abc", headers=KEY).status_code == 500
    emulator.inject({"on": "*", "status": 401})
    assert httpx.get(f"{emulator.url}/jobs", headers=KEY).status_code == 401


def test_reset_after_accept_records_the_job_then_drops_the_connection(emulator) -> None:
    before = emulator.submission_count()
    emulator.inject({"on": "POST /v0.3/jobs", "reset": True, "after_accept": True})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(f"{emulator.url}/jobs", json=GHZ, headers=KEY)
    assert emulator.submission_count() == before + 1
    emulator.inject({"on": "POST /v0.3/jobs", "reset": True})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(f"{emulator.url}/jobs", json=GHZ, headers=KEY)
    assert emulator.submission_count() == before + 1  # a plain reset records nothing


def test_delay_fault_trips_a_client_timeout(emulator) -> None:
    emulator.inject({"on": "GET /v0.3/jobs", "delay": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{emulator.url}/jobs", headers=KEY, timeout=0.3)


def test_ionq_circuit_back_to_qiskit() -> None:
    qc = to_qiskit(
        [
            {"gate": "h", "target": 0},
            {"gate": "cnot", "controls": [0], "target": 1},
            {"gate": "rz", "target": 1, "rotation": 0.5},
            {"gate": "swap", "targets": [0, 1]},
            {"gate": "vi", "target": 0},
        ],
        2,
    )
    assert dict(qc.count_ops()) == {
        "h": 1,
        "cx": 1,
        "rz": 1,
        "swap": 1,
        "sxdg": 1,
        "measure": 2,
        "barrier": 1,
    }


def test_listens_on_loopback_only(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmlops_jupyter.testing.ionq_emulator",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "loopback" in result.stderr
