"""The Qiskit ``BackendV2`` bridge: ``QmlopsBackend(name)`` runs through the ledger, on real
backends (Braket's LocalSimulator and Aer, both offline)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterVector
from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp

from qmlops_jupyter.bridges.qiskit_backend import QmlopsBackend
from qmlops_jupyter.errors import InvalidRequest, JobFailed, UnknownBackend


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def test_run_is_one_ledger_job_with_qiskit_counts(client) -> None:
    backend = QmlopsBackend("aer", client=client)
    three = QuantumCircuit(3, 3, name="x0")
    three.x(0)
    three.measure(range(3), range(3))
    job = backend.run([bell(), three], shots=300, seed_simulator=7, job_name="via qiskit")
    result = job.result()
    assert result.get_counts(0).keys() <= {"00", "11"}
    assert result.get_counts(1) == {"001": 300}  # classical bit 0 rightmost, as in Qiskit
    assert job.status() is JobStatus.DONE
    jobs = client.jobs()
    assert [j.id for j in jobs] == [job.job_id()]
    record = jobs[0].record
    assert record.name == "via qiskit" and record.tags["source"] == "qiskit-backend"
    assert record.result.counts[1] == {"001": 300}


def test_unknown_backend_and_options_are_refused(client) -> None:
    with pytest.raises(UnknownBackend):
        QmlopsBackend("no_such_backend", client=client)
    backend = QmlopsBackend("aer", client=client)
    with pytest.raises(InvalidRequest, match="unknown run option"):
        backend.run(bell(), shots=10, bogus=1)
    with pytest.raises(InvalidRequest, match="shots"):
        backend.run(bell(), shots=0)
    assert client.jobs() == []


def test_a_failed_job_raises_on_result(client) -> None:
    backend = QmlopsBackend("aer", client=client)
    job = backend.run(bell(), shots=10)
    job.cancel()
    assert job.status() is JobStatus.CANCELLED
    with pytest.raises(JobFailed, match="CANCELLED"):
        job.result()


def test_memory_for_samplers_matches_counts(client) -> None:
    backend = QmlopsBackend("braket_local", client=client)
    result = backend.run(bell(), shots=64, memory=True).result()
    memory = result.get_memory(0)
    assert len(memory) == 64
    assert {m: memory.count(m) for m in set(memory)} == result.get_counts(0)


def test_variational_classifier_trains_with_every_execution_in_the_ledger(client) -> None:
    """A 2-qubit variational classifier trained with Qiskit's BackendEstimatorV2 over
    ``QmlopsBackend("braket_local")``: parameter-shift gradients, a few steps of gradient
    descent; the loss falls, and every backend execution is a job in the ledger."""

    class Counting(QmlopsBackend):
        runs = 0
        circuits = 0

        def run(self, run_input, **options):  # type: ignore[no-untyped-def]
            Counting.runs += 1
            Counting.circuits += len(run_input) if isinstance(run_input, list) else 1
            return super().run(run_input, **options)

    backend = Counting("braket_local", client=client)
    x = ParameterVector("x", 2)
    theta = ParameterVector("theta", 2)
    model = QuantumCircuit(2, name="classifier")
    model.ry(x[0], 0)
    model.ry(x[1], 1)
    model.ry(theta[0], 0)
    model.ry(theta[1], 1)
    model.cx(0, 1)
    isa = transpile(model, backend)
    observable = SparsePauliOp("ZI")  # Z on qubit 1 after the CX = Z0 Z1 before it
    data = np.array([[0.1, 0.2], [0.3, 0.1], [2.9, 0.2], [3.1, 0.1]])
    labels = np.array([1.0, 1.0, -1.0, -1.0])
    estimator = BackendEstimatorV2(backend=backend, options={"default_precision": 0.05})

    def predictions(weights: np.ndarray) -> np.ndarray:
        bindings = np.array([[*point, *weights] for point in data])
        params = [*x, *theta]
        bound = {p: bindings[:, i] for i, p in enumerate(params)}
        result = estimator.run([(isa, observable, bound)]).result()
        return np.asarray(result[0].data.evs)

    def loss(weights: np.ndarray) -> float:
        return float(np.mean((predictions(weights) - labels) ** 2))

    weights = np.array([1.6, 0.4])
    losses = [loss(weights)]
    for _ in range(3):
        grad = np.zeros_like(weights)
        for k in range(len(weights)):
            shift = np.zeros_like(weights)
            shift[k] = np.pi / 2
            deriv = (predictions(weights + shift) - predictions(weights - shift)) / 2
            grad[k] = np.mean(2 * (predictions(weights) - labels) * deriv)
        weights = weights - 0.4 * grad
        losses.append(loss(weights))
    assert losses[-1] < losses[0] - 0.3, losses
    jobs = client.jobs(limit=500)
    assert len(jobs) == Counting.runs
    assert all(j.record.state.value == "COMPLETED" for j in jobs)
    assert sum(len(j.record.circuits) for j in jobs) == Counting.circuits
    assert {j.backend for j in jobs} == {"braket_local"}


def test_sampler_primitive_over_ibm_fake_device(client) -> None:
    """BackendSamplerV2 over ``ibm:fake_manila`` (qiskit-ibm-runtime's local testing mode)."""
    backend = QmlopsBackend("ibm:fake_manila", client=client)
    sampler = BackendSamplerV2(backend=backend)
    result = sampler.run([transpile(bell(), backend)], shots=200).result()
    counts = result[0].data.c.get_counts()
    assert sum(counts.values()) == 200
    assert (counts.get("00", 0) + counts.get("11", 0)) / 200 > 0.8
    assert len(client.jobs()) == 1


def test_the_bridge_is_importable_from_the_package() -> None:
    import qmlops_jupyter
    from qmlops_jupyter.bridges import QmlopsBackend as FromBridges

    assert qmlops_jupyter.QmlopsBackend is QmlopsBackend is FromBridges
