"""The backend plugin interface.

An adapter subclasses :class:`Backend` and writes ``submit`` (and ``attach`` if the provider can
find a job again by its id); its handle subclasses :class:`JobHandle` (``status``, ``result``,
``cancel``). Everything else (checking limits before anything is sent, persistence, events,
retries, recovery) is done around them by this base class and the engine.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import BackendConfig
from ..errors import CircuitTooLarge, InvalidRequest
from ..models import BackendInfo, CircuitInfo

if TYPE_CHECKING:
    from qiskit import QuantumCircuit


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as data; checked before anything is sent."""

    provider: str
    simulator: bool
    #: Runs inside this machine's processes (no provider queue, nothing to re-attach to).
    local: bool
    max_qubits: int | None
    native_gates: tuple[str, ...] = ()
    supports_reattach: bool = False
    supports_cancel: bool = True
    #: State-vector simulation needs 16 * 2**n bytes of memory; checked against this machine.
    statevector_memory: bool = False
    #: Computes expectation values of any Pauli observable itself (an estimator primitive);
    #: otherwise only Z/I observables are accepted, and computed from the counts.
    estimator: bool = False


class ProviderState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass
class ProviderStatus:
    state: ProviderState
    message: str | None = None
    queue_position: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProviderResult:
    """Counts per circuit, in Qiskit's bit order, plus what the provider says of the run.

    ``metadata["run_seconds"]``, when the provider measures it (IonQ's execution time, IBM's
    usage), becomes the job's ``run`` phase; otherwise the run is timed from the ledger's side.
    """

    counts: list[dict[str, int]]
    metadata: dict[str, Any] = field(default_factory=dict)


def expectation_from_counts(counts: dict[str, int], pauli: str) -> float:
    """<P> for a diagonal Pauli string (only I and Z) from counts in Qiskit's bit order: the
    string's last character acts on qubit 0, as the count keys' last bit is bit 0."""
    total = sum(counts.values())
    if not total:
        return 0.0
    width = len(pauli)
    mask = [i for i, ch in enumerate(reversed(pauli)) if ch == "Z"]
    value = 0
    for key, n in counts.items():
        bits = key.zfill(width)[::-1]
        parity = sum(bits[i] == "1" for i in mask if i < len(bits)) % 2
        value += -n if parity else n
    return value / total


class JobHandle(ABC):
    """A job at a provider. Rebuildable from ``provider_job_id`` when the backend supports
    re-attach."""

    provider_job_id: str | None = None

    @abstractmethod
    def status(self) -> ProviderStatus: ...

    @abstractmethod
    def result(self, timeout: float | None = None) -> ProviderResult:
        """Block until the job ends (or ``timeout``) and return its counts."""

    def cancel(self) -> None:  # noqa: B027 - optional: not every provider can cancel
        """Ask the provider to cancel; best effort."""


