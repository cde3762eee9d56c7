"""``aer``: Qiskit Aer, the offline default backend. Runs on this machine, costs nothing.

Aer holds Python's GIL for the whole of a simulation, so a run in a thread freezes every other
thread of its process. Two ways to run, chosen by the caller through ``options["isolate"]``:

- in this process (a caller that waits anyway, such as ``submit(wait=True)`` in a notebook):
  as fast as calling Aer directly;
- in a warm worker process (engine hosts, and waits with a timeout): the host keeps beating,
  renewing leases and answering while a long simulation runs, and a cancel or timeout really
  stops the simulation (the worker is killed).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..errors import PermanentProviderError, TransientProviderError, UnknownBackend, one_line
from ..models import CircuitInfo
from .base import Backend, Capabilities, JobHandle, ProviderResult, ProviderState, ProviderStatus
from .workers import WorkerHandle, WorkerPool

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

#: Gates the stabilizer method simulates; a circuit of only these needs no state vector when
#: Aer picks its method automatically.
CLIFFORD_OPS = frozenset(
    {
        "h",
        "s",
        "sdg",
        "x",
        "y",
        "z",
        "cx",
        "cy",
        "cz",
        "swap",
        "id",
        "sx",
        "sxdg",
        "measure",
        "barrier",
        "reset",
        "delay",
    }
)
_NON_GATES = frozenset({"measure", "barrier", "reset", "delay"})
#: Gates x amplitudes of state-vector work above which a waiting caller's job still runs in a
#: worker process (a 20-qubit, 800-gate circuit is ~8e8 and takes about a second here).
ISOLATE_ABOVE = 10**8
#: Qiskit's JobStatus names, as an Aer job reports them.
AER_STATES = {
    "INITIALIZING": ProviderState.QUEUED,
    "QUEUED": ProviderState.QUEUED,
    "VALIDATING": ProviderState.QUEUED,
    "RUNNING": ProviderState.RUNNING,
    "DONE": ProviderState.DONE,
    "ERROR": ProviderState.FAILED,
    "CANCELLED": ProviderState.CANCELLED,
}


class AerBackend(Backend):
    provider = "qiskit-aer"
    description = "Qiskit Aer simulator on this machine (offline, free)"
    provider_states = AER_STATES

    def __init__(self, name: str, config: Any = None, device: str | None = None) -> None:
        super().__init__(name, config, device)
        if device:
            raise UnknownBackend(
                f"unknown backend {name!r}: aer takes no device name "
                "(set the simulation method in backends.yaml options)"
            )
        self.workers = WorkerPool("Aer", self.config.max_concurrent_jobs)

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

    def prefers_isolation(self, circuits: Sequence[CircuitInfo]) -> bool:
        # Roughly 0.1-0.2 s of state-vector work on these machines: past it, a run in the
        # caller's thread would freeze the caller (a kernel's widgets, its lease renewals).
        work = sum(c.size * 2**c.num_qubits for c in circuits if self.needs_statevector(c))
        return work > ISOLATE_ABOVE

    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        started = time.perf_counter()
        runnable = [self._runnable(c) for c in circuits]
        phases = {"transpile": time.perf_counter() - started}
        run_options: dict[str, Any] = {"shots": shots}
        if options.get("seed") is not None:
            run_options["seed_simulator"] = int(options["seed"])
        if options.get("isolate"):
            from qiskit import qpy

            buffer = io.BytesIO()
            qpy.dump(runnable, buffer)
            future = self.workers.submit(
                _run_in_worker, buffer.getvalue(), dict(self.config.options), run_options
            )
            return WorkerHandle(self.workers, future, _payload_result, phases)
        return AerHandle(self.simulator, runnable, run_options, phases=phases)

    def warm_up(self) -> None:
        """Start the worker processes now, so the first isolated job does not wait for them."""
        self.workers.warm_up(_warm)

    def close(self) -> None:
        self.workers.close()

    def _runnable(self, circuit: QuantumCircuit) -> QuantumCircuit:
        if circuit.num_clbits == 0:
            # Like Braket, measure every qubit of a circuit that measures nothing.
            circuit = circuit.measure_all(inplace=False)
        if not set(circuit.count_ops()) <= self._basis:
            from qiskit import transpile

            circuit = transpile(circuit, self.simulator, optimization_level=0)
        return circuit


def _counts_of(result: Any) -> ProviderResult:
    if not result.success:
        raise PermanentProviderError(f"Aer failed: {one_line(result.status)}")
    counts = []
    for i, experiment in enumerate(result.results):
        raw = getattr(experiment.data, "counts", None)
        header = experiment.header if isinstance(experiment.header, dict) else {}
        width = header.get("memory_slots")
        if raw is not None and width is not None and all(k.startswith("0x") for k in raw):
            # Straight from Aer's hex keys: the same strings as get_counts() with the register
            # spaces removed (bit 0 rightmost), at a fraction of its cost on large batches.
            counts.append({format(int(key, 16), f"0{width}b"): int(v) for key, v in raw.items()})
        else:
            counts.append({key.replace(" ", ""): int(v) for key, v in result.get_counts(i).items()})
    first = result.results[0] if result.results else None
    return ProviderResult(
        counts=counts,
        metadata={
            "seed_simulator": getattr(first, "seed_simulator", None),
            "method": (getattr(first, "metadata", None) or {}).get("method"),
            "time_taken": getattr(result, "time_taken", None),
        },
    )


class AerHandle(JobHandle):
    """An Aer job run in this process, started when first waited on or asked about.

    Starting lazily lets the caller record the job as RUNNING before Aer takes the GIL, so
    the ledger writes and the simulation do not fight over it.
    """

    def __init__(
        self,
        simulator: Any,
        circuits: list[Any],
        run_options: dict[str, Any],
        phases: dict[str, float] | None = None,
    ) -> None:
        self._simulator = simulator
        self._circuits = circuits
        self._run_options = run_options
        self._job: Any = None
        self._cancelled = False
        self.provider_job_id = None  # nothing outside this process to re-attach to
        self.phases = phases or {}

    def _start(self) -> Any:
        if self._job is None:
            try:
                self._job = self._simulator.run(self._circuits, **self._run_options)
            except MemoryError as exc:
                raise TransientProviderError(f"Aer ran out of memory: {exc}") from None
            except Exception as exc:  # Aer rejects what it cannot simulate
                raise PermanentProviderError(f"Aer refused the job: {one_line(exc)}") from None
        return self._job

    def status(self) -> ProviderStatus:
        if self._cancelled:
            return ProviderStatus(ProviderState.CANCELLED)
        name = self._start().status().name
        return ProviderStatus(AER_STATES.get(name, ProviderState.RUNNING))

    def result(self, timeout: float | None = None) -> ProviderResult:
        if self._cancelled:
            raise PermanentProviderError("the Aer job was cancelled")
        job = self._start()
        try:
            result = job.result(timeout=timeout)
        except TimeoutError:
            raise
        except Exception as exc:
            raise PermanentProviderError(f"Aer failed: {one_line(exc)}") from None
        return _counts_of(result)

    def cancel(self) -> None:
        self._cancelled = True
        if self._job is not None:
            self._job.cancel()


def _payload_result(payload: dict[str, Any]) -> ProviderResult:
    return ProviderResult(counts=payload["counts"], metadata=payload["metadata"])


def _warm() -> bool:
    import qiskit_aer  # noqa: F401  (the import is the point: it is what takes time)

    return True


def _run_in_worker(
    qpy_bytes: bytes, simulator_options: dict[str, Any], run_options: dict[str, Any]
) -> dict[str, Any]:
    """Runs in a worker process: load the circuits, simulate, return plain counts."""
    from qiskit import qpy
    from qiskit_aer import AerSimulator

    circuits = qpy.load(io.BytesIO(qpy_bytes))
    try:
        result = AerSimulator(**simulator_options).run(circuits, **run_options).result()
    except MemoryError as exc:
        raise TransientProviderError(f"Aer ran out of memory: {exc}") from None
    except Exception as exc:
        raise PermanentProviderError(f"Aer refused the job: {one_line(exc)}") from None
    provider_result = _counts_of(result)
    return {"counts": provider_result.counts, "metadata": provider_result.metadata}
