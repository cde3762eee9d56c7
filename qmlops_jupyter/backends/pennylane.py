"""``pennylane:<device>``: any installed PennyLane qubit device as a qmlops backend
(``pennylane:default.qubit``, ``pennylane:lightning.qubit``, ``pennylane:default.mixed`` ...).

Each Qiskit circuit becomes a PennyLane tape (:mod:`qmlops_jupyter.interop.pennylane`: its
gates, and one ``qml.counts`` over the measured qubits) and runs with the job's shots on a
device built for the job (``seed`` is the device's seed). PennyLane reads its count keys wire 0
first; they come back in Qiskit's order (classical bit 0 rightmost), whatever the circuit's
measure map.

Like :mod:`~qmlops_jupyter.backends.aer`, it runs on this machine: in the caller's thread
(started when first waited on), or, with ``options["isolate"]``, in a warm worker process that
a cancel or timeout can stop. PennyLane devices are found through PennyLane's own plugin entry
points (``pennylane.plugins``), so a device plugin installed later shows up by itself.
"""

from __future__ import annotations

import importlib.util
import io
import threading
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import (
    CircuitTooLarge,
    InvalidCircuit,
    MissingBackendDependency,
    PermanentProviderError,
    TransientProviderError,
    UnknownBackend,
    one_line,
)
from ..interop.pennylane import INSTALL_HINT, QISKIT_TO_PL
from .base import (
    Backend,
    Capabilities,
    JobHandle,
    ProviderResult,
    ProviderState,
    ProviderStatus,
    available_memory,
)
from .workers import WorkerHandle, WorkerPool

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from ..models import CircuitInfo

#: PennyLane's plugin entry-point group, where every device (``default.qubit`` ...) is named.
PLUGIN_GROUP = "pennylane.plugins"
#: Our own PennyLane device (the bridge): sending a job to it would loop back into qmlops.
OWN_DEVICES = frozenset({"qmlops"})
#: Devices that are not qubit simulators of circuits (continuous-variable, qutrit, test
#: devices, or that return no real results): accepted by name, but not listed by default.
UNLISTED = ("gaussian", "qutrit", "null.qubit", "reference.qubit", "qmlops")
#: Packages a device needs beyond PennyLane (PennyLane only says so when the device is built).
DEVICE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "default.clifford": ("stim",),
    "default.tensor": ("quimb",),
}
#: Devices that simulate without a state vector (no 16 * 2**n memory check).
NO_STATEVECTOR = frozenset({"default.clifford", "default.tensor", "null.qubit"})
#: Density-matrix devices: 16 * 4**n bytes.
DENSITY_MATRIX = frozenset({"default.mixed", "lightning.qubit.mixed"})

#: The states a PennyLane job passes through here (it has no provider-side queue).
PENNYLANE_STATES: dict[str, ProviderState] = {
    "pending": ProviderState.QUEUED,
    "running": ProviderState.RUNNING,
    "done": ProviderState.DONE,
    "failed": ProviderState.FAILED,
    "cancelled": ProviderState.CANCELLED,
}
#: Work (gates x amplitudes) above which a waiting caller's job still runs in a worker.
ISOLATE_ABOVE = 10**8


def missing_requirements(device: str) -> list[str]:
    """The packages ``device`` needs that are not installed (no import)."""
    return [m for m in DEVICE_REQUIREMENTS.get(device, ()) if importlib.util.find_spec(m) is None]


def installed_devices() -> list[str]:
    """Names of the PennyLane devices installed here, from PennyLane's entry points (no
    device is built; cheap)."""
    return sorted({ep.name for ep in entry_points(group=PLUGIN_GROUP)} - OWN_DEVICES)


