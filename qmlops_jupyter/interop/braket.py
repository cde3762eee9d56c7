"""Qiskit <-> Amazon Braket circuits, and Braket's counts in Qiskit's bit order.

Out (:func:`translate`, :func:`to_braket`): the Qiskit circuit is transpiled (optimisation
level 0, no layout) to a basis of gates Braket has under its own names, then rebuilt gate by
gate with Braket's gate classes on the same qubit indices. Controlled gates are never sent as
gate modifiers (``ctrl @`` / ``control=``): the Braket LocalSimulator mis-simulates those on
four or more qubits, so they are decomposed into plain ``cnot``/``ccnot``/... gates instead.

Measurements: Braket measures every qubit of a circuit at the end and reports them in qubit
order (``q[0]`` leftmost), dropping qubits no gate touches. So the Braket circuit keeps every
Qiskit qubit (an ``i`` gate on idle ones), carries no measurement, and :class:`BraketProgram`
remembers which qubit each classical bit reads; :func:`counts_to_qiskit` rebuilds Qiskit's
keys (classical bit 0 rightmost) from Braket's measured qubits. A circuit with no classical
bits is measured on all its qubits, bit ``i`` reading qubit ``i`` (as ``measure_all``).

In (:func:`from_braket`): a Braket ``Circuit`` becomes a ``QuantumCircuit`` on the same qubit
indices (Braket qubit ``k`` is Qiskit qubit ``k``), gate modifiers and ``Unitary`` gates
included; Braket ``measure`` instructions become measurements into classical bits in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidCircuit, MissingBackendDependency

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

#: Qiskit gate name -> Braket gate class name, for gates with the same matrix and parameter
#: order in both SDKs (checked gate by gate against Qiskit's matrices in the tests).
QISKIT_TO_BRAKET: dict[str, str] = {
    "id": "I",
    "h": "H",
    "x": "X",
    "y": "Y",
    "z": "Z",
    "s": "S",
    "sdg": "Si",
    "t": "T",
    "tdg": "Ti",
    "sx": "V",
    "sxdg": "Vi",
    "rx": "Rx",
    "ry": "Ry",
    "rz": "Rz",
    "p": "PhaseShift",
    "u1": "PhaseShift",
    "u": "U",
    "u3": "U",
    "r": "PRx",
    "cx": "CNot",
    "cy": "CY",
    "cz": "CZ",
    "csx": "CV",
    "cp": "CPhaseShift",
    "cu1": "CPhaseShift",
    "swap": "Swap",
    "iswap": "ISwap",
    "ecr": "ECR",
    "rxx": "XX",
    "ryy": "YY",
    "rzz": "ZZ",
    "ccx": "CCNot",
    "cswap": "CSwap",
}

#: Gates every Braket simulator (SV1, DM1, TN1 and the LocalSimulator) runs under these names.
SIMULATOR_BASIS: tuple[str, ...] = (
    "id",
    "h",
    "x",
    "y",
    "z",
    "s",
    "sdg",
    "t",
    "tdg",
    "sx",
    "sxdg",
    "rx",
    "ry",
    "rz",
    "p",
    "cx",
    "cy",
    "cz",
    "csx",
    "cp",
    "swap",
    "iswap",
    "ecr",
    "rxx",
    "ryy",
    "rzz",
    "ccx",
    "cswap",
)
#: Gates every gate-model QPU behind Braket (IonQ, Rigetti, IQM) accepts in a non-verbatim
#: program; Braket compiles them to the device's native gates. Override per backend with the
#: ``basis_gates`` option. No ``i``: IonQ's devices do not take it (idle qubits are left out
#: and read 0).
QPU_BASIS: tuple[str, ...] = (
    "h",
    "x",
    "y",
    "z",
    "s",
    "sdg",
    "t",
    "tdg",
    "rx",
    "ry",
    "rz",
    "cx",
    "swap",
)

#: Braket gate class name -> (Qiskit gate name) for :func:`from_braket`, besides the inverse
#: of :data:`QISKIT_TO_BRAKET`.
_BRAKET_TO_QISKIT: dict[str, str] = {
    "I": "id",
    "H": "h",
    "X": "x",
    "Y": "y",
    "Z": "z",
    "S": "s",
    "Si": "sdg",
    "T": "t",
    "Ti": "tdg",
    "V": "sx",
    "Vi": "sxdg",
    "Rx": "rx",
    "Ry": "ry",
    "Rz": "rz",
    "PhaseShift": "p",
    "U": "u",
    "PRx": "r",
    "CNot": "cx",
    "CY": "cy",
    "CZ": "cz",
    "CV": "csx",
    "CPhaseShift": "cp",
    "Swap": "swap",
    "ISwap": "iswap",
    "ECR": "ecr",
    "XX": "rxx",
    "YY": "ryy",
    "ZZ": "rzz",
    "CCNot": "ccx",
    "CSwap": "cswap",
}

_SKIPPED = frozenset({"barrier", "delay", "global_phase"})


def _braket() -> Any:
    try:
        import braket.circuits as circuits
    except ImportError:
        raise MissingBackendDependency(
            "backend 'braket' needs amazon-braket-sdk; install it with: "
            "pip install 'qmlops-jupyter[braket]'"
        ) from None
    return circuits


@dataclass(frozen=True)
class BraketProgram:
    """A Braket circuit plus what it takes to read its counts in Qiskit's bit order."""

    circuit: Any  # braket.circuits.Circuit
    #: For each Qiskit classical bit (index = bit), the qubit it reads, or None if nothing is
    #: ever measured into it (it reads 0, as in Qiskit).
    clbit_qubits: tuple[int | None, ...]
    num_qubits: int

    def counts(
        self, braket_counts: Mapping[str, int], measured_qubits: Sequence[int]
    ) -> dict[str, int]:
        return counts_to_qiskit(braket_counts, measured_qubits, self.clbit_qubits)


