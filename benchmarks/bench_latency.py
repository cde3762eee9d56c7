"""Benchmark 2: added latency of one small job, over raw Aer.

200 sequential one-circuit jobs (a Bell pair, 1,024 shots), each through
``Client.submit(bell, shots=1024, seed=i, wait=True).result().counts``, and, right before each,
the same circuit and seed through ``AerSimulator.run(...).result().get_counts()`` on a simulator
built once. The added latency of job i is ours_i - raw_i; we report its p50 and p95.

Run alone: ``.venv/bin/python benchmarks/bench_latency.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    BenchResult,
    Row,
    interleaved,
    log,
    median,
    percentile,
    profile_call,
    settle,
    summary,
    timed,
)

TARGET_P50_MS = 5.0
WARMUP = 10


def bell() -> Any:
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(2, name="bell")
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    return circuit


def run(args: Any) -> BenchResult:
    from qiskit_aer import AerSimulator

    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings

    n = 30 if args.quick else args.jobs
    shots = 1024
    home = Path(tempfile.mkdtemp(prefix="latency-", dir=args.home))
    client = Client(Settings.from_env(home=home, database_url=f"sqlite:///{home}/ledger.sqlite"))
    circuit = bell()
    simulator = AerSimulator()

    def raw(seed: int) -> dict[str, int]:
        return simulator.run(circuit, shots=shots, seed_simulator=seed).result().get_counts()

    def ours(seed: int) -> list[dict[str, int]]:
        return (
            client.submit(circuit, backend="aer", shots=shots, seed=seed, wait=True).result().counts
        )

    log(f"[latency] {n} sequential Bell jobs, each paired with a raw Aer run (+{WARMUP} warm-up)")
    for i in range(WARMUP):
        timed(lambda s=i: raw(s))
        timed(lambda s=i: ours(s))
    settle()
    raw_t, ours_t, match = interleaved(
        raw, ours, [10_000 + i for i in range(n)], lambda a, b: [a] == b
    )
    added_ms = [(o - r) * 1e3 for o, r in zip(ours_t, raw_t, strict=True)]
    last = client.jobs(limit=1)[0]
    events = [(e.from_state, e.to_state) for e in last.events() if e.kind == "transition"]
    if args.profile:
        profile_call("latency", lambda: ours(99), calls=50)
    client.ledger.close()

    p50, p95 = percentile(added_ms, 50), percentile(added_ms, 95)
    rows = [
        Row("2 latency", f"raw Aer, Bell job (p50 of {n})", median(raw_t) * 1e3, "ms"),
        Row("2 latency", f"ours, Bell job (p50 of {n})", median(ours_t) * 1e3, "ms"),
        Row(
            "2 latency",
            "added per job p50",
            p50,
            "ms",
            TARGET_P50_MS,
            note="" if match else "COUNTS DIFFER",
        ),
        Row("2 latency", "added per job p95", p95, "ms"),
    ]
    if not match:
        rows[2].status = "ERROR"
    details = {
        "jobs": n,
        "shots": shots,
        "warmup": WARMUP,
        "raw_ms": summary(raw_t, 1e3),
        "ours_ms": summary(ours_t, 1e3),
        "added_ms": summary([a / 1e3 for a in added_ms], 1e3),
        "counts_match": match,
        "ledger_transitions_per_job": len(events),
        "last_job_phases_ms": {k: round(v * 1e3, 3) for k, v in (last.record.phases or {}).items()},
    }
    return BenchResult("latency", rows, details)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "latency", *sys.argv[1:]]))
