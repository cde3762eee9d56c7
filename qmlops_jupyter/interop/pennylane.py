"""PennyLane circuits in and out: tapes, QNodes and quantum functions to Qiskit, and Qiskit to
PennyLane tapes, with one gate table in each direction (no pennylane-qiskit plugin needed).

In (PennyLane to Qiskit, :func:`to_qiskit`):

- a ``QuantumScript``/``QuantumTape``;
- a ``QNode`` that takes no required arguments; for one that does, build its tape with its
  arguments first: ``to_qiskit(tape_of(qnode, x, weights))`` (or ``submit(tape_of(...))``);
- a quantum function (wires are inferred from the operations it queues; pass arguments the
  same way, ``to_qiskit(qfunc, *args)``).

Wires map to qubits by position: integer wires ``0..n`` become qubits ``0..n`` (a wire no
operation touches is an idle qubit), other labels follow the QNode device's wire order, or
the order in which the tape first uses them. Operations outside the gate table are decomposed
with PennyLane's own decompositions (down to a matrix, as a Qiskit ``UnitaryGate``, when there
is none).

Measurements become terminal ``measure`` instructions: the wires the tape measures, in the
order the measurements name them, go to classical bits 0, 1, ... (so counts read in Qiskit's
order: the first measured wire is the **rightmost** character). Expectation values and
variances of non-Z observables are rotated into the Z basis first (PennyLane's
``split_non_commuting`` and ``diagonalize_measurements``), which may turn one tape into several
circuits, as may parameter broadcasting: that is why :func:`to_qiskit` returns a list. A
measurement with no wires (``qml.counts()``, ``qml.probs()``, ``qml.state()``) measures every
wire; a tape with no measurement gives a circuit with no classical bits (backends measure all
of its qubits).

Out (Qiskit to PennyLane, :func:`from_qiskit`): a tape that PennyLane devices execute; its
``qml.counts`` measurement reads in PennyLane's order (wire 0 leftmost) and
:func:`qiskit_counts` turns those keys into Qiskit's. Gates outside the table are replaced by
their Qiskit definitions (recursively) until every gate is in it. Only terminal measurements
are supported (no mid-circuit measurement, reset or classical control).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidCircuit, MissingBackendDependency, one_line

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

INSTALL_HINT = "install it with: pip install 'qmlops-jupyter[pennylane]'"

#: PennyLane operation name -> Qiskit standard gate name (same matrices, same wire order).
PL_TO_QISKIT: dict[str, str] = {
    "PauliX": "x",
    "PauliY": "y",
    "PauliZ": "z",
    "Hadamard": "h",
    "S": "s",
    "T": "t",
    "SX": "sx",
    "Adjoint(S)": "sdg",
    "Adjoint(T)": "tdg",
    "Adjoint(SX)": "sxdg",
    "RX": "rx",
    "RY": "ry",
    "RZ": "rz",
    "PhaseShift": "p",
    "U1": "p",
    "U2": "u2",
    "U3": "u",
    "CNOT": "cx",
    "CY": "cy",
    "CZ": "cz",
    "CH": "ch",
    "SWAP": "swap",
    "ISWAP": "iswap",
    "ECR": "ecr",
    "CRX": "crx",
    "CRY": "cry",
    "CRZ": "crz",
    "ControlledPhaseShift": "cp",
    "Toffoli": "ccx",
    "CCZ": "ccz",
    "CSWAP": "cswap",
    "IsingXX": "rxx",
    "IsingYY": "ryy",
    "IsingZZ": "rzz",
}

#: Qiskit gate name -> (PennyLane operation name, adjoint?). ``unitary`` and ``global_phase``
#: are handled apart (their matrix and phase conventions differ).
QISKIT_TO_PL: dict[str, tuple[str, bool]] = {
    "id": ("Identity", False),
    "x": ("PauliX", False),
    "y": ("PauliY", False),
    "z": ("PauliZ", False),
    "h": ("Hadamard", False),
    "s": ("S", False),
    "sdg": ("S", True),
    "t": ("T", False),
    "tdg": ("T", True),
    "sx": ("SX", False),
    "sxdg": ("SX", True),
    "rx": ("RX", False),
    "ry": ("RY", False),
    "rz": ("RZ", False),
    "p": ("PhaseShift", False),
    "u1": ("PhaseShift", False),
    "u2": ("U2", False),
    "u3": ("U3", False),
    "u": ("U3", False),
    "cx": ("CNOT", False),
    "cy": ("CY", False),
    "cz": ("CZ", False),
    "ch": ("CH", False),
    "swap": ("SWAP", False),
    "iswap": ("ISWAP", False),
    "ecr": ("ECR", False),
    "crx": ("CRX", False),
    "cry": ("CRY", False),
    "crz": ("CRZ", False),
    "cp": ("ControlledPhaseShift", False),
    "cu1": ("ControlledPhaseShift", False),
    "ccx": ("Toffoli", False),
    "ccz": ("CCZ", False),
    "cswap": ("CSWAP", False),
    "rxx": ("IsingXX", False),
    "ryy": ("IsingYY", False),
    "rzz": ("IsingZZ", False),
}

#: Instructions that are not gates and change nothing we measure.
_IGNORED = frozenset({"barrier", "delay"})
_CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "box"})


def _qml() -> Any:
    try:
        import pennylane as qml
    except ImportError:
        raise MissingBackendDependency(f"PennyLane is not installed; {INSTALL_HINT}") from None
    return qml


# -- PennyLane -> Qiskit -----------------------------------------------------------------------


def tape_of(qnode_or_qfunc: Any, *args: Any, **kwargs: Any) -> Any:
    """The tape a QNode (or quantum function) builds for these arguments, ready to submit:
    ``submit(tape_of(classifier, x, weights), backend="aer")``."""
    qml = _qml()
    if isinstance(qnode_or_qfunc, qml.QNode):
        try:
            return qml.workflow.construct_tape(qnode_or_qfunc)(*args, **kwargs)
        except TypeError as exc:
            raise InvalidCircuit(_arguments_message(qnode_or_qfunc, exc)) from None
    if isinstance(qnode_or_qfunc, qml.tape.QuantumScript):
        return qnode_or_qfunc
    if callable(qnode_or_qfunc):
        try:
            return qml.tape.make_qscript(qnode_or_qfunc)(*args, **kwargs)
        except TypeError as exc:
            raise InvalidCircuit(_arguments_message(qnode_or_qfunc, exc)) from None
    raise InvalidCircuit(
        f"expected a PennyLane tape, QNode or quantum function, got {type(qnode_or_qfunc).__name__}"
    )


def _arguments_message(obj: Any, exc: Exception) -> str:
    func = getattr(obj, "func", obj)
    try:
        required = [
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        required = []
    needs = f" needs arguments ({', '.join(required)})" if required else f": {one_line(exc)}"
    name = getattr(func, "__name__", type(obj).__name__)
    return (
        f"PennyLane circuit {name!r}{needs}; build its tape with them first: "
        "qmlops_jupyter.interop.pennylane.tape_of(circuit, *args)"
    )


def to_qiskit(obj: Any, *args: Any, **kwargs: Any) -> list[QuantumCircuit]:
    """Qiskit circuits, with measurements, for a PennyLane tape, QNode or quantum function.

    ``args``/``kwargs`` are passed to a QNode or quantum function to build its tape. One tape
    can give several circuits (non-commuting observables, broadcast parameters).
    """
    qml = _qml()
    device_wires = None
    if isinstance(obj, qml.QNode):
        device_wires = getattr(obj.device, "wires", None)
    tape = tape_of(obj, *args, **kwargs)
    wire_order = wire_order_of(tape, device_wires)
    try:
        tapes, _ = qml.transforms.broadcast_expand(tape)
        expanded: list[Any] = []
        for one in tapes:
            if any(getattr(m, "obs", None) is not None for m in one.measurements):
                split, _ = qml.transforms.split_non_commuting(one, grouping_strategy="qwc")
                for part in split:
                    diagonal, _ = qml.transforms.diagonalize_measurements(part)
                    expanded.extend(_rotate_the_rest(d) for d in diagonal)
            else:
                expanded.append(one)
    except InvalidCircuit:
        raise
    except Exception as exc:  # PennyLane's transforms refuse what they cannot split
        raise InvalidCircuit(f"PennyLane tape cannot be converted: {one_line(exc)}") from None
    base = getattr(getattr(obj, "func", obj), "__name__", None) or "pennylane"
    return [
        tape_to_circuit(
            one, wire_order, measure="tape", name=f"{base}_{i}" if len(expanded) > 1 else base
        )
        for i, one in enumerate(expanded)
    ]


def needs_rotation(obs: Any) -> bool:
    """Whether an observable left by PennyLane's ``diagonalize_measurements`` still needs its
    basis change (a non-diagonal ``Hermitian``, a ``Projector`` onto a superposition ...):
    not Pauli-based, and not diagonal already."""
    if obs is None or obs.pauli_rep is not None or obs.name in ("Hadamard", "Identity"):
        return False
    return bool(obs.has_diagonalizing_gates and obs.diagonalizing_gates())


def _rotate_the_rest(tape: Any) -> Any:
    """Append the diagonalizing gates of observables ``diagonalize_measurements`` leaves
    alone (the measured bits then read their eigenbasis, in ``obs.eigvals()`` order)."""
    rotations: list[Any] = []
    rotated: set[Any] = set()
    for mp in tape.measurements:
        if needs_rotation(mp.obs):
            if rotated.intersection(mp.obs.wires):
                raise InvalidCircuit(
                    f"observables overlapping on wires {list(mp.obs.wires)} "
                    "cannot be measured in one circuit"
                )
            rotated.update(mp.obs.wires)
            rotations.extend(mp.obs.diagonalizing_gates())
    if not rotations:
        return tape
    return tape.copy(operations=[*tape.operations, *rotations])


def wire_order_of(tape: Any, device_wires: Any = None) -> list[Any]:
    """Wire labels in qubit order (see the module's docstring)."""
    tape_wires = list(tape.wires)
    if device_wires is not None and len(device_wires) and set(tape_wires) <= set(device_wires):
        return list(device_wires)
    if tape_wires and all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in tape_wires
    ):
        return list(range(max(tape_wires) + 1))
    return tape_wires