def translate(
    circuit: QuantumCircuit, basis: Iterable[str] | None = None, *, pad_idle: bool | None = None
) -> BraketProgram:
    """Qiskit circuit -> :class:`BraketProgram` on the same qubit indices.

    ``basis`` is the set of Qiskit gate names to keep (each must be in
    :data:`QISKIT_TO_BRAKET`); anything else is decomposed by Qiskit's transpiler.
    ``pad_idle`` puts an ``i`` gate on qubits no gate touches, so simulators see contiguous
    qubits (default: when ``id`` is in the basis; QPUs such as IonQ's take no ``i``, and an
    idle qubit Braket leaves out reads 0, as it would).
    Raises :class:`InvalidCircuit` for what Braket cannot run (mid-circuit measurement,
    reset after use, classical control).
    """
    from qiskit import QuantumCircuit, transpile

    circuits = _braket()
    basis_set = set(basis or SIMULATOR_BASIS)
    if pad_idle is None:
        pad_idle = "id" in basis_set
    unknown = basis_set - set(QISKIT_TO_BRAKET)
    if unknown:
        raise InvalidCircuit(f"no Braket equivalent for basis gates {sorted(unknown)}")

    num_qubits = circuit.num_qubits
    clbit_qubits: list[int | None] = [None] * circuit.num_clbits
    measured: set[int] = set()
    body = QuantumCircuit(num_qubits, global_phase=circuit.global_phase)
    for instruction in circuit.data:
        op = instruction.operation
        name = op.name
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        if name == "measure":
            clbit = circuit.find_bit(instruction.clbits[0]).index
            clbit_qubits[clbit] = qubits[0]
            measured.add(qubits[0])
            continue
        if name in _SKIPPED or (name == "id" and "id" not in basis_set):
            continue
        if getattr(op, "condition", None) is not None or op.name in (
            "if_else",
            "while_loop",
            "for_loop",
            "switch_case",
            "box",
        ):
            raise InvalidCircuit(f"Braket cannot run classically controlled operations ({name})")
        if measured.intersection(qubits):
            raise InvalidCircuit(
                f"Braket measures at the end only: '{name}' acts on qubit(s) "
                f"{sorted(measured.intersection(qubits))} after they were measured"
            )
        if name == "reset":
            if any(_touched(body, q) for q in qubits):
                raise InvalidCircuit("Braket cannot reset a qubit after gates acted on it")
            continue
        if instruction.clbits:
            raise InvalidCircuit(f"Braket cannot run '{name}' (it writes classical bits)")
        body.append(op, qubits)

    if circuit.num_clbits == 0:
        clbit_qubits = list(range(num_qubits))
    if not set(body.count_ops()) <= basis_set:
        try:
            body = transpile(body, basis_gates=sorted(basis_set), optimization_level=0)
        except Exception as exc:
            raise InvalidCircuit(f"cannot express the circuit in Braket's gates: {exc}") from None

    braket_circuit = circuits.Circuit()
    gates = circuits.gates
    touched: set[int] = set()
    for instruction in body.data:
        op = instruction.operation
        if op.name in _SKIPPED:
            continue
        qubits = [body.find_bit(q).index for q in instruction.qubits]
        gate_name = QISKIT_TO_BRAKET.get(op.name)
        if gate_name is None:  # pragma: no cover - the transpiler guarantees the basis
            raise InvalidCircuit(f"gate '{op.name}' has no Braket equivalent")
        params = [float(p) for p in op.params]
        braket_circuit.add_instruction(
            circuits.Instruction(getattr(gates, gate_name)(*params), target=qubits)
        )
        touched.update(qubits)
    for q in range(num_qubits if pad_idle else 0):
        if q not in touched:
            # Braket drops qubits no gate touches; keep them so every qubit is measured.
            braket_circuit.add_instruction(circuits.Instruction(gates.I(), target=[q]))
    return BraketProgram(braket_circuit, tuple(clbit_qubits), num_qubits)


