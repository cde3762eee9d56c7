"""PennyLane circuits in and out (``qmlops_jupyter.interop.pennylane``).

How PennyLane is reached offline: it is a local library; tapes and QNodes are built and run on
its own ``default.qubit`` device, Qiskit circuits on Aer, in this process. The gate tables are
checked matrix by matrix against both libraries' own definitions.
"""

from __future__ import annotations

import math

import numpy as np
import pennylane as qml
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.quantum_info import Operator
from qiskit_aer import AerSimulator

from qmlops_jupyter.client import Client
from qmlops_jupyter.errors import InvalidCircuit
from qmlops_jupyter.interop.pennylane import (
    PL_TO_QISKIT,
    QISKIT_TO_PL,
    circuit_operations,
    from_qiskit,
    from_qiskit_qfunc,
    qiskit_counts,
    tape_of,
    to_qiskit,
)

SHOTS = 4000


def qiskit_matrix(circuit: QuantumCircuit) -> np.ndarray:
    """The circuit's unitary with qubit 0 as the most significant bit (PennyLane's order)."""
    return Operator(circuit.remove_final_measurements(inplace=False)).reverse_qargs().data


def same_up_to_phase(a: np.ndarray, b: np.ndarray) -> bool:
    k = np.argmax(np.abs(a))
    index = np.unravel_index(k, a.shape)
    if abs(b[index]) < 1e-9:
        return False
    phase = a[index] / b[index]
    return np.allclose(a, phase * b, atol=1e-8)


def aer(circuit: QuantumCircuit, shots: int = SHOTS, seed: int = 1) -> dict[str, int]:
    sim = AerSimulator()
    result = sim.run(transpile(circuit, sim), shots=shots, seed_simulator=seed).result()
    return {k.replace(" ", ""): v for k, v in result.get_counts().items()}


