"""The ledger's ``pipeline_runs`` table: one row per ``qmlops pipeline run``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from ..errors import PipelineRunNotFound
from ..ledger.orm import PipelineRunRow
from ..ledger.store import new_job_id
from .models import PipelineRun, PipelineRunState

if TYPE_CHECKING:
    from ..ledger import Ledger

runs = PipelineRunRow.__table__


class PipelineRuns:
    """Pipeline runs of every owner in one ledger; reads are filtered by owner."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def create(
        self,
        *,
        owner: str,
        notebook: str,
        parameters: dict[str, Any],
        max_retries: int,
        timeout: float | None,
        experiment: str | None,
        run_id: str | None = None,
        **links: Any,
    ) -> PipelineRun:
        """A QUEUED run. ``links``: any of the run's ``pipeline_id``, ``schedule_id``,
        ``scheduled_for``, ``sweep_id``, ``sweep_point``, ``mlflow_parent_run_id``."""
        run_id = run_id or new_job_id()
        with self.ledger._write() as conn:
            conn.execute(
                insert(runs).values(
                    id=run_id,
                    owner=owner,
                    notebook=notebook,
                    parameters=parameters,
                    state=PipelineRunState.QUEUED.value,
                    attempts=0,
                    max_retries=max_retries,
                    timeout=timeout,
                    experiment=experiment,
                    created_at=self.ledger.clock(),
                    **links,
                )
            )
        return self.get(run_id, owner)

    def update(self, run_id: str, **fields: Any) -> PipelineRun:
        if isinstance(fields.get("state"), PipelineRunState):
            fields["state"] = fields["state"].value
        with self.ledger._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**fields))
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one()
        return _model(row)

    def beat(self, run_id: str) -> bool:
        """Refresh a RUNNING run's ``heartbeat_at`` (the runner's sign of life); False when the
        run is no longer RUNNING."""
        with self.ledger._write() as conn:
            changed = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.state == PipelineRunState.RUNNING.value)
                .values(heartbeat_at=self.ledger.clock())
            ).rowcount
        return changed == 1

    def compare_and_set(self, run_id: str, expected: dict[str, Any], **fields: Any) -> bool:
        """Update the run only if each ``expected`` column still holds its value (None: IS
        NULL); whether it did. How two engine hosts agree on who resumes a parked run."""
        if isinstance(fields.get("state"), PipelineRunState):
            fields["state"] = fields["state"].value
        conditions = [runs.c.id == run_id]
        for name, value in expected.items():
            if isinstance(value, PipelineRunState):
                value = value.value
            column = runs.c[name]
            conditions.append(column.is_(None) if value is None else column == value)
        with self.ledger._write() as conn:
            changed = conn.execute(update(runs).where(*conditions).values(**fields)).rowcount
        return changed == 1

    def get(self, run_id: str, owner: str) -> PipelineRun:
        """By id, or by a unique prefix of it (as ``qmlops show`` takes job ids)."""
        run_id = (run_id or "").strip()
        with self.ledger._read() as conn:
            row = conn.execute(
                select(runs).where(runs.c.id == run_id, runs.c.owner == owner)
            ).first()
            if row is None and run_id and all(c in "0123456789abcdef" for c in run_id):
                found = conn.execute(
                    select(runs).where(runs.c.id.startswith(run_id), runs.c.owner == owner).limit(2)
                ).all()
                row = found[0] if len(found) == 1 else None
        if row is None:
            raise PipelineRunNotFound(f"no pipeline run {run_id!r}")
        return _model(row)

    def list(self, owner: str, limit: int = 20) -> list[PipelineRun]:
        """This owner's runs, newest first."""
        with self.ledger._read() as conn:
            rows = conn.execute(
                select(runs)
                .where(runs.c.owner == owner)
                .order_by(runs.c.created_at.desc(), runs.c.id.desc())
                .limit(limit)
            ).all()
        return [_model(r) for r in rows]


#: Columns the engine and the runner keep for themselves (not part of a run as users see it).
INTERNAL = ("runner_host", "runner_pid", "heartbeat_at", "lease_holder", "lease_until")


def _model(row: Any) -> PipelineRun:
    data = {k: v for k, v in row._mapping.items() if k not in INTERNAL}
    started, finished = data.get("started_at"), data.get("finished_at")
    duration = (finished - started).total_seconds() if started and finished else None
    return PipelineRun(**data, duration_s=duration)
