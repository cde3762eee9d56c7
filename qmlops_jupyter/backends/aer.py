"""``aer``: Qiskit Aer, the offline default backend. Runs in this process, costs nothing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..errors import PermanentProviderError, TransientProviderError, one_line
from ..models import CircuitInfo
from .base import Backend, Capabilities, JobHandle, ProviderResult, ProviderState, ProviderStatus

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

#: Gates the stabilizer method simulates; a circuit of only these needs no state vector when
#: Aer picks its method automatically.
CLIFFORD_OPS = frozenset(
    {"h", "s", "sdg", "x", "y", "z", "cx", "cy", "cz", "swap", "id", "sx", "sxdg",
     "measure", "barrier", "reset", "delay"}
)
_NON_GATES = frozenset({"measure", "barrier", "reset", "delay"})


class AerBackend(Backend):
    provider = "qiskit-aer"
    description = "Qiskit Aer simulator, in this process (offline, free)"

    @cached_property
    def simulator(self) -> Any:
        from qiskit_aer import AerSimulator

        return AerSimulator(**self.config.options)

    @cached_property
    def _basis(self) -> frozenset[str]:
        return frozenset(self.simulator.configuration().basis_gates) | _NON_GATES

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.provider,
            simulator=True,
            local=True,
            max_qubits=None,  # decided by backends.yaml and the memory check
            native_gates=tuple(sorted(self._basis - _NON_GATES)),
            supports_reattach=False,
            supports_cancel=True,
            statevector_memory=True,
        )

    def needs_statevector(self, info: CircuitInfo) -> bool:
        method = self.config.options.get("method", "automatic")
        if method == "automatic":
            return not set(info.gate_counts) <= CLIFFORD_OPS
        return method == "statevector"

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        started = time.perf_counter()
        runnable = [self._runnable(c) for c in circuits]
        transpile_seconds = time.perf_counter() - started
        run_options: dict[str, Any] = {"shots": shots}
        if options.get("seed") is not None:
            run_options["seed_simulator"] = int(options["seed"])
        try:
            aer_job = self.simulator.run(runnable, **run_options)
        except MemoryError as exc:
            raise TransientProviderError(f"Aer ran out of memory: {exc}") from None
        except Exception as exc:  # Aer rejects what it cannot simulate
            raise PermanentProviderError(f"Aer refused the job: {one_line(exc)}") from None
        return AerHandle(aer_job, phases={"transpile": transpile_seconds})

    def _runnable(self, circuit: QuantumCircuit) -> QuantumCircuit:
        if circuit.num_clbits == 0:
            # Like Braket, measure every qubit of a circuit that measures nothing.
            circuit = circuit.measure_all(inplace=False)
        if not set(circuit.count_ops()) <= self._basis:
            from qiskit import transpile

            circuit = transpile(circuit, self.simulator, optimization_level=0)
        return circuit


class AerHandle(JobHandle):
    """An Aer job running in this process's thread pool."""

    def __init__(self, aer_job: Any, phases: dict[str, float] | None = None) -> None:
        self._job = aer_job
        self.provider_job_id = None  # nothing outside this process to re-attach to
        self.phases = phases or {}

    def status(self) -> ProviderStatus:
        name = self._job.status().name
        mapping = {
            "INITIALIZING": ProviderState.QUEUED,
            "QUEUED": ProviderState.QUEUED,
            "VALIDATING": ProviderState.QUEUED,
            "RUNNING": ProviderState.RUNNING,
            "DONE": ProviderState.DONE,
            "ERROR": ProviderState.FAILED,
            "CANCELLED": ProviderState.CANCELLED,
        }
        return ProviderStatus(mapping.get(name, ProviderState.RUNNING))

    def result(self, timeout: float | None = None) -> ProviderResult:
        try:
            result = self._job.result(timeout=timeout)
        except TimeoutError:
            raise
        except Exception as exc:
            raise PermanentProviderError(f"Aer failed: {one_line(exc)}") from None
        if not result.success:
            raise PermanentProviderError(f"Aer failed: {one_line(result.status)}")
        counts = []
        for i in range(len(result.results)):
            raw = result.get_counts(i)
            # Several classical registers come as "c1 c0"; joined, bit 0 stays rightmost.
            counts.append({key.replace(" ", ""): int(v) for key, v in raw.items()})
        first = result.results[0] if result.results else None
        return ProviderResult(counts=counts, metadata={
            "seed_simulator": getattr(first, "seed_simulator", None),
            "method": (getattr(first, "metadata", None) or {}).get("method"),
            "time_taken": getattr(result, "time_taken", None),
        })

    def cancel(self) -> None:
        self._job.cancel()
