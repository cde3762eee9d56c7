"""Job transitions from the ledger to the server's event bus (``job_status`` v1), to Prometheus
metrics, and to requests waiting on a job; and pipeline runs' state changes (``pipeline_status``
v1).

The pump reads the ledger's append-only event log past the last sequence number it saw, every
``QmlopsApp.events_interval`` seconds, so transitions made by any process on the same ledger
(this server's engine, another engine, a kernel) are seen and emitted once each. Only the
server owner's jobs are emitted: on a ledger shared by a team, nobody sees another's jobs.

Requests wait on the pump rather than on timers of their own: a job's next transition
(:meth:`EventPump.wait_for_change`, for ``?wait=`` on a job) or any new row of the owner's
(:meth:`EventPump.wait_for_rows`, for the ``/events`` long poll).

Pipeline runs keep no event log: their rows are written by runner processes (the CLI, runs an
engine host launched), so the pump looks at the owner's unfinished runs, and those created or
ended lately, every :data:`PIPELINE_INTERVAL` seconds and announces each state it had not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .background import cancel_and_wait

if TYPE_CHECKING:
    from .app import QmlopsApp

SCHEMA_DIR = Path(__file__).with_name("event_schemas")
JOB_STATUS = "https://events.qmlops-jupyter.dev/job_status/v1"  # models.JOB_STATUS_SCHEMA
PIPELINE_STATUS = "https://events.qmlops-jupyter.dev/pipeline_status/v1"
#: Seconds between looks at the ledger's pipeline runs (a run lasts seconds to hours).
PIPELINE_INTERVAL = 0.5
#: How far back a look reaches for runs created or ended since the one before: runners on other
#: hosts write times from their own clocks. A run already announced in its state is not again.
PIPELINE_SLACK = 60.0
#: The longest error line an event carries.
MAX_ERROR = 500


def register_schemas(event_logger: Any) -> None:
    event_logger.register_event_schema(SCHEMA_DIR / "job_status" / "v1.yaml")
    event_logger.register_event_schema(SCHEMA_DIR / "pipeline_status" / "v1.yaml")


class EventPump:
    def __init__(self, app: QmlopsApp) -> None:
        self.app = app
        self.last_seq: int | None = None
        self.last_poll: float | None = None
        self._task: asyncio.Task[None] | None = None
        #: Futures resolved by the pump: per job id (its next transition), and under ``None``
        #: (any new row of the owner's).
        self._waiters: dict[str | None, list[asyncio.Future[None]]] = {}
        self._wake: asyncio.Event | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        #: Pipeline runs: the state (and MLflow run) each was last announced or found with,
        #: when a finished one was first seen so (monotonic seconds; forgotten after twice the
        #: slack), when the runs were last looked at, and whether to look again at once.
        self.pipeline_states: dict[str, tuple[str, str | None]] = {}
        self._pipeline_ended: dict[str, float] = {}
        self._pipelines_read: float = 0.0
        self._pipelines_poked = False
        self.last_pipeline_poll: float | None = None

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.last_seq = await self.app.run(self._start_seq)
        self.pipeline_states = await self.app.run(self._pipeline_snapshot)
        self._task = asyncio.create_task(self._loop(), name="qmlops-events")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def poke(self) -> None:
        """Something changed (the engine took a step, a job was created): look now rather
        than at the next poll. Safe to call from any thread."""
        loop, wake = self._event_loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def poke_pipelines(self) -> None:
        """A pipeline run was just made or changed here: look at the runs now."""
        self._pipelines_poked = True
        self.poke()

    async def wait_for_change(self, job_id: str, timeout: float) -> bool:
        """Until the job's next transition is seen (True) or ``timeout`` seconds (False)."""
        return await self._wait(job_id, timeout)

    async def wait_for_rows(self, seen: int | None, timeout: float) -> bool:
        """Until the pump has read a row of the owner's past ``seen`` (True), or ``timeout``
        seconds (False). ``seen`` is :attr:`last_seq` as the caller read it *before* looking
        at the ledger itself, so a row the pump read in between is not waited for again."""
        if self.last_seq is not None and seen is not None and self.last_seq > seen:
            return True
        return await self._wait(None, timeout)

    async def _wait(self, key: str | None, timeout: float) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    self._waiters.pop(key, None)

    def _resolve(self, key: str | None) -> None:
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result(None)

    # -- the pump ---------------------------------------------------------------------------------

    def _start_seq(self) -> int:
        """The last event recorded before this server started: changes made after it (even
        in the moments before the pump runs, while the server already answers requests) are
        all emitted."""
        from sqlalchemy import func, select

        from ..ledger.store import events

        started = self.app.started_at
        with self.app.client.ledger._read() as conn:
            newest = int(
                conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one()
            )
            recent = conn.execute(
                select(events.c.seq, events.c.at)
                .where(events.c.seq > newest - 10_000)
                .order_by(events.c.seq.desc())
            ).all()
        for seq, at in recent:
            if at < started:
                return int(seq)
        return newest - len(recent) if recent else newest

    def _read(self, after: int) -> list[dict[str, Any]]:
        # A team's service reads every owner's rows (its waiters and metrics are everyone's;
        # its own event bus has no subscribers: the authorizer closes it).
        owner = None if self.app.multi_user else self.app.client.owner
        return self.app.client.ledger.status_events(owner, after, limit=1000)

    async def _loop(self) -> None:
        while True:
            try:
                rows = await self.app.run(self._read, self.last_seq or 0)
                self.last_poll = time.time()
                for row in rows:
                    self._dispatch(row)
                    self.last_seq = row["seq"]
                if len(rows) == 1000:
                    continue  # more to read now
            except Exception:  # the ledger may be briefly unreachable
                self.app.log.warning("qmlops: reading job events failed", exc_info=True)
            await self._pipelines_step()
            assert self._wake is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.app.events_interval)
            self._wake.clear()

    def _dispatch(self, row: dict[str, Any]) -> None:
        self.app.metrics.observe_event(row)
        self._resolve(None)
        if row["kind"] != "transition":
            return
        from ..models import job_status

        data = job_status(row)
        try:
            self.app.serverapp.event_logger.emit(schema_id=JOB_STATUS, data=data)
        except Exception:
            self.app.log.warning("qmlops: emitting a job event failed", exc_info=True)
        self._resolve(row["job_id"])

    # -- pipeline runs ----------------------------------------------------------------------------

    def _pipeline_snapshot(self) -> dict[str, tuple[str, str | None]]:
        """The runs a look would read, as this server starts: changes from here on are
        announced (a run created after the start is announced from its first state)."""
        return {row.id: (row.state, row.mlflow_run_id) for row in self._read_pipeline_runs()}

    async def _pipelines_step(self) -> None:
        now = time.monotonic()
        if not self._pipelines_poked and now - self._pipelines_read < PIPELINE_INTERVAL:
            return
        self._pipelines_poked = False
        self._pipelines_read = now
        try:
            rows = await self.app.run(self._read_pipeline_runs)
            self.last_pipeline_poll = time.time()
        except Exception:  # the ledger may be briefly unreachable
            self.app.log.warning("qmlops: reading pipeline runs failed", exc_info=True)
            return
        for row in rows:
            self._dispatch_pipeline(row)
        for run_id, seen in list(self._pipeline_ended.items()):
            if now - seen > 2 * PIPELINE_SLACK:
                del self._pipeline_ended[run_id]
                self.pipeline_states.pop(run_id, None)

    def _read_pipeline_runs(self) -> list[Any]:
        """The owner's runs that are unfinished, were unfinished when last seen, or were
        created or changed lately (rows, with their pipeline's name)."""
        from sqlalchemy import or_, select

        from ..ledger.orm import PipelineRow
        from ..pipelines.store import runs

        pipelines = PipelineRow.__table__
        since = datetime.now(UTC) - timedelta(seconds=PIPELINE_SLACK)
        unfinished = [i for i, (s, _) in self.pipeline_states.items() if s in _UNFINISHED]
        lately = or_(
            runs.c.state.in_(_UNFINISHED),
            runs.c.created_at >= since,
            runs.c.started_at >= since,
            runs.c.finished_at >= since,
            runs.c.parked_at >= since,
        )
        if unfinished:
            lately = or_(lately, runs.c.id.in_(unfinished[:500]))
        query = (
            select(*_pipeline_columns(runs), pipelines.c.name.label("pipeline"))
            .select_from(runs.outerjoin(pipelines, pipelines.c.id == runs.c.pipeline_id))
            .where(runs.c.owner == self.app.client.owner, lately)
            .order_by(runs.c.created_at, runs.c.id)
        )
        with self.app.client.ledger._read() as conn:
            return list(conn.execute(query).all())

    def _dispatch_pipeline(self, row: Any) -> None:
        """Announce a run whose state changed; and a finished run once more when its MLflow
        run is recorded (the runner logs to MLflow after it has ended the run in the ledger),
        with ``old_state`` equal to ``new_state``."""
        seen = self.pipeline_states.get(row.id)
        if seen is not None and seen[0] == row.state and (row.mlflow_run_id or None) == seen[1]:
            return
        if seen is not None and seen[0] == row.state and row.mlflow_run_id is None:
            self.pipeline_states[row.id] = (row.state, None)
            return
        old = seen[0] if seen is not None else None
        self.pipeline_states[row.id] = (row.state, row.mlflow_run_id)
        if row.state not in _UNFINISHED:
            self._pipeline_ended[row.id] = time.monotonic()
        try:
            self.app.serverapp.event_logger.emit(
                schema_id=PIPELINE_STATUS, data=pipeline_status(row, old)
            )
        except Exception:
            self.app.log.warning("qmlops: emitting a pipeline event failed", exc_info=True)


