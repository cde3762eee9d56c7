"""Shared helpers of the benchmarks: statistics, result rows, machine facts, the table.

Nothing here imports ``qmlops_jupyter``: ``run_all.py`` points ``QMLOPS_HOME`` at a temporary
folder first, and only then do the benchmark modules import the package.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

PASS, MISS, INFO, SKIP, ERROR = "PASS", "MISS", "info", "SKIP", "ERROR"


@dataclass
class Row:
    """One line of the table: a measured value, its unit and (optionally) its target."""

    bench: str
    metric: str
    value: float | None
    unit: str
    #: The value must be <= target to PASS; None makes the row informational.
    target: float | None = None
    status: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            if self.value is None:
                self.status = SKIP
            elif self.target is None:
                self.status = INFO
            else:
                self.status = PASS if self.value <= self.target else MISS


@dataclass
class BenchResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "details": self.details,
            "seconds": round(self.seconds, 2),
        }


# -- statistics ------------------------------------------------------------------------------


#: The benchmarks' small job: a Bell pair in OpenQASM 2 (what a client sends over REST).
BELL_QASM2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), p in [0, 100]."""
    if not xs:
        raise ValueError("percentile of nothing")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """min / p50 / p95 / max / mean of ``xs`` times ``scale`` (1e3 for ms)."""
    return {
        "n": len(xs),
        "min": round(min(xs) * scale, digits),
        "p50": round(percentile(xs, 50) * scale, digits),
        "p95": round(percentile(xs, 95) * scale, digits),
        "max": round(max(xs) * scale, digits),
        "mean": round(statistics.fmean(xs) * scale, digits),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call. No ``gc.collect()`` before it: a full collection takes ~20 ms
    with Qiskit loaded and leaves Aer's OpenMP threads cold, which slowed the next Aer run
    1-3x (p95 up to 9 ms for a Bell circuit) -- an artefact no real caller sees. The collector
    stays on, as in real use; :func:`settle` collects once before a benchmark's loop."""
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def interleaved(
    raw: Callable[[int], Any],
    ours: Callable[[int], Any],
    seeds: Sequence[int],
    same: Callable[[Any, Any], bool],
    label: str | None = None,
) -> tuple[list[float], list[float], bool]:
    """Time raw(seed) then ours(seed) for each seed, so a slow stretch of the machine hits both
    sides; returns both lists of seconds and whether every pair of results agreed."""
    raw_t: list[float] = []
    ours_t: list[float] = []
    match = True
    for i, seed in enumerate(seeds):
        t_raw, c_raw = timed(lambda s=seed: raw(s))
        t_ours, c_ours = timed(lambda s=seed: ours(s))
        raw_t.append(t_raw)
        ours_t.append(t_ours)
        match = match and same(c_raw, c_ours)
        if label:
            log(f"[{label}]   rep {i + 1}/{len(seeds)}: raw {t_raw:.3f} s, ours {t_ours:.3f} s")
    return raw_t, ours_t, match


def settle() -> None:
    """Collect garbage once, before a benchmark's timed loop."""
    gc.collect()


# -- the machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "sqlite": _sqlite_version(),
    }
    info["packages"] = _versions(
        [
            "qiskit",
            "qiskit-aer",
            "sqlalchemy",
            "alembic",
            "pydantic",
            "psycopg",
            "numpy",
            "qmlops-jupyter",
        ]
    )
    pkg = package_dir()
    in_repo = pkg is not None and pkg.resolve().parent == ROOT
    info["package_path"] = str(pkg) if pkg else None
    info["package_sha256"] = package_fingerprint()
    info["git_commit"] = _git("rev-parse", "--short", "HEAD")
    if in_repo:
        dirty = _git("status", "--porcelain", "--", "qmlops_jupyter")
        info["code"] = f"repository at {info['git_commit']}" + (
            " + uncommitted changes" if dirty else ""
        )
    else:
        info["code"] = f"snapshot {pkg} (repository at {info['git_commit']})"
    return info


def package_dir() -> Path | None:
    """Where ``import qmlops_jupyter`` resolves (without importing it): the repository, or a
    snapshot put first on PYTHONPATH."""
    from importlib.util import find_spec

    spec = find_spec("qmlops_jupyter")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_fingerprint() -> str | None:
    """SHA-256 of the package's sources, to tell which code was measured and to notice when
    it is edited during a run."""
    import hashlib

    root = package_dir()
    if root is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _versions(names: list[str]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# -- output ------------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "ms":
        return f"{value:.2f} ms" if abs(value) < 100 else f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "":
        return f"{value:g}"
    return f"{value:g} {unit}"


def fmt_target(row: Row) -> str:
    if row.target is None:
        return ""
    return "<= " + fmt_value(row.target, row.unit)


def table(rows: Sequence[Row]) -> str:
    header = ("benchmark", "metric", "target", "measured", "result")
    body = [(r.bench, r.metric, fmt_target(r), fmt_value(r.value, r.unit), r.status) for r in rows]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for r, b in zip(rows, body, strict=True):
        line = "  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip()
        if r.note:
            line += f"   ({r.note})"
        lines.append(line)
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress goes to stderr so stdout is just the table."""
    print(message, file=sys.stderr, flush=True)


def profile_call(name: str, fn: Callable[[], Any], calls: int = 1) -> Path:
    """cProfile ``calls`` calls of ``fn``; write the top functions to results/profile-NAME.txt."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    out = io.StringIO()
    out.write(f"cProfile of {calls} call(s) of the '{name}' benchmark's measured operation\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"profile-{name}.txt"
    path.write_text(out.getvalue())
    log(f"[{name}] cProfile written to {path}")
    return path


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy (not idle or iowait) over the next ``seconds`` (Linux)."""

    def snapshot() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    first = snapshot()
    time.sleep(seconds)
    second = snapshot()
    if first is None or second is None or second[1] == first[1]:
        return None
    return 1.0 - (second[0] - first[0]) / (second[1] - first[1])


def wait_until_idle(max_wait: float, threshold: float = 0.15, label: str = "") -> float | None:
    """Wait (at most ``max_wait`` seconds) until the machine is mostly idle, so a benchmark does
    not start in the middle of someone else's test run; returns the last busy fraction."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(2.0)
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        log(f"[{label}] machine {busy:.0%} busy; waiting for it to settle")
        time.sleep(5.0)
        busy = cpu_busy(2.0)
    return busy
