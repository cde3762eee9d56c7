"""A loopback emulator of IonQ's REST API v0.3 (the subset qmlops uses), for tests.

Run it::

    python -m qmlops_jupyter.testing.ionq_emulator --port P --state-dir D --queue-seconds S \\
        [--api-key KEY] [--host 127.0.0.1]

It listens on 127.0.0.1 only (``--port 0`` picks a free port) and prints one ready line with its
base URL (``http://127.0.0.1:P/v0.3``). Like IonQ it needs ``Authorization: apiKey KEY`` on every
API call; it takes any non-empty key unless started with ``--api-key``.

The API (v0.3 paths and field names):

- ``POST /v0.3/jobs``: ``{"target", "shots", "name", "metadata", "input": {"format":
  "ionq.circuit.v0", "gateset": "qis", "qubits", "circuit": [...]}}`` or ``"circuits": [{"name",
  "circuit"}, ...]`` for a multicircuit job; answers ``{"id", "status": "ready", "request"}``.
- ``GET /v0.3/jobs`` lists every job received (``{"jobs": [...], "next": null}``).
- ``GET /v0.3/jobs/{id}``: ``id, status, request, name, target, metadata, shots, qubits,
  circuits, children, start, response, execution_time, predicted_execution_time, results_url,
  failure``. Statuses: ``ready`` (queued) -> ``running`` -> ``completed`` | ``failed`` |
  ``canceled``.
- ``GET /v0.3/jobs/{id}/results``: ``{"0": 0.5, "3": 0.5}`` (qubit-state integers, qubit 0 the
  least significant bit; probabilities), or ``{child_id: {...}, ...}`` for a multicircuit job.
- ``PUT /v0.3/jobs/{id}/status/cancel``: ``{"id", "status": "canceled"}``.
- Errors: ``{"error", "message", "statusCode"}``.

Jobs are JSON files in ``STATE_DIR/jobs`` (written atomically), so the emulator survives its own
restart: a job queued when it stopped runs after it starts again. A job waits
``--queue-seconds`` after it is received, then runs on Qiskit Aer (sampling ``shots`` times).

Control endpoints (no key needed; loopback only):

- ``POST /_emulator/faults`` ``{"faults": [fault, ...]}`` queues faults; ``DELETE`` clears them;
- ``GET /_emulator/stats``: ``{"submissions", "post_requests", "faults", "requests"}``.

A fault matches the next request(s) ``on`` names (``"METHOD PATH"``, the path a glob, e.g.
``"POST /v0.3/jobs"``, ``"GET /v0.3/jobs/*"``, ``"*"``), ``times`` times (default 1), and does
one of: ``{"status": 429, "retry_after": 1}`` (any status; an IonQ-style error body),
``{"reset": true}`` (drop the connection with a TCP reset, nothing done), ``{"reset": true,
"after_accept": true}`` (on a submit: record the job, then reset: the ambiguous case), ``{"delay":
S}`` (wait S seconds, then answer normally). ``{"on": "run", "failure": {"code", "error"}}``
makes the next job that runs fail with that reason. ``--faults JSON`` queues faults at start.

For tests, :func:`start_emulator` runs it as a subprocess and waits until it is ready.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API_PREFIX = "/v0.3"
ACTIVE = ("submitted", "ready", "running")
#: IonQ QIS gates the emulator runs, with how many target qubits they take.
ONE_QUBIT = frozenset({"x", "y", "z", "h", "s", "si", "t", "ti", "v", "vi", "rx", "ry", "rz"})
TWO_QUBIT = frozenset({"cnot", "swap"})
MAX_QUBITS = 29
#: Fields of a stored job that are the emulator's own (never shown through the API).
PRIVATE = ("input", "run_at", "results")


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


# -- the emulator's state ----------------------------------------------------------------------


class EmulatorState:
    """Jobs (on disk and in memory), queued faults and request counters."""

    def __init__(self, state_dir: Path, queue_seconds: float, api_key: str | None) -> None:
        self.jobs_dir = Path(state_dir) / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.queue_seconds = queue_seconds
        self.api_key = api_key
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.faults: list[dict[str, Any]] = []
        self.post_requests = 0
        self.requests: list[str] = []
        self.wake = threading.Event()
        self._load()

    def _load(self) -> None:
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                job = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a torn write cannot happen (atomic), but a stray file can
            if job.get("status") == "running":
                # Stopped mid-run: run it again (nothing of the run was kept).
                job["status"], job["run_at"] = "ready", time.time()
                self._save(job)
            self.jobs[job["id"]] = job

    def _save(self, job: dict[str, Any]) -> None:
        path = self.jobs_dir / f"{job['id']}.json"
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(job, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # -- faults --

    def take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                on = str(fault.get("on", "*"))
                if on == "run":
                    continue
                if on != "*":
                    want_method, _, pattern = on.partition(" ")
                    if want_method.upper() != method or not fnmatch.fnmatchcase(path, pattern):
                        continue
                return self._consume(fault)
        return None

    def take_run_fault(self) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                if fault.get("on") == "run":
                    return self._consume(fault)
        return None

    def _consume(self, fault: dict[str, Any]) -> dict[str, Any]:
        fault["times"] = int(fault.get("times", 1)) - 1
        if fault["times"] <= 0:
            self.faults.remove(fault)
        return dict(fault)

    # -- the API --

    def create(self, body: Any) -> dict[str, Any]:
        job = _validate_job(body)
        now = time.time()
        job_id = str(uuid.uuid4())
        job.update(
            id=job_id,
            status="ready",
            request=int(now),
            run_at=now + self.queue_seconds,
            predicted_execution_time=max(1, int(self.queue_seconds * 1000)),
            results_url=f"{API_PREFIX}/jobs/{job_id}/results",
        )
        if "circuits" in job["input"]:
            job["children"] = [str(uuid.uuid4()) for _ in job["input"]["circuits"]]
        with self.lock:
            self.jobs[job_id] = job
            self._save(job)
        self.wake.set()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(404, "Not Found", f"no job with id {job_id}")
            return dict(job)

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(404, "Not Found", f"no job with id {job_id}")
            if job["status"] in ACTIVE:
                job["status"], job["response"] = "canceled", int(time.time())
                self._save(job)
            return {"id": job_id, "status": job["status"]}

    def results(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["status"] != "completed":
            raise ApiError(
                400, "Bad Request", f"job {job_id} has no results (its status is {job['status']})"
            )
        return job["results"]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "submissions": len(self.jobs),
                "post_requests": self.post_requests,
                "faults": [dict(f) for f in self.faults],
                "requests": list(self.requests),
            }

    # -- running jobs --

    def run_forever(self, stop: threading.Event) -> None:
        # Qiskit is imported and used in this thread only: a first import of Qiskit from two
        # threads at once crashes in its native code.
        _warm_qiskit()
        while not stop.is_set():
            job = self._next_due()
            if job is None:
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            fault = self.take_run_fault()
            started = time.time()
            try:
                if fault is not None:
                    raise ApiError(
                        500,
                        str((fault.get("failure") or {}).get("code") or "InternalError"),
                        str((fault.get("failure") or {}).get("error") or "injected failure"),
                    )
                results = _run(job)
                outcome: dict[str, Any] = {"status": "completed", "results": results}
            except ApiError as exc:
                outcome = {"status": "failed", "failure": {"code": exc.error, "error": exc.message}}
            except Exception as exc:  # the emulator must outlive a bad circuit
                outcome = {
                    "status": "failed",
                    "failure": {"code": "InternalError", "error": str(exc)[:300]},
                }
            with self.lock:
                current = self.jobs.get(job["id"])
                if current is None or current["status"] != "running":
                    continue  # cancelled while it ran
                current.update(
                    outcome,
                    response=int(time.time()),
                    execution_time=max(1, int((time.time() - started) * 1000)),
                )
                self._save(current)

    def _next_due(self) -> dict[str, Any] | None:
        now = time.time()
        with self.lock:
            due = [
                j
                for j in self.jobs.values()
                if j["status"] in ("submitted", "ready") and j.get("run_at", 0) <= now
            ]
            if not due:
                return None
            job = min(due, key=lambda j: j["run_at"])
            job["status"], job["start"] = "running", int(now)
            self._save(job)
            return dict(job)


def public(job: dict[str, Any]) -> dict[str, Any]:
    """A stored job as IonQ's GET /jobs/{id} shows it."""
    shown = {k: v for k, v in job.items() if k not in PRIVATE}
    circuits = job["input"].get("circuits")
    shown["circuits"] = len(circuits) if circuits is not None else 1
    return shown