def _touched(circuit: QuantumCircuit, qubit: int) -> bool:
    return any(
        circuit.find_bit(q).index == qubit
        for instruction in circuit.data
        for q in instruction.qubits
    )


def to_braket(circuit: QuantumCircuit, basis: Iterable[str] | None = None) -> Any:
    """Qiskit circuit -> ``braket.circuits.Circuit`` (no measurements: Braket measures every
    qubit at the end). See :func:`translate` for the measurement map."""
    return translate(circuit, basis).circuit


def counts_to_qiskit(
    braket_counts: Mapping[str, int],
    measured_qubits: Sequence[int],
    clbit_qubits: Sequence[int | None],
) -> dict[str, int]:
    """Braket counts -> Qiskit counts.

    ``braket_counts`` keys list the outcomes of ``measured_qubits`` left to right (Braket's
    order); the result's keys list classical bits from the last to bit 0 (Qiskit's order,
    bit 0 rightmost), where bit ``c`` reads qubit ``clbit_qubits[c]`` (a qubit Braket did not
    report, or no qubit, reads 0).
    """
    position = {int(q): i for i, q in enumerate(measured_qubits)}
    sources = [position.get(q) if q is not None else None for q in reversed(clbit_qubits)]
    out: dict[str, int] = {}
    for key, n in braket_counts.items():
        bits = "".join("0" if i is None else key[i] for i in sources)
        out[bits] = out.get(bits, 0) + int(n)
    return out


# -- circuits in -----------------------------------------------------------------------------


