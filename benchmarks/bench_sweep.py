"""Benchmark 9: a sweep of 8 small notebooks on 2 Dask workers vs the same 8 runs one by one.

The notebook is a small quantum one, as this toolkit's users write them: a ``parameters`` cell
(``seed``, ``shots``), then ``qmlops_jupyter.submit`` of a Bell pair to Aer, waited for, and its
counts printed (in its kernel: qmlops_jupyter, Qiskit and Aer load, one job runs through the
ledger). The grid is ``seed: [0..7]``. Tracking is off on every side (MLflow's cost is not part
of any), and each side is warmed once, untimed (the ledger exists, the page cache is warm).

* serial, in one process: 8 calls of ``run_pipeline(client, PipelineRequest(notebook,
  parameters={"seed": i}))`` one after another in this (warm) process -- the strictest
  baseline: papermill and the ledger are loaded once for all 8;
* serial, ``qmlops pipeline run`` x 8 (reported): 8 commands one after another, as a shell loop
  runs them;
* sweep: ``run_sweep(client, SweepRequest(notebook, grid, workers=2))`` -- ``qmlops pipeline
  sweep NB --grid G --workers 2`` without the CLI's start: the LocalCluster's start-up (its
  workers are threads of this process), the 8 tasks, the cluster's shutdown, all timed;
* sweep on a running cluster (reported): the same sweep with ``--dask-scheduler`` on a 2-worker
  LocalCluster of worker processes started (and warmed by one sweep) beforehand, as a cluster
  elsewhere is used.

Serial and sweep are measured first, interleaved (each once per rep, so a slow stretch of the
machine hits both), with nothing else of the benchmark running; then the two reported variants,
interleaved, with their cluster of worker processes running beside them.
Reported: the median wall time of each, and the ratio sweep / serial in one process (target
<= 1/1.7 = 0.588, a speed-up of at least 1.7x on the 2-core machine).

Run alone: ``.venv/bin/python benchmarks/bench_sweep.py --standalone [--quick]`` (or, once
``run_all.py`` lists it, ``.venv/bin/python benchmarks/bench_sweep.py [--quick]``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BELL_QASM2, BenchResult, Row, log, median, summary

BENCH = "9 sweep"
POINTS = 8
WORKERS = 2
TARGET_SPEEDUP = 1.7

WORK_CELL = f"""\
import qmlops_jupyter
BELL = {BELL_QASM2!r}
job = qmlops_jupyter.submit(BELL, backend="aer", shots=shots, seed=seed, wait=True)
print("seed", seed, job.result().counts[0])
"""


def write_inputs(folder: Path) -> tuple[Path, Path]:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = folder / "small.ipynb"
    nb = new_notebook(
        cells=[
            new_code_cell("seed = 0\nshots = 1000", metadata={"tags": ["parameters"]}),
            new_code_cell(WORK_CELL),
        ]
    )
    nbformat.write(nb, str(notebook))
    grid = folder / "grid.yaml"
    grid.write_text(f"seed: {list(range(POINTS))}\n")
    return notebook, grid


def run(args: Any) -> BenchResult:
    os.environ["QMLOPS_TRACKING"] = "off"
    import distributed

    from qmlops_jupyter.client import Client
    from qmlops_jupyter.pipelines.models import PipelineRunState
    from qmlops_jupyter.pipelines.runner import PipelineRequest, run_pipeline
    from qmlops_jupyter.pipelines.sweep import SweepRequest, run_sweep

    reps = 1 if args.quick else getattr(args, "sweep_reps", 3)
    scratch = Path(tempfile.mkdtemp(prefix="qmlops-bench-sweep-"))
    notebook, grid = write_inputs(scratch)
    qmlops = Path(sys.executable).parent / "qmlops"
    client = Client()

    def serial() -> list[Any]:
        return [
            run_pipeline(client, PipelineRequest(str(notebook), parameters={"seed": i}))
            for i in range(POINTS)
        ]

    def commands() -> list[Any]:
        for i in range(POINTS):
            done = subprocess.run(
                [str(qmlops), "pipeline", "run", str(notebook), "-p", "seed", str(i)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"qmlops pipeline run exited {done.returncode}: {done.stderr}")
        return []

    def sweep(scheduler: str | None = None) -> list[Any]:
        request = SweepRequest(
            str(notebook),
            str(grid),
            workers=None if scheduler else WORKERS,
            scheduler=scheduler,
        )
        return run_sweep(client, request).points

    def check(runs: list[Any], label: str) -> None:
        if label.startswith("qmlops pipeline run"):
            return  # each command's exit status was checked
        states = [r.state for r in runs]
        if len(runs) != POINTS or any(s is not PipelineRunState.COMPLETED for s in states):
            raise RuntimeError(f"{label}: not every point completed: {states}")

    def timed(sides: list[tuple[str, Any, list[float]]], rep: int, phase: str) -> None:
        for label, fn, out in sides:
            started = time.perf_counter()
            check(fn(), label)
            out.append(time.perf_counter() - started)
        said = ", ".join(f"{label} {out[-1]:.2f} s" for label, _, out in sides)
        log(f"[sweep]   {phase} rep {rep + 1}/{reps}: {said}")

    log(f"[sweep] {POINTS} notebooks: serially vs on {WORKERS} Dask workers; {reps} rep(s)")
    serial_t: list[float] = []
    sweep_t: list[float] = []
    warm_t: list[float] = []
    cli_t: list[float] = []
    # The measured pair first, with nothing else running; then the reported variants, with a
    # cluster of worker processes kept running beside them.
    check(serial(), "warm-up serial")
    check(sweep(), "warm-up sweep")
    for i in range(reps):
        timed([("serial", serial, serial_t), ("sweep", sweep, sweep_t)], i, "measured")
    with distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        worker_dashboard_address="127.0.0.1:0",
        silence_logs=50,
    ) as cluster:
        address = cluster.scheduler_address
        check(sweep(address), "warm-up sweep on a running cluster")
        commands()
        for i in range(reps):
            timed(
                [
                    ("on a running cluster", lambda: sweep(address), warm_t),
                    (f"qmlops pipeline run x {POINTS}", commands, cli_t),
                ],
                i,
                "reported",
            )
    client.close()
    shutil.rmtree(scratch, ignore_errors=True)
    per_run = median(serial_t) / POINTS
    ratio = median(sweep_t) / median(serial_t)
    warm_ratio = median(warm_t) / median(serial_t)
    rows = [
        Row(BENCH, f"{POINTS} runs one by one in one process (median)", median(serial_t), "s"),
        Row(
            BENCH,
            f"sweep on {WORKERS} workers, cluster start included (median)",
            median(sweep_t),
            "s",
        ),
        Row(
            BENCH,
            "sweep / serial wall time",
            ratio,
            "x",
            round(1 / TARGET_SPEEDUP, 3),
            note=f"speed-up {1 / ratio:.2f}x, target >= {TARGET_SPEEDUP}x",
        ),
        Row(BENCH, "sweep on a running 2-worker cluster (median)", median(warm_t), "s"),
        Row(
            BENCH,
            "sweep on a running cluster / serial",
            warm_ratio,
            "x",
            note=f"speed-up {1 / warm_ratio:.2f}x",
        ),
        Row(BENCH, f"qmlops pipeline run x {POINTS}, one by one (median)", median(cli_t), "s"),
        Row(
            BENCH,
            f"sweep / qmlops pipeline run x {POINTS}",
            median(sweep_t) / median(cli_t),
            "x",
            note=f"speed-up {median(cli_t) / median(sweep_t):.2f}x",
        ),
        Row(BENCH, "one pipeline run, serial in one process (mean)", per_run, "s"),
    ]
    details = {
        "points": POINTS,
        "workers": WORKERS,
        "reps": reps,
        "serial_s": summary(serial_t),
        "sweep_s": summary(sweep_t),
        "sweep_running_cluster_s": summary(warm_t),
        "commands_s": summary(cli_t),
        "cpus": os.cpu_count(),
    }
    return BenchResult("sweep", rows, details)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--standalone":
        # Without run_all (not yet listing this benchmark): a private QMLOPS_HOME, one run.
        import argparse
        import json

        home = tempfile.mkdtemp(prefix="qmlops-bench-home-")
        os.environ["QMLOPS_HOME"] = home
        os.environ["QMLOPS_OWNER"] = "bench"
        for var in ("QMLOPS_DATABASE_URL", "QMLOPS_BACKENDS_FILE"):
            os.environ.pop(var, None)
        from benchlib import table, wait_until_idle

        if "--quick" not in sys.argv:
            wait_until_idle(120, label="sweep")
        try:
            result = run(argparse.Namespace(quick="--quick" in sys.argv, sweep_reps=3))
        finally:
            shutil.rmtree(home, ignore_errors=True)
        print(table(result.rows))
        print(json.dumps(result.details, indent=2))
        sys.exit(0)
    from run_all import main

    sys.exit(main(["--only", "sweep", *sys.argv[1:]]))