def _validate_job(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", "the body must be a JSON object")
    program = body.get("input")
    if not isinstance(program, dict):
        raise ApiError(400, "Bad Request", "input is required")
    if program.get("format", "ionq.circuit.v0") != "ionq.circuit.v0":
        raise ApiError(400, "Bad Request", f"unsupported input format {program.get('format')!r}")
    if program.get("gateset", "qis") != "qis":
        raise ApiError(400, "Bad Request", "the emulator runs the qis gateset only")
    qubits = program.get("qubits")
    if not isinstance(qubits, int) or not 1 <= qubits <= MAX_QUBITS:
        raise ApiError(400, "Bad Request", f"qubits must be 1..{MAX_QUBITS}, not {qubits!r}")
    if "circuits" in program:
        circuits = program["circuits"]
        if not isinstance(circuits, list) or not circuits:
            raise ApiError(400, "Bad Request", "circuits must be a non-empty list")
        for entry in circuits:
            if not isinstance(entry, dict):
                raise ApiError(400, "Bad Request", "each entry of circuits must be an object")
            _validate_gates(entry.get("circuit"), int(entry.get("qubits") or qubits))
    else:
        _validate_gates(program.get("circuit"), qubits)
    shots = body.get("shots", 100)
    if not isinstance(shots, int) or shots < 1:
        raise ApiError(400, "Bad Request", f"shots must be a positive integer, not {shots!r}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ApiError(400, "Bad Request", "metadata values must be strings")
    if len(metadata) > 10:
        raise ApiError(400, "Bad Request", "metadata takes at most 10 keys")
    target = body.get("target", "simulator")
    if target != "simulator" and not str(target).startswith("qpu."):
        raise ApiError(400, "Bad Request", f"unknown target {target!r}")
    return {
        "name": body.get("name"),
        "target": target,
        "shots": shots,
        "metadata": metadata,
        "qubits": qubits,
        "input": program,
    }


def _validate_gates(gates: Any, qubits: int) -> None:
    if not isinstance(gates, list):
        raise ApiError(400, "Bad Request", "circuit must be a list of gates")
    for gate in gates:
        if not isinstance(gate, dict) or not isinstance(gate.get("gate"), str):
            raise ApiError(400, "Bad Request", f"malformed gate {gate!r}")
        name = gate["gate"]
        if name not in ONE_QUBIT | TWO_QUBIT:
            raise ApiError(400, "Bad Request", f"unsupported gate {name!r}")
        used = _targets(gate) + _controls(gate)
        if not used or any(not isinstance(q, int) or not 0 <= q < qubits for q in used):
            raise ApiError(
                400, "Bad Request", f"gate {gate!r} acts on qubits outside 0..{qubits - 1}"
            )
        if len(set(used)) != len(used):
            raise ApiError(400, "Bad Request", f"gate {gate!r} uses a qubit twice")
        if name in ("rx", "ry", "rz") and not isinstance(gate.get("rotation"), int | float):
            raise ApiError(400, "Bad Request", f"gate {gate!r} needs a numeric rotation")
        if name == "swap" and len(_targets(gate)) != 2:
            raise ApiError(400, "Bad Request", "swap takes two targets")
        if name == "cnot" and (len(_targets(gate)) != 1 or not _controls(gate)):
            raise ApiError(400, "Bad Request", "cnot takes a control and a target")


def _targets(gate: dict[str, Any]) -> list[Any]:
    return (
        list(gate["targets"])
        if "targets" in gate
        else ([gate["target"]] if "target" in gate else [])
    )


def _controls(gate: dict[str, Any]) -> list[Any]:
    return (
        list(gate["controls"])
        if "controls" in gate
        else ([gate["control"]] if "control" in gate else [])
    )


def to_qiskit(gates: list[dict[str, Any]], qubits: int) -> Any:
    """An ``ionq.circuit.v0`` QIS circuit as a Qiskit circuit measuring every qubit."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import library as lib

    simple = {
        "x": lib.XGate,
        "y": lib.YGate,
        "z": lib.ZGate,
        "h": lib.HGate,
        "s": lib.SGate,
        "si": lib.SdgGate,
        "t": lib.TGate,
        "ti": lib.TdgGate,
        "v": lib.SXGate,
        "vi": lib.SXdgGate,
    }
    rotations = {"rx": lib.RXGate, "ry": lib.RYGate, "rz": lib.RZGate}
    qc = QuantumCircuit(qubits)
    for gate in gates:
        name, targets, controls = gate["gate"], _targets(gate), _controls(gate)
        if name == "swap":
            op: Any = lib.SwapGate()
        elif name == "cnot":
            op = lib.XGate()
        elif name in rotations:
            op = rotations[name](float(gate["rotation"]))
        else:
            op = simple[name]()
        if controls:
            op = op.control(len(controls))
        qc.append(op, [*controls, *targets])
    qc.measure_all()
    return qc


def _run(job: dict[str, Any]) -> dict[str, Any]:
    """Sample the job's circuit(s) on Aer; return IonQ-style probability histograms."""
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    program = job["input"]
    shots = int(job["shots"])
    if "circuits" in program:
        entries = [
            (e["circuit"], int(e.get("qubits") or program["qubits"])) for e in program["circuits"]
        ]
    else:
        entries = [(program["circuit"], int(program["qubits"]))]
    circuits = [to_qiskit(gates, n) for gates, n in entries]
    simulator = AerSimulator()
    result = simulator.run(
        transpile(circuits, simulator, optimization_level=0), shots=shots
    ).result()
    histograms = []
    for i in range(len(circuits)):
        counts = result.get_counts(i)
        histograms.append(
            {str(int(key.replace(" ", ""), 2)): n / shots for key, n in sorted(counts.items())}
        )
    if "circuits" in program:
        return dict(zip(job["children"], histograms, strict=True))
    return histograms[0]


# -- HTTP --------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    server_version = "IonQEmulator/0.3"
    error_content_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        body = self._read_body()
        try:
            if path.startswith("/_emulator/"):
                self._control(method, path, body)
                return
            fault = state.take_fault(method, path)
            with state.lock:
                state.requests.append(f"{method} {path}")
                if method == "POST" and path == f"{API_PREFIX}/jobs":
                    state.post_requests += 1
            if fault is not None and self._apply_fault(fault, method, path, body):
                return
            self._check_key()
            self._send(200, self._api(method, path, body))
        except ApiError as exc:
            self._send(
                exc.status,
                {"error": exc.error, "message": exc.message, "statusCode": exc.status},
                headers=getattr(exc, "headers", None),
            )

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return ApiError(400, "Bad Request", "the body is not JSON")

    def _check_key(self) -> None:
        header = self.headers.get("Authorization") or ""
        scheme, _, key = header.partition(" ")
        expected = self.server.state.api_key
        if scheme != "apiKey" or not key.strip() or (expected is not None and key != expected):
            raise ApiError(
                401, "Unauthorized", "the request failed to authenticate the supplied API key"
            )

    def _api(self, method: str, path: str, body: Any) -> Any:
        state = self.server.state
        if isinstance(body, ApiError):
            raise body
        if not path.startswith(API_PREFIX + "/"):
            raise ApiError(404, "Not Found", f"no route {method} {path}")
        parts = path[len(API_PREFIX) + 1 :].split("/")
        if parts == ["jobs"] and method == "POST":
            job = state.create(body)
            return {"id": job["id"], "status": job["status"], "request": job["request"]}
        if parts == ["jobs"] and method == "GET":
            with state.lock:
                jobs = sorted(state.jobs.values(), key=lambda j: (j["request"], j["id"]))
                return {"jobs": [public(j) for j in jobs], "next": None}
        if len(parts) == 2 and parts[0] == "jobs" and method == "GET":
            return public(state.get(parts[1]))
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "results" and method == "GET":
            return state.results(parts[1])
        if parts[0] == "jobs" and parts[2:] == ["status", "cancel"] and method == "PUT":
            return state.cancel(parts[1])
        raise ApiError(404, "Not Found", f"no route {method} {path}")

    def _apply_fault(self, fault: dict[str, Any], method: str, path: str, body: Any) -> bool:
        """Play a fault; False when the request should then be answered normally."""
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if fault.get("reset"):
            if fault.get("after_accept") and method == "POST" and path == f"{API_PREFIX}/jobs":
                with contextlib.suppress(ApiError):
                    self._check_key()
                    if not isinstance(body, ApiError):
                        self.server.state.create(body)
            self._reset()
            return True
        if fault.get("status"):
            status = int(fault["status"])
            error = ApiError(
                status,
                str(fault.get("error") or _reason(status)),
                str(fault.get("message") or f"injected {status}"),
            )
            if fault.get("retry_after") is not None:
                error.headers = {"Retry-After": str(fault["retry_after"])}  # type: ignore[attr-defined]
            raise error
        return False

    def _reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): the client sees a reset connection."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _control(self, method: str, path: str, body: Any) -> None:
        state = self.server.state
        if path == "/_emulator/stats" and method == "GET":
            self._send(200, state.stats())
        elif path == "/_emulator/faults" and method == "POST":
            faults = body.get("faults") if isinstance(body, dict) else None
            if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
                raise ApiError(400, "Bad Request", 'expected {"faults": [{...}, ...]}')
            with state.lock:
                state.faults.extend(dict(f) for f in faults)
                self._send(200, {"faults": [dict(f) for f in state.faults]})
        elif path == "/_emulator/faults" and method == "DELETE":
            with state.lock:
                state.faults.clear()
            self._send(200, {"faults": []})
        else:
            raise ApiError(404, "Not Found", f"no route {method} {path}")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], state: EmulatorState, verbose: bool = False
    ) -> None:
        super().__init__(address, Handler)
        self.state = state
        self.verbose = verbose