def from_braket(circuit: Any) -> QuantumCircuit:
    """Braket ``Circuit`` -> Qiskit ``QuantumCircuit`` on the same qubit indices.

    Gate modifiers (``control``, ``control_state``, ``power``) and ``Unitary`` gates are kept.
    Braket ``measure`` instructions become measurements into classical bits 0, 1, ... in the
    order they appear; a circuit without them gets no classical bits (qmlops then measures
    every qubit). Result types are ignored; noise channels are refused.
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import UnitaryGate, get_standard_gate_name_mapping

    circuits = _braket()
    if not isinstance(circuit, circuits.Circuit):
        raise InvalidCircuit(f"expected a braket.circuits.Circuit, got {type(circuit).__name__}")
    if getattr(circuit, "parameters", None):
        names = ", ".join(sorted(p.name for p in circuit.parameters)[:5])
        raise InvalidCircuit(f"Braket circuit has unbound parameters ({names})")
    qubits = [int(q) for q in circuit.qubits]
    num_qubits = max(qubits) + 1 if qubits else 0
    measures = [ins for ins in circuit.instructions if type(ins.operator).__name__ == "Measure"]
    num_clbits = sum(len(ins.target) for ins in measures)
    qc = QuantumCircuit(num_qubits, num_clbits)
    standard = get_standard_gate_name_mapping()
    clbit = 0
    for ins in circuit.instructions:
        op = ins.operator
        kind = type(op).__name__
        targets = [int(q) for q in ins.target]
        if kind == "Measure":
            for q in targets:
                qc.measure(q, clbit)
                clbit += 1
            continue
        if kind == "GPhase":
            qc.global_phase += float(op.angle)
            continue
        if not isinstance(op, circuits.Gate):
            raise InvalidCircuit(
                f"cannot convert Braket instruction {kind} to Qiskit "
                "(noise channels and compiler directives are not supported)"
            )
        gate = _qiskit_gate(op, kind, standard, UnitaryGate, len(targets))
        if ins.power not in (1, 1.0):
            gate = gate.power(float(ins.power))
        controls = [int(q) for q in ins.control]
        if controls:
            # Braket's control_state lists the first control leftmost; Qiskit's ctrl_state
            # integer has the first control as its least significant bit.
            state = (
                "".join(str(int(b)) for b in ins.control_state)
                if len(ins.control_state)
                else "1" * len(controls)
            )
            gate = gate.control(len(controls), ctrl_state=state[::-1])
        qc.append(gate, controls + targets)
    return qc


def _qiskit_gate(
    op: Any, kind: str, standard: dict[str, Any], unitary_gate: Any, width: int
) -> Any:
    if kind == "Unitary":
        import numpy as np

        # Braket matrices are big-endian in the target order; Qiskit's are little-endian.
        matrix = np.asarray(op.to_matrix())
        return unitary_gate(
            matrix.reshape([2] * 2 * width)
            .transpose(list(range(width))[::-1] + list(range(width, 2 * width))[::-1])
            .reshape(2**width, 2**width)
        )
    name = _BRAKET_TO_QISKIT.get(kind)
    params = _angles(op)
    if name is not None:
        return type(standard[name])(*params)
    # Native gates of particular devices (IonQ gpi/gpi2/ms, pswap, xy, cphaseshift0x ...):
    # no Qiskit standard gate, kept exactly through the gate's own matrix.
    return _qiskit_gate(op, "Unitary", standard, unitary_gate, width)


def _angles(op: Any) -> list[float]:
    if hasattr(op, "angle"):
        return [float(op.angle)]
    values = []
    for attr in ("angle_1", "angle_2", "angle_3"):
        if hasattr(op, attr):
            values.append(float(getattr(op, attr)))
    return values


def equal_up_to_phase(a: Any, b: Any, atol: float = 1e-8) -> bool:
    """Whether two matrices are equal up to a global phase (used by the tests and docs)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    index = np.unravel_index(np.argmax(np.abs(b)), b.shape)
    if abs(b[index]) < atol:
        return bool(np.allclose(a, b, atol=atol))
    phase = a[index] / b[index]
    return bool(
        math.isclose(abs(phase), 1.0, abs_tol=1e-6) and np.allclose(a, phase * b, atol=atol)
    )
