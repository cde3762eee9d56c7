"""Benchmark 4: wall time of ``python -c "import qmlops_jupyter"`` in a fresh interpreter.

Spawns the interpreter of this virtualenv ``runs`` times for ``import qmlops_jupyter`` and as
many times for ``pass`` (interleaved, after one warm-up of each so the OS file cache is warm),
and reports both medians and their difference (the package's own cost). ``-X importtime``
names the slowest modules it pulls in.

Run alone: ``.venv/bin/python benchmarks/bench_import.py [--quick]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from benchlib import BenchResult, Row, log, median, summary

TARGET_NET_MS = 150.0


def _spawn(code: str, env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def _importtime(env: dict[str, str], cwd: str, top: int = 8) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time (``-X importtime``), top-level and
    those of this package."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import qmlops_jupyter"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        rows.append(
            {
                "module": name.strip(),
                "self_ms": int(self_us.strip()) / 1e3,
                "cumulative_ms": int(cumulative_us.strip()) / 1e3,
                "depth": (len(name) - len(name.lstrip())) // 2,
            }
        )
    rows.sort(key=lambda r: -r["cumulative_ms"])
    return [r for r in rows if r["depth"] <= 1][:top]


def run(args: Any) -> BenchResult:
    runs = 5 if args.quick else args.import_runs
    env = dict(os.environ)
    cwd = args.home  # not the repository: "" on sys.path must not shadow the installed package
    log(f"[import] {runs} interpreter starts each for 'import qmlops_jupyter' and 'pass'")
    _spawn("pass", env, cwd)
    _spawn("import qmlops_jupyter", env, cwd)
    base: list[float] = []
    imp: list[float] = []
    for _ in range(runs):
        base.append(_spawn("pass", env, cwd))
        imp.append(_spawn("import qmlops_jupyter", env, cwd))
    # What a notebook's first cell pays before it can submit: the client module and its deps.
    client: list[float] = []
    for _ in range(max(3, runs // 2)):
        client.append(_spawn("from qmlops_jupyter import Client", env, cwd))
    net = (median(imp) - median(base)) * 1e3
    rows = [
        Row("4 import", "python -c pass (median)", median(base) * 1e3, "ms"),
        Row("4 import", "python -c 'import qmlops_jupyter' raw", median(imp) * 1e3, "ms"),
        Row("4 import", "import qmlops_jupyter net", net, "ms", TARGET_NET_MS),
        Row(
            "4 import",
            "'from qmlops_jupyter import Client' net",
            (median(client) - median(base)) * 1e3,
            "ms",
        ),
    ]
    details = {
        "runs": runs,
        "pass_ms": summary(base, 1e3),
        "import_ms": summary(imp, 1e3),
        "import_client_ms": summary(client, 1e3),
        "net_ms": round(net, 2),
        "slowest_imports": _importtime(env, cwd),
    }
    return BenchResult("import", rows, details)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "import", *sys.argv[1:]]))
