"""Prometheus metrics for the server's own ``/metrics`` (token-authenticated by jupyter_server).

Two sources feed them:

* the job events the :class:`~qmlops_jupyter.server.events.EventPump` reads from the ledger,
  through :meth:`Metrics.observe_event`: counters of transitions, retries, recoveries and
  provider errors move at once; what needs the job itself (its duration, circuit depths,
  fidelity, error kind) is queued and read from the ledger in a batch, off the event loop;
* a refresh every ``QmlopsApp.metrics_interval`` seconds (and soon after a transition) of the
  gauges that are counts over the ledger: queues, shots used today, jobs needing attention,
  the tracking outbox, this owner's budgets.

They cover the server owner's jobs and budgets (on a ledger shared by a team, each user's
server reports that user's work; the team's service reports everyone's). Labels are backends,
states and error kinds only: never a user, an owner or a job id,
so the number of series stays bounded and a scrape reveals no one's work.

The metric objects live in the default registry, created once per process: a process may run
several server apps (tests do), and they share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..states import JobState
from .background import cancel_and_wait

if TYPE_CHECKING:
    from .app import QmlopsApp

HOUR = 3600.0
DURATION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.5,
    1,
    5,
    15,
    60,
    300,
    900,
    HOUR,
    4 * HOUR,
    12 * HOUR,
    24 * HOUR,
    48 * HOUR,
    72 * HOUR,
)
DEPTH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

#: States a job waits in before it runs: for the engine's slot, on the way to the provider, in
#: the provider's queue.
WAITING_STATES = (JobState.CREATED, JobState.SUBMITTING, JobState.QUEUED)
FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
#: Transitions after which the job is read: to observe depths, durations and error kinds.
_READ_ON = FINAL_STATES | {JobState.CREATED, JobState.NEEDS_ATTENTION}
#: Budget limit -> the ``period`` label of ``qmlops_budget_used_ratio``.
BUDGET_PERIODS = {"shots_per_day": "day", "usd_per_month": "month"}

ENGINE_TICK = "qmlops_engine_last_tick_timestamp_seconds"
ENGINE_TICK_HELP = "Unix time of the hosted engine's last look at the ledger."


def _registered(name: str) -> Any:
    # Private, but the only lookup prometheus_client has; needed when this module is imported
    # again in one process (importlib reloads), where a second registration would raise.
    return REGISTRY._names_to_collectors.get(name)  # type: ignore[attr-defined]


def _metric(kind: type, name: str, documentation: str, labels: Iterable[str], **kw: Any) -> Any:
    existing = _registered(name)
    if existing is not None:
        return existing
    return kind(name, documentation, list(labels), **kw)


JOBS = _metric(
    Counter,
    "quantum_jobs_total",
    "Job transitions into each state (CREATED counts submissions).",
    ("backend", "state"),
)
DURATION = _metric(
    Histogram,
    "quantum_job_duration_seconds",
    "Seconds from a job's creation to its end (COMPLETED, FAILED or CANCELLED).",
    ("backend",),
    buckets=DURATION_BUCKETS,
)
QUEUE = _metric(
    Gauge,
    "quantum_backend_queue_size",
    "Jobs not yet running: waiting for an engine slot, being submitted, in the provider's queue.",
    ("backend",),
)
SHOTS_TODAY = _metric(
    Gauge,
    "quantum_shots_used_daily",
    "Shots (shots x circuits) of jobs created this UTC day, except jobs cancelled before "
    "being sent (what budgets count).",
    ("backend",),
)
DEPTH = _metric(
    Histogram,
    "quantum_circuit_depth",
    "Depth of each circuit of the jobs created.",
    ("backend",),
    buckets=DEPTH_BUCKETS,
)
FIDELITY = _metric(
    Gauge,
    "quantum_fidelity_score",
    "Fidelity the backend reported with its latest completed job that had one.",
    ("backend",),
)
PROVIDER_ERRORS = _metric(
    Counter,
    "qmlops_provider_errors_total",
    "Provider errors: transient ones retried, and the kinds of error jobs failed or stopped "
    "(NEEDS_ATTENTION) with.",
    ("backend", "kind"),
)
RETRIES = _metric(
    Counter, "qmlops_retries_total", "Retries after a transient provider error.", ("backend",)
)
RECOVERED = _metric(
    Counter,
    "qmlops_recovered_jobs_total",
    "Jobs recovered after an engine stopped or crashed (re-attached or re-run).",
    ("backend",),
)
NEEDING_ATTENTION = _metric(
    Gauge,
    "qmlops_jobs_needing_attention",
    "Jobs in NEEDS_ATTENTION: sent to a provider, outcome unknown until a person looks.",
    (),
)
OUTBOX_PENDING = _metric(
    Gauge,
    "qmlops_tracking_outbox_pending",
    "Tracking records (completed jobs, run metrics) waiting to reach MLflow.",
    (),
)
BUDGET_USED = _metric(
    Gauge,
    "qmlops_budget_used_ratio",
    "Used / limit of each of the server owner's budgets this period (backend '*': all "
    "backends together).",
    ("backend", "period"),
)


class _EngineTick(Collector):
    """``qmlops_engine_last_tick_timestamp_seconds``, read when scraped, and absent while no
    engine is hosted (a server whose jobs another process runs is not a stale engine)."""

    def __init__(self) -> None:
        self.source: Metrics | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(ENGINE_TICK, ENGINE_TICK_HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tick = self.source.engine_tick() if self.source is not None else None
        if tick is not None:
            family = GaugeMetricFamily(ENGINE_TICK, ENGINE_TICK_HELP)
            family.add_metric([], tick)
            yield family


ENGINE_TICK_COLLECTOR = _registered(ENGINE_TICK)
if ENGINE_TICK_COLLECTOR is None:
    ENGINE_TICK_COLLECTOR = _EngineTick()
    REGISTRY.register(ENGINE_TICK_COLLECTOR)

#: Every metric this module exports, by name and type (the dashboard's and alerts' test reads it).
EXPORTED: dict[str, str] = {
    "quantum_jobs_total": "counter",
    "quantum_job_duration_seconds": "histogram",
    "quantum_backend_queue_size": "gauge",
    "quantum_shots_used_daily": "gauge",
    "quantum_circuit_depth": "histogram",
    "quantum_fidelity_score": "gauge",
    ENGINE_TICK: "gauge",
    "qmlops_provider_errors_total": "counter",
    "qmlops_retries_total": "counter",
    "qmlops_recovered_jobs_total": "counter",
    "qmlops_jobs_needing_attention": "gauge",
    "qmlops_tracking_outbox_pending": "gauge",
    "qmlops_budget_used_ratio": "gauge",
}


def series_names() -> set[str]:
    """The names of the series a scrape can show (a histogram's ``_bucket``, ``_count``...)."""
    names = set()
    for name, kind in EXPORTED.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
        elif kind == "counter":
            names |= {name, name.removesuffix("_total") + "_created"}
        else:
            names.add(name)
    return names


@dataclass
class _Seen:
    """What the event rows said about a job whose record still has to be read."""

    backend: str
    states: list[JobState] = field(default_factory=list)
    at: Any = None  # time of the final transition, if the record lacks finished_at

    def merge(self, later: _Seen) -> None:
        self.states.extend(later.states)
        self.at = later.at or self.at


@dataclass
class _Snapshot:
    """The ledger-wide gauges, read in a thread and applied on the loop in one go."""

    backends: list[str]
    queue: dict[str, int]
    shots_today: dict[str, int]
    needing_attention: int
    outbox_pending: int
    budgets: dict[tuple[str, str], float]


class Metrics:
    """The server's metrics: fed by the event pump, refreshed from the ledger."""

    def __init__(self, app: QmlopsApp) -> None:
        self.app = app
        self._seen: dict[str, _Seen] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_at: float | None = None
        #: Unix time of the last refresh of the ledger-wide gauges (None: not yet).
        self.last_refresh: float | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._started_at = time.time()
        ENGINE_TICK_COLLECTOR.source = self
        self._task = asyncio.create_task(self._loop(), name="qmlops-metrics")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if ENGINE_TICK_COLLECTOR.source is self:
            ENGINE_TICK_COLLECTOR.source = None

    def engine_tick(self) -> float | None:
        """The hosted engine's last tick; its start while it has not ticked yet (so an engine
        stuck from the start still looks stale); None without an engine."""
        engine = getattr(self.app, "engine", None)
        if engine is None:
            return None
        return engine.last_tick or self._started_at

    # -- from the event pump (on the event loop: no I/O here) ------------------------------------

    def observe_event(self, row: dict[str, Any]) -> None:
        """Count one row of the ledger's event log (never raises: the pump must move on)."""
        kind = row.get("kind")
        backend = row.get("backend") or "unknown"
        if kind == "retry":
            RETRIES.labels(backend).inc()
            # The driver only retries transient errors; other kinds end the job (see below).
            PROVIDER_ERRORS.labels(backend, "transient").inc()
        elif kind == "recovered":
            RECOVERED.labels(backend).inc()
        elif kind == "transition" and row.get("to_state") in JobState.__members__:
            state = JobState(row["to_state"])
            JOBS.labels(backend, state.value).inc()
            if state in _READ_ON:
                seen = self._seen.setdefault(row["job_id"], _Seen(backend))
                seen.states.append(state)
                if state in FINAL_STATES:
                    seen.at = row.get("at")
            if self._wake is not None:
                self._wake.set()

    # -- the refresh task ------------------------------------------------------------------------

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            seen, self._seen = self._seen, {}
            if seen:
                try:
                    jobs = await self.app.run(self._read_jobs, list(seen))
                except Exception:  # the ledger may be briefly unreachable
                    self.app.log.warning("qmlops: reading jobs for metrics failed", exc_info=True)
                    if len(self._seen) < 10_000:  # try these again with the next batch
                        for job_id, later in self._seen.items():
                            seen.setdefault(job_id, _Seen(later.backend)).merge(later)
                        self._seen = seen
                else:
                    self._observe_jobs(seen, jobs)
            try:
                self._apply(await self.app.run(self._snapshot))
                self.last_refresh = time.time()
            except Exception:
                self.app.log.warning("qmlops: refreshing metrics failed", exc_info=True)
            # At most one refresh a second, however busy the ledger; else every interval.
            gap = min(1.0, self.app.metrics_interval)
            await asyncio.sleep(gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.app.metrics_interval - gap)

    def _observe_jobs(self, seen: dict[str, _Seen], jobs: dict[str, dict[str, Any]]) -> None:
        for job_id, what in seen.items():
            job = jobs.get(job_id)
            if job is None:  # deleted since; nothing to observe
                continue
            backend = what.backend
            for state in what.states:
                if state is JobState.CREATED:
                    for circuit in job["circuits"] or []:
                        depth = circuit.get("depth")
                        if isinstance(depth, int | float):
                            DEPTH.labels(backend).observe(depth)
                    continue
                if state in (JobState.FAILED, JobState.NEEDS_ATTENTION) and job["error_kind"]:
                    PROVIDER_ERRORS.labels(backend, job["error_kind"]).inc()
                if state in FINAL_STATES:
                    end = job["finished_at"] or what.at
                    if end is not None and job["created_at"] is not None:
                        seconds = (end - job["created_at"]).total_seconds()
                        DURATION.labels(backend).observe(max(0.0, seconds))
                if state is JobState.COMPLETED:
                    fidelity = (job["result_metadata"] or {}).get("fidelity")
                    if isinstance(fidelity, int | float) and math.isfinite(fidelity):
                        FIDELITY.labels(backend).set(float(fidelity))

    def _apply(self, snap: _Snapshot) -> None:
        # Runs on the loop, like the scrape handler: a scrape never sees a half-cleared gauge.
        for gauge, values in ((QUEUE, snap.queue), (SHOTS_TODAY, snap.shots_today)):
            gauge.clear()
            for backend in sorted({*snap.backends, *values}):
                gauge.labels(backend).set(values.get(backend, 0))
        NEEDING_ATTENTION.set(snap.needing_attention)
        OUTBOX_PENDING.set(snap.outbox_pending)
        BUDGET_USED.clear()
        for (backend, period), ratio in snap.budgets.items():
            BUDGET_USED.labels(backend, period).set(ratio)

    # -- ledger reads (in the API's threads) -----------------------------------------------------

    def _read_jobs(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        from sqlalchemy import select

        from ..ledger.store import jobs, results

        out: dict[str, dict[str, Any]] = {}
        ledger = self.app.client.ledger
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            query = (
                select(
                    jobs.c.id,
                    jobs.c.created_at,
                    jobs.c.finished_at,
                    jobs.c.error_kind,
                    jobs.c.circuits,
                    results.c.metadata.label("result_metadata"),
                )
                .select_from(jobs.outerjoin(results, results.c.job_id == jobs.c.id))
                .where(jobs.c.id.in_(chunk))
            )
            with ledger._read() as conn:
                out.update({r["id"]: dict(r) for r in conn.execute(query).mappings()})
        return out

    def _snapshot(self) -> _Snapshot:
        from sqlalchemy import and_, func, not_, select

        from ..cost.budgets import budget_status, day_start
        from ..ledger.store import jobs
        from ..tracking.outbox import pending

        client = self.app.client
        ledger = client.ledger
        waiting = [s.value for s in WAITING_STATES]
        counted = not_(and_(jobs.c.state == "CANCELLED", jobs.c.submitted_at.is_(None)))
        shots = func.coalesce(func.sum(jobs.c.shots * jobs.c.num_circuits), 0)
        with ledger._read() as conn:
            queue = dict(
                conn.execute(
                    select(jobs.c.backend, func.count())
                    .where(jobs.c.owner == client.owner, jobs.c.state.in_(waiting))
                    .group_by(jobs.c.backend)
                ).all()
            )
            shots_today = dict(
                conn.execute(
                    select(jobs.c.backend, shots)
                    .where(
                        jobs.c.owner == client.owner,
                        jobs.c.created_at >= day_start(ledger.clock()),
                        counted,
                    )
                    .group_by(jobs.c.backend)
                ).all()
            )
            attention = conn.execute(
                select(func.count()).where(
                    jobs.c.owner == client.owner, jobs.c.state == JobState.NEEDS_ATTENTION.value
                )
            ).scalar_one()
        budgets: dict[tuple[str, str], float] = {}
        for status in budget_status(ledger, client.owner):
            for attr, period in BUDGET_PERIODS.items():
                limit = getattr(status, attr)
                if limit is not None:
                    # A zero limit allows nothing: it is spent.
                    ratio = limit.used / limit.limit if limit.limit else 1.0
                    budgets[(status.backend, period)] = float(ratio)
        return _Snapshot(
            backends=client.registry.configured_names(),
            queue={b: int(n) for b, n in queue.items()},
            shots_today={b: int(n) for b, n in shots_today.items()},
            needing_attention=int(attention),
            outbox_pending=int(pending(ledger, client.owner)["count"]),
            budgets=budgets,
        )