def serve(
    port: int,
    state_dir: Path,
    queue_seconds: float,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    faults: list[dict[str, Any]] | None = None,
    verbose: bool = False,
) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the IonQ emulator listens on the loopback interface only")
    state = EmulatorState(state_dir, queue_seconds, api_key)
    state.faults.extend(faults or [])
    server = EmulatorServer((host, port), state, verbose=verbose)
    stop = threading.Event()
    runner = threading.Thread(
        target=state.run_forever, args=(stop,), name="ionq-emulator-runner", daemon=True
    )
    runner.start()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    bound = server.server_address[1]
    print(
        f"IonQ emulator ready on http://{host}:{bound}{API_PREFIX} (state: {state_dir}, "
        f"queue: {queue_seconds:g} s)",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        stop.set()
        server.server_close()


def _warm_qiskit() -> None:
    """Import Aer ahead of the first job (the import is what takes time)."""
    with contextlib.suppress(Exception):
        import qiskit_aer  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qmlops_jupyter.testing.ionq_emulator",
        description="Loopback emulator of IonQ's REST API v0.3, for tests.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="folder for the jobs (kept across restarts)"
    )
    parser.add_argument(
        "--queue-seconds", type=float, default=0.0, help="how long a job waits before it runs"
    )
    parser.add_argument(
        "--api-key", default=None, help="the only key accepted (default: any non-empty key)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--faults", default=None, help="JSON list of faults to queue at start")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    faults = json.loads(args.faults) if args.faults else None
    serve(
        args.port, args.state_dir, args.queue_seconds, args.api_key, args.host, faults, args.verbose
    )


