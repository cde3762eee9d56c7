"""A fake IBM Quantum runtime client: the cloud side of the ``ibm`` backend, offline.

It answers the four calls :class:`qmlops_jupyter.backends.ibm.RuntimeClient` makes of IBM
Quantum (``backend(name)``, ``run(...)``, ``job(id)``, and the jobs' ``job_id``/``status``/
``result``/``cancel``/``queue_position``/``error_message``), and raises the exceptions
qiskit-ibm-runtime raises (``IBMNotAuthorizedError``, ``RequestsApiError`` with a status code
wrapping requests' network errors, ``RuntimeJobFailureError``, ``IBMInputValueError`` for a
circuit that is not ISA ...).

Everything lives in a directory (argument, ``fake_dir`` backend option or ``QMLOPS_FAKE_IBM_DIR``)
so a *new process* sees the same jobs and the same scripted faults, as it would see IBM's. The
jobs run for real: the ISA circuits it received go through the runtime's local testing mode on
the fake device standing in for the named one (``ibm_test`` is ``FakeManilaV2``), with the job's
seed, when a result is first asked for.

Use it with ``service_factory: "fake_ibm_runtime:FakeRuntimeClient.factory"`` in the backend's
options (tests/ must be importable: it is on pytest's path; subprocesses get it on PYTHONPATH),
or :func:`install` (the conformance suite's ``reattach_bootstrap``).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV_DIR = "QMLOPS_FAKE_IBM_DIR"
FACTORY = "fake_ibm_runtime:FakeRuntimeClient.factory"
#: Device names this fake serves, and the runtime fake device that plays each.
DEVICES = {"ibm_test": "fake_manila", "ibm_fez_test": "fake_fez"}
DEFAULT_PLAN = {
    "queue_polls": 1,  # status() answers QUEUED this many times
    "running_polls": 1,  # then RUNNING this many times, then the outcome
    "outcome": "DONE",  # DONE | ERROR | CANCELLED
    "queue_position": 3,
    "error": "Error code 1517; Job failed during execution",
    #: Jobs with a circuit of one of these names stay QUEUED until cancelled (something slow
    #: to cancel, without changing the plan of the jobs around it).
    "hold_names": ["slow"],
}
FAULTS = (
    "auth",
    "forbidden",
    "unavailable",
    "rate_limit",
    "network",
    "reset",
    "read_timeout",
    "bad_gateway",
    "invalid",
)


class FakeIBMCloud:
    """The provider side, on disk: jobs, scripted faults, the job plan, submissions."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        (self.dir / "jobs").mkdir(parents=True, exist_ok=True)

    # -- arranging (tests) ---------------------------------------------------------------------

    def fail_next(self, call: str, fault: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``call`` (connect, backend, submit, status, result,
        cancel, job) fail with ``fault`` (one of :data:`FAULTS`)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        with self._locked():
            faults = self._read("faults.json", {})
            faults.setdefault(call, []).extend([fault] * times)
            self._write("faults.json", faults)

    def set_plan(self, **plan: Any) -> None:
        """How the next jobs go (see :data:`DEFAULT_PLAN`)."""
        with self._locked():
            self._write("plan.json", {**self._read("plan.json", DEFAULT_PLAN), **plan})

    def set_next_plan(self, **plan: Any) -> None:
        """How the next job goes (once), on top of the standing plan."""
        with self._locked():
            queue = self._read("next_plans.json", [])
            queue.append(plan)
            self._write("next_plans.json", queue)

    def set_valid_tokens(self, *tokens: str) -> None:
        """Only these tokens are accepted (401 otherwise); empty: any token."""
        with self._locked():
            self._write("tokens.json", list(tokens))

    # -- inspecting (tests) --------------------------------------------------------------------

    def submission_count(self) -> int:
        return len(self.job_ids())

    def job_ids(self) -> list[str]:
        return sorted(
            (p.name for p in (self.dir / "jobs").iterdir() if not p.name.startswith(".")),
            key=lambda n: (self.dir / "jobs" / n / "circuits.qpy").stat().st_mtime_ns,
        )

    def record(self, job_id: str) -> dict[str, Any]:
        return json.loads((self.dir / "jobs" / job_id / "job.json").read_text())

    def circuits(self, job_id: str) -> list[Any]:
        from qiskit import qpy

        with open(self.dir / "jobs" / job_id / "circuits.qpy", "rb") as fh:
            return list(qpy.load(fh))

    # -- the service side ----------------------------------------------------------------------

    def take_fault(self, call: str) -> str | None:
        with self._locked():
            faults = self._read("faults.json", {})
            queue = faults.get(call) or []
            if not queue:
                return None
            fault = queue.pop(0)
            self._write("faults.json", faults)
            return fault

    def plan(self) -> dict[str, Any]:
        return {**DEFAULT_PLAN, **self._read("plan.json", DEFAULT_PLAN)}

    def take_plan(self) -> dict[str, Any]:
        """The standing plan, with the next one-off plan (if any) applied and used up."""
        with self._locked():
            queue = self._read("next_plans.json", [])
            once = queue.pop(0) if queue else {}
            self._write("next_plans.json", queue)
        return {**self.plan(), **once}

    def valid_tokens(self) -> list[str]:
        return self._read("tokens.json", [])

    def update_job(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self._locked():
            record = self.record(job_id)
            record.update(changes)
            self._write_job(job_id, record)
            return record

    def _write_job(self, job_id: str, record: dict[str, Any]) -> None:
        path = self.dir / "jobs" / job_id / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self, name: str, default: Any) -> Any:
        path = self.dir / name
        if not path.exists():
            return json.loads(json.dumps(default))
        return json.loads(path.read_text())

    def _write(self, name: str, data: Any) -> None:
        tmp = self.dir / f"{name}.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.dir / name)


def raise_fault(fault: str, call: str, token: str | None = None) -> None:
    """Raise what qiskit-ibm-runtime raises for ``fault``. Messages echo the token the way a
    careless HTTP error can (in a URL), so tests can check the adapter blanks it out."""
    import requests
    from qiskit_ibm_runtime.api.exceptions import RequestsApiError
    from qiskit_ibm_runtime.exceptions import IBMInputValueError, IBMNotAuthorizedError

    url = f"https://quantum.cloud.ibm.com/api/v1/jobs?apikey={token or 'none'}"
    if fault == "auth":
        raise IBMNotAuthorizedError(f"401 Client Error: Unauthorized for url: {url}")
    if fault == "forbidden":
        raise RequestsApiError(f"'403 Client Error: Forbidden for url: {url}'", 403)
    if fault == "unavailable":
        raise RequestsApiError(f"'503 Server Error: Service Unavailable for url: {url}'", 503)
    if fault == "bad_gateway":
        raise RequestsApiError(f"'502 Server Error: Bad Gateway for url: {url}'", 502)
    if fault == "rate_limit":
        raise RequestsApiError(f"'429 Client Error: Too Many Requests for url: {url}'", 429)
    if fault == "invalid":
        raise IBMInputValueError(f"400 Client Error: invalid input for {call}")
    causes = {
        "network": requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): Max retries "
            "exceeded (Caused by NewConnectionError('Failed to establish a new connection: "
            "[Errno -3] Temporary failure in name resolution'))"
        ),
        "reset": requests.exceptions.ConnectionError(
            "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
        ),
        "read_timeout": requests.exceptions.ReadTimeout(
            "HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): Read timed out."
        ),
    }
    # The runtime's session wraps requests' exceptions in RequestsApiError without a status.
    try:
        raise causes[fault]
    except requests.exceptions.RequestException as exc:
        raise RequestsApiError(f"'{exc}'") from exc


