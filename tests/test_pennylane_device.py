"""The ``qmlops`` PennyLane device: every execution of a QNode is a ledger job.

How PennyLane is reached offline: it is a local library. The device is loaded through
PennyLane's real plugin entry point; its jobs run on Aer (and once on PennyLane's own
``default.qubit`` as the qmlops backend) in this process, through an isolated ledger
(``home`` fixture). Reference values come from ``default.qubit`` in analytic mode.
"""

from __future__ import annotations

import math

import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp

from qmlops_jupyter.bridges.pennylane_device import QmlopsDevice
from qmlops_jupyter.client import Client, get_client


@pytest.fixture
def ledger_client(home) -> Client:
    """The process-wide client the device uses by default, on the test's own ledger."""
    return get_client()


HERMITIAN = np.array([[1.0, 0.5], [0.5, -1.0]])


def ledger_jobs(client: Client) -> list:
    return client.jobs(limit=1000)


def observables_circuit(dev):
    @qml.qnode(dev)
    def circuit(a, b):
        qml.RX(a, wires=0)
        qml.RY(b, wires=1)
        qml.CNOT(wires=[0, 1])
        qml.S(wires=1)
        return (
            qml.expval(qml.Z(0)),
            qml.expval(qml.X(1)),
            qml.expval(qml.Z(0) @ qml.Y(1)),
            qml.var(qml.Z(1)),
            qml.probs(wires=[1, 0]),
            qml.expval(0.5 * qml.Z(0) + 0.25 * qml.X(0) @ qml.X(1)),
            qml.expval(qml.Hermitian(HERMITIAN, wires=1)),  # rotated via its Pauli form
        )

    return circuit


def test_loads_through_pennylanes_entry_point(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=2, shots=100)
    assert isinstance(dev, QmlopsDevice)
    assert dev.name == "qmlops" and dev.shots.total_shots == 100
    assert dev.backend == "aer" and len(dev.wires) == 2
    assert "backend='aer'" in repr(dev)


def test_expectation_values_agree_with_default_qubit(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=2, shots=20000, seed=5, job_name="observables")
    ours = observables_circuit(dev)(0.7, 1.2)
    exact = observables_circuit(qml.device("default.qubit", wires=2))(0.7, 1.2)
    for got, want in zip(ours, exact, strict=True):
        # 20,000 shots: one standard error is at most 0.007 on a +-1 observable.
        assert got == pytest.approx(want, abs=0.035), (ours, exact)
    jobs = ledger_jobs(ledger_client)
    assert len(jobs) == 1, "one execution of the QNode is one ledger job"
    record = jobs[0].record
    assert record.name == "observables" and record.backend == "aer"
    assert record.tags["source"] == "pennylane"
    assert record.shots == 20000
    # Non-commuting measurements were split into several circuits of one job.
    assert len(record.circuits) >= 2


def test_counts_and_samples_come_back_in_pennylanes_order(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=3, shots=40)

    @qml.qnode(dev)
    def circuit():
        qml.X(0)
        return qml.counts(wires=[0, 1]), qml.sample(wires=[2, 0]), qml.counts()

    counts, samples, everything = circuit()
    assert dict(counts) == {"10": 40}  # wire 0 leftmost, as PennyLane reads it
    assert samples.shape == (40, 2) and (samples == [0, 1]).all()
    assert dict(everything) == {"100": 40}


def test_shot_vectors_are_dealt_from_one_job(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=1)

    @qml.set_shots(shots=[100, 300])
    @qml.qnode(dev)
    def circuit():
        qml.X(0)
        return qml.expval(qml.Z(0))

    assert tuple(circuit()) == (-1.0, -1.0)
    jobs = ledger_jobs(ledger_client)
    assert len(jobs) == 1 and jobs[0].record.shots == 400


def test_analytic_execution_is_refused_with_the_fix(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=1)

    @qml.qnode(dev)
    def circuit():
        qml.H(0)
        return qml.expval(qml.Z(0))

    with pytest.raises(qml.exceptions.DeviceError, match="needs shots"):
        circuit()
    assert ledger_jobs(ledger_client) == []


def test_variance_of_a_hermitian_is_refused_plainly(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=1, shots=10)

    @qml.qnode(dev)
    def circuit():
        return qml.var(qml.Hermitian(HERMITIAN, wires=0))

    with pytest.raises(qml.exceptions.DeviceError, match="only the expectation value"):
        circuit()
    assert ledger_jobs(ledger_client) == []