class PennyLaneBackend(Backend):
    requires = ("pennylane",)
    extra = "pennylane"
    provider = "pennylane"
    description = "PennyLane device on this machine (offline, free)"
    provider_states: ClassVar[dict[str, ProviderState]] = PENNYLANE_STATES

    def __init__(self, name: str, config: Any = None, device: str | None = None) -> None:
        super().__init__(name, config, device)
        if importlib.util.find_spec("pennylane") is None:
            raise MissingBackendDependency(
                f"backend {name!r} needs pennylane, which is not installed; {INSTALL_HINT}"
            )
        installed = installed_devices()
        if not device or device not in installed or device in OWN_DEVICES:
            what = "needs a device name" if not device else f"has no device {device!r}"
            raise UnknownBackend(
                f"unknown backend {name!r}: pennylane {what}; installed devices: "
                + (", ".join(f"pennylane:{d}" for d in installed) or "none")
            )
        self.description = f"PennyLane {device} on this machine (offline, free)"
        self.workers = WorkerPool("PennyLane", self.config.max_concurrent_jobs)

    @classmethod
    def listed_names(cls, plugin: str) -> list[str]:
        names = [
            d
            for d in installed_devices()
            if not any(u in d for u in UNLISTED) and not missing_requirements(d)
        ]
        return [f"{plugin}:{d}" for d in names] or [plugin]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.provider,
            simulator=True,
            local=True,
            max_qubits=None,  # decided by backends.yaml and the memory check
            native_gates=tuple(sorted(set(QISKIT_TO_PL) | {"unitary"})),
            supports_reattach=False,
            supports_cancel=True,
            statevector_memory=True,
        )

    def availability(self) -> tuple[bool, str]:
        missing = missing_requirements(self.device or "")
        if missing:
            return (
                False,
                f"unavailable: {self.device} needs {', '.join(missing)} (pip install "
                f"{' '.join(missing)})",
            )
        return True, "ok"

    def needs_statevector(self, info: CircuitInfo) -> bool:
        return self.device not in NO_STATEVECTOR

    def check(self, circuits: Sequence[CircuitInfo], shots: int) -> None:
        missing = missing_requirements(self.device or "")
        if missing:
            raise MissingBackendDependency(
                f"backend {self.name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: pip install {' '.join(missing)}"
            )
        if self.device in DENSITY_MATRIX:
            available = available_memory()
            for info in circuits:
                needed = 16 * 4**info.num_qubits
                if needed > available:
                    raise CircuitTooLarge(
                        f"circuit {info.index} has {info.num_qubits} qubits: density-matrix "
                        f"simulation on {self.device} needs {needed / 2**30:.1f} GiB of "
                        f"memory, this machine has {available / 2**30:.1f} GiB available"
                    )

    def prefers_isolation(self, circuits: Sequence[CircuitInfo]) -> bool:
        work = sum(c.size * 2**c.num_qubits for c in circuits if self.needs_statevector(c))
        return work > ISOLATE_ABOVE

    def device_options(self) -> dict[str, Any]:
        """Keyword arguments for ``qml.device``: the backend's backends.yaml ``options``."""
        return dict(self.config.options)

    # -- running -------------------------------------------------------------------------------

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        seed = options.get("seed")
        run = _Run(
            self.device or "",
            self.device_options(),
            list(circuits),
            shots,
            None if seed is None else int(seed),
        )
        if options.get("isolate"):
            from qiskit import qpy

            buffer = io.BytesIO()
            qpy.dump(run.circuits, buffer)
            future = self.workers.submit(
                _run_in_worker, run.device, run.device_options, buffer.getvalue(), shots, run.seed
            )
            return WorkerHandle(self.workers, future, _payload_result)
        return PennyLaneHandle(run)

    def warm_up(self) -> None:
        """Start the worker processes (and import PennyLane in them) before the first job."""
        self.workers.warm_up(_warm)

    def close(self) -> None:
        self.workers.close()


class _Run:
    """One job's work: build the device, run every circuit's tape, count in Qiskit's order."""

    def __init__(
        self,
        device: str,
        device_options: dict[str, Any],
        circuits: list[QuantumCircuit],
        shots: int,
        seed: int | None,
    ) -> None:
        self.device = device
        self.device_options = device_options
        self.circuits = circuits
        self.shots = shots
        self.seed = seed

    def __call__(self) -> ProviderResult:
        return run_circuits(self.device, self.device_options, self.circuits, self.shots, self.seed)