def tvd(a: dict[str, float], b: dict[str, float]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


# -- the gate tables ---------------------------------------------------------------------------


@pytest.mark.parametrize("pl_name", sorted(PL_TO_QISKIT))
def test_pennylane_to_qiskit_table_is_exact(pl_name: str) -> None:
    """Each PennyLane gate and its Qiskit counterpart have the same matrix (up to a phase)."""
    if pl_name.startswith("Adjoint("):
        base = getattr(qml, pl_name[len("Adjoint(") : -1])
        op = qml.adjoint(base(wires=0))
    else:
        cls = getattr(qml, pl_name)
        params = [0.3 + 0.4 * i for i in range(cls.num_params)]
        op = cls(*params, wires=list(range(cls.num_wires)))
    tape = qml.tape.QuantumScript([op])
    circuit = to_qiskit(tape)[0]
    assert circuit.count_ops().get(PL_TO_QISKIT[pl_name]) == 1, circuit.count_ops()
    wires = list(range(circuit.num_qubits))
    expected = qml.matrix(op, wire_order=wires)
    assert same_up_to_phase(qiskit_matrix(circuit), expected), pl_name


@pytest.mark.parametrize("qiskit_name", sorted(QISKIT_TO_PL))
def test_qiskit_to_pennylane_table_is_exact(qiskit_name: str) -> None:
    gate = get_standard_gate_name_mapping()[qiskit_name]
    params = [0.3 + 0.4 * i for i in range(len(gate.params))]
    gate = type(gate)(*params)
    qc = QuantumCircuit(gate.num_qubits)
    qc.append(gate, list(range(gate.num_qubits)))
    ops = circuit_operations(qc)
    wires = list(range(qc.num_qubits))
    ours = qml.matrix(qml.tape.QuantumScript(ops), wire_order=wires) if ops else np.eye(2)
    assert np.allclose(ours, qiskit_matrix(qc), atol=1e-8), qiskit_name


def test_from_qiskit_of_a_random_circuit_is_the_same_unitary() -> None:
    """Gates outside the table (rzx, csx, r, mcx, unitary ...) are transpiled or given as a
    matrix; the tape's unitary equals the circuit's, global phase included."""
    from qiskit.circuit.library import UnitaryGate
    from qiskit.circuit.random import random_circuit

    qc = random_circuit(4, 6, max_operands=3, seed=42)
    qc.rzx(0.3, 0, 2)
    qc.csx(3, 1)
    qc.r(0.2, 0.9, 2)
    qc.mcx([0, 1, 2], 3)
    qc.append(UnitaryGate(Operator(random_circuit(2, 3, seed=7))), [3, 0])
    qc.global_phase = 0.4
    tape = from_qiskit(qc)
    ours = qml.matrix(tape, wire_order=range(4))
    assert np.allclose(ours, qiskit_matrix(qc), atol=1e-7)


# -- Qiskit -> PennyLane -----------------------------------------------------------------------


def test_from_qiskit_counts_read_back_in_qiskit_order() -> None:
    qc = QuantumCircuit(3, 2)
    qc.x(2)
    qc.measure(2, 0)  # qubit 2 -> classical bit 0 (rightmost)
    qc.measure(0, 1)
    tape = from_qiskit(qc, shots=50)
    (counts,) = qml.execute([tape], qml.device("default.qubit", wires=3))
    assert {str(k): int(v) for k, v in counts.items()} == {"01": 50}  # wires [0, 2], wire 0 left
    assert qiskit_counts(qc, counts) == {"01": 50}
    assert qiskit_counts(qc, counts) == aer(qc, 50)


def test_from_qiskit_qfunc_runs_in_a_qnode() -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qnode = qml.set_shots(
        qml.QNode(from_qiskit_qfunc(qc), qml.device("default.qubit", seed=3)), shots=400
    )
    counts = qiskit_counts(qc, qnode())
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 400


def test_mid_circuit_measurement_and_reset_are_refused() -> None:
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    qc.h(0)
    with pytest.raises(InvalidCircuit, match="mid-circuit"):
        from_qiskit(qc)
    reset = QuantumCircuit(1)
    reset.reset(0)
    with pytest.raises(InvalidCircuit, match="reset"):
        from_qiskit(reset)


# -- PennyLane -> Qiskit -----------------------------------------------------------------------


def classifier_qnode(device: str = "default.qubit") -> qml.QNode:
    @qml.qnode(qml.device(device, wires=3))
    def circuit(x=0.4, weights=(0.3, 1.1, 0.2)):
        qml.RX(x, wires=0)
        qml.RY(weights[0], wires=1)
        qml.CNOT(wires=[0, 1])
        qml.Rot(*weights, wires=2)
        qml.CRZ(0.5, wires=[1, 2])
        qml.Hadamard(wires=2)
        return qml.probs(wires=[0, 1, 2])

    return circuit


def pl_probs_as_qiskit_counts(probs: np.ndarray, n: int) -> dict[str, float]:
    """PennyLane probs index (wire 0 most significant) -> Qiskit key of bits c[n-1]..c[0] with
    wire i measured into c[i]."""
    return {format(i, f"0{n}b")[::-1]: float(p) for i, p in enumerate(probs) if p > 1e-12}


def test_qnode_tape_and_qfunc_give_the_same_counts_as_aer() -> None:
    qnode = classifier_qnode()
    exact = pl_probs_as_qiskit_counts(qnode(), 3)

    def qfunc():
        qml.RX(0.4, wires=0)
        qml.RY(0.3, wires=1)
        qml.CNOT(wires=[0, 1])
        qml.Rot(0.3, 1.1, 0.2, wires=2)
        qml.CRZ(0.5, wires=[1, 2])
        qml.Hadamard(wires=2)
        return qml.probs(wires=[0, 1, 2])

    tape = tape_of(qnode)
    for obj in (qnode, tape, qfunc):
        (circuit,) = to_qiskit(obj)
        assert circuit.num_qubits == 3 and circuit.num_clbits == 3
        assert tvd(aer(circuit), exact) < 0.04


def test_qnode_with_arguments_needs_tape_of() -> None:
    @qml.qnode(qml.device("default.qubit", wires=2))
    def needs_args(x, weights):
        qml.RX(x, wires=0)
        qml.RY(weights[0], wires=1)
        return qml.counts()

    with pytest.raises(InvalidCircuit, match=r"needs arguments \(x, weights\).*tape_of"):
        to_qiskit(needs_args)
    (circuit,) = to_qiskit(tape_of(needs_args, math.pi, [0.0]))
    assert aer(circuit, 20) == {"01": 20}  # wire 0 flipped: classical bit 0, rightmost
    (same,) = to_qiskit(needs_args, math.pi, [0.0])
    assert aer(same, 20) == {"01": 20}


def test_partial_measurement_bit_order() -> None:
    """The measurement's first wire is classical bit 0, the rightmost character."""
    tape = qml.tape.QuantumScript([qml.X(2)], [qml.counts(wires=[2, 0])])
    (circuit,) = to_qiskit(tape)
    assert circuit.num_qubits == 3 and circuit.num_clbits == 2
    assert aer(circuit, 10) == {"01": 10}
    tape = qml.tape.QuantumScript([qml.X(0)], [qml.counts(wires=[2, 0])])
    assert aer(to_qiskit(tape)[0], 10) == {"10": 10}


def test_string_wire_labels_follow_first_use_or_device_order() -> None:
    def qfunc():
        qml.X("b")
        qml.CNOT(wires=["b", "a"])
        return qml.counts(wires=["a", "b"])

    (circuit,) = to_qiskit(qfunc)
    assert aer(circuit, 10) == {"11": 10}
    qnode = qml.QNode(qfunc, qml.device("default.qubit", wires=["a", "b", "c"]))
    (circuit,) = to_qiskit(qnode)
    assert circuit.num_qubits == 3


def test_expectation_values_are_rotated_and_split() -> None:
    """expval(X) adds the basis change; X and Z on the same wire need two circuits."""
    ops = [qml.RY(0.6, wires=0)]
    tape = qml.tape.QuantumScript(ops, [qml.expval(qml.X(0)), qml.expval(qml.Z(0))])
    circuits = to_qiskit(tape)
    assert len(circuits) == 2
    values = []
    for circuit in circuits:
        counts = aer(circuit, SHOTS)
        values.append((counts.get("0", 0) - counts.get("1", 0)) / SHOTS)
    assert sorted(values) == pytest.approx(sorted([math.sin(0.6), math.cos(0.6)]), abs=0.05)


def test_broadcast_parameters_give_one_circuit_each() -> None:
    tape = qml.tape.QuantumScript([qml.RX(np.array([0.0, math.pi]), wires=0)], [qml.counts()])
    circuits = to_qiskit(tape)
    assert [aer(c, 10) for c in circuits] == [{"0": 10}, {"1": 10}]


def test_templates_and_state_preparation_decompose() -> None:
    def qfunc():
        qml.BasisState(np.array([1, 0, 1]), wires=[0, 1, 2])
        qml.StronglyEntanglingLayers(np.zeros((1, 3, 3)), wires=[0, 1, 2])
        return qml.probs(wires=[0, 1, 2])

    exact = pl_probs_as_qiskit_counts(qml.QNode(qfunc, qml.device("default.qubit"))(), 3)
    (circuit,) = to_qiskit(qfunc)
    assert tvd(aer(circuit), exact) < 0.04


def test_no_measurement_gives_no_classical_bits() -> None:
    tape = qml.tape.QuantumScript([qml.H(0), qml.CNOT([0, 1])], [])
    (circuit,) = to_qiskit(tape)
    assert circuit.num_clbits == 0 and circuit.num_qubits == 2


def test_submit_a_tape_through_the_ledger(client: Client) -> None:
    """Tapes converted here are plain circuits to the ledger (and once circuits.prepare routes
    PennyLane objects, the tape itself can be submitted)."""
    tape = qml.tape.QuantumScript([qml.X(1)], [qml.counts(wires=[0, 1])])
    job = client.submit(to_qiskit(tape), backend="aer", shots=30, wait=True)
    assert job.result().counts == [{"10": 30}]


def test_submit_pennylane_objects_directly(client: Client) -> None:
    tape = qml.tape.QuantumScript([qml.X(1)], [qml.counts(wires=[0, 1])])
    assert client.submit(tape, backend="aer", shots=30, wait=True).result().counts == [{"10": 30}]

    @qml.qnode(qml.device("default.qubit", wires=2))
    def bell():
        qml.H(0)
        qml.CNOT([0, 1])
        return qml.counts()

    counts = (
        client.submit(bell, backend="pennylane:lightning.qubit", shots=200, wait=True)
        .result()
        .counts[0]
    )
    assert set(counts) == {"00", "11"}


def test_hermitian_observables_are_rotated_into_their_eigenbasis() -> None:
    """diagonalize_measurements leaves a Hermitian alone; its diagonalizing gates are added."""
    matrix = np.array([[1.0, 0.5], [0.5, -1.0]])
    obs = qml.Hermitian(matrix, wires=0)
    tape = qml.tape.QuantumScript([qml.RY(0.7, wires=0)], [qml.expval(obs)])
    (circuit,) = to_qiskit(tape)
    counts = aer(circuit, 20000)
    eigvals = obs.eigvals()  # outcome 0 -> eigvals[0], outcome 1 -> eigvals[1]
    value = sum(eigvals[int(k)] * n for k, n in counts.items()) / 20000
    expected = float(np.cos(0.7) + 0.5 * np.sin(0.7))  # <Z> + 0.5 <X> after RY(0.7)
    assert value == pytest.approx(expected, abs=0.03)
