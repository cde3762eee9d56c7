"""Run the qmlops_jupyter benchmarks side by side and report them against their targets.

    make bench                                     # everything, full size: ~1 minute, plus
                                                   # ~2 minutes the first time (seeding)
    .venv/bin/python benchmarks/run_all.py --quick # smoke run, small sizes (~20 s)
    .venv/bin/python benchmarks/run_all.py --only import,latency
    .venv/bin/python benchmarks/run_all.py --only ledger-sqlite --profile

Benchmarks (``--only`` names):

1. ``batch``    one job of 1,000 bound circuits vs raw Aer; ratio of medians   <= 1.05x
2. ``latency``  200 sequential Bell jobs; added latency per job over raw Aer  p50 <= 5 ms
3. ``ledger``   page of 50 COMPLETED jobs of a 100,000-job ledger, page 1 and page 2 through
                the cursor, on SQLite (``ledger-sqlite``) and PostgreSQL (``ledger-postgres``)
                                                                                <= 20 ms
4. ``import``   ``python -c "import qmlops_jupyter"``, net of ``python -c pass``  <= 150 ms
5. ``tracking`` 100 Bell jobs per variant; per-job cost of MLflow lineage, batched in a
                ``track()`` run (and added to submit), vs tracking off          <= 10 ms
6. ``server``   a real ``jupyter server`` with the extension: a Bell job over REST, added
                over raw Aer (p50 <= 15 ms); job transition to websocket event (p95 <= 250 ms);
                start-up with / without the extension (<= 1.10x); GET /jobs with 50
                concurrent clients on the 100,000-job ledgers (reported)
7. ``magics``   ``%load_ext qmlops_jupyter`` timed inside fresh kernels (median and p95
                <= 300 ms; no heavy module imported); first uses of the magics (reported)
8. ``pipeline`` ``qmlops pipeline run`` vs raw ``papermill.execute_notebook`` on
                notebooks/qaoa_maxcut.ipynb, tracking off and on; ratio of medians <= 1.10x
9. ``sweep``    8 small notebooks (a Bell job on Aer each) as a 2-worker Dask sweep vs one by
                one; speed-up >= 1.7x
10. ``dashboard`` the Jobs dashboard through Voila in headless Chromium, 10,000 jobs in the
                ledger: time to first render, median <= 5 s (and on an empty ledger)

Every run uses a fresh temporary ``QMLOPS_HOME`` (and ignores ``QMLOPS_DATABASE_URL`` and
``QMLOPS_BACKENDS_FILE``), so it never touches your own ledger. The table goes to stdout,
progress to stderr, and the numbers with the machine's description to
``benchmarks/results/latest.json`` (``latest-quick.json`` for ``--quick``).

Exit status: 0 when every benchmark ran (targets missed or not), 1 with ``--strict`` when a
target was missed or skipped, 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    ERROR,
    MISS,
    RESULTS,
    SKIP,
    BenchResult,
    Row,
    cpu_busy,
    loadavg,
    log,
    machine_info,
    package_fingerprint,
    table,
    wait_until_idle,
)

ORDER = [
    "import",
    "batch",
    "latency",
    "ledger-sqlite",
    "ledger-postgres",
    "tracking",
    "server",
    "magics",
    "pipeline",
    "sweep",
    "dashboard",
]
ALIASES = {"ledger": ["ledger-sqlite", "ledger-postgres"], "all": ORDER, "throughput": ["batch"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run_all.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default="all",
        help="comma-separated: batch, latency, ledger (= ledger-sqlite,"
        "ledger-postgres), import, tracking, server, magics, pipeline, sweep, dashboard; "
        "default all",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke run (100 circuits x 3, 30 jobs, 5,000-job ledger, 5 imports,"
        " 20 tracked jobs, 20 REST jobs, 2 server starts each way, 4 requests per client,"
        " 5 kernels)",
    )
    parser.add_argument("--circuits", type=int, default=1000, help="batch: circuits per job")
    parser.add_argument(
        "--reps",
        type=int,
        default=7,
        help="batch: timed repetitions of each side (after a warm-up)",
    )
    parser.add_argument("--jobs", type=int, default=200, help="latency: sequential jobs")
    parser.add_argument("--ledger-jobs", type=int, default=100_000, help="ledger: jobs to seed")
    parser.add_argument("--tracking-jobs", type=int, default=100, help="tracking: jobs per variant")
    parser.add_argument(
        "--ledger-reps", type=int, default=30, help="ledger: timed calls of each page"
    )
    parser.add_argument(
        "--server-jobs", type=int, default=100, help="server: sequential Bell jobs over REST"
    )
    parser.add_argument(
        "--server-starts",
        type=int,
        default=5,
        help="server: timed starts with and without the extension (each)",
    )
    parser.add_argument(
        "--server-clients", type=int, default=50, help="server: concurrent clients of GET /jobs"
    )
    parser.add_argument(
        "--server-requests", type=int, default=10, help="server: GET /jobs requests per client"
    )
    parser.add_argument(
        "--import-runs", type=int, default=11, help="import: interpreter starts of each kind"
    )
    parser.add_argument(
        "--magics-kernels", type=int, default=11, help="magics: fresh kernels timed"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("QMLOPS_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
        help="server to use (the benchmark creates and uses its own database "
        "'qmlops_bench' there; default $QMLOPS_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="ledger: re-seed even if a seeded ledger can be reused"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also write a cProfile of each measured operation to "
        "benchmarks/results/profile-*.txt (not timed)",
    )
    parser.add_argument("--owner", default="bench", help="owner of the benchmark's jobs")
    parser.add_argument(
        "--pipeline-runs", type=int, default=5, help="pipeline: timed runs of each side"
    )
    parser.add_argument(
        "--pipeline-notebook",
        default=None,
        help="pipeline: the notebook (default notebooks/qaoa_maxcut.ipynb)",
    )
    parser.add_argument(
        "--sweep-reps", type=int, default=3, help="sweep: timed repetitions of each side"
    )
    parser.add_argument("--child-result", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default "
        "benchmarks/results/latest.json, latest-quick.json with --quick)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a target is missed or a benchmark is skipped",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark, wait up to SECONDS for the CPUs to be mostly idle "
        "(for shared machines); default 0: start at once",
    )
    parser.add_argument(
        "--keep-home",
        action="store_true",
        help="keep the temporary QMLOPS_HOME (its ledgers) for inspection",
    )
    args = parser.parse_args(argv)
    names: list[str] = []
    for part in args.only.split(","):
        part = part.strip()
        if not part:
            continue
        for name in ALIASES.get(part, [part]):
            if name not in ORDER:
                parser.error(
                    f"unknown benchmark {part!r}; choose from {', '.join([*ORDER, *ALIASES])}"
                )
            if name not in names:
                names.append(name)
    args.names = [n for n in ORDER if n in names]
    if args.json is None:
        args.json = RESULTS / ("latest-quick.json" if args.quick else "latest.json")
    return args


def isolate(args: argparse.Namespace) -> str:
    """A private QMLOPS_HOME for this run; before anything imports qmlops_jupyter."""
    home = tempfile.mkdtemp(prefix="qmlops-bench-home-")
    os.environ["QMLOPS_HOME"] = home
    os.environ["QMLOPS_OWNER"] = args.owner
    for var in ("QMLOPS_DATABASE_URL", "QMLOPS_BACKENDS_FILE"):
        os.environ.pop(var, None)
    return home


def run_one(name: str, args: argparse.Namespace) -> BenchResult:
    """Run one benchmark in a fresh interpreter, so none inherits another's heap, threads or
    warm caches (after the batch benchmark the same process measured small jobs ~2 ms slower)."""
    if args.child_result is not None:
        return run_here(name, args)
    import subprocess

    # Start from a quiet disk: the previous benchmark's writes are flushed, not competing
    # with this one's fsyncs.
    os.sync()
    time.sleep(2)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *strip_only(sys.argv[1:]),
            "--only",
            name,
            "--child-result",
            str(out),
        ]
        subprocess.run(command, check=True)
        data = json.loads(out.read_text())
    return BenchResult(
        name,
        rows=[Row(**r) for r in data["rows"]],
        details=data["details"],
        seconds=data["seconds"],
    )


def strip_only(argv: list[str]) -> list[str]:
    """The parent's arguments without --only/--json (the child gets its own)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--only", "--json", "--child-result"):
            skip = True
            continue
        if arg.startswith(("--only=", "--json=", "--child-result=")):
            continue
        kept.append(arg)
    return kept


