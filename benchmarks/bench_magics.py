"""Benchmark 7: ``%load_ext qmlops_jupyter`` in a fresh kernel.

Starts N fresh ipykernels (default 11, 5 with ``--quick``) through jupyter_client, one after
another, after one untimed warm-up kernel (it creates the ledger and warms the page cache).
Each kernel has the run's private ``QMLOPS_HOME``, tracking off, the in-process client
(``QMLOPS_REMOTE=off``) and a private IPython folder. Its first cell times, inside the kernel,

    t0 = time.perf_counter()
    get_ipython().run_line_magic("load_ext", "qmlops_jupyter")
    time.perf_counter() - t0

with nothing of qmlops imported before, and lists the top-level modules the load imported.
Reported: the median and p95 of those times (target <= 300 ms each), and how many heavy
modules (Qiskit, Aer, SQLAlchemy, pydantic, MLflow, ipywidgets, httpx, the provider SDKs) the
load imported (target 0: they load on first use). Informational, timed the same way in the
same kernels: the first ``%qmlops help``, the first ``%qmlops jobs`` (the client and the
ledger open, the display module loads), the first ``%%qmlops run`` of a Bell pair (Qiskit and
Aer load, one job runs), and the kernel's start until it answers.

Run alone: ``.venv/bin/python benchmarks/bench_magics.py [--quick]``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BELL_QASM2 as BELL
from benchlib import BenchResult, Row, log, median, percentile, summary

TARGET_LOAD_MS = 300.0
BENCH = "7 magics"
#: Top-level modules ``%load_ext`` must not import (each loads on first use).
HEAVY = frozenset(
    {
        "qiskit",
        "qiskit_aer",
        "qiskit_ibm_runtime",
        "braket",
        "pennylane",
        "sqlalchemy",
        "alembic",
        "pydantic",
        "mlflow",
        "ipywidgets",
        "anywidget",
        "httpx",
    }
)

LOAD_CELL = """\
import json as _json, sys as _sys, time as _time
_before = set(_sys.modules)
_t0 = _time.perf_counter()
get_ipython().run_line_magic("load_ext", "qmlops_jupyter")
_load = _time.perf_counter() - _t0
_new = sorted({m.split(".")[0] for m in set(_sys.modules) - _before})
print(_json.dumps({"load_s": _load, "new": _new}))
"""

TIMED_CELL = """\
import contextlib as _contextlib, io as _io
with _contextlib.redirect_stdout(_io.StringIO()):
    _t0 = _time.perf_counter()
    {call}
    _dt = _time.perf_counter() - _t0
print(_json.dumps({{"s": _dt}}))
"""

FIRST_USES = {
    "help": 'get_ipython().run_line_magic("qmlops", "help")',
    "jobs": 'get_ipython().run_line_magic("qmlops", "jobs")',
    "run": f'get_ipython().run_cell_magic("qmlops", "run --seed 1 --shots 1000", {BELL!r})',
}


def _kernel_env(home: str, scratch: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QMLOPS_SERVER", "JPY_")) and k not in ("IPYTHONDIR",)
    }
    env.update(
        QMLOPS_HOME=home,
        QMLOPS_TRACKING="off",
        QMLOPS_REMOTE="off",
        MLFLOW_DISABLE_TELEMETRY="true",
        IPYTHONDIR=str(scratch / "ipython"),
        JUPYTER_RUNTIME_DIR=str(scratch / "runtime"),
    )
    return env


def _execute(kc: Any, code: str) -> dict[str, Any]:
    """Run ``code``; the JSON object its last stdout line holds."""
    out: list[str] = []
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

    reply = kc.execute_interactive(code, output_hook=hook, timeout=180)
    if errors or reply["content"]["status"] != "ok":
        raise RuntimeError(f"kernel cell failed: {errors or reply['content']}")
    return json.loads("".join(out).strip().splitlines()[-1])


def one_kernel(env: dict[str, str], cwd: str) -> dict[str, Any]:
    """Start a kernel, time the extension's load and its first uses, shut it down."""
    from jupyter_client.manager import KernelManager

    started = time.perf_counter()
    manager = KernelManager(kernel_name="python3")
    # The kernel's own log lines (a TCP transport warning) would mix with the progress lines.
    manager.start_kernel(env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = manager.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        ready = time.perf_counter() - started
        loaded = _execute(kc, LOAD_CELL)
        firsts = {
            name: _execute(kc, TIMED_CELL.format(call=call))["s"]
            for name, call in FIRST_USES.items()
        }
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)
    return {"ready_s": ready, "load_s": loaded["load_s"], "new": loaded["new"], **firsts}


def run(args: Any) -> BenchResult:
    n = 5 if args.quick else args.magics_kernels
    scratch = Path(tempfile.mkdtemp(prefix="qmlops-bench-magics-"))
    env = _kernel_env(args.home, scratch)
    # The manager's connection files go to the scratch folder too.
    os.environ["JUPYTER_RUNTIME_DIR"] = env["JUPYTER_RUNTIME_DIR"]
    log(f"[magics] 1 warm-up kernel, then {n} fresh kernels: %load_ext qmlops_jupyter")
    samples = []
    try:
        one_kernel(env, args.home)
        for i in range(n):
            sample = one_kernel(env, args.home)
            samples.append(sample)
            log(
                f"[magics]   kernel {i + 1}/{n}: load {sample['load_s'] * 1e3:.1f} ms, first "
                f"jobs {sample['jobs'] * 1e3:.0f} ms, first run {sample['run'] * 1e3:.0f} ms"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    loads = [s["load_s"] for s in samples]
    heavy = sorted({m for s in samples for m in s["new"] if m in HEAVY})
    rows = [
        Row(BENCH, "%load_ext qmlops_jupyter, median", median(loads) * 1e3, "ms", TARGET_LOAD_MS),
        Row(
            BENCH,
            "%load_ext qmlops_jupyter, p95",
            percentile(loads, 95) * 1e3,
            "ms",
            TARGET_LOAD_MS,
        ),
        Row(
            BENCH,
            "heavy modules imported by %load_ext",
            float(len(heavy)),
            "",
            0.0,
            note=", ".join(heavy),
        ),
        Row(BENCH, "first %qmlops help, median", median([s["help"] for s in samples]) * 1e3, "ms"),
        Row(
            BENCH,
            "first %qmlops jobs (opens the ledger), median",
            median([s["jobs"] for s in samples]) * 1e3,
            "ms",
        ),
        Row(
            BENCH,
            "first %%qmlops run, Bell pair (loads Qiskit, Aer), median",
            median([s["run"] for s in samples]) * 1e3,
            "ms",
        ),
        Row(
            BENCH,
            "kernel start until ready, median",
            median([s["ready_s"] for s in samples]) * 1e3,
            "ms",
        ),
    ]
    details = {
        "kernels": n,
        "load_ms": summary(loads, 1e3),
        "help_ms": summary([s["help"] for s in samples], 1e3),
        "jobs_ms": summary([s["jobs"] for s in samples], 1e3),
        "run_ms": summary([s["run"] for s in samples], 1e3),
        "ready_ms": summary([s["ready_s"] for s in samples], 1e3),
        "modules_imported_by_load": sorted({m for s in samples for m in s["new"]}),
        "heavy_modules_imported_by_load": heavy,
    }
    return BenchResult("magics", rows, details)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "magics", *sys.argv[1:]]))
