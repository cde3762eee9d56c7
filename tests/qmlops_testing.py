"""Test doubles and helpers shared by the tests (importable because pytest puts tests/ on the
path; not a package, so PennyLane's top-level ``tests`` package cannot shadow it).

The fake backends here are providers that do not exist: they stand in for a remote QPU queue
so the engine's paths (queueing, polling, re-attach, every error class) can be exercised
deterministically. They are never used where a test is about a real backend (Aer).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
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

GHZ3_QASM2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[3];
creg c[3];
h q[0];
cx q[0],q[1];
cx q[1],q[2];
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


def use_this_python_for_kernels(scratch: Any, monkeypatch: Any) -> str:
    """Make the ``python3`` kernel run this interpreter (the venv's, where qmlops_jupyter is
    installed), for this process and the subprocesses it starts; returns the kernel's name.

    jupyter_client already falls back to this interpreter's ipykernel when no ``python3``
    kernelspec is installed, and a spec whose command is a bare ``python`` runs
    ``sys.executable``. Only a spec pinned to another interpreter (say, in the user's Jupyter
    data folder) needs overriding: a kernelspec in a private data folder (``scratch``) wins."""
    import json
    from pathlib import Path

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec("python3").argv
    except NoSuchKernel:
        argv = []
    bare = {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if argv and (argv[0] in bare or Path(argv[0]).resolve() == Path(sys.executable).resolve()):
        return "python3"
    data_dir = Path(scratch) / "jupyter-data"
    spec_dir = data_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data_dir))
    return "python3"


# -- a jupyter server with the qmlops extension ------------------------------------------------


def jupyter_env(home: Any, scratch: Any, **extra: str) -> dict[str, str]:
    """The environment of a ``jupyter server`` (and so of its kernels) on ``home``, with Jupyter's
    and IPython's per-user state in ``scratch`` and nothing inherited that would point it at
    another ledger, server or notebook. Tracking is off unless ``extra`` says otherwise."""
    from pathlib import Path

    scratch = Path(scratch)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QMLOPS_", "MLFLOW_", "JPY_"))
        and k not in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR")
    }
    env.update(
        QMLOPS_HOME=str(home),
        QMLOPS_TRACKING="off",
        MLFLOW_DISABLE_TELEMETRY="true",
        JUPYTER_RUNTIME_DIR=str(scratch / "jupyter-runtime"),
        JUPYTER_CONFIG_DIR=str(scratch / "jupyter-config"),
        IPYTHONDIR=str(scratch / "ipython"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextmanager
def running_server(scratch: Any) -> Iterator[tuple[JupyterServer, Any]]:
    """A real ``jupyter server`` on ``scratch/home`` (QMLOPS_HOME; tracking off) for a test
    module, stopped (with every kernel it started) at the end; yields it and its home."""
    home = scratch / "home"
    server = JupyterServer(scratch / "root", jupyter_env(home, scratch), scratch / "server.log")
    try:
        server.start()
        yield server, home
    finally:
        server.stop()


class JupyterServer:
    """A real ``jupyter server`` process (the qmlops extension is enabled on install) on
    127.0.0.1 with token auth, spoken to as JupyterLab does: REST, a kernel's websocket, the
    event websocket. It can be killed (SIGKILL) and started again on the same port and home.
    ``stop()`` also kills every kernel it started, even one a killed server left behind."""

    def __init__(self, root: Any, env: dict[str, str], log_path: Any) -> None:
        import uuid
        from pathlib import Path

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.log_path = Path(log_path)
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sessions: list[str] = []
        #: Process ids of the kernels started through :meth:`start_session`.
        self.kernel_pids: list[int] = []

    #: The jupyter subcommand started (``lab`` for JupyterLab), and its own extra options.
    app = "server"
    extra_args: tuple[str, ...] = ()

    def start(self, timeout: float = 120) -> JupyterServer:
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            self.app,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.sessions = []
        self.wait_ready(timeout)
        return self

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 60,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, JSON body)``; error statuses are returned, not raised."""
        import json
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers=headers
            or {"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """A qmlops API call that must succeed: its JSON."""
        status, data = self.request(method, f"/qmlops/api/v1{path}", body, timeout)
        assert status < 400, f"{method} {path}: {status} {data}\n{self.log_tail(2000)}"
        return data

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the server answers and its qmlops engine has ticked."""

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"jupyter server exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status, data = self.request("GET", "/qmlops/api/v1/health", timeout=5)
            except OSError:
                return False
            return status == 200 and bool(data.get("engine", {}).get("ok"))

        wait_for(ready, timeout, "jupyter server to answer /qmlops/api/v1/health")

    def start_session(self, path: str = "remote.ipynb", kernel: str = "python3") -> str:
        """A notebook session as JupyterLab opens one: its kernel's id (the kernel's process id
        is kept so :meth:`stop` can always end it)."""
        status, model = self.request(
            "POST",
            "/api/sessions",
            {"path": path, "name": path, "type": "notebook", "kernel": {"name": kernel}},
        )
        assert status == 201, f"POST /api/sessions: {status} {model}\n{self.log_tail()}"
        self.sessions.append(model["id"])
        kernel_id = model["kernel"]["id"]
        output, errors = self.execute(kernel_id, "import os; print('PID', os.getpid())")
        assert not errors, errors
        self.kernel_pids.append(int(output.split()[1]))
        return kernel_id

    def execute(self, kernel_id: str, code: str, timeout: float = 180) -> tuple[str, list[str]]:
        """Run ``code`` in the kernel through its websocket (message protocol v5): the stream
        output and the errors (tracebacks) of that execution."""
        import asyncio

        return asyncio.run(self._execute(kernel_id, code, timeout))

    async def _execute(self, kernel_id: str, code: str, timeout: float) -> tuple[str, list[str]]:
        import asyncio
        import json
        import uuid
        from datetime import UTC, datetime

        from tornado.websocket import websocket_connect

        url = f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}"
        conn = await asyncio.wait_for(websocket_connect(url), timeout=30)
        msg_id = uuid.uuid4().hex
        message = {
            "header": {
                "msg_id": msg_id,
                "username": "qmlops-tests",
                "session": uuid.uuid4().hex,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": datetime.now(UTC).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
        }
        await conn.write_message(json.dumps(message))
        output: list[str] = []
        errors: list[str] = []
        reply: dict[str, Any] | None = None
        idle = False
        deadline = time.monotonic() + timeout
        try:
            # The reply comes on shell, the output on iopub: read until both the reply and
            # iopub's "idle" have arrived.
            while reply is None or not idle:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no execute_reply within {timeout} s; output so far:\n{''.join(output)}"
                    )
                raw = await asyncio.wait_for(conn.read_message(), timeout=left)
                assert raw is not None, f"the kernel websocket closed:\n{self.log_tail()}"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                content = msg.get("content", {})
                if kind == "execute_reply":
                    reply = content
                elif kind == "stream":
                    output.append(content.get("text", ""))
                elif kind == "error":
                    errors.append("\n".join(content.get("traceback", [])) or str(content))
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
        finally:
            conn.close()
        if reply.get("status") != "ok":
            errors.append(f"execute_reply: {reply}")
        return "".join(output), errors

    def children(self) -> list[int]:
        """Process ids of the server's child processes (engine workers, kernels ...)."""
        return [] if self.proc is None else child_pids(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would end it."""
        import signal

        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """Shut the kernels and the server down (SIGTERM, then SIGKILL), and kill any kernel
        still alive."""
        import contextlib
        import signal

        if self.proc is not None and self.proc.poll() is None:
            for session in self.sessions:
                with contextlib.suppress(OSError):
                    self.request("DELETE", f"/api/sessions/{session}", timeout=20)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self.kernel_pids:
            if "ipykernel" in process_cmdline(pid):  # not a recycled pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.kernel_pids = []


def parent_pids() -> dict[int, int]:
    """Every live process's parent: ``{pid: ppid}`` (from ``/proc``)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # Field 4, after the parenthesised command (which may hold spaces).
                found[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def child_pids(pid: int) -> list[int]:
    """Process ids of the live children of ``pid``."""
    return [child for child, parent in parent_pids().items() if parent == pid]


def process_cmdline(pid: int) -> str:
    """The command line of a live process ("" when it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# -- a team's hub ---------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def unavailable(message: str) -> None:
    """Fail under CI (everything the suite needs must be there), skip on a laptop without it."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def configurable_http_proxy() -> str:
    """The hub's proxy: jupyterhub/node_modules' configurable-http-proxy (``make hub-proxy``,
    which ``make test`` runs), installed here from the lock file when missing."""
    binary = REPO / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is needed to install configurable-http-proxy (make hub-proxy)")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=REPO / "jupyterhub",
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0 or not binary.exists():
            unavailable(f"npm could not install configurable-http-proxy: {done.stderr[-300:]}")
    return str(binary)


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the test server (``QMLOPS_TEST_POSTGRES_URL``), dropped
    afterwards; its URL. Under CI a missing server fails the test."""
    import sqlalchemy as sa

    from qmlops_jupyter.ledger.store import normalise_url

    base = sa.engine.make_url(
        normalise_url(os.environ.get("QMLOPS_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    )
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {base.host}:{base.port} is not usable: {type(exc).__name__}")
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