_UNFINISHED = ("QUEUED", "RUNNING", "PARKED")


def _pipeline_columns(runs: Any) -> list[Any]:
    c = runs.c
    return [
        c.id,
        c.pipeline_id,
        c.notebook,
        c.state,
        c.created_at,
        c.started_at,
        c.finished_at,
        c.parked_at,
        c.scheduled_for,
        c.error,
        c.error_cell,
        c.parked_jobs,
        c.mlflow_run_id,
    ]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def pipeline_status(row: Any, old_state: str | None) -> dict[str, Any]:
    """The ``pipeline_status`` v1 event of a run's row: what the sidebar shows, and nothing
    the run was given (its parameters stay out; the error line is redacted)."""
    from ..errors import one_line
    from ..vault.redaction import redact

    when = {
        "QUEUED": row.created_at,
        "RUNNING": row.started_at,
        "PARKED": row.parked_at,
    }.get(row.state, row.finished_at)
    error = redact(one_line(row.error))[:MAX_ERROR] if row.error else None
    return {
        "run_id": row.id,
        "pipeline_id": row.pipeline_id,
        "pipeline": row.pipeline,
        "notebook": row.notebook,
        "old_state": old_state,
        "new_state": row.state,
        "time": _iso(when) or datetime.now(UTC).isoformat(),
        "scheduled_for": _iso(row.scheduled_for),
        "error": error,
        "error_cell": row.error_cell,
        "parked_jobs": len(row.parked_jobs) if row.state == "PARKED" and row.parked_jobs else None,
        "mlflow_run_id": row.mlflow_run_id,
    }
