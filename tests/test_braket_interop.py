"""Qiskit <-> Braket circuits and Braket's counts in Qiskit's bit order.

Offline: matrices come from Braket's own gate classes (``Circuit.to_unitary``) and from
Braket's ``LocalSimulator`` (exact probabilities, ``shots=0``), compared with Qiskit's
``Operator`` / ``Statevector``. No AWS call is made.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from braket.circuits import Circuit
from braket.circuits.serialization import IRType
from braket.devices import LocalSimulator
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit.library import (
    MCXGate,
    UnitaryGate,
    get_standard_gate_name_mapping,
)
from qiskit.quantum_info import Operator, Statevector, random_unitary

from qmlops_jupyter.errors import InvalidCircuit
from qmlops_jupyter.interop.braket import (
    QISKIT_TO_BRAKET,
    QPU_BASIS,
    SIMULATOR_BASIS,
    counts_to_qiskit,
    equal_up_to_phase,
    from_braket,
    to_braket,
    translate,
)

NOT_GATES = {"measure", "reset", "delay", "global_phase", "barrier"}
STANDARD = {
    name: gate for name, gate in get_standard_gate_name_mapping().items() if name not in NOT_GATES
}
ANGLES = [0.37, -1.21, 2.05, 0.73]


def standard_gate(name: str):
    template = STANDARD[name]
    return type(template)(*ANGLES[: len(template.params)])


def big_endian(op: Operator | np.ndarray) -> np.ndarray:
    """Qiskit's matrix (qubit 0 least significant) in Braket's order (qubit 0 most)."""
    if not isinstance(op, Operator):
        op = Operator(op)
    return op.reverse_qargs().data


def braket_probabilities(circuit: Circuit, simulator: str = "braket_sv") -> np.ndarray:
    """Exact outcome probabilities from the LocalSimulator, indexed the Qiskit way."""
    probe = circuit.copy()
    probe.probability()
    values = np.asarray(LocalSimulator(simulator).run(probe, shots=0).result().values[0])
    n = probe.qubit_count
    # Braket index: qubit 0 is the most significant bit; Qiskit's: the least.
    return values.reshape([2] * n).transpose(list(range(n))[::-1]).reshape(-1)


def prepared(n: int) -> QuantumCircuit:
    """A non-trivial entangled input state, so every gate's action shows."""
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(0.4 + 0.3 * q, q)
        qc.rz(0.2 + 0.5 * q, q)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    return qc


def test_the_direct_map_covers_the_basis() -> None:
    assert set(SIMULATOR_BASIS) <= set(QISKIT_TO_BRAKET)
    assert set(QPU_BASIS) <= set(SIMULATOR_BASIS)
    assert len(STANDARD) >= 45  # every standard gate is exercised below


@pytest.mark.parametrize("name", sorted(QISKIT_TO_BRAKET))
def test_direct_map_has_the_same_matrix(name: str) -> None:
    """Each Qiskit gate mapped straight to a Braket gate has the same matrix there (up to a
    global phase), same qubit order and same parameter order."""
    gate = standard_gate(name)
    qc = QuantumCircuit(gate.num_qubits)
    qc.append(gate, range(gate.num_qubits))
    braket = to_braket(qc, basis=[name])
    assert len(braket.instructions) == 1
    assert equal_up_to_phase(braket.to_unitary(), big_endian(qc))


@pytest.mark.parametrize("basis", [SIMULATOR_BASIS, QPU_BASIS], ids=["simulators", "qpus"])
@pytest.mark.parametrize("name", sorted(STANDARD))
def test_every_standard_gate_translates_exactly(name: str, basis: tuple[str, ...]) -> None:
    """Every Qiskit standard gate, in both target bases, gives the same unitary in Braket."""
    gate = standard_gate(name)
    qc = QuantumCircuit(gate.num_qubits)
    qc.append(gate, range(gate.num_qubits))
    # Idle qubits padded with i (as for simulators) so both matrices have every qubit.
    braket = translate(qc, basis, pad_idle=True).circuit
    used = {type(ins.operator).__name__ for ins in braket.instructions}
    assert used <= {QISKIT_TO_BRAKET[g] for g in basis} | {"I"}
    assert equal_up_to_phase(braket.to_unitary(), big_endian(qc)), name


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_every_standard_gate_simulates_like_qiskit(name: str) -> None:
    """LocalSimulator's exact probabilities after each gate (on an entangled input, with the
    gate on shuffled qubits of a wider register) equal Qiskit's Statevector."""
    gate = standard_gate(name)
    n = gate.num_qubits + 1
    qc = prepared(n)
    qubits = list(range(n))[::-1][: gate.num_qubits]  # reversed order: catches swapped args
    qc.append(gate, qubits)
    expected = Statevector(qc).probabilities()
    got = braket_probabilities(to_braket(qc))
    np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=name)


