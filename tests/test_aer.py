"""Counts from the ledger agree with a direct AerSimulator run of the same circuits."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import real_amplitudes
from qiskit_aer import AerSimulator

from qmlops_jupyter.client import Client

SHOTS = 4000


def circuits() -> list[QuantumCircuit]:
    ansatz = real_amplitudes(4, reps=2).decompose()
    ansatz.measure_all()
    bound = [
        ansatz.assign_parameters([0.1 * (i + k) for i in range(ansatz.num_parameters)])
        for k in range(3)
    ]
    # Two registers and a gate Aer must transpile (u3 via a custom-named gate set).
    two_regs = QuantumCircuit(3)
    two_regs.add_register(*[__import__("qiskit").ClassicalRegister(1, n) for n in ("a", "b")])
    two_regs.x(0)
    two_regs.h(2)
    two_regs.measure(0, 0)
    two_regs.measure(2, 1)
    return [*bound, two_regs]


def direct(circs: list[QuantumCircuit], seed: int) -> list[dict[str, int]]:
    sim = AerSimulator()
    result = sim.run(transpile(circs, sim), shots=SHOTS, seed_simulator=seed).result()
    return [
        {k.replace(" ", ""): v for k, v in result.get_counts(i).items()} for i in range(len(circs))
    ]


def test_same_seed_gives_identical_counts(client: Client) -> None:
    circs = circuits()
    job = client.submit(circs, shots=SHOTS, seed=1234, wait=True)
    assert job.result().counts == direct(circs, 1234)


def test_bit_order_is_qiskits(client: Client) -> None:
    qc = QuantumCircuit(3, 3)
    qc.x(0)  # classical bit 0 is set: the rightmost character
    qc.measure(range(3), range(3))
    assert client.submit(qc, shots=10, wait=True).result().counts == [{"001": 10}]
    # Two registers: bit 0 (register a) rightmost, register b to its left, no space.
    two = circuits()[-1]
    counts = client.submit(two, shots=200, seed=3, wait=True).result().counts[0]
    assert set(counts) == {"01", "11"}


@pytest.mark.parametrize("seeds", [(11, 12)])
def test_different_seeds_agree_statistically(client: Client, seeds) -> None:
    circs = circuits()[:3]
    ours = client.submit(circs, shots=SHOTS, seed=seeds[0], wait=True).result().counts
    theirs = direct(circs, seeds[1])
    assert ours != theirs  # really different samples
    for a, b in zip(ours, theirs, strict=True):
        keys = set(a) | set(b)
        tvd = 0.5 * sum(abs(a.get(k, 0) - b.get(k, 0)) for k in keys) / SHOTS
        # 4,000 shots over at most 16 outcomes: sampling noise keeps TVD well under 0.06.
        assert tvd < 0.06, (tvd, a, b)


def test_qasm_text_and_circuit_give_the_same_counts(client: Client) -> None:
    from qiskit import qasm2

    qc = circuits()[0]
    text = qasm2.dumps(qc)
    a = client.submit(qc, shots=500, seed=9, wait=True).result().counts
    b = client.submit(text, shots=500, seed=9, wait=True).result().counts
    assert a == b