class FakeRuntimeClient:
    """The runtime client of the ``ibm`` backend, backed by a :class:`FakeIBMCloud`."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        devices: dict[str, str] | None = None,
    ) -> None:
        directory = directory or os.environ.get(ENV_DIR)
        if not directory:
            raise RuntimeError(f"FakeRuntimeClient needs a directory (or {ENV_DIR})")
        self.cloud = FakeIBMCloud(directory)
        self.token = token
        self.devices = {**DEVICES, **(devices or {})}

    @classmethod
    def factory(
        cls,
        *,
        channel: str,
        token: str | None,
        instance: str | None,
        url: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> FakeRuntimeClient:
        """Like ``QiskitRuntimeService(channel=, token=, instance=)``: checks the token."""
        options = options or {}
        client = cls(options.get("fake_dir"), token=token, devices=options.get("fake_devices"))
        fault = client.cloud.take_fault("connect")
        if fault:
            raise_fault(fault, "connect", token)
        valid = client.cloud.valid_tokens()
        if valid and token not in valid:
            raise_fault("auth", "connect", token)
        return client

    # -- RuntimeClient's calls -----------------------------------------------------------------

    def backend(self, name: str) -> Any:
        self._fault("backend")
        if name not in self.devices:
            from qiskit.providers.exceptions import QiskitBackendNotFoundError

            raise QiskitBackendNotFoundError("No backend matches the criteria.")
        from qmlops_jupyter.backends.ibm import fake_device_classes

        return fake_device_classes()[self.devices[name]]()

    def run(
        self,
        primitive: str,
        backend: Any,
        pubs: list[Any],
        *,
        shots: int,
        tags: list[str],
        seed: int | None = None,
    ) -> FakeRuntimeJob:
        self._fault("submit")
        from qiskit import qpy

        circuits = [p[0] if isinstance(p, tuple) else p for p in pubs]
        for index, circuit in enumerate(circuits):
            _check_isa(circuit, backend, index)
        job_id = f"d{uuid.uuid4().hex[:19]}"  # IBM job ids are 20 characters
        # Written aside, then renamed: another process never sees half a job.
        folder = self.cloud.dir / "jobs" / f".new-{job_id}"
        folder.mkdir(parents=True)
        buffer = io.BytesIO()
        qpy.dump(circuits, buffer)
        (folder / "circuits.qpy").write_bytes(buffer.getvalue())
        observables = [p[1].to_list() for p in pubs] if primitive == "estimator" else None
        device = next((n for n, f in self.devices.items() if f == backend.name), backend.name)
        plan = self.cloud.take_plan()
        if any(c.name in plan["hold_names"] for c in circuits):
            plan["queue_polls"] = 10**9
        record = {
            "id": job_id,
            "primitive": primitive,
            "shots": shots,
            "tags": list(tags),
            "seed": seed,
            "device": device,
            "stand_in": backend.name,
            "observables": [[[label, [c.real, c.imag]] for label, c in obs] for obs in observables]
            if observables
            else None,
            "plan": plan,
            "polls": 0,
            "cancelled": False,
        }
        (folder / "job.json").write_text(json.dumps(record))
        folder.rename(self.cloud.dir / "jobs" / job_id)
        return FakeRuntimeJob(self, job_id)

    def job(self, job_id: str) -> FakeRuntimeJob:
        self._fault("job")
        if not (self.cloud.dir / "jobs" / job_id / "job.json").exists():
            from qiskit_ibm_runtime.exceptions import RuntimeJobNotFound

            raise RuntimeJobNotFound(f"Job not found: {job_id}")
        return FakeRuntimeJob(self, job_id)

    def _fault(self, call: str) -> None:
        fault = self.cloud.take_fault(call)
        if fault:
            raise_fault(fault, call, self.token)


class FakeRuntimeJob:
    """A job at the fake service; its state is on disk, so any process may follow it."""

    def __init__(self, client: FakeRuntimeClient, job_id: str) -> None:
        self._client = client
        self._id = job_id

    def job_id(self) -> str:
        return self._id

    @property
    def tags(self) -> list[str]:
        return list(self._record()["tags"])

    def _record(self) -> dict[str, Any]:
        return self._client.cloud.record(self._id)

    def _state(self, record: dict[str, Any]) -> str:
        plan = record["plan"]
        if record["cancelled"]:
            return "CANCELLED"
        if record["polls"] <= plan["queue_polls"]:
            return "QUEUED"
        if record["polls"] <= plan["queue_polls"] + plan["running_polls"]:
            return "RUNNING"
        return plan["outcome"]

    def status(self) -> str:
        self._client._fault("status")
        record = self._record()
        if self._state(record) in ("QUEUED", "RUNNING"):
            record = self._client.cloud.update_job(self._id, polls=record["polls"] + 1)
        return self._state(record)

    def queue_position(self) -> int | None:
        record = self._record()
        if self._state(record) != "QUEUED":
            return None
        return max(1, record["plan"]["queue_position"] - record["polls"] + 1)

    def error_message(self) -> str | None:
        record = self._record()
        return record["plan"]["error"] if self._state(record) == "ERROR" else None

    def usage(self) -> float:
        return 1.0

    def cancel(self) -> None:
        self._client._fault("cancel")
        record = self._record()
        if self._state(record) in ("DONE", "ERROR"):
            from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError

            raise RuntimeInvalidStateError("Job cannot be cancelled: 409 Conflict")
        self._client.cloud.update_job(self._id, cancelled=True)

    def result(self, timeout: float | None = None) -> Any:
        self._client._fault("result")
        record = self._record()
        state = self._state(record)
        if state not in ("DONE", "ERROR", "CANCELLED"):
            # The real one waits for a final state; here the job simply finishes.
            plan = record["plan"]
            record = self._client.cloud.update_job(
                self._id, polls=plan["queue_polls"] + plan["running_polls"] + 1
            )
            state = self._state(record)
        if state == "ERROR":
            from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

            raise RuntimeJobFailureError(
                f"Unable to retrieve job result. {record['plan']['error']}"
            )
        if state == "CANCELLED":
            from qiskit_ibm_runtime.exceptions import RuntimeInvalidStateError

            raise RuntimeInvalidStateError(
                f"Unable to retrieve result for job {self._id}. Job was cancelled."
            )
        return self._simulate(record)

    def _simulate(self, record: dict[str, Any]) -> Any:
        """Run what was submitted through the runtime's local testing mode."""
        from qiskit.quantum_info import SparsePauliOp

        from qmlops_jupyter.backends.ibm import RuntimeClient

        local = RuntimeClient(None)
        device = local.backend(record["stand_in"])
        circuits = self._client.cloud.circuits(self._id)
        pubs: list[Any] = circuits
        if record["primitive"] == "estimator":
            pubs = [
                (c, SparsePauliOp.from_list([(label, complex(*coeff)) for label, coeff in obs]))
                for c, obs in zip(circuits, record["observables"], strict=True)
            ]
        job = local.run(
            record["primitive"], device, pubs, shots=record["shots"], tags=[], seed=record["seed"]
        )
        return job.result()


def _check_isa(circuit: Any, backend: Any, index: int) -> None:
    """Refuse what IBM refuses: an instruction the target does not have on those qubits."""
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    target = backend.target
    for instruction in circuit.data:
        name = instruction.operation.name
        if name == "barrier":
            continue
        qargs = tuple(circuit.find_bit(q).index for q in instruction.qubits)
        if not target.instruction_supported(name, qargs):
            raise IBMInputValueError(
                f"The instruction {name} on qubits {qargs} is not supported by the target. "
                f"Circuits that do not match the target hardware definition are no longer "
                f"supported (circuit {index})."
            )


def install(directory: str | None = None) -> None:
    """Make every ``ibm`` backend in this process use the fake (a re-attach bootstrap)."""
    from qmlops_jupyter.backends.ibm import IBMBackend

    if directory:
        os.environ[ENV_DIR] = directory
    IBMBackend.service_factory = FakeRuntimeClient.factory
