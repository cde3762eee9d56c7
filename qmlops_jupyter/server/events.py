"""Job transitions from the ledger to the server's event bus (``job_status`` v1), to Prometheus
metrics, and to requests waiting on a job.

The pump reads the ledger's append-only event log past the last sequence number it saw, every
``QmlopsApp.events_interval`` seconds, so transitions made by any process on the same ledger
(this server's engine, another engine, a kernel) are seen and emitted once each. Only the
server owner's jobs are emitted: on a ledger shared by a team, nobody sees another's jobs.

Requests wait on the pump rather than on timers of their own: a job's next transition
(:meth:`EventPump.wait_for_change`, for ``?wait=`` on a job) or any new row of the owner's
(:meth:`EventPump.wait_for_rows`, for the ``/events`` long poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import QmlopsApp

SCHEMA_DIR = Path(__file__).with_name("event_schemas")
JOB_STATUS = "https://events.qmlops-jupyter.dev/job_status/v1"  # models.JOB_STATUS_SCHEMA


def register_schemas(event_logger: Any) -> None:
    event_logger.register_event_schema(SCHEMA_DIR / "job_status" / "v1.yaml")


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

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.last_seq = await self.app.run(self._start_seq)
        self._task = asyncio.create_task(self._loop(), name="qmlops-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Something changed (the engine took a step, a job was created): look now rather
        than at the next poll. Safe to call from any thread."""
        loop, wake = self._event_loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

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
        return self.app.client.ledger.status_events(self.app.client.owner, after, limit=1000)

    async def _loop(self) -> None:
        import time

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
