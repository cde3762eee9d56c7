"""Test doubles and helpers shared by the tests (importable because pytest puts tests/ on the
path; not a package, so PennyLane's top-level ``tests`` package cannot shadow it).

The fake backends here are providers that do not exist: they stand in for a remote QPU queue
so the engine's paths (queueing, polling, re-attach, every error class) can be exercised
deterministically. They are never used where a test is about a real backend (Aer).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Imported here, once, before any test starts an engine whose threads load backends: Qiskit
# cannot be imported for the first time from two threads at once.
import qiskit  # noqa: F401

from qmlops_jupyter.backends.base import (
    Backend,
    Capabilities,
    JobHandle,
    ProviderResult,
    ProviderState,
    ProviderStatus,
)
from qmlops_jupyter.errors import (
    AmbiguousProviderError,
    AuthProviderError,
    PermanentProviderError,
    TransientProviderError,
)

BELL_QASM2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""

BELL_QASM3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""


class FakeClock:
    """A settable clock for the ledger (leases, backoff) so tests never sleep."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(microseconds=1)  # strictly increasing, like real time
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


ERRORS = {
    "transient": TransientProviderError,
    "permanent": PermanentProviderError,
    "auth": AuthProviderError,
    "ambiguous": AmbiguousProviderError,
}


@dataclass
class CloudJob:
    provider_id: str
    counts: list[dict[str, int]]
    polls_to_run: int = 1
    polls_to_finish: int = 2
    polls: int = 0
    cancelled: bool = False
    fail_with: str | None = None


@dataclass
class FakeCloud:
    """The provider side: its jobs outlive any engine, so re-attach can find them."""

    jobs: dict[str, CloudJob] = field(default_factory=dict)
    #: What the next submits do: "ok" or an error kind; empty means "ok".
    submit_script: deque[str] = field(default_factory=deque)
    #: What the next status calls do: "ok" or an error kind.
    poll_script: deque[str] = field(default_factory=deque)
    submits: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_id(self) -> str:
        return f"fake-{next(self._ids)}"


class FakeHandle(JobHandle):
    def __init__(self, cloud: FakeCloud, provider_id: str) -> None:
        self.cloud = cloud
        self.provider_job_id = provider_id

    def status(self) -> ProviderStatus:
        with self.cloud.lock:
            if self.cloud.poll_script:
                behaviour = self.cloud.poll_script.popleft()
                if behaviour != "ok":
                    raise ERRORS[behaviour](f"fake {behaviour} error while polling")
            job = self.cloud.jobs[self.provider_job_id]
            job.polls += 1
            if job.cancelled:
                return ProviderStatus(ProviderState.CANCELLED, "cancelled at the fake provider")
            if job.polls < job.polls_to_run:
                return ProviderStatus(ProviderState.QUEUED, queue_position=3)
            if job.polls < job.polls_to_finish:
                return ProviderStatus(ProviderState.RUNNING)
            if job.fail_with:
                return ProviderStatus(ProviderState.FAILED, job.fail_with)
            return ProviderStatus(ProviderState.DONE)

    def result(self, timeout: float | None = None) -> ProviderResult:
        job = self.cloud.jobs[self.provider_job_id]
        return ProviderResult(counts=[dict(c) for c in job.counts], metadata={"fake": True})

    def cancel(self) -> None:
        with self.cloud.lock:
            self.cloud.jobs[self.provider_job_id].cancelled = True


class FakeQPU(Backend):
    """A remote, queued, re-attachable hardware backend (it only exists in tests)."""

    provider = "fake"
    description = "test double of a remote QPU"
    cloud: FakeCloud = FakeCloud()
    simulator = False

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider="fake",
            simulator=self.simulator,
            local=False,
            max_qubits=5,
            native_gates=("h", "cx"),
            supports_reattach=True,
        )

    def submit(self, circuits: Sequence[Any], shots: int, options: dict[str, Any]) -> JobHandle:
        cloud = self.cloud
        with cloud.lock:
            behaviour = cloud.submit_script.popleft() if cloud.submit_script else "ok"
            cloud.submits += 1
            if behaviour != "ok":
                raise ERRORS[behaviour](f"fake {behaviour} error while submitting")
            provider_id = cloud.next_id()
            n = [c.num_clbits for c in circuits]
            cloud.jobs[provider_id] = CloudJob(provider_id, counts=[{"0" * k: shots} for k in n])
        return FakeHandle(cloud, provider_id)

    def attach(self, provider_job_id: str, options: dict[str, Any] | None = None) -> JobHandle:
        if provider_job_id not in self.cloud.jobs:
            raise PermanentProviderError(f"no job {provider_job_id} at the fake provider")
        return FakeHandle(self.cloud, provider_job_id)


class FakeRemoteSim(FakeQPU):
    """A remote simulator (a cloud state-vector service): safe to run again."""

    simulator = True


def make_fake_backends(cloud: FakeCloud) -> tuple[type[FakeQPU], type[FakeRemoteSim]]:
    qpu = type("BoundFakeQPU", (FakeQPU,), {"cloud": cloud})
    sim = type("BoundFakeRemoteSim", (FakeRemoteSim,), {"cloud": cloud})
    return qpu, sim


def slow_circuits(count: int = 4, qubits: int = 20, depth: int = 20) -> list[Any]:
    """Circuits that keep Aer busy for about a second each on these machines."""
    from qiskit import QuantumCircuit

    circuits = []
    for k in range(count):
        qc = QuantumCircuit(qubits, name=f"slow{k}")
        for layer in range(depth):
            for q in range(qubits):
                qc.rx(0.1 * (q + layer + k + 1), q)
            for q in range(0, qubits - 1, 2):
                qc.cx(q, q + 1)
            for q in range(1, qubits - 1, 2):
                qc.cx(q, q + 1)
        qc.measure_all()
        circuits.append(qc)
    return circuits


# -- real processes ------------------------------------------------------------------------------

QMLOPS = [sys.executable, "-m", "qmlops_jupyter.cli"]


def start_engine(
    env: dict[str, str], *extra: str, stdout: Any = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """A real ``qmlops engine`` process, logging JSON at INFO to its stderr."""
    return subprocess.Popen(
        [*QMLOPS, "--log-level", "INFO", "--log-format", "json", "engine", "--tick", "0.2", *extra],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def submit_together(
    env: dict[str, str], args: list[str], count: int, go: Any
) -> list[tuple[int, bytes, bytes]]:
    """``count`` ``qmlops ARGS`` processes that start importing at once and submit together
    (each waits for the file ``go``): their exit codes, stdouts and stderrs."""
    script = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
        "from qmlops_jupyter.cli import main\n"
        f"sys.argv = ['qmlops', *{args!r}]\n"
        "main()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    time.sleep(1.0)  # let them import
    open(go, "w").close()
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` process on 127.0.0.1 with a SQLite backend store and proxied
    artifacts in ``folder``; it can be stopped and started again on the same port and store
    (about 10 s per start with one worker)."""

    def __init__(self, folder: Any, port: int | None = None) -> None:
        from pathlib import Path

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> MlflowServer:
        import urllib.request

        log = open(self.folder / "server.log", "ab")  # noqa: SIM115  (closed with the process)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "mlflow server exited: " + (self.folder / "server.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"mlflow server did not answer on {self.url} in {timeout:g} s")

    def stop(self) -> None:
        import signal

        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