def tape_to_circuit(
    tape: Any, wire_order: Sequence[Any], measure: str = "tape", name: str | None = None
) -> QuantumCircuit:
    """One tape (no broadcasting, measurements already diagonal) as a Qiskit circuit.

    ``measure="tape"`` measures the wires the tape's measurements name, in that order, into
    classical bits 0, 1, ...; ``measure="all"`` measures every wire of ``wire_order``, wire
    ``wire_order[i]`` into classical bit ``i``; ``measure="none"`` adds no measurement.
    """
    from qiskit import QuantumCircuit

    qml = _qml()
    index = {w: i for i, w in enumerate(wire_order)}
    missing = [w for w in tape.wires if w not in index]
    if missing:
        raise InvalidCircuit(f"PennyLane tape uses wires {missing} outside {list(wire_order)}")
    if not wire_order:
        raise InvalidCircuit("PennyLane tape has no wires")
    if getattr(tape, "batch_size", None):
        raise InvalidCircuit("PennyLane tape is broadcast: expand it with broadcast_expand first")
    circuit = QuantumCircuit(len(wire_order), name=name or "pennylane")
    for op in tape.operations:
        _append(circuit, op, index, qml, depth=0)
    if measure == "none":
        return circuit
    measured = list(wire_order) if measure == "all" else _measured_wires(tape, wire_order)
    if not measured:
        return circuit
    from qiskit import ClassicalRegister

    creg = ClassicalRegister(len(measured), "c")
    circuit.add_register(creg)
    for bit, wire in enumerate(measured):
        circuit.measure(index[wire], creg[bit])
    return circuit


