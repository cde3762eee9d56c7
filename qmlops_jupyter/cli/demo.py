"""``qmlops demo``: textbook circuits through the ledger, for a first look."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import Client


def demo_circuits() -> list[tuple[str, Any, str]]:
    """(title, circuit, what to expect) for Bell, GHZ and a QFT round trip."""
    import math

    from qiskit import QuantumCircuit
    from qiskit.circuit.library import QFTGate

    bell = QuantumCircuit(2, name="bell")
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()

    ghz = QuantumCircuit(3, name="ghz3")
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    ghz.measure_all()

    # Write the number 5 into the Fourier basis, then read it back with the inverse QFT.
    qft = QuantumCircuit(3, name="qft3")
    for q in range(3):
        qft.h(q)
        qft.p(2 * math.pi * 5 * 2**q / 8, q)
    qft.append(QFTGate(3).inverse(), range(3))
    qft.measure_all()

    return [
        ("Bell pair", bell, "00 and 11, half each"),
        ("GHZ, 3 qubits", ghz, "000 and 111, half each"),
        ("QFT round trip of 5", qft, "101 every time"),
    ]


def run_demo(client: Client, *, backend: str, shots: int, echo: Callable[[str], None]) -> None:
    from .main import _table, format_counts

    rows = [["CIRCUIT", "JOB", "QUBITS", "DEPTH", "TIME", "RESULT", "EXPECTED"]]
    circuits = demo_circuits()
    # Open the ledger and load the SDK now, so the first job's time is the job's alone.
    _ = client.ledger, client.registry.get(backend).capabilities
    for title, circuit, expected in circuits:
        started = time.perf_counter()
        job = client.submit(circuit, backend=backend, shots=shots, name=f"demo: {title}", wait=True)
        elapsed = time.perf_counter() - started
        record = job.record
        info = record.circuits[0]
        if record.result is None:
            outcome = f"{record.state.value}: {record.error}"
        else:
            outcome = format_counts(record.result.counts[0], shots, top=2)
        rows.append(
            [
                title,
                record.id,
                str(info.num_qubits),
                str(info.depth),
                f"{elapsed * 1000:.0f} ms",
                outcome,
                expected,
            ]
        )
    _table(rows)
    echo("")
    echo(f"ledger:   {client.ledger.url}")
    echo(f"backends: {client.settings.backends_file}")
    echo("next:     qmlops jobs   |   qmlops show JOB_ID --events")