class Backend(ABC):
    """Base of every backend adapter. Subclasses set ``provider`` and ``capabilities``.

    A backend name is ``plugin`` or ``plugin:device`` (``ibm:fake_manila``,
    ``pennylane:lightning.qubit``); the part after the first colon arrives as ``device``.
    """

    provider: ClassVar[str] = "unknown"
    description: ClassVar[str] = ""
    #: The provider's job states (as it names them) -> ours; the conformance suite checks it.
    provider_states: ClassVar[dict[str, ProviderState]] = {}
    #: Top-level modules the adapter needs (its SDK), checked before the backend is built;
    #: ``extra`` is the ``pip install 'qmlops-jupyter[extra]'`` that brings them.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    #: Set by the registry that built this backend: returns its client's vault (the owner's
    #: stored credentials), for :meth:`credential_status`.
    vault_source: Callable[[], Any] | None = None

    def __init__(
        self, name: str, config: BackendConfig | None = None, device: str | None = None
    ) -> None:
        self.name = name
        self.config = config or BackendConfig()
        self.device = device

    @classmethod
    def listed_names(cls, plugin: str) -> list[str]:
        """Names ``qmlops backends`` shows for this plugin when backends.yaml names none of
        them (no network: a listing must be instant)."""
        return [plugin]

    # -- what a plugin writes ------------------------------------------------------------------

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def submit(
        self, circuits: Sequence[QuantumCircuit], shots: int, options: dict[str, Any]
    ) -> JobHandle:
        """Send the circuits; return a handle. Raise ProviderError subclasses on failure.

        ``options`` holds the job's run options: ``seed``; ``observables`` (one Pauli string
        per circuit, Qiskit's qubit order, for expectation values); ``credential`` (an alias,
        never a secret); ``job_id`` and ``tags`` (the ledger's, for the provider's job tags);
        and, for local backends, ``isolate``: run outside the calling process so it stays
        responsive.
        """

    def attach(self, provider_job_id: str, options: dict[str, Any] | None = None) -> JobHandle:
        """Rebuild a handle for a job submitted earlier (maybe by another process).

        ``options`` are the job's, as given to :meth:`submit` (its credential alias, say).
        """
        raise NotImplementedError(f"backend {self.name} cannot re-attach to jobs")

    def credential_status(self) -> str:
        """``not needed`` (local, free), ``configured`` or ``missing``; no network."""
        return "not needed"

    def has_stored_credential(self, provider: str) -> bool:
        """Whether the owner of the client that built this backend stored a credential for
        ``provider`` (decrypts nothing; False when there is no vault to ask)."""
        from ..vault import owner_has

        return owner_has(provider, vault=self.vault_source() if self.vault_source else None)

    def availability(self) -> tuple[bool, str]:
        """Whether the backend can take jobs now, and why not; answers within a second or
        two (a cached answer, or what the device last reported)."""
        return True, "ok"

    def prefers_isolation(self, circuits: Sequence[CircuitInfo]) -> bool:
        """For local backends: whether a job this big should run outside the caller's process
        even when the caller waits for it (see ``submit``'s ``isolate`` option)."""
        return False

    def warm_up(self) -> None:  # noqa: B027 - optional
        """Prepare to run (start workers, open sessions) before the first job arrives."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what :meth:`warm_up` or jobs started (worker processes, sessions)."""

    def check(self, circuits: Sequence[CircuitInfo], shots: int) -> None:  # noqa: B027
        """Backend-specific checks; raise InvalidRequest/CircuitTooLarge."""

    # -- done by the base class ----------------------------------------------------------------

    @property
    def max_qubits(self) -> int | None:
        limits = [q for q in (self.config.max_qubits, self.capabilities.max_qubits) if q]
        return min(limits) if limits else None

    def validate(
        self, circuits: Sequence[CircuitInfo], shots: int, options: dict[str, Any] | None = None
    ) -> None:
        """Every check that can be made before anything is sent."""
        if isinstance(shots, bool) or not isinstance(shots, int):
            raise InvalidRequest(f"shots must be a whole number, not {shots!r}")
        if shots <= 0:
            raise InvalidRequest(f"shots must be at least 1, not {shots}")
        if shots > self.config.max_shots:
            raise InvalidRequest(
                f"shots {shots} is over the limit of {self.config.max_shots} for backend "
                f"{self.name} (max_shots in backends.yaml)"
            )
        self._check_observables(circuits, options.get("observables") if options else None)
        limit = self.max_qubits
        for info in circuits:
            if limit is not None and info.num_qubits > limit:
                raise CircuitTooLarge(
                    f"circuit {info.index} has {info.num_qubits} qubits; backend {self.name} "
                    f"accepts at most {limit}"
                )
        if self.capabilities.statevector_memory:
            self._check_memory(circuits)
        self.check(circuits, shots)

    def _check_observables(self, circuits: Sequence[CircuitInfo], observables: Any) -> None:
        if observables is None:
            return
        if not isinstance(observables, list | tuple) or len(observables) != len(circuits):
            raise InvalidRequest(
                f"observables must be a list of one Pauli string per circuit "
                f"({len(circuits)} circuits)"
            )
        for info, pauli in zip(circuits, observables, strict=True):
            if not isinstance(pauli, str) or not pauli or set(pauli.upper()) - set("IXYZ"):
                raise InvalidRequest(
                    f"observable {pauli!r} for circuit {info.index} is not a Pauli string "
                    "of I, X, Y and Z"
                )
            if len(pauli) != info.num_qubits:
                raise InvalidRequest(
                    f"observable {pauli!r} has {len(pauli)} terms; circuit {info.index} has "
                    f"{info.num_qubits} qubits"
                )
            if not self.capabilities.estimator and set(pauli.upper()) - set("IZ"):
                raise InvalidRequest(
                    f"backend {self.name} measures in the Z basis only: observable {pauli!r} "
                    "needs basis rotations in the circuit, or a backend with an estimator"
                )

    def _check_memory(self, circuits: Sequence[CircuitInfo]) -> None:
        available = available_memory()
        for info in circuits:
            if not self.needs_statevector(info):
                continue
            needed = 16 * 2**info.num_qubits
            if needed > available:
                raise CircuitTooLarge(
                    f"circuit {info.index} has {info.num_qubits} qubits: state-vector "
                    f"simulation needs {_human_bytes(needed)} of memory, this machine has "
                    f"{_human_bytes(available)} available"
                )

    def needs_statevector(self, info: CircuitInfo) -> bool:
        """Whether this circuit will be simulated with a full state vector."""
        return True

    def estimate(self, circuits: Sequence[CircuitInfo], shots: int) -> Any:
        """The job's price before it is sent (a :class:`qmlops_jupyter.cost.Estimate`), from
        the public prices in the pricing file; override for a provider with its own model."""
        from ..cost.estimate import estimate

        return estimate(self, circuits, shots)

    def info(self) -> BackendInfo:
        caps = self.capabilities
        available, status = self.availability() if self.config.enabled else (False, "disabled")
        return BackendInfo(
            name=self.name,
            provider=self.provider,
            description=self.description,
            kind="simulator" if caps.simulator else "qpu",
            simulator=caps.simulator,
            local=caps.local,
            enabled=self.config.enabled,
            available=available,
            status=status,
            credentials=self.credential_status(),
            max_qubits=self.max_qubits,
            max_shots=self.config.max_shots,
            max_concurrent_jobs=self.config.max_concurrent_jobs,
            native_gates=list(caps.native_gates),
            supports_reattach=caps.supports_reattach,
            supports_cancel=caps.supports_cancel,
        )


def available_memory() -> int:
    """Bytes of memory this machine can give now (MemAvailable), falling back to total."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
