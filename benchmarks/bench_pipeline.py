"""Benchmark 8: ``qmlops pipeline run`` vs raw ``papermill.execute_notebook`` on one notebook.

Both sides are what a user starts from a shell, timed from the process's start to its exit:

* **raw**: ``python -c "import papermill; papermill.execute_notebook(NB, OUT,
  kernel_name='python3', progress_bar=False, cwd=NB_DIR)"``;
* **pipeline**: ``qmlops pipeline run NB --json`` (the venv's console script): the checks, the
  ledger's run row, papermill in the same process with the kernel in a process group of its own, the
  executed notebook kept, the run's end recorded.

Two variants, each its own pair: tracking off (``QMLOPS_TRACKING=off`` for both sides, kernel
included), and tracking on (both sides' kernels log their jobs to the embedded MLflow store; the
pipeline also logs its run and the output notebook). The notebook is ``notebooks/
qaoa_maxcut.ipynb`` by default (a QAOA MaxCut optimisation on Aer, a few seconds of work). One
untimed warm-up of every side first (the page cache, the ledger and the MLflow store exist),
then the reps, interleaved (raw off, pipeline off, raw on, pipeline on), so a slow stretch of
the machine hits all. Reported: each side's median, and pipeline / raw per variant (target
<= 1.10x); also the ratio of the CPU time each side used (its process and its kernel), which a
machine busy with other work distorts much less than the wall time.

Run alone: ``.venv/bin/python benchmarks/bench_pipeline.py --standalone [--quick]`` (or, once
``run_all.py`` lists it, ``.venv/bin/python benchmarks/bench_pipeline.py [--quick]``).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, BenchResult, Row, log, median, summary

BENCH = "8 pipeline"
TARGET_RATIO = 1.10
DEFAULT_NOTEBOOK = ROOT / "notebooks" / "qaoa_maxcut.ipynb"
QMLOPS = Path(sys.executable).with_name("qmlops")


def _environment(home: Path, tracking: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["QMLOPS_HOME"] = str(home)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for var in ("QMLOPS_PIPELINE_RUN_ID", "QMLOPS_PIPELINE_RUN_DIR", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    if tracking:
        env.pop("QMLOPS_TRACKING", None)
    else:
        env["QMLOPS_TRACKING"] = "off"
    return env


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(side: Any, env: dict[str, str]) -> tuple[float, float]:
    """Wall time, and CPU time (user + system) of the side's process and everything it
    reaped (its kernel): the CPU time barely moves when other work competes for the CPUs."""
    cpu = _cpu_of_children()
    wall = side(env)
    return wall, _cpu_of_children() - cpu


def _raw(notebook: Path, output: Path, env: dict[str, str]) -> float:
    code = (
        "import papermill\n"
        f"papermill.execute_notebook({str(notebook)!r}, {str(output)!r}, "
        f"kernel_name='python3', progress_bar=False, cwd={str(notebook.parent)!r})\n"
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=str(notebook.parent),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _pipeline(notebook: Path, env: dict[str, str]) -> float:
    command = [str(QMLOPS)] if QMLOPS.exists() else [sys.executable, "-m", "qmlops_jupyter.cli"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "pipeline", "run", str(notebook), "--json"],
        env=env,
        cwd=str(notebook.parent),
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"qmlops pipeline run failed ({done.returncode}): {done.stderr[-500:]}")
    return took


def run(args: Any) -> BenchResult:
    quick = bool(getattr(args, "quick", False))
    reps = 2 if quick else int(getattr(args, "pipeline_runs", None) or 5)
    notebook = Path(getattr(args, "pipeline_notebook", None) or DEFAULT_NOTEBOOK).resolve()
    base = Path(getattr(args, "home", None) or tempfile.mkdtemp(prefix="qmlops-bench-home-"))
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-", dir=base))
    sides = {
        "raw off": lambda env: _raw(notebook, scratch / "raw-off.ipynb", env),
        "pipeline off": lambda env: _pipeline(notebook, env),
        "raw on": lambda env: _raw(notebook, scratch / "raw-on.ipynb", env),
        "pipeline on": lambda env: _pipeline(notebook, env),
    }
    envs = {
        "raw off": _environment(scratch / "home-off", tracking=False),
        "pipeline off": _environment(scratch / "home-off", tracking=False),
        "raw on": _environment(scratch / "home-on", tracking=True),
        "pipeline on": _environment(scratch / "home-on", tracking=True),
    }
    log(f"[pipeline] {notebook.name}: warm-up of each side")
    for name, side in sides.items():
        side(envs[name])
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(reps):
        for name, side in sides.items():
            wall, used = _timed(side, envs[name])
            times[name].append(wall)
            cpu[name].append(used)
        done = [f"{n} {times[n][-1]:.2f} s ({cpu[n][-1]:.2f} s CPU)" for n in sides]
        log(f"[pipeline]   rep {rep + 1}/{reps}: " + ", ".join(done))
    medians = {name: median(values) for name, values in times.items()}
    cpus = {name: median(values) for name, values in cpu.items()}
    off = medians["pipeline off"] / medians["raw off"]
    on = medians["pipeline on"] / medians["raw on"]
    # Each rep's pair ran back to back: the median of their ratios shrugs off a slow stretch
    # that hit one side of one rep.
    paired_off = median(
        [p / r for p, r in zip(times["pipeline off"], times["raw off"], strict=True)]
    )
    paired_on = median([p / r for p, r in zip(times["pipeline on"], times["raw on"], strict=True)])
    rows = [
        Row(BENCH, f"raw papermill, {notebook.name} (median)", medians["raw off"], "s"),
        Row(BENCH, "qmlops pipeline run, tracking off (median)", medians["pipeline off"], "s"),
        Row(BENCH, "pipeline / raw, tracking off", off, "x", TARGET_RATIO),
        Row(BENCH, "raw papermill, tracking on (median)", medians["raw on"], "s"),
        Row(BENCH, "qmlops pipeline run, tracking on (median)", medians["pipeline on"], "s"),
        Row(BENCH, "pipeline / raw, tracking on", on, "x", TARGET_RATIO),
        Row(BENCH, "pipeline / raw, tracking off, median of paired reps", paired_off, "x"),
        Row(BENCH, "pipeline / raw, tracking on, median of paired reps", paired_on, "x"),
        Row(
            BENCH,
            "CPU time pipeline / raw, tracking off",
            cpus["pipeline off"] / cpus["raw off"],
            "x",
            note=f"{cpus['pipeline off']:.2f} s vs {cpus['raw off']:.2f} s, kernel included",
        ),
        Row(
            BENCH,
            "CPU time pipeline / raw, tracking on",
            cpus["pipeline on"] / cpus["raw on"],
            "x",
            note=f"{cpus['pipeline on']:.2f} s vs {cpus['raw on']:.2f} s, kernel included",
        ),
    ]
    details = {
        "notebook": str(notebook),
        "reps": reps,
        "seconds": {name: summary(values) for name, values in times.items()},
        "cpu_seconds": {name: summary(values) for name, values in cpu.items()},
        "ratio_tracking_off": round(off, 4),
        "ratio_tracking_on": round(on, 4),
        "paired_ratio_tracking_off": round(paired_off, 4),
        "paired_ratio_tracking_on": round(paired_on, 4),
    }
    return BenchResult("pipeline", rows, details)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--standalone":
        # Without run_all (not yet listing this benchmark): a private QMLOPS_HOME, one run,
        # the table printed and the numbers written to results/pipeline-latest.json.
        import argparse
        import json

        from benchlib import RESULTS, machine_info, table

        parser = argparse.ArgumentParser(prog="benchmarks/bench_pipeline.py --standalone")
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--pipeline-runs", type=int, default=5)
        parser.add_argument("--pipeline-notebook", default=str(DEFAULT_NOTEBOOK))
        args = parser.parse_args(sys.argv[2:])
        args.home = tempfile.mkdtemp(prefix="qmlops-bench-home-")
        os.environ["QMLOPS_HOME"] = args.home
        os.environ["QMLOPS_OWNER"] = "bench"
        for var in ("QMLOPS_DATABASE_URL", "QMLOPS_BACKENDS_FILE"):
            os.environ.pop(var, None)
        t0 = time.perf_counter()
        result = run(args)
        result.seconds = time.perf_counter() - t0
        print(table(result.rows))
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / ("pipeline-latest-quick.json" if args.quick else "pipeline-latest.json")
        out.write_text(
            json.dumps({"machine": machine_info(), "pipeline": result.to_json()}, indent=2) + "\n"
        )
        print(f"results: {out}")
        sys.exit(0)
    from run_all import main

    sys.exit(main(["--only", "pipeline", *sys.argv[1:]]))