def run_here(name: str, args: argparse.Namespace) -> BenchResult:
    if name == "import":
        import bench_import

        return bench_import.run(args)
    if name == "batch":
        import bench_batch

        return bench_batch.run(args)
    if name == "latency":
        import bench_latency

        return bench_latency.run(args)
    if name == "tracking":
        import bench_tracking

        return bench_tracking.run(args)
    if name == "server":
        import bench_server

        return bench_server.run(args)
    if name == "magics":
        import bench_magics

        return bench_magics.run(args)
    if name == "pipeline":
        import bench_pipeline

        return bench_pipeline.run(args)
    if name == "sweep":
        import bench_sweep

        return bench_sweep.run(args)
    if name == "dashboard":
        import bench_dashboard

        return bench_dashboard.run(args)
    import bench_ledger

    return bench_ledger.run(args, name.split("-", 1)[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.home = isolate(args)
    if args.child_result is not None:  # one benchmark, for the parent process
        result = run_here(args.names[0], args)
        args.child_result.write_text(json.dumps(result.to_json()))
        return 0
    started_at = datetime.now(UTC)
    machine = machine_info()
    log(
        f"qmlops_jupyter benchmarks: {', '.join(args.names)}{' (quick)' if args.quick else ''}"
        f" | {machine['nproc']} CPUs, {machine['memory_gib']} GiB, Python {machine['python']}"
        f" | QMLOPS_HOME={args.home}"
    )
    results: list[BenchResult] = []
    crashed = False
    try:
        for name in args.names:
            busy_before = (
                wait_until_idle(args.wait_idle, label=name) if args.wait_idle else cpu_busy(1.0)
            )
            load_before = loadavg()
            t0 = time.perf_counter()
            try:
                result = run_one(name, args)
            except Exception as exc:
                crashed = True
                traceback.print_exc()
                result = BenchResult(
                    name,
                    [
                        Row(
                            name,
                            "crashed",
                            None,
                            "",
                            status=ERROR,
                            note=f"{type(exc).__name__}: {exc}"[:200],
                        )
                    ],
                    {"error": traceback.format_exc()},
                )
            result.seconds = time.perf_counter() - t0
            result.details["loadavg_before"] = load_before
            result.details["loadavg_after"] = loadavg()
            result.details["cpu_busy_before"] = (
                None if busy_before is None else round(busy_before, 3)
            )
            results.append(result)
            log(f"[{name}] done in {result.seconds:.1f} s")
    finally:
        if not args.keep_home:
            shutil.rmtree(args.home, ignore_errors=True)

    rows = [r for res in results for r in res.rows]
    edited = package_fingerprint() != machine["package_sha256"]
    report = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "package_edited_during_run": edited,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("home", "json")
        },
        "rows": [_row_json(r) for r in rows],
        "benchmarks": {res.name: res.to_json() for res in results},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")

    print(
        f"qmlops_jupyter benchmarks, {started_at:%Y-%m-%d %H:%M} UTC"
        f"{' (QUICK: reduced sizes, not comparable to targets)' if args.quick else ''}"
    )
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, qiskit {machine['packages']['qiskit']}, "
        f"qiskit-aer {machine['packages']['qiskit-aer']}"
    )
    print()
    print(table(rows))
    print(f"code: {machine['code']}, sources sha256 {machine['package_sha256']}")
    if edited:
        print()
        print("WARNING: the package's sources changed while the benchmarks ran; modules imported")
        print("late may be the new code. Rerun (or benchmark a snapshot, see docs/benchmarks.md).")
    busy = _busy_warnings(results, machine.get("nproc") or 1)
    if busy:
        print()
        print("WARNING: the machine was busy during " + "; ".join(busy) + ". Other processes")
        print("competed for the CPUs, so those numbers are inflated; rerun when it is quiet.")
    print()
    print(f"results: {_display(args.json)}")
    if crashed:
        return 2
    if args.strict and any(r.status in (MISS, SKIP) for r in rows):
        return 1
    return 0


def _busy_warnings(results: list[BenchResult], nproc: int) -> list[str]:
    """Benchmarks during which the 1-minute load average exceeded half the CPUs (the
    benchmark itself accounts for about one)."""
    out = []
    for res in results:
        loads = [res.details.get("loadavg_before"), res.details.get("loadavg_after")]
        peak = max((load[0] for load in loads if load), default=0.0)
        if peak > max(1.5, nproc * 0.75):
            out.append(f"{res.name} (load {peak:.1f} on {nproc} CPUs)")
    return out


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "bench": row.bench,
        "metric": row.metric,
        "value": _round(row.value),
        "unit": row.unit,
        "target": row.target,
        "status": row.status,
        "note": row.note,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
