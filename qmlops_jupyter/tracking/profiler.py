"""``qmlops_jupyter.profile(name)``: where the time of a block of quantum work went.

    with qmlops_jupyter.profile("vqe_optimization") as p:
        for step in range(50):
            job = qmlops_jupyter.submit(ansatz(theta), shots=1000, wait=True)
            theta = update(theta, job.result())
    p.print_stats()

It collects the phase times of every job submitted inside (validate, transpile, queue, run,
post-process) from the ledger, and splits the block's wall time into time spent in qmlops calls
(submitting and waiting) and the Python time around them. Inside ``track()`` the figures are
logged to the run as ``profile.<name>.*`` metrics.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from . import active

if TYPE_CHECKING:
    from ..client import Client

PHASES = ("validate", "transpile", "queue", "run", "post_process")


class Profile:
    def __init__(self, name: str, client: Client | None = None) -> None:
        self.name = name
        self._client = client
        self.job_ids: list[str] = []
        self.submit_seconds = 0.0
        self.wait_seconds = 0.0
        self.wall_seconds: float | None = None
        self._start: float | None = None
        self._stats: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Profile:
        self._start = time.perf_counter()
        active.push_profile(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall_seconds = time.perf_counter() - (self._start or time.perf_counter())
        active.pop_profile(self)
        self._stats = self._collect()
        run = active.current_run()
        if run is not None and run.enabled:
            prefix = f"profile.{self.name}."
            figures = {f"{prefix}wall_seconds": self._stats["wall_seconds"]}
            figures[f"{prefix}python_seconds"] = self._stats["python_seconds"]
            figures[f"{prefix}qmlops_seconds"] = self._stats["qmlops_seconds"]
            figures[f"{prefix}jobs"] = float(self._stats["jobs"])
            for phase, row in self._stats["phases"].items():
                figures[f"{prefix}{phase}_seconds"] = row["total"]
            run.log_metrics(figures)

    # -- hooks the client calls ------------------------------------------------------------------

    def _note_job(self, job: Any, seconds: float) -> None:
        with self._lock:
            self.job_ids.append(job.id)
            self.submit_seconds += seconds

    def _note_wait(self, seconds: float) -> None:
        with self._lock:
            self.wait_seconds += seconds

    # -- results ----------------------------------------------------------------------------------

    def _collect(self) -> dict[str, Any]:
        client = self._client
        if client is None:
            from ..client import get_client

            client = get_client()
        phases: dict[str, list[float]] = {p: [] for p in PHASES}
        unfinished = 0
        for job_id in self.job_ids:
            record = client.ledger.get_job(job_id)
            if not record.terminal:
                unfinished += 1
            for phase in PHASES:
                if phase in record.phases:
                    phases[phase].append(float(record.phases[phase]))
        wall = self.wall_seconds if self.wall_seconds is not None else 0.0
        if self.wall_seconds is None and self._start is not None:
            wall = time.perf_counter() - self._start
        qmlops = min(wall, self.submit_seconds + self.wait_seconds)
        return {
            "name": self.name,
            "wall_seconds": wall,
            "qmlops_seconds": qmlops,
            "python_seconds": max(0.0, wall - qmlops),
            "jobs": len(self.job_ids),
            "unfinished_jobs": unfinished,
            "phases": {
                phase: {
                    "count": len(values),
                    "total": sum(values),
                    "mean": sum(values) / len(values) if values else 0.0,
                    "max": max(values) if values else 0.0,
                }
                for phase, values in phases.items()
            },
        }

    def stats(self) -> dict[str, Any]:
        """The figures as a dict (phases: count, total, mean, max seconds)."""
        return self._stats if self._stats is not None else self._collect()

    def print_stats(self, file: TextIO | None = None) -> None:
        """A table of phase times and the Python time around them."""
        s = self.stats()
        out = file or sys.stdout
        wall = s["wall_seconds"] or 1e-12
        print(
            f"profile {s['name']}: {s['jobs']} job(s) in {s['wall_seconds']:.3f} s"
            + (f" ({s['unfinished_jobs']} not finished)" if s["unfinished_jobs"] else ""),
            file=out,
        )
        print(f"{'phase':<16}{'jobs':>6}{'total s':>11}{'mean ms':>11}{'max ms':>11}", file=out)
        for phase, row in s["phases"].items():
            print(
                f"{phase:<16}{row['count']:>6}{row['total']:>11.4f}"
                f"{row['mean'] * 1000:>11.2f}{row['max'] * 1000:>11.2f}",
                file=out,
            )
        for label, key in (
            ("in qmlops calls", "qmlops_seconds"),
            ("python around", "python_seconds"),
        ):
            share = 100 * s[key] / wall
            print(f"{label:<16}{'':>6}{s[key]:>11.4f}{'':>11}{share:>10.1f}%", file=out)

    def __repr__(self) -> str:
        return f"<Profile {self.name}: {len(self.job_ids)} jobs>"


def profile(name: str, client: Client | None = None) -> Profile:
    """A context manager that profiles the jobs submitted inside (see module doc)."""
    return Profile(name, client)