def test_a_pennylane_device_as_the_qmlops_backend(ledger_client: Client) -> None:
    """The bridge in front of the ``pennylane:default.qubit`` backend: PennyLane through the
    ledger and back into PennyLane."""
    dev = qml.device("qmlops", backend="pennylane:default.qubit", wires=2, shots=4000, seed=2)
    ours = observables_circuit(dev)(0.3, 2.0)
    exact = observables_circuit(qml.device("default.qubit", wires=2))(0.3, 2.0)
    assert ours[0] == pytest.approx(exact[0], abs=0.06)
    assert ours[1] == pytest.approx(exact[1], abs=0.06)
    (job,) = ledger_jobs(ledger_client)
    assert job.record.backend == "pennylane:default.qubit"
    assert job.record.state.value == "COMPLETED"


# -- training ----------------------------------------------------------------------------------

X_TRAIN = pnp.array([[0.1, 0.2], [0.3, 1.9], [2.8, 0.4], [2.6, 2.9]], requires_grad=False)
Y_TRAIN = pnp.array([1.0, 1.0, -1.0, -1.0], requires_grad=False)


def classifier(dev):
    @qml.qnode(dev, diff_method="parameter-shift")
    def circuit(weights, x):
        qml.AngleEmbedding(x, wires=[0, 1], rotation="X")
        qml.RY(weights[0], wires=0)
        qml.RY(weights[1], wires=1)
        qml.CNOT(wires=[0, 1])
        qml.RY(weights[2], wires=0)
        return qml.expval(qml.Z(0))

    def loss(weights):
        predictions = circuit(weights, X_TRAIN)  # broadcast: one tape per data point
        return pnp.mean((predictions - Y_TRAIN) ** 2)

    return loss


def test_training_a_variational_classifier_runs_every_execution_through_the_ledger(
    ledger_client: Client,
) -> None:
    dev = qml.device(
        "qmlops",
        backend="aer",
        wires=2,
        shots=200,
        seed=1,
        job_name="vqc-training",
        tags={"experiment": "vqc"},
    )
    loss = classifier(dev)
    exact_loss = classifier(qml.device("default.qubit", wires=2))
    weights = pnp.array([0.9, -0.4, 1.3], requires_grad=True)
    before = float(exact_loss(weights))
    optimizer = qml.GradientDescentOptimizer(stepsize=0.4)
    with qml.Tracker(dev) as tracker:
        for _ in range(3):
            weights, _cost = optimizer.step_and_cost(loss, weights)
    after = float(exact_loss(weights))
    assert after < before - 0.05, (before, after)

    jobs = ledger_jobs(ledger_client)
    # Each step: one forward job (4 broadcast circuits) and one parameter-shift job.
    assert len(jobs) == tracker.totals["batches"] == tracker.totals["jobs"] == 6
    assert len(jobs) == len(dev.job_ids)
    assert {j.id for j in jobs} == set(dev.job_ids)
    assert tracker.totals["executions"] == sum(len(j.record.circuits) for j in jobs)
    for job in jobs:
        record = job.record
        assert record.state.value == "COMPLETED"
        assert record.name == "vqc-training"
        assert record.tags == {"source": "pennylane", "device": "qmlops", "experiment": "vqc"}
        assert record.shots == 200
    # The seeded device gives every job its own seed: reproducible, not identical noise.
    seeds = [j.record.options.get("seed") for j in jobs]
    assert len(set(seeds)) == len(seeds)


def test_gradient_matches_the_parameter_shift_rule(ledger_client: Client) -> None:
    dev = qml.device("qmlops", backend="aer", wires=1, shots=20000, seed=3)

    @qml.qnode(dev)
    def circuit(theta):
        qml.RX(theta, wires=0)
        return qml.expval(qml.Z(0))

    theta = pnp.array(0.8, requires_grad=True)
    grad = qml.grad(circuit)(theta)
    assert grad == pytest.approx(-math.sin(0.8), abs=0.03)


def test_the_device_on_an_ibm_fake_device(ledger_client: Client) -> None:
    """``qml.device("qmlops", backend="ibm:fake_manila", wires=4, shots=1000)``: a QNode runs
    on qiskit-ibm-runtime's local testing mode (Manila's noise model) through the ledger."""
    dev = qml.device("qmlops", backend="ibm:fake_manila", wires=4, shots=1000, seed=9)

    @qml.qnode(dev)
    def ghz():
        qml.Hadamard(wires=0)
        for w in range(3):
            qml.CNOT(wires=[w, w + 1])
        return qml.expval(qml.Z(0) @ qml.Z(3)), qml.probs(wires=[0, 1, 2, 3])

    parity, probs = ghz()
    assert float(parity) > 0.7  # ideal 1, less Manila's noise
    assert float(probs[0] + probs[-1]) > 0.7  # |0000> and |1111>
    jobs = ledger_jobs(ledger_client)
    assert [j.backend for j in jobs] == ["ibm:fake_manila"]
    assert jobs[0].record.state.value == "COMPLETED"
    assert dev.job_ids == [jobs[0].id]
