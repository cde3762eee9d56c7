"""Benchmark 1: one job of 1,000 bound circuits through the ledger, against raw Aer.

Ours: ``Client.submit(circuits, backend="aer", shots=1024, seed=s, wait=True).result().counts``
(validate; the circuits stored in the ledger as QPY + per-circuit metadata; the job's state
changes and events; the Aer run; the counts written back to the ledger).
Raw:  ``AerSimulator().run(circuits, shots=1024, seed_simulator=s).result().get_counts()``.

Both sides get the same circuits and seed (the counts are checked equal), after a warm-up of
each, interleaved raw, ours, raw, ours ... so machine noise lands on both; the ratio is
median(ours) / median(raw). The simulator object is built once, outside the timing, on both
sides (the client caches its own), which is the stricter baseline.

Run alone: ``.venv/bin/python benchmarks/bench_batch.py [--quick]``.
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
    profile_call,
    settle,
    summary,
    timed,
)

TARGET_RATIO = 1.05


def ansatz_circuits(n: int, seed: int = 1234) -> list[Any]:
    """``n`` copies of a 4-qubit RealAmplitudes ansatz (reps=2), decomposed, measured, bound
    to random angles."""
    import numpy as np
    from qiskit.circuit.library import real_amplitudes

    template = real_amplitudes(4, reps=2).decompose()
    template.measure_all()
    rng = np.random.default_rng(seed)
    return [
        template.assign_parameters(rng.uniform(0, 2 * np.pi, template.num_parameters))
        for _ in range(n)
    ]


def run(args: Any) -> BenchResult:
    from qiskit_aer import AerSimulator

    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings

    n = 100 if args.quick else args.circuits
    reps = 3 if args.quick else args.reps
    shots = 1024
    home = Path(tempfile.mkdtemp(prefix="batch-", dir=args.home))
    client = Client(Settings.from_env(home=home, database_url=f"sqlite:///{home}/ledger.sqlite"))
    circuits = ansatz_circuits(n)
    simulator = AerSimulator()

    def raw(seed: int) -> list[dict[str, int]]:
        return simulator.run(circuits, shots=shots, seed_simulator=seed).result().get_counts()

    def ours(seed: int) -> list[dict[str, int]]:
        job = client.submit(circuits, backend="aer", shots=shots, seed=seed, wait=True)
        return job.result().counts

    log(f"[batch] {n} circuits x {shots} shots, {reps} interleaved reps each (+1 warm-up)")
    timed(lambda: raw(1))
    timed(lambda: ours(1))
    settle()
    raw_t, ours_t, match = interleaved(
        raw,
        ours,
        [1000 + rep for rep in range(reps)],
        lambda a, b: _as_list(a) == b,
        label="batch",
    )

    last = client.jobs(limit=1)[0].record
    ratio = median(ours_t) / median(raw_t)
    pair_ratios = [o / r for o, r in zip(ours_t, raw_t, strict=True)]
    if args.profile:
        profile_call("batch", lambda: ours(4242))
    client.ledger.close()

    rows = [
        Row("1 batch", f"raw Aer, {n} circuits (median)", median(raw_t), "s"),
        Row("1 batch", f"ours, {n} circuits (median)", median(ours_t), "s"),
        Row(
            "1 batch",
            "ratio ours/raw",
            ratio,
            "x",
            TARGET_RATIO,
            note="" if match else "COUNTS DIFFER",
        ),
        Row("1 batch", "added per job (median)", (median(ours_t) - median(raw_t)) * 1e3, "ms"),
    ]
    if not match:
        rows[2].status = "ERROR"
    details = {
        "circuits": n,
        "shots": shots,
        "reps": reps,
        "raw_s": summary(raw_t, digits=4),
        "ours_s": summary(ours_t, digits=4),
        "raw_runs_s": [round(t, 4) for t in raw_t],
        "ours_runs_s": [round(t, 4) for t in ours_t],
        "ratio_of_medians": round(ratio, 4),
        "median_pair_ratio": round(median(pair_ratios), 4),
        "counts_match": match,
        "last_job_phases_s": {k: round(v, 4) for k, v in (last.phases or {}).items()},
    }
    return BenchResult("batch", rows, details)


def _as_list(counts: Any) -> list[dict[str, int]]:
    # Result.get_counts() returns a bare dict for a one-circuit run.
    return [counts] if isinstance(counts, dict) else list(counts)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "batch", *sys.argv[1:]]))
