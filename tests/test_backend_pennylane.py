"""The ``pennylane:<device>`` backends.

How PennyLane is reached offline: it is a local library. Every test runs the real PennyLane
devices installed here (``default.qubit``, ``lightning.qubit``, ``default.mixed``) in this
process, or in the backend's spawned worker processes (``isolate``); nothing is mocked.
"""

from __future__ import annotations

import importlib.util

import pytest
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator

from qmlops_jupyter.backends.pennylane import (
    PENNYLANE_STATES,
    PennyLaneBackend,
    installed_devices,
)
from qmlops_jupyter.client import Client
from qmlops_jupyter.config import BackendConfig
from qmlops_jupyter.errors import MissingBackendDependency, UnknownBackend
from qmlops_jupyter.testing.conformance import BackendConformance

SHOTS = 4000


class TestDefaultQubitConformance(BackendConformance):
    """pennylane:default.qubit: PennyLane's own simulator, run in this process."""

    backend_name = "pennylane:default.qubit"


class TestLightningQubitConformance(BackendConformance):
    """pennylane:lightning.qubit: the pennylane-lightning C++ simulator, run in this process."""

    backend_name = "pennylane:lightning.qubit"


def tvd(a: dict[str, int], b: dict[str, int]) -> float:
    keys = set(a) | set(b)
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)


def aer_counts(circuit: QuantumCircuit, shots: int = SHOTS, seed: int = 5) -> dict[str, int]:
    from qiskit import transpile

    sim = AerSimulator()
    if circuit.num_clbits == 0:
        circuit = circuit.measure_all(inplace=False)
    result = sim.run(transpile(circuit, sim), shots=shots, seed_simulator=seed).result()
    return {k.replace(" ", ""): v for k, v in result.get_counts().items()}


def entangler() -> QuantumCircuit:
    """Gates from every corner of the table, and a few PennyLane has no name for (rzx, csx,
    r, c3sx), which the backend transpiles; two classical registers, a partial measure map."""
    from qiskit import ClassicalRegister, QuantumRegister

    q = QuantumRegister(4, "q")
    a, b = ClassicalRegister(2, "a"), ClassicalRegister(1, "b")
    qc = QuantumCircuit(q, a, b, name="entangler")
    qc.h(0)
    qc.ry(0.7, 1)
    qc.cx(0, 2)
    qc.rzx(0.4, 1, 3)
    qc.csx(2, 1)
    qc.r(0.3, 0.2, 3)
    qc.u(0.1, 0.2, 0.3, 0)
    qc.sdg(2)
    qc.rxx(0.5, 0, 3)
    qc.cp(0.8, 3, 1)
    qc.ecr(1, 2)
    qc.ccx(0, 1, 3)
    qc.measure(3, a[0])
    qc.measure(0, a[1])
    qc.measure(1, b[0])
    return qc


def test_listed_names_are_the_installed_devices() -> None:
    names = PennyLaneBackend.listed_names("pennylane")
    assert "pennylane:default.qubit" in names
    assert "pennylane:lightning.qubit" in names
    assert "pennylane:qmlops" not in names  # our own device would loop back into qmlops
    assert not any("gaussian" in n or "qutrit" in n for n in names)
    assert "qmlops" not in installed_devices()


def test_unknown_device_lists_the_installed_ones() -> None:
    with pytest.raises(UnknownBackend, match=r"no device 'nope\.qubit'.*pennylane:default\.qubit"):
        PennyLaneBackend("pennylane:nope.qubit", device="nope.qubit")
    with pytest.raises(UnknownBackend, match="needs a device name"):
        PennyLaneBackend("pennylane")
    with pytest.raises(UnknownBackend):
        PennyLaneBackend("pennylane:qmlops", device="qmlops")


def test_missing_pennylane_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pennylane" else real(name, *a),
    )
    hint = r"pip install 'qmlops-jupyter\[pennylane\]'"
    with pytest.raises(MissingBackendDependency, match=hint):
        PennyLaneBackend("pennylane:default.qubit", device="default.qubit")


def test_state_map_and_capabilities() -> None:
    backend = PennyLaneBackend("pennylane:default.qubit", device="default.qubit")
    caps = backend.capabilities
    assert caps.local and caps.simulator and not caps.supports_reattach
    assert caps.statevector_memory
    assert {"cx", "rz", "u", "ecr", "unitary"} <= set(caps.native_gates)
    assert set(PENNYLANE_STATES) == {"pending", "running", "done", "failed", "cancelled"}


@pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
def test_counts_agree_with_aer(client: Client, device: str) -> None:
    circuit = entangler()
    job = client.submit(circuit, backend=f"pennylane:{device}", shots=SHOTS, seed=11, wait=True)
    ours = job.result().counts[0]
    assert all(len(k) == 3 for k in ours)
    assert sum(ours.values()) == SHOTS
    # 4,000 shots over at most 8 outcomes: sampling noise keeps the distance well under 0.05.
    assert tvd(ours, aer_counts(circuit)) < 0.05, (ours, aer_counts(circuit))


