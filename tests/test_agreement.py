"""Cross-backend agreement: GHZ-5, a 4-qubit QFT and a random 5-qubit circuit give the same
count distributions, in the same bit order, on every simulator-backed backend.

How each provider is reached offline: ``aer`` runs Qiskit Aer; ``braket_local`` and
``braket_local:dm`` run Braket's LocalSimulator; ``braket:sv1`` goes through the real adapter
and boto3 clients with botocore Stubbers in front of a fake Braket service that runs each task
on Braket's own simulator (tests/braket_stubs.py); ``ionq:simulator`` talks HTTP to the loopback
IonQ emulator (which simulates on Aer); ``pennylane:*`` run PennyLane's devices; and
``ibm:fake_manila`` runs qiskit-ibm-runtime's local testing mode (with Manila's noise model, so
it gets a wider bound). Each result is compared with the exact distribution (total variation
distance).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import braket_stubs
import pytest
import yaml
from qiskit import QuantumCircuit
from qiskit.circuit.library import QFTGate
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import Statevector

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import DEFAULT_BACKENDS_YAML, Settings
from qmlops_jupyter.testing.ionq_emulator import start_emulator

SHOTS = 4000
#: Total variation distance allowed between sampled and exact distributions. With 4000 shots
#: the sampling error of these circuits is about 0.03 (at most 32 outcomes).
NOISELESS_TVD = 0.1
#: ibm:fake_manila samples Manila's noise model (readout and two-qubit errors, over circuits
#: routed onto its line of 5 qubits): it cannot match the exact distribution, so it is held to
#: a noise-sized bound (0.2-0.35 seen) and to the same dominant outcomes and bit order.
NOISY_TVD = 0.45


def ghz5() -> QuantumCircuit:
    qc = QuantumCircuit(5, name="ghz5")
    qc.h(0)
    for q in range(4):
        qc.cx(q, q + 1)
    return qc


def qft4() -> QuantumCircuit:
    """The integer 11 written into phases by hand, read back by the inverse QFT: a single
    outcome, '1011', only if every backend keeps Qiskit's bit order."""
    qc = QuantumCircuit(4, name="qft4")
    value = 11
    for q in range(4):
        qc.h(q)
        qc.p(2 * math.pi * value * 2**q / 16, q)
    qc.append(QFTGate(4).inverse(), range(4))
    return qc


def random5() -> QuantumCircuit:
    qc = random_circuit(5, depth=4, max_operands=3, seed=2026)
    qc.name = "random5"
    return qc


CIRCUITS = [ghz5(), qft4(), random5()]
EXACT = [Statevector(c).probabilities_dict() for c in CIRCUITS]
BACKENDS = [
    "aer",
    "braket_local",
    "braket_local:dm",
    "braket:sv1",
    "ionq:simulator",
    "pennylane:default.qubit",
    "pennylane:lightning.qubit",
    "ibm:fake_manila",
]


def tvd(counts: dict[str, int], exact: dict[str, float]) -> float:
    total = sum(counts.values())
    keys = set(counts) | set(exact)
    return 0.5 * sum(abs(counts.get(k, 0) / total - exact.get(k, 0.0)) for k in keys)


@pytest.fixture(params=BACKENDS)
def backend_client(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Client]]:
    name = request.param
    home = tmp_path / "home"
    home.mkdir()
    entries = yaml.safe_load(DEFAULT_BACKENDS_YAML)["backends"]
    monkeypatch.setenv("QMLOPS_HOME", str(home))
    for var in ("QMLOPS_DATABASE_URL", "QMLOPS_BACKENDS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QMLOPS_TRACKING", "off")  # about backends; tracking has its own tests

    def client_with(entries: dict) -> Client:
        (home / "backends.yaml").write_text(yaml.safe_dump({"backends": entries}))
        return Client(Settings.from_env(home=home))

    if name == "ionq:simulator":
        with start_emulator(tmp_path / "ionq", queue_seconds=0.0) as emu:
            monkeypatch.setenv("IONQ_API_KEY", "agreement-test-key")
            entries[name] = {"options": {"api_url": emu.url, "timeout": 30}}
            client = client_with(entries)
            yield name, client
            client.ledger.close()
        return
    if name == "braket:sv1":
        for key, value in braket_stubs.fake_aws_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv(braket_stubs.STATE_ENV, str(tmp_path / "braket-state.json"))
        braket_stubs.FakeBraket(tmp_path / "braket-state.json")
        entries[name] = {
            "options": {
                "session_factory": "braket_stubs:session_factory",
                "s3_bucket": braket_stubs.BUCKET,
                "poll_interval": 0.02,
            }
        }
    client = client_with(entries)
    yield name, client
    client.ledger.close()


def test_distributions_agree_in_qiskit_bit_order(backend_client: tuple[str, Client]) -> None:
    name, client = backend_client
    circuits = [c.measure_all(inplace=False) for c in CIRCUITS]
    job = client.submit(circuits, backend=name, shots=SHOTS, seed=11, wait=True, wait_timeout=300)
    record = job.record
    assert record.state.value == "COMPLETED", record.error
    bound = NOISY_TVD if name.startswith("ibm:fake") else NOISELESS_TVD
    counts = job.result().counts
    distances = {
        c.name: round(tvd(k, e), 3) for c, k, e in zip(CIRCUITS, counts, EXACT, strict=True)
    }
    print(f"{name}: total variation distance {distances}")  # shown with pytest -s
    assert all(d <= bound for d in distances.values()), (name, distances)
    # The bit order, by the single outcome of the QFT circuit.
    best = max(counts[1], key=counts[1].__getitem__)
    assert best == "1011", (name, counts[1])
    assert all(sum(c.values()) == SHOTS for c in counts)