def test_no_gate_modifiers_are_ever_sent() -> None:
    """The LocalSimulator mis-simulates ``ctrl @`` on 4+ qubits: controlled gates go out
    decomposed into Braket's plain gates."""
    qc = QuantumCircuit(5)
    qc.append(MCXGate(4), [0, 1, 2, 3, 4])
    qc.append(standard_gate("c3sx"), [4, 2, 0, 1])
    qc.append(standard_gate("rcccx"), [1, 3, 4, 0])
    qc.append(standard_gate("ch").control(2), [3, 0, 1, 4])
    source = to_braket(qc).to_ir(IRType.OPENQASM).source
    assert "ctrl" not in source and "@" not in source


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda qc: (qc.h(1), qc.cx(1, 3)), id="h1-cx13"),
        pytest.param(lambda qc: (qc.h(0), qc.h(2), qc.append(MCXGate(3), [0, 2, 1, 3])), id="mcx3"),
        pytest.param(
            lambda qc: (qc.x([0, 1, 2, 3]), qc.append(MCXGate(4), [0, 1, 2, 3, 4])),
            id="mcx4-all-set",
        ),
        pytest.param(
            lambda qc: (qc.h([4, 3]), qc.x(2), qc.append(standard_gate("c3sx"), [4, 3, 2, 0])),
            id="c3sx",
        ),
        pytest.param(
            lambda qc: (qc.h([0, 4]), qc.append(standard_gate("crx").control(2), [0, 4, 2, 3])),
            id="cccrx",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:You are running a noise-free circuit")
def test_controlled_gates_on_four_or_more_qubits(build) -> None:
    """Where gate modifiers give wrong answers on the LocalSimulator (4+ qubits), the
    decomposed circuit gives Qiskit's exact probabilities."""
    qc = QuantumCircuit(5)
    build(qc)
    expected = Statevector(qc).probabilities()
    for simulator in ("braket_sv", "braket_dm"):
        got = braket_probabilities(to_braket(qc), simulator)
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_the_local_simulator_modifier_trap_is_avoided() -> None:
    """``h(1); x(3, control=1)`` with qubits 0 and 2 present: the LocalSimulator gets the
    modifier form wrong ({0000, 0100}); the same circuit from Qiskit goes out as ``cnot`` and
    is right ({0000, 0101}). If the first assertion fails, Braket fixed the bug."""
    naive = Circuit().i(0).h(1).i(2).x(3, control=1)
    wrong = braket_probabilities(naive)
    assert wrong[0b0010] == pytest.approx(0.5), "LocalSimulator modifier bug is gone"
    qc = QuantumCircuit(4)
    qc.h(1)
    qc.cx(1, 3)
    right = braket_probabilities(to_braket(qc))
    assert right[0b1010] == pytest.approx(0.5) and right[0] == pytest.approx(0.5)


def test_idle_qubits_are_kept_for_simulators_not_qpus() -> None:
    qc = QuantumCircuit(4)
    qc.x(1)
    qc.id(3)
    braket = to_braket(qc)
    assert braket.qubit_count == 4
    probabilities = braket_probabilities(braket)
    assert probabilities[0b0010] == pytest.approx(1.0)
    qpu = translate(qc, QPU_BASIS)
    assert [int(q) for q in qpu.circuit.qubits] == [1]
    # Braket reports qubit 1 only; the qubits it left out read 0.
    assert qpu.counts({"1": 9}, [1]) == {"0010": 9}


def test_measurement_map_and_partial_measurement() -> None:
    """Classical bit c reads the qubit measured into it; bits nothing is measured into read 0;
    Braket's keys (q0 leftmost) come back in Qiskit's order (bit 0 rightmost)."""
    qr = QuantumRegister(4)
    a, b = ClassicalRegister(2, "a"), ClassicalRegister(2, "b")
    qc = QuantumCircuit(qr, a, b)
    qc.x(3)
    qc.measure(3, a[0])  # bit 0 <- qubit 3
    qc.measure(0, b[1])  # bit 3 <- qubit 0; bits 1 and 2 never written
    program = translate(qc)
    assert program.clbit_qubits == (3, None, None, 0)
    # Braket measured q0..q3 = 0,0,0,1 -> key "0001".
    assert program.counts({"0001": 7, "1001": 3}, [0, 1, 2, 3]) == {"0001": 7, "1001": 3}
    # Same shots if Braket reported the qubits in another order, or dropped idle ones.
    assert counts_to_qiskit({"10": 7}, [3, 0], program.clbit_qubits) == {"0001": 7}


def test_no_clbits_measures_all_qubits_like_measure_all() -> None:
    qc = QuantumCircuit(3)
    qc.x(0)
    program = translate(qc)
    assert program.clbit_qubits == (0, 1, 2)
    assert program.counts({"100": 5}, [0, 1, 2]) == {"001": 5}


def test_braket_keys_become_qiskit_keys() -> None:
    # Braket "q0 q1 q2" = "110": qubits 0 and 1 set; Qiskit reads c2 c1 c0 = "011".
    assert counts_to_qiskit({"110": 4, "001": 1}, [0, 1, 2], [0, 1, 2]) == {"011": 4, "100": 1}
    # Merged keys add up.
    assert counts_to_qiskit({"10": 2, "11": 3}, [0, 1], [0]) == {"1": 5}


def test_what_braket_cannot_run_is_refused() -> None:
    mid = QuantumCircuit(2, 2)
    mid.measure(0, 0)
    mid.x(0)
    with pytest.raises(InvalidCircuit, match="measures at the end"):
        translate(mid)
    reset = QuantumCircuit(1, 1)
    reset.x(0)
    reset.reset(0)
    with pytest.raises(InvalidCircuit, match="reset"):
        translate(reset)
    controlled = QuantumCircuit(2, 1)
    controlled.measure(0, 0)
    with controlled.if_test((controlled.clbits[0], 1)):
        controlled.x(1)
    with pytest.raises(InvalidCircuit):
        translate(controlled)
    with pytest.raises(InvalidCircuit, match="Braket equivalent"):
        translate(QuantumCircuit(1), basis=["h", "not_a_gate"])


def test_initial_reset_barrier_and_delay_are_dropped() -> None:
    qc = QuantumCircuit(2, 2)
    qc.reset([0, 1])
    qc.h(0)
    qc.barrier()
    qc.delay(100, 1)
    qc.measure([0, 1], [0, 1])
    names = {type(i.operator).__name__ for i in to_braket(qc).instructions}
    assert names == {"H", "I"}


# -- circuits in -----------------------------------------------------------------------------


def braket_sample() -> Circuit:
    """Every kind of Braket instruction from_braket must read: plain gates, IonQ/Rigetti/IQM
    natives, gate modifiers (controls, control states, powers) and a Unitary."""
    matrix = random_unitary(4, seed=7).data
    c = Circuit()
    c.h(0).cnot(0, 1).rx(2, 0.3).phaseshift(1, 0.7).cphaseshift(1, 2, 0.4)
    c.xx(0, 2, 0.9).yy(1, 2, -0.5).zz(0, 1, 1.1).si(2).ti(0).v(1).vi(2)
    c.gpi(0, 0.2).gpi2(1, 0.4).ms(0, 2, 0.1, 0.2, 0.3).pswap(0, 1, 0.6).xy(1, 2, 0.8)
    c.cphaseshift01(0, 2, 0.5).ecr(1, 0).iswap(2, 0).prx(1, 0.3, 0.9).u(2, 0.1, 0.2, 0.3)
    c.x(3, control=[0, 1])
    c.rz(3, 0.25, control=2, power=2)
    c.unitary(matrix=matrix, targets=[3, 1])
    c.ccnot(0, 1, 3).cswap(3, 0, 2).cy(2, 3).cz(0, 3).swap(1, 3)
    return c


def test_from_braket_keeps_the_unitary() -> None:
    c = braket_sample()
    qc = from_braket(c)
    assert qc.num_qubits == 4 and qc.num_clbits == 0
    assert equal_up_to_phase(big_endian(qc), c.to_unitary())


@pytest.mark.parametrize("state", [(1, 0), (0, 1), (0, 0), (1, 1)])
@pytest.mark.parametrize("prep", [(), (0,), (1,), (0, 1)])
def test_from_braket_control_state_as_braket_runs_it(state, prep) -> None:
    """Braket's control_state lists the controls in order (1 = control on |1>): checked
    against the LocalSimulator on 3 qubits (Circuit.to_unitary reads it reversed, so the
    simulator is the reference here)."""
    c = Circuit()
    for q in prep:
        c.x(q)
    c.h(2).x(2, control=[0, 1], control_state=list(state)).h(2).rx(2, 0.4)
    expected = braket_probabilities(c)
    np.testing.assert_allclose(Statevector(from_braket(c)).probabilities(), expected, atol=1e-9)


def test_round_trip_braket_qiskit_braket() -> None:
    c = braket_sample()
    back = to_braket(from_braket(c))
    assert equal_up_to_phase(back.to_unitary(), c.to_unitary())


def test_round_trip_qiskit_braket_qiskit() -> None:
    qc = prepared(3)
    qc.append(standard_gate("xx_plus_yy"), [2, 0])
    qc.append(UnitaryGate(random_unitary(2, seed=3)), [1])
    back = from_braket(to_braket(qc))
    assert equal_up_to_phase(Operator(back).data, Operator(qc).data)


def test_from_braket_measurements_become_clbits() -> None:
    c = Circuit().x(0).h(1).measure([2, 0])
    qc = from_braket(c)
    assert qc.num_qubits == 3 and qc.num_clbits == 2
    measured = [
        (qc.find_bit(i.qubits[0]).index, qc.find_bit(i.clbits[0]).index)
        for i in qc.data
        if i.operation.name == "measure"
    ]
    assert measured == [(2, 0), (0, 1)]


def test_from_braket_refuses_noise_and_non_circuits() -> None:
    with pytest.raises(InvalidCircuit, match="noise"):
        from_braket(Circuit().h(0).bit_flip(0, 0.1))
    with pytest.raises(InvalidCircuit):
        from_braket("h q[0];")


def test_equal_up_to_phase() -> None:
    m = np.eye(2)
    assert equal_up_to_phase(m * np.exp(1j * math.pi / 3), m)
    assert not equal_up_to_phase(np.diag([1, -1]), m)