def test_same_seed_same_counts(client: Client) -> None:
    circuit = entangler()
    runs = [
        client.submit(circuit, backend="pennylane:default.qubit", shots=500, seed=seed, wait=True)
        .result()
        .counts
        for seed in (3, 3, 4)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_circuit_without_classical_bits_is_measured_on_every_qubit(client: Client) -> None:
    qc = QuantumCircuit(3)
    qc.x(1)
    counts = (
        client.submit(qc, backend="pennylane:lightning.qubit", shots=50, wait=True).result().counts
    )
    assert counts == [{"010": 50}]


def test_unmeasured_classical_bits_read_zero(client: Client) -> None:
    qc = QuantumCircuit(2, 4)
    qc.x([0, 1])
    qc.measure(1, 2)
    counts = (
        client.submit(qc, backend="pennylane:default.qubit", shots=20, wait=True).result().counts
    )
    assert counts == [{"0100": 20}]


def test_unitary_gate_keeps_qiskit_qubit_order(client: Client) -> None:
    from qiskit.circuit.library import UnitaryGate
    from qiskit.quantum_info import Operator

    prep = QuantumCircuit(2)
    prep.x(0)  # |01> in Qiskit's order, then a CNOT controlled by qubit 0 given as a matrix
    cx = QuantumCircuit(2)
    cx.cx(0, 1)
    prep.append(UnitaryGate(Operator(cx)), [0, 1])
    prep.measure_all()
    counts = (
        client.submit(prep, backend="pennylane:default.qubit", shots=30, wait=True).result().counts
    )
    assert counts == [{"11": 30}]


def test_mid_circuit_measurement_fails_the_job_plainly(client: Client) -> None:
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    qc.x(0)
    job = client.submit(qc, backend="pennylane:default.qubit", shots=10, wait=True)
    assert job.record.state.value == "FAILED"
    assert job.record.error_kind == "permanent"
    assert "mid-circuit" in job.record.error


def test_isolated_run_in_a_worker_process() -> None:
    """The worker process imports PennyLane and runs the same device: same seed, same counts."""
    backend = PennyLaneBackend("pennylane:default.qubit", device="default.qubit")
    circuit = entangler()
    try:
        isolated = backend.submit([circuit], 300, {"isolate": True, "seed": 7})
        inline = backend.submit([circuit], 300, {"seed": 7})
        assert isolated.result(timeout=120).counts == inline.result().counts
        assert isolated.status().state.value == "DONE"
    finally:
        backend.close()


def test_cancel_before_start_and_worker_kill() -> None:
    backend = PennyLaneBackend("pennylane:default.qubit", device="default.qubit")
    handle = backend.submit([entangler()], 10, {})
    handle.cancel()
    assert handle.status().state.value == "CANCELLED"
    try:
        wide = QuantumCircuit(22)
        for layer in range(30):
            for q in range(22):
                wide.rx(0.1 * (q + layer), q)
            for q in range(21):
                wide.cx(q, q + 1)
        wide.measure_all()
        running = backend.submit([wide], 10, {"isolate": True})
        running.cancel()
        assert running.status().state.value == "CANCELLED"
    finally:
        backend.close()


def test_density_matrix_device_and_its_memory_check(client: Client) -> None:
    from qmlops_jupyter.circuits import prepare
    from qmlops_jupyter.errors import CircuitTooLarge

    qc = QuantumCircuit(2, 2)
    qc.x(1)
    qc.measure([0, 1], [0, 1])
    counts = (
        client.submit(qc, backend="pennylane:default.mixed", shots=40, wait=True).result().counts
    )
    assert counts == [{"10": 40}]
    backend = PennyLaneBackend("pennylane:default.mixed", BackendConfig(), device="default.mixed")
    wide = QuantumCircuit(24)
    wide.h(0)
    with pytest.raises(CircuitTooLarge, match="density-matrix"):
        backend.validate(prepare(wide).infos, 10)


def test_device_options_come_from_backends_yaml(home) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        "backends:\n"
        "  pennylane:lightning.qubit:\n    max_qubits: 3\n"
        "    options: {mcmc: true, kernel_name: Local, num_burnin: 10}\n"
        "  pennylane:default.qubit:\n    options: {no_such_option: 1}\n",
        encoding="utf-8",
    )
    client = Client()
    try:
        qc = QuantumCircuit(2, 2)
        qc.x(0)
        qc.measure([0, 1], [0, 1])
        # Lightning's Markov-chain sampler, switched on from backends.yaml.
        counts = (
            client.submit(qc, backend="pennylane:lightning.qubit", shots=25, wait=True)
            .result()
            .counts
        )
        assert counts == [{"01": 25}]
        assert client.registry.get("pennylane:lightning.qubit").max_qubits == 3
        # An option the device does not take fails the job, naming the option.
        job = client.submit(qc, backend="pennylane:default.qubit", shots=5, wait=True)
        assert job.record.state.value == "FAILED"
        assert "no_such_option" in job.record.error
    finally:
        client.ledger.close()


def test_device_with_a_missing_extra_package_is_refused_before_submission(client: Client) -> None:
    """default.clifford needs stim; without it, the backend says so instead of failing jobs."""
    from qmlops_jupyter.backends.pennylane import missing_requirements

    # stim is not part of the install: this device's extra package really is missing.
    assert missing_requirements("default.clifford")
    backend = client.registry.get("pennylane:default.clifford")
    available, status = backend.availability()
    assert not available and "pip install stim" in status
    assert "pennylane:default.clifford" not in PennyLaneBackend.listed_names("pennylane")
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    with pytest.raises(MissingBackendDependency, match="stim"):
        client.submit(qc, backend="pennylane:default.clifford", shots=10)
    assert client.jobs() == []
