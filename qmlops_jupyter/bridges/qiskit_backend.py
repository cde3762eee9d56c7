"""A Qiskit ``BackendV2`` whose ``run`` submits through qmlops.

Code written for Qiskit backends (``backend.run``, ``BackendSamplerV2``,
``BackendEstimatorV2``, qiskit-machine-learning's primitives) sends every execution to any
qmlops backend, recorded in the ledger with its limits checked, without being rewritten::

    from qiskit.primitives import BackendSamplerV2
    from qmlops_jupyter.bridges.qiskit_backend import QmlopsBackend

    backend = QmlopsBackend("braket_local")
    sampler = BackendSamplerV2(backend=backend)

Each ``run`` call is one qmlops job (all its circuits in one batch).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qiskit.providers import BackendV2, JobStatus, JobV1, Options
from qiskit.result import Result
from qiskit.transpiler import Target

from ..states import JobState

if TYPE_CHECKING:
    from ..client import Client, Job

#: Gates offered to Qiskit's transpiler when the qmlops backend names none: every qmlops
#: backend translates these to its provider's own gates.
DEFAULT_BASIS = (
    "id",
    "x",
    "y",
    "z",
    "h",
    "s",
    "sdg",
    "t",
    "tdg",
    "sx",
    "rx",
    "ry",
    "rz",
    "cx",
    "cz",
    "swap",
)
#: Width offered when the qmlops backend sets no limit of its own (its memory check still
#: refuses what this machine cannot simulate).
DEFAULT_WIDTH = 30

_STATUS = {
    JobState.CREATED: JobStatus.INITIALIZING,
    JobState.SUBMITTING: JobStatus.INITIALIZING,
    JobState.QUEUED: JobStatus.QUEUED,
    JobState.RUNNING: JobStatus.RUNNING,
    JobState.CANCELLING: JobStatus.RUNNING,
    JobState.COMPLETED: JobStatus.DONE,
    JobState.FAILED: JobStatus.ERROR,
    JobState.NEEDS_ATTENTION: JobStatus.ERROR,
    JobState.CANCELLED: JobStatus.CANCELLED,
}


class QmlopsBackend(BackendV2):
    """Any qmlops backend (``aer``, ``braket_local``, ``ibm:fake_manila`` ...) as a Qiskit
    ``BackendV2``. Run options: ``shots``, ``seed_simulator``, ``memory``, ``job_name``,
    ``tags``, ``timeout`` (seconds a result may be waited for)."""

    def __init__(
        self,
        backend: str = "aer",
        *,
        client: Client | None = None,
        num_qubits: int | None = None,
        basis_gates: Sequence[str] | None = None,
    ) -> None:
        from ..client import get_client

        self._client = client or get_client()
        self._backend = self._client.registry.get(backend)  # an unknown name fails here
        super().__init__(
            name=f"qmlops:{backend}",
            description=f"{backend} through qmlops_jupyter's ledger",
            backend_version="1",
        )
        width = num_qubits or self._backend.max_qubits or DEFAULT_WIDTH
        gates = list(basis_gates or DEFAULT_BASIS)
        self._target = Target.from_configuration(basis_gates=[*gates, "measure"], num_qubits=width)
        self.qmlops_backend = backend

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> int | None:
        return None

    @classmethod
    def _default_options(cls) -> Options:
        return Options(
            shots=1024, seed_simulator=None, memory=False, job_name=None, tags=None, timeout=None
        )

    def run(self, run_input: Any, **options: Any) -> QmlopsJob:
        """Submit the circuit(s) as one qmlops job; returns at once."""
        unknown = set(options) - set(self.options.__dict__)
        if unknown:
            from ..errors import InvalidRequest

            raise InvalidRequest(
                f"unknown run option(s) {', '.join(sorted(unknown))} for {self.name}; "
                f"known: {', '.join(sorted(self.options.__dict__))}"
            )
        merged = {**self.options.__dict__, **options}
        circuits = run_input if isinstance(run_input, list | tuple) else [run_input]
        tags = {"source": "qiskit-backend", **(merged["tags"] or {})}
        job = self._client.submit(
            list(circuits),
            backend=self.qmlops_backend,
            shots=int(merged["shots"]),
            name=merged["job_name"],
            seed=merged["seed_simulator"],
            tags=tags,
        )
        return QmlopsJob(
            self,
            job,
            circuits,
            memory=bool(merged["memory"]),
            timeout=merged["timeout"],
            seed=merged["seed_simulator"],
        )


class QmlopsJob(JobV1):
    """A qmlops job seen as a Qiskit job; ``job_id()`` is the ledger's id."""

    def __init__(
        self,
        backend: QmlopsBackend,
        job: Job,
        circuits: Sequence[Any],
        *,
        memory: bool,
        timeout: float | None,
        seed: int | None,
    ) -> None:
        super().__init__(backend, job.id)
        self.qmlops_job = job
        self._circuits = list(circuits)
        self._memory = memory
        self._timeout = timeout
        self._seed = seed

    def submit(self) -> None:  # the job was submitted by QmlopsBackend.run
        from ..errors import InvalidRequest

        raise InvalidRequest("a qmlops job is submitted by QmlopsBackend.run")

    def status(self) -> JobStatus:
        return _STATUS[self.qmlops_job.state]

    def cancel(self) -> None:
        self.qmlops_job.cancel()

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the job; a job that did not complete raises ``JobFailed``."""
        outcome = self.qmlops_job.result(timeout if timeout is not None else self._timeout)
        record = self.qmlops_job.record
        rng = random.Random(self._seed)
        experiments = []
        for circuit, counts in zip(self._circuits, outcome.counts, strict=True):
            width = max(circuit.num_clbits, 1) if circuit.num_clbits else circuit.num_qubits
            data: dict[str, Any] = {"counts": {hex(int(key, 2)): n for key, n in counts.items()}}
            if self._memory:
                # qmlops keeps counts, not shot order: memory is the counts, shuffled.
                shots = [hex(int(key, 2)) for key, n in counts.items() for _ in range(n)]
                rng.shuffle(shots)
                data["memory"] = shots
            experiments.append(
                {
                    "shots": outcome.shots,
                    "success": True,
                    "data": data,
                    "header": {
                        "name": circuit.name,
                        "memory_slots": width,
                        "creg_sizes": [[r.name, r.size] for r in circuit.cregs]
                        or [["meas", width]],
                        "metadata": getattr(circuit, "metadata", None) or {},
                    },
                }
            )
        return Result.from_dict(
            {
                "backend_name": self.backend().name,
                "backend_version": "1",
                "job_id": record.id,
                "qobj_id": str(uuid.uuid4()),
                "success": True,
                "results": experiments,
                "status": "COMPLETED",
            }
        )