def run_circuits(
    device: str,
    device_options: dict[str, Any],
    circuits: Sequence[QuantumCircuit],
    shots: int,
    seed: int | None,
) -> ProviderResult:
    """Run circuits on a PennyLane device; counts in Qiskit's bit order."""
    import pennylane as qml

    from ..interop.pennylane import circuit_operations, plan_measurements

    started = time.perf_counter()
    tapes, plans = [], []
    try:
        for circuit in circuits:
            plan = plan_measurements(circuit)
            ops = circuit_operations(circuit, global_phase=False)
            # Every circuit is measured on at least one qubit, so each tape has a result.
            wires = list(plan.wires) or [0]
            tapes.append(qml.tape.QuantumScript(ops, [qml.counts(wires=wires)], shots=shots))
            plans.append(plan)
    except InvalidCircuit as exc:
        raise PermanentProviderError(str(exc)) from None
    translate = time.perf_counter() - started
    width = max(c.num_qubits for c in circuits)
    kwargs = dict(device_options)
    if seed is not None:
        kwargs["seed"] = seed
    try:
        dev = qml.device(device, wires=width, **kwargs)
    except Exception as exc:
        raise PermanentProviderError(
            f"PennyLane device {device} could not be built: {one_line(exc)}"
        ) from None
    started = time.perf_counter()
    try:
        results = qml.execute(tapes, dev, diff_method=None)
    except MemoryError as exc:
        raise TransientProviderError(f"PennyLane ran out of memory: {exc}") from None
    except Exception as exc:  # the device refuses what it cannot simulate
        raise PermanentProviderError(
            f"PennyLane {device} refused the job: {one_line(exc)}"
        ) from None
    counts = [
        plan.to_qiskit_counts(dict(result)) for plan, result in zip(plans, results, strict=True)
    ]
    return ProviderResult(
        counts=counts,
        metadata={
            "device": device,
            "pennylane_version": qml.__version__,
            "seed": seed,
            "time_taken": time.perf_counter() - started,
            "translate_seconds": translate,
        },
    )


class PennyLaneHandle(JobHandle):
    """A job run in this thread, started when first waited on or asked about (so the caller
    records it RUNNING before the simulation holds the GIL)."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._state = "pending"
        self._result: ProviderResult | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self.provider_job_id = None  # nothing outside this process to re-attach to

    def _start(self) -> None:
        with self._lock:
            if self._state != "pending":
                return
            self._state = "running"
            try:
                self._result = self._run()
                self._state = "done"
            except Exception as exc:
                self._error = exc
                self._state = "failed"

    def status(self) -> ProviderStatus:
        if self._state == "cancelled":
            return ProviderStatus(ProviderState.CANCELLED)
        self._start()
        message = str(self._error) if self._error else None
        return ProviderStatus(PENNYLANE_STATES[self._state], message)

    def result(self, timeout: float | None = None) -> ProviderResult:
        # The run holds the GIL until it ends: a timeout cannot cut it short.
        if self._state == "cancelled":
            raise PermanentProviderError("the PennyLane job was cancelled")
        self._start()
        if self._error is not None:
            if isinstance(self._error, PermanentProviderError | TransientProviderError):
                raise self._error
            raise PermanentProviderError(f"PennyLane failed: {one_line(self._error)}")
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        if self._state == "pending":
            self._state = "cancelled"


def _payload_result(payload: dict[str, Any]) -> ProviderResult:
    return ProviderResult(counts=payload["counts"], metadata=payload["metadata"])


def _warm() -> bool:
    import pennylane  # noqa: F401  (the import is what takes time)
    import qiskit  # noqa: F401

    return True


def _run_in_worker(
    device: str, device_options: dict[str, Any], qpy_bytes: bytes, shots: int, seed: int | None
) -> dict[str, Any]:
    """Runs in a worker process: load the circuits, run them, return plain counts."""
    from qiskit import qpy

    circuits = qpy.load(io.BytesIO(qpy_bytes))
    result = run_circuits(device, device_options, circuits, shots, seed)
    return {"counts": result.counts, "metadata": result.metadata}
