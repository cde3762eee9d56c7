"""Runs whose runner is gone: an engine host ends them FAILED instead of leaving them RUNNING
(or QUEUED) for ever.

* A RUNNING run whose runner was on this machine (``runner_host``) and whose ``runner_pid`` is
  no longer alive ends at once.
* A RUNNING run of another machine ends when its ``heartbeat_at`` is older than
  :data:`HEARTBEAT_STALE` seconds (its runner refreshes it while the run goes on).
* A QUEUED run of a saved pipeline whose launch lease (``lease_until``) has passed never began:
  its runner did not start, or died before it could.

Every end is a compare-and-set on the state the run was seen in, so a run that has just
finished (or moved on) is never overwritten. PARKED runs have no runner and are left alone.
"""

from __future__ import annotations

import logging
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update

from .models import PipelineRunState
from .runner import _alive
from .store import runs

if TYPE_CHECKING:
    from .host import PipelineHost

log = logging.getLogger("qmlops_jupyter.pipelines")

#: Seconds without a heartbeat after which another machine's runner is taken for dead.
HEARTBEAT_STALE = 90.0

S = PipelineRunState


def end_dead_runs(host: PipelineHost) -> list[str]:
    """One pass: end the runs whose runner is gone; their ids."""
    ledger = host.ledger
    now = ledger.clock()
    here = socket.gethostname()[:255]
    stale = now - timedelta(seconds=HEARTBEAT_STALE)
    with ledger._read() as conn:
        rows = conn.execute(
            select(
                runs.c.id,
                runs.c.state,
                runs.c.runner_host,
                runs.c.runner_pid,
                runs.c.heartbeat_at,
                runs.c.lease_holder,
            ).where(
                or_(
                    runs.c.state == S.RUNNING.value,
                    and_(
                        runs.c.state == S.QUEUED.value,
                        runs.c.pipeline_id.is_not(None),
                        runs.c.lease_until.is_not(None),
                        runs.c.lease_until < now,
                    ),
                )
            )
        ).all()
    ended = []
    for row in rows:
        error = _why_dead(row, here, stale)
        if error is not None and _end(host, row, error):
            ended.append(row.id)
    return ended


def _why_dead(row: Any, here: str, stale: Any) -> str | None:
    if row.state == S.QUEUED.value:
        return f"its runner never started (launched by {row.lease_holder})"
    where = f"pid {row.runner_pid} on {row.runner_host}"
    if row.runner_host == here:
        if row.runner_pid is not None and _alive(row.runner_pid):
            return None
        return f"its runner process ({where}) died"
    if row.heartbeat_at is None or row.heartbeat_at < stale:
        return f"its runner process ({where}) died: no heartbeat for over {HEARTBEAT_STALE:g} s"
    return None


def _end(host: PipelineHost, row: Any, error: str) -> bool:
    ledger = host.ledger
    with ledger._write() as conn:
        changed = conn.execute(
            update(runs)
            .where(runs.c.id == row.id, runs.c.state == row.state)
            .values(
                state=S.FAILED.value,
                error=error,
                error_ename="RunnerDied",
                finished_at=ledger.clock(),
                runner_pid=None,
                lease_holder=None,
                lease_until=None,
            )
        ).rowcount
    if changed != 1:
        return False  # it finished or moved on meanwhile: leave it as it is
    log.warning(
        "pipeline run %s failed: %s",
        row.id,
        error,
        extra={
            "event": "pipeline_run_runner_died",
            "old_state": row.state,
            "new_state": S.FAILED.value,
            "actor": host.holder,
        },
    )
    if row.state == S.RUNNING.value and row.runner_host == socket.gethostname()[:255]:
        _stop_leftovers(row.id)
    _notify(host, row.id)
    return True


def _stop_leftovers(run_id: str) -> None:
    """Stop what a dead runner left running on this machine (its kernel, detached from it):
    found by the run id their environment carries."""
    from .execute import stop_processes_of

    stop_processes_of(run_id)


def _notify(host: PipelineHost, run_id: str) -> None:
    """Record the end as the runner would have (never fatal)."""
    from types import SimpleNamespace

    try:
        from .notify import pipeline_run_ended
        from .store import _model

        with host.ledger._read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one()
        # It reads only the ledger and the settings of its client.
        pipeline_run_ended(
            SimpleNamespace(ledger=host.ledger, settings=host.settings),  # type: ignore[arg-type]
            _model(row),
        )
    except Exception:
        log.warning("pipeline run %s: its end was not notified", run_id, exc_info=True)