def _measured_wires(tape: Any, wire_order: Sequence[Any]) -> list[Any]:
    qml = _qml()
    measured: list[Any] = []
    for mp in tape.measurements:
        if isinstance(mp, qml.measurements.MidMeasureMP):
            raise InvalidCircuit("mid-circuit measurements are not supported")
        wires = list(mp.wires) if len(mp.wires) else list(wire_order)
        for w in wires:
            if w not in measured:
                measured.append(w)
    return measured


def _append(circuit: QuantumCircuit, op: Any, index: dict[Any, int], qml: Any, depth: int) -> None:
    name = op.name
    qubits = [index[w] for w in op.wires]
    if name in ("Identity", "Snapshot"):
        return
    if name == "Barrier":
        circuit.barrier(*qubits) if qubits else circuit.barrier()
        return
    if name == "GlobalPhase":
        # PennyLane's GlobalPhase(phi) is exp(-i phi); Qiskit's global_phase is exp(+i phase).
        circuit.global_phase -= _number(op.data[0])
        return
    if isinstance(op, qml.measurements.MidMeasureMP) or name in ("MidMeasureMP", "Conditional"):
        raise InvalidCircuit("mid-circuit measurements and classical control are not supported")
    gate_name = PL_TO_QISKIT.get(name)
    if gate_name is not None:
        circuit.append(_standard_gate(gate_name, [_number(p) for p in op.data]), qubits)
        return
    if name == "QubitUnitary":
        _append_unitary(circuit, qml.math.toarray(op.matrix()), qubits)
        return
    if depth > 64:
        raise InvalidCircuit(f"PennyLane operation {name} does not decompose")
    try:
        parts = op.decomposition()
    except Exception:  # DecompositionUndefinedError, or one that needs more than data
        parts = None
    if parts:
        for part in parts:
            _append(circuit, part, index, qml, depth + 1)
        return
    if getattr(op, "has_matrix", False):
        _append_unitary(circuit, qml.math.toarray(qml.matrix(op)), qubits)
        return
    raise InvalidCircuit(f"PennyLane operation {name} has no Qiskit equivalent")


