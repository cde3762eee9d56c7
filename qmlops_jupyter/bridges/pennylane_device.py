"""A PennyLane device that runs every circuit through qmlops: each execution becomes a ledger
job (tracked, limited by backends.yaml, visible in the sidebar and ``qmlops jobs``), on any
qmlops backend, without touching the model's code::

    dev = qml.device("qmlops", backend="ibm:fake_manila", wires=4, shots=1000)

    @qml.qnode(dev)                       # gradients: parameter-shift, chosen by PennyLane
    def classifier(x, weights): ...

Registered under PennyLane's own plugin entry point (``pennylane.plugins: qmlops``).

How a batch runs: PennyLane's preprocessing (run by the device's ``preprocess_transforms``)
splits non-commuting measurements, broadcasts, rotates every observable into the Z basis and
turns each tape's measurements into one ``qml.counts`` over the measured wires
(``measurements_from_counts``), then decomposes into gates with a Qiskit equivalent. Each
batch PennyLane hands to :meth:`QmlopsDevice.execute` is sent as **one** qmlops job (one per
distinct shot count, if the tapes differ), waited for, and its counts are turned back into
the requested expectation values, variances, probabilities, counts or samples by PennyLane's
own post-processing. Samples (``qml.sample``) come back grouped by outcome, not in shot order.

Only finite shots: analytic execution (``shots=None``) raises a ``DeviceError`` naming the fix.
The device computes no derivatives itself, so PennyLane differentiates with the
parameter-shift rule, whose shifted circuits also go through the ledger.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pennylane as qml
from pennylane.devices import Device, ExecutionConfig
from pennylane.devices.preprocess import (
    decompose,
    measurements_from_counts,
    validate_device_wires,
    validate_measurements,
    validate_observables,
)
from pennylane.exceptions import DeviceError
from pennylane.measurements import Shots
from pennylane.tape import QuantumScript
from pennylane.transforms import broadcast_expand, split_non_commuting
from pennylane.transforms.core import CompilePipeline

from ..interop.pennylane import PL_TO_QISKIT, needs_rotation, tape_to_circuit, wire_order_of

#: Operations the device sends as they are (the rest are decomposed by PennyLane).
SUPPORTED_OPERATIONS = frozenset(PL_TO_QISKIT) | {
    "QubitUnitary",
    "GlobalPhase",
    "Identity",
    "Barrier",
    "Snapshot",
}
#: Measurements it can compute from counts.
SAMPLE_MEASUREMENTS = ("ExpectationMP", "VarianceMP", "ProbabilityMP", "CountsMP", "SampleMP")


def _supported(op: Any) -> bool:
    return op.name in SUPPORTED_OPERATIONS


def _observable_supported(obs: Any) -> bool:
    # Anything PennyLane can rotate into the Z basis: Pauli words, sums of them, and
    # observables with diagonalizing gates and eigenvalues (Hermitian, Projector ...).
    return obs.has_diagonalizing_gates or obs.name in ("Sum", "SProd", "Prod", "LinearCombination")


@qml.transform
def fill_measurement_wires(tape: QuantumScript) -> tuple[list[QuantumScript], Any]:
    """Give a measurement with no wires (``qml.counts()``, ``qml.probs()``) the tape's wires
    when the device was built without ``wires``."""
    if not any(not mp.obs and not mp.wires for mp in tape.measurements):
        return [tape], lambda results: results[0]
    measurements = []
    for mp in tape.measurements:
        if not mp.obs and not mp.wires:
            mp = copy.copy(mp)
            mp._wires = tape.wires  # as validate_device_wires does with the device's wires
        measurements.append(mp)
    return [tape.copy(measurements=measurements)], lambda results: results[0]


@qml.transform
def hermitian_to_paulis(tape: QuantumScript) -> tuple[list[QuantumScript], Any]:
    """``expval`` of a non-Pauli observable as the expectation of its Pauli decomposition
    (PennyLane's ``measurements_from_counts`` would skip its basis change)."""
    if not any(needs_rotation(mp.obs) for mp in tape.measurements):
        return [tape], lambda results: results[0]
    measurements = []
    for mp in tape.measurements:
        if needs_rotation(mp.obs):
            if type(mp).__name__ != "ExpectationMP":
                raise DeviceError(
                    f"the qmlops device computes only the expectation value of {mp.obs.name} "
                    "(not its variance or samples); write it as a sum of Pauli words "
                    "with qml.pauli_decompose"
                )
            wires = list(mp.obs.wires)
            matrix = qml.matrix(mp.obs, wire_order=wires)
            mp = qml.expval(qml.pauli_decompose(matrix, wire_order=wires))
        measurements.append(mp)
    return [tape.copy(measurements=measurements)], lambda results: results[0]


@qml.transform
def require_shots(tape: QuantumScript, name: str = "qmlops") -> tuple[list[QuantumScript], Any]:
    """Refuse analytic execution plainly: every qmlops backend samples."""
    if not tape.shots:
        raise DeviceError(
            f"the {name} device samples on a qmlops backend and needs shots: "
            f"qml.device('qmlops', backend=..., wires=..., shots=1000), or "
            f"qml.set_shots(qnode, shots=1000)"
        )
    return [tape], lambda results: results[0]


class QmlopsDevice(Device):
    """PennyLane device whose executions are qmlops jobs.

    Args:
        wires: number of wires or their labels (``None``: whatever each circuit uses).
        shots: default shots of QNodes on this device (required unless every QNode sets them
            with ``qml.set_shots``).
        backend: the qmlops backend name (``"aer"``, ``"ibm:fake_manila"``,
            ``"pennylane:lightning.qubit"`` ...).
        job_name: the job name recorded in the ledger (default ``pennylane``); not ``name``,
            which ``qml.device`` takes for the device's own name.
        tags: extra ledger tags for every job (``{"source": "pennylane"}`` is always set).
        seed: seeds the jobs (each job gets the next seed of a generator started from it).
        client: a :class:`qmlops_jupyter.client.Client`; default ``get_client()`` (from
            ``QMLOPS_HOME`` and friends).
        wait_timeout: seconds to wait for each job (default: no limit).
    """

    short_name = "qmlops"

    def __init__(
        self,
        wires: Any = None,
        shots: Any = None,
        backend: str = "aer",
        job_name: str | None = None,
        tags: dict[str, str] | None = None,
        seed: int | None = None,
        client: Any = None,
        wait_timeout: float | None = None,
    ) -> None:
        # Device-level shots are deprecated in PennyLane, yet they are how a training loop
        # says "sample": keep them as the QNodes' default without the warning.
        super().__init__(wires=wires, shots=None)
        self._shots = Shots(shots)
        self.backend = backend
        self.job_name = job_name or "pennylane"
        self.tags = {"source": "pennylane", "device": "qmlops", **(tags or {})}
        self._seeds = None if seed is None else np.random.default_rng(seed)
        self._client = client
        self.wait_timeout = wait_timeout
        #: The qmlops jobs this device submitted, oldest first.
        self.job_ids: list[str] = []

    @property
    def name(self) -> str:
        return "qmlops"

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..client import get_client

            return get_client()
        return self._client

    def __repr__(self) -> str:
        wires = f"wires={len(self.wires)}, " if self.wires else ""
        shots = f"shots={self.shots.total_shots}, " if self.shots else ""
        return f"<qmlops device ({wires}{shots}backend={self.backend!r})>"

    # -- PennyLane's preprocessing -------------------------------------------------------------

    def supports_derivatives(
        self, execution_config: ExecutionConfig | None = None, circuit: QuantumScript | None = None
    ) -> bool:
        return False

    def preprocess_transforms(
        self, execution_config: ExecutionConfig | None = None
    ) -> CompilePipeline:
        program = CompilePipeline()
        program.add_transform(require_shots, name=self.name)
        program.add_transform(validate_device_wires, self.wires, name=self.name)
        program.add_transform(fill_measurement_wires)
        program.add_transform(
            validate_measurements,
            sample_measurements=lambda mp: type(mp).__name__ in SAMPLE_MEASUREMENTS,
            name=self.name,
        )
        program.add_transform(
            validate_observables, stopping_condition=_observable_supported, name=self.name
        )
        program.add_transform(broadcast_expand)
        program.add_transform(hermitian_to_paulis)
        program.add_transform(split_non_commuting, grouping_strategy="qwc")
        # Rotates into the Z basis and leaves one qml.counts per tape; decompose afterwards,
        # as the rotations may need it.
        program.add_transform(measurements_from_counts)
        program.add_transform(
            decompose, stopping_condition=_supported, skip_initial_state_prep=False, name=self.name
        )
        return program

    # -- execution -----------------------------------------------------------------------------

    def execute(self, circuits: Any, execution_config: ExecutionConfig | None = None) -> Any:
        single = isinstance(circuits, QuantumScript)
        batch: Sequence[QuantumScript] = (circuits,) if single else tuple(circuits)
        results: list[Any] = [None] * len(batch)
        by_shots: dict[int, list[int]] = {}
        for i, tape in enumerate(batch):
            if not tape.shots:
                require_shots(tape, name=self.name)  # raises with the fix in its message
            by_shots.setdefault(tape.shots.total_shots, []).append(i)
        for shots, indices in by_shots.items():
            tapes = [batch[i] for i in indices]
            for i, result in zip(indices, self._run(tapes, shots), strict=True):
                results[i] = result
        if self.tracker.active:
            self.tracker.update(
                batches=1,
                executions=len(batch),
                jobs=len(by_shots),
                shots=sum(t.shots.total_shots for t in batch),
            )
            self.tracker.record()
        return results[0] if single else tuple(results)

    def _run(self, tapes: list[QuantumScript], shots: int) -> list[Any]:
        circuits, wires = [], []
        for tape in tapes:
            measured, circuit = self._circuit(tape)
            circuits.append(circuit)
            wires.append(measured)
        seed = None if self._seeds is None else int(self._seeds.integers(2**31))
        job = self.client.submit(
            circuits,
            backend=self.backend,
            shots=shots,
            name=self.job_name,
            wait=True,
            seed=seed,
            tags=dict(self.tags),
            wait_timeout=self.wait_timeout,
        )
        self.job_ids.append(job.id)
        counts = job.result().counts
        return [
            self._shape(tape, measured, c)
            for tape, measured, c in zip(tapes, wires, counts, strict=True)
        ]

    def _circuit(self, tape: QuantumScript) -> tuple[list[Any], Any]:
        """The Qiskit circuit of a preprocessed tape (one ``qml.counts`` over the wires it
        measures): wire ``measured[i]`` goes to classical bit ``i``."""
        if len(tape.measurements) != 1 or type(tape.measurements[0]).__name__ != "CountsMP":
            raise DeviceError(
                f"{self.name}: expected a preprocessed tape with one qml.counts measurement, "
                f"got {tape.measurements}"
            )
        measured = list(tape.measurements[0].wires)
        order = list(self.wires) if self.wires else wire_order_of(tape)
        for wire in measured:
            if wire not in order:
                order.append(wire)
        circuit = tape_to_circuit(tape, order, measure="tape", name=self.job_name)
        return measured, circuit

    @staticmethod
    def _shape(tape: QuantumScript, measured: list[Any], counts: dict[str, int]) -> Any:
        """Qiskit counts (bit i = wire ``measured[i]``, rightmost) as PennyLane counts (wire
        ``measured[0]`` leftmost), split into the tape's shot bins if it has several."""
        pl_counts = {key[::-1]: int(n) for key, n in counts.items()}
        if not tape.shots.has_partitioned_shots:
            return pl_counts
        # One job ran every shot: deal them out, in a random order, to the bins.
        keys = np.array(sorted(pl_counts))
        outcomes = np.repeat(np.arange(len(keys)), [pl_counts[k] for k in keys])
        np.random.default_rng().shuffle(outcomes)
        bins = []
        for lower, upper in tape.shots.bins():
            chosen = outcomes[lower:upper]
            values, numbers = np.unique(chosen, return_counts=True)
            bins.append({str(keys[v]): int(n) for v, n in zip(values, numbers, strict=True)})
        return tuple(bins)
