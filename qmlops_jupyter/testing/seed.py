"""A ledger filled with made-up jobs: for the dashboards' tests and benchmark, and for trying a
dashboard on a realistic history (``python -m qmlops_jupyter.testing.seed 10000``).

Jobs are written straight into the jobs table in a few bulk INSERTs (ten thousand take about a
second): states, backends, shots, prices and the times of submission, start and end are
consistent with each other, spread over the last ``days`` days, and repeatable from ``seed``.
They have no circuits' payloads or results, so they are for looking at, not for running: a
job not finished is on a remote backend and leased far ahead to an engine of another machine
(:data:`HOLDER`), so no engine here claims it and no local simulator's slots are taken.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

#: Backends with their price per shot and per task (USD), and a typical queue wait (seconds).
#: Listed twice: twice as likely (most jobs of a team run on simulators).
BACKENDS: tuple[tuple[str, float, float, float], ...] = (
    ("aer", 0.0, 0.0, 0.0),
    ("aer", 0.0, 0.0, 0.0),
    ("ibm:fake_manila", 0.0, 0.0, 0.5),
    ("braket:sv1", 0.0, 0.0, 4.0),
    ("braket:sv1", 0.0, 0.0, 4.0),
    ("braket:arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1", 0.03, 0.3, 3600.0),
    ("ionq:qpu.forte-1", 0.08, 0.3, 7200.0),
)
#: Shots a job asks for on a simulator, and on a QPU (where each one is paid).
SIM_SHOTS = (100, 1000, 1024, 4096)
QPU_SHOTS = (50, 100, 100, 200)
#: States and how often they occur.
STATES: tuple[tuple[str, float], ...] = (
    ("COMPLETED", 0.80),
    ("FAILED", 0.06),
    ("CANCELLED", 0.04),
    ("QUEUED", 0.04),
    ("RUNNING", 0.03),
    ("NEEDS_ATTENTION", 0.01),
    ("CREATED", 0.02),
)
#: The lease holder of the seeded jobs that are not finished: an engine host elsewhere.
HOLDER = "seeded-elsewhere:1:000000"
_LOCAL = {"aer", "ibm:fake_manila"}
_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}

_CIRCUIT = {
    "index": 0,
    "name": "bell",
    "num_qubits": 2,
    "num_clbits": 2,
    "depth": 3,
    "size": 4,
    "gate_counts": {"h": 1, "cx": 1, "measure": 2},
    "source_format": "qasm3",
}


def seed_jobs(
    ledger: Any,
    n: int,
    owners: Sequence[str] = ("alice",),
    *,
    days: int = 30,
    seed: int = 20261127,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Insert ``n`` jobs of ``owners`` created over the last ``days`` days; returns their
    rows (what was written), so a test can work out what a view must show."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    states = [s for s, _ in STATES]
    weights = [w for _, w in STATES]
    rows = []
    for i in range(n):
        state = rng.choices(states, weights)[0]
        choices = [b for b in BACKENDS if state in _TERMINAL or b[0] not in _LOCAL]
        backend, per_shot, per_task, wait = rng.choice(choices)
        created = now - timedelta(seconds=rng.uniform(60, days * 86400 - 60))
        shots = rng.choice(QPU_SHOTS if per_shot else SIM_SHOTS)
        circuits = rng.choice([1, 1, 1, 2, 4] if not per_shot else [1, 1, 2])
        price = round(per_task * circuits + per_shot * shots * circuits, 6)
        submitted = started = finished = None
        if state != "CREATED":
            submitted = created + timedelta(seconds=rng.uniform(0.01, 2))
        if state in ("RUNNING", "COMPLETED", "FAILED") or (state == "CANCELLED" and i % 2):
            started = submitted + timedelta(seconds=rng.expovariate(1 / wait) if wait else 0.001)
        if state in ("COMPLETED", "FAILED", "CANCELLED"):
            finished = (started or submitted) + timedelta(seconds=rng.uniform(0.01, 120))
        if state == "CANCELLED" and started is None and i % 4 == 0:
            submitted = None  # cancelled before it was sent: it costs nothing
        row = {
            "id": uuid.UUID(int=rng.getrandbits(128)).hex[:16],
            "owner": owners[i % len(owners)],
            "name": f"seeded-{i:05d}" if i % 3 else None,
            "backend": backend,
            "state": state,
            "shots": shots,
            "num_circuits": circuits,
            "max_qubits": 2,
            "circuits": [{**_CIRCUIT, "index": k} for k in range(circuits)],
            "options": {},
            "tags": {},
            "phases": {},
            "request_hash": "seeded",
            "error": "the device refused the circuit" if state == "FAILED" else None,
            "error_kind": "permanent" if state == "FAILED" else None,
            "estimated_cost_usd": price,
            "actual_cost_usd": price if state == "COMPLETED" and per_shot else None,
            "created_at": created,
            "updated_at": finished or started or submitted or created,
            "submitted_at": submitted,
            "started_at": started,
            "finished_at": finished,
            "lease_holder": None if state in _TERMINAL else HOLDER,
            "lease_expires_at": None if state in _TERMINAL else now + timedelta(days=3650),
        }
        rows.append(row)
    from sqlalchemy import insert

    from ..ledger.store import jobs

    with ledger.engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(insert(jobs), rows[start : start + 2000])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from ..client import Client
    from ..config import Settings

    parser = argparse.ArgumentParser(
        prog="python -m qmlops_jupyter.testing.seed",
        description="Add made-up jobs to the ledger (QMLOPS_HOME / QMLOPS_DATABASE_URL) to try "
        "the dashboards on a large history.",
    )
    parser.add_argument("n", type=int, help="how many jobs")
    parser.add_argument("--days", type=int, default=30, help="spread over the last DAYS days")
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args(argv)
    client = Client(Settings.from_env())
    try:
        seed_jobs(client.ledger, args.n, (client.owner,), days=args.days, seed=args.seed)
        print(f"added {args.n:,} jobs of {client.owner} to {client.ledger.url}")
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