def _append_unitary(circuit: QuantumCircuit, matrix: Any, qubits: list[int]) -> None:
    from qiskit.circuit.library import UnitaryGate

    # PennyLane's matrices read wire 0 as the most significant bit, Qiskit's the least:
    # the same matrix acts on the wires in reverse order.
    circuit.append(UnitaryGate(matrix, check_input=False), list(reversed(qubits)))


_GATE_CLASSES: dict[str, Any] = {}


def _standard_gate(name: str, params: list[float]) -> Any:
    if not _GATE_CLASSES:
        from qiskit.circuit.library import get_standard_gate_name_mapping

        _GATE_CLASSES.update({k: type(v) for k, v in get_standard_gate_name_mapping().items()})
    return _GATE_CLASSES[name](*params)


def _number(value: Any) -> float:
    """A gate parameter as a plain float (autograd, torch, jax or NumPy value)."""
    try:
        return float(value)
    except TypeError:
        qml = _qml()
        return float(qml.math.toarray(qml.math.unwrap(value)).real)


# -- Qiskit -> PennyLane -----------------------------------------------------------------------


@dataclass(frozen=True)
class MeasurePlan:
    """Which qubit each classical bit of a Qiskit circuit reads, and how PennyLane counts over
    ``wires`` (wire ``wires[0]`` leftmost) become Qiskit count keys (classical bit 0
    rightmost; a bit never measured reads 0)."""

    num_clbits: int
    #: classical bit -> qubit (wire) measured into it last
    sources: tuple[int | None, ...]
    #: the wires PennyLane samples, in its key order
    wires: tuple[int, ...]

    def to_qiskit_key(self, key: str) -> str:
        position = {w: i for i, w in enumerate(self.wires)}
        return "".join(
            "0" if self.sources[c] is None else key[position[self.sources[c]]]
            for c in reversed(range(self.num_clbits))
        )

    def to_qiskit_counts(self, counts: dict[str, Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, n in counts.items():
            if int(n) == 0:
                continue
            qkey = self.to_qiskit_key(str(key).replace(" ", ""))
            out[qkey] = out.get(qkey, 0) + int(n)
        return out


def plan_measurements(circuit: QuantumCircuit) -> MeasurePlan:
    """The measure map of a circuit whose measurements are terminal (a circuit without
    classical bits is measured on every qubit, qubit i into bit i)."""
    if circuit.num_clbits == 0:
        n = circuit.num_qubits
        return MeasurePlan(n, tuple(range(n)), tuple(range(n)))
    sources: list[int | None] = [None] * circuit.num_clbits
    for instruction in circuit.data:
        if instruction.operation.name == "measure":
            q = circuit.find_bit(instruction.qubits[0]).index
            c = circuit.find_bit(instruction.clbits[0]).index
            sources[c] = q
    wires = tuple(sorted({q for q in sources if q is not None}))
    return MeasurePlan(circuit.num_clbits, tuple(sources), wires)


def circuit_operations(circuit: QuantumCircuit, *, global_phase: bool = True) -> list[Any]:
    """The PennyLane operations of a Qiskit circuit (qubit i on wire i), measurements left
    out; raises InvalidCircuit for a measurement followed by more gates on that qubit, reset
    or classical control. Gates outside :data:`QISKIT_TO_PL` are replaced by their Qiskit
    definitions until every gate is in the table."""
    qml = _qml()
    ops: list[Any] = []
    measured: set[int] = set()
    phase = float(circuit.global_phase)
    label = circuit.name
    stack = [
        (instruction, [circuit.find_bit(q).index for q in instruction.qubits])
        for instruction in reversed(circuit.data)
    ]
    expansions = 0
    while stack:
        instruction, wires = stack.pop()
        operation = instruction.operation
        name = operation.name
        if name == "measure":
            measured.update(wires)
            continue
        if name in _IGNORED:
            continue
        if name == "reset":
            raise InvalidCircuit(f"circuit {label!r}: reset is not supported")
        if name in _CONTROL_FLOW or getattr(operation, "condition", None) is not None:
            raise InvalidCircuit(f"circuit {label!r}: classical control ({name}) is not supported")
        if measured.intersection(wires):
            raise InvalidCircuit(
                f"circuit {label!r}: {name} after a measurement on the same qubit "
                "(mid-circuit measurement is not supported)"
            )
        if name == "unitary":
            # Qiskit's matrix reads qubit 0 as the least significant bit: reverse the wires.
            ops.append(qml.QubitUnitary(operation.to_matrix(), wires=list(reversed(wires))))
            continue
        if name == "global_phase":
            phase += float(operation.params[0])
            continue
        if name in QISKIT_TO_PL:
            pl_name, adjoint = QISKIT_TO_PL[name]
            if pl_name == "Identity":
                continue
            params = [float(p) for p in operation.params]
            op = getattr(qml, pl_name)(*params, wires=wires)
            ops.append(qml.adjoint(op, lazy=False) if adjoint else op)
            continue
        definition = getattr(operation, "definition", None)
        expansions += 1
        if definition is None or expansions > 100_000:
            raise InvalidCircuit(
                f"circuit {label!r}: gate {name} has no definition to translate for PennyLane"
            )
        phase += float(definition.global_phase)
        stack.extend(
            (inner, [wires[definition.find_bit(q).index] for q in inner.qubits])
            for inner in reversed(definition.data)
        )
    if global_phase and not math.isclose(math.remainder(phase, 2 * math.pi), 0.0, abs_tol=1e-12):
        # PennyLane's GlobalPhase(phi) is exp(-i phi); Qiskit's global phase is exp(+i phase).
        ops.append(qml.GlobalPhase(-phase))
    return ops


def from_qiskit(circuit: QuantumCircuit, shots: int | None = None) -> Any:
    """A PennyLane tape for a Qiskit circuit: its gates (qubit i on wire i) and one
    ``qml.counts`` over the measured qubits, in increasing order (PennyLane reads wire order
    left to right: turn its keys into Qiskit's with :func:`qiskit_counts`). A circuit with no
    classical bits is measured on every qubit."""
    qml = _qml()
    plan = plan_measurements(circuit)
    ops = circuit_operations(circuit)
    measurements = [qml.counts(wires=list(plan.wires))] if plan.wires else []
    return qml.tape.QuantumScript(ops, measurements, shots=shots)


def from_qiskit_qfunc(circuit: QuantumCircuit) -> Callable[[], Any]:
    """A quantum function that applies the circuit's gates and returns ``qml.counts`` of its
    measured qubits (for ``qml.QNode(from_qiskit_qfunc(qc), device)``)."""
    qml = _qml()
    plan = plan_measurements(circuit)
    ops = circuit_operations(circuit)

    def qfunc() -> Any:
        for op in ops:
            qml.apply(op)
        return qml.counts(wires=list(plan.wires))

    qfunc.__name__ = circuit.name or "circuit"
    return qfunc


def qiskit_counts(circuit: QuantumCircuit, counts: dict[str, Any]) -> dict[str, int]:
    """PennyLane counts of :func:`from_qiskit`'s tape as Qiskit counts of ``circuit``
    (classical bit 0 rightmost, one character per classical bit)."""
    return plan_measurements(circuit).to_qiskit_counts(counts)