# -- for tests: run it as a subprocess ---------------------------------------------------------

_READY = re.compile(r"ready on (http://\S+)")


class EmulatorProcess:
    """An emulator subprocess: its URL, its jobs, and faults to inject."""

    def __init__(
        self, state_dir: Path, queue_seconds: float = 0.0, api_key: str | None = None, port: int = 0
    ) -> None:
        self.state_dir = Path(state_dir)
        self.queue_seconds = queue_seconds
        self.api_key = api_key
        self.port = port
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        """``http://127.0.0.1:P`` (the control endpoints live here)."""
        return self.url[: -len(API_PREFIX)]

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = self.state_dir / "emulator.out"
        out.write_text("")
        command = [
            sys.executable,
            "-m",
            "qmlops_jupyter.testing.ionq_emulator",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            "--queue-seconds",
            str(self.queue_seconds),
        ]
        if self.api_key is not None:
            command += ["--api-key", self.api_key]
        with open(out, "ab") as stdout, open(self.state_dir / "emulator.err", "ab") as stderr:
            self.process = subprocess.Popen(
                command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search(out.read_text())
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        err = (self.state_dir / "emulator.err").read_text()[-2000:]
        self.kill()
        raise RuntimeError(f"the IonQ emulator did not start: {err}")

    def stop(self) -> None:
        """SIGTERM, then wait (the jobs stay on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL: the emulator dies at once (the jobs stay on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> EmulatorProcess:
        """Stop and start again on the same port and state folder."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- asking it things --

    def _call(self, method: str, url: str, payload: Any = None, auth: bool = False) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"apiKey {self.api_key or 'emulator-test-key'}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the emulator received (GET /v0.3/jobs)."""
        return self._call("GET", f"{self.url}/jobs", auth=True)["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.url}/jobs/{job_id}", auth=True)

    def submission_count(self) -> int:
        """Jobs received (each POST that created a job, even one answered by a reset)."""
        return int(self.stats()["submissions"])

    def stats(self) -> dict[str, Any]:
        return self._call("GET", f"{self.root}/_emulator/stats")

    def inject(self, *faults: dict[str, Any]) -> None:
        """Queue faults (see the module docstring)."""
        self._call("POST", f"{self.root}/_emulator/faults", {"faults": list(faults)})

    def clear_faults(self) -> None:
        self._call("DELETE", f"{self.root}/_emulator/faults")


@contextlib.contextmanager
def start_emulator(
    state_dir: Path | str, queue_seconds: float = 0.0, api_key: str | None = None, port: int = 0
) -> Iterator[EmulatorProcess]:
    """Run an emulator subprocess on a free loopback port until the block ends."""
    emulator = EmulatorProcess(Path(state_dir), queue_seconds, api_key, port)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.kill()


__all__ = ["EmulatorProcess", "main", "serve", "start_emulator", "to_qiskit"]

if __name__ == "__main__":
    main()
