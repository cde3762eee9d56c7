"""Budgets per owner: shots per day and US dollars per month, for all backends or for one.

A budget is checked inside the transaction that records a job (see ``Ledger.create_job``), so
concurrent submissions cannot overshoot it: SQLite's writers take turns (``BEGIN IMMEDIATE``),
and on PostgreSQL each owner's submissions take turns through a transaction-scoped advisory lock
taken before usage is summed. A refused submission writes no job, only a ``budget_refusals``
row.

Usage counts every job of the owner created in the period, except jobs cancelled before they
were sent. Shots are the job's shots x its circuits (what the provider runs); a day and a
month are UTC calendar periods by the ledger's clock. Money is each job's actual cost when the
provider reported one, else its estimate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    not_,
    select,
    text,
    update,
)

from ..errors import BudgetExceeded, InvalidRequest
from ..ledger.orm import BudgetRefusalRow, BudgetRow, JobRow

if TYPE_CHECKING:
    from ..ledger.store import Ledger

budgets = BudgetRow.__table__
refusals = BudgetRefusalRow.__table__
jobs = JobRow.__table__

#: The ``backend`` of a budget that covers every backend.
ALL_BACKENDS = "*"


class BudgetLimit(BaseModel):
    """One limit of a budget and where its period stands."""

    limit: int | float
    used: int | float
    remaining: int | float
    period_start: datetime


class BudgetStatus(BaseModel):
    """A budget of one owner: ``backend`` ``"*"`` covers all backends together."""

    owner: str
    backend: str
    shots_per_day: BudgetLimit | None = Field(default=None, description="shots, this UTC day")
    usd_per_month: BudgetLimit | None = Field(
        default=None, description="US dollars, this UTC calendar month"
    )
    updated_at: datetime


class BudgetRefusal(BaseModel):
    """A submission a budget refused."""

    owner: str
    backend: str
    at: datetime
    shots: int
    estimated_cost_usd: float | None
    actor: str
    message: str


def day_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def _owner_lock_key(owner: str) -> int:
    digest = hashlib.sha256(f"qmlops-budget:{owner}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: Jobs that use shots and money: all but those cancelled before they were sent.
BILLABLE = not_(and_(jobs.c.state == "CANCELLED", jobs.c.submitted_at.is_(None)))
#: What a job costs: what the provider charged, else the estimate, else nothing.
JOB_COST_USD = func.coalesce(jobs.c.actual_cost_usd, jobs.c.estimated_cost_usd, 0.0)
#: The shots a job uses (every circuit runs ``shots`` times).
JOB_SHOTS = jobs.c.shots * jobs.c.num_circuits


def _counted(owner: str, since: datetime, backend: str) -> Any:
    """Jobs that use budget: the owner's, since ``since``, not cancelled before being sent."""
    where = [jobs.c.owner == owner, jobs.c.created_at >= since, BILLABLE]
    if backend != ALL_BACKENDS:
        where.append(jobs.c.backend == backend)
    return and_(*where)


def shots_used(conn: Connection, owner: str, since: datetime, backend: str = ALL_BACKENDS) -> int:
    total = func.coalesce(func.sum(JOB_SHOTS), 0)
    return int(conn.execute(select(total).where(_counted(owner, since, backend))).scalar_one())


def usd_used(conn: Connection, owner: str, since: datetime, backend: str = ALL_BACKENDS) -> float:
    total = func.coalesce(func.sum(JOB_COST_USD), 0.0)
    return float(conn.execute(select(total).where(_counted(owner, since, backend))).scalar_one())


def _scope(backend: str) -> str:
    return "all backends" if backend == ALL_BACKENDS else f"backend {backend}"


#: An owner's budgets for all backends and one (checked on every submission: built once).
_BUDGETS_OF = (
    select(budgets)
    .where(
        budgets.c.owner == bindparam("owner"),
        budgets.c.backend.in_(bindparam("scopes", expanding=True)),
    )
    .order_by(budgets.c.backend)
)


#: Columns of :func:`budget_rows`.
BUDGET_COLUMNS = ("BACKEND", "LIMIT", "PERIOD", "USED", "REMAINING")


def budget_rows(statuses: Sequence[BudgetStatus]) -> list[list[str]]:
    """Budgets as table rows (``BUDGET_COLUMNS``), one per limit: what ``qmlops budget show``
    and ``%qmlops budget`` print."""
    rows = []
    for s in statuses:
        scope = "all" if s.backend == ALL_BACKENDS else s.backend
        if s.shots_per_day is not None:
            lim = s.shots_per_day
            rows.append(
                [scope, f"{lim.limit:g} shots", "day", f"{lim.used:g}", f"{lim.remaining:g}"]
            )
        if s.usd_per_month is not None:
            lim = s.usd_per_month
            rows.append(
                [
                    scope,
                    f"${lim.limit:,.2f}",
                    "month",
                    f"${lim.used:,.2f}",
                    f"${lim.remaining:,.2f}",
                ]
            )
    return rows


def check_budgets(
    conn: Connection,
    dialect: str,
    *,
    owner: str,
    backend: str,
    shots: int,
    usd: float | None,
    now: datetime,
) -> None:
    """Raise BudgetExceeded when a job of ``shots`` (all circuits) costing ``usd`` would take
    ``owner`` over a budget. Call inside the transaction that inserts the job."""
    rows = (
        conn.execute(_BUDGETS_OF, {"owner": owner, "scopes": [ALL_BACKENDS, backend]})
        .mappings()
        .all()
    )
    if not rows:  # no budget: nothing to serialise on
        return
    if dialect == "postgresql":
        # Usage is summed after this: concurrent submits of one owner queue up here.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _owner_lock_key(owner)})
    for row in rows:
        scope = _scope(row["backend"])
        if row["shots_per_day"] is not None:
            used = shots_used(conn, owner, day_start(now), row["backend"])
            if used + shots > row["shots_per_day"]:
                raise BudgetExceeded(
                    f"budget exceeded: shots per day for {scope}: limit {row['shots_per_day']}, "
                    f"used {used} today, this job {shots} shots"
                )
        if row["usd_per_month"] is not None:
            used_usd = usd_used(conn, owner, month_start(now), row["backend"])
            if usd is None:
                raise BudgetExceeded(
                    f"budget exceeded: USD per month for {scope}: limit "
                    f"${row['usd_per_month']:.2f}, used ${used_usd:.2f} this month, and this "
                    f"job's price on {backend} is unknown"
                )
            if used_usd + usd > row["usd_per_month"] + 1e-9:
                raise BudgetExceeded(
                    f"budget exceeded: USD per month for {scope}: limit "
                    f"${row['usd_per_month']:.2f}, used ${used_usd:.2f} this month, this job "
                    f"an estimated ${usd:.2f}"
                )


def record_refusal(
    ledger: Ledger,
    *,
    owner: str,
    backend: str,
    shots: int,
    usd: float | None,
    actor: str,
    message: str,
    at: datetime,
) -> None:
    """Log a refused submission (its own transaction: the job's rolled back)."""
    with ledger._write() as conn:
        conn.execute(
            insert(refusals),
            {
                "owner": owner,
                "backend": backend,
                "at": at,
                "shots": shots,
                "estimated_cost_usd": usd,
                "actor": actor,
                "message": message,
            },
        )


def set_budget(
    ledger: Ledger,
    owner: str,
    *,
    backend: str | None = None,
    shots_per_day: int | None = None,
    usd_per_month: float | None = None,
) -> BudgetStatus:
    """Create or change the owner's budget for ``backend`` (None: all backends). Only the limits
    given change; the others keep their values."""
    if shots_per_day is None and usd_per_month is None:
        raise InvalidRequest("give --shots-per-day, --usd-per-month or both")
    if shots_per_day is not None and (isinstance(shots_per_day, bool) or shots_per_day < 0):
        raise InvalidRequest(f"shots per day must be 0 or more, not {shots_per_day}")
    if usd_per_month is not None and not usd_per_month >= 0:
        raise InvalidRequest(f"USD per month must be 0 or more, not {usd_per_month}")
    scope = backend or ALL_BACKENDS
    values: dict[str, Any] = {"updated_at": ledger.clock()}
    if shots_per_day is not None:
        values["shots_per_day"] = int(shots_per_day)
    if usd_per_month is not None:
        values["usd_per_month"] = float(usd_per_month)
    with ledger._write() as conn:
        if ledger.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _owner_lock_key(owner)})
        changed = conn.execute(
            update(budgets)
            .where(budgets.c.owner == owner, budgets.c.backend == scope)
            .values(**values)
        ).rowcount
        if not changed:
            conn.execute(insert(budgets), {"owner": owner, "backend": scope, **values})
    return next(b for b in budget_status(ledger, owner) if b.backend == scope)


def remove_budget(ledger: Ledger, owner: str, backend: str | None = None) -> bool:
    """Drop the owner's budget for ``backend`` (None: the all-backends one)."""
    with ledger._write() as conn:
        gone = conn.execute(
            delete(budgets).where(
                budgets.c.owner == owner, budgets.c.backend == (backend or ALL_BACKENDS)
            )
        ).rowcount
    return bool(gone)


def budget_status(ledger: Ledger, owner: str) -> list[BudgetStatus]:
    """Every budget of the owner with its limit, usage and what remains, now."""
    now = ledger.clock()
    day, month = day_start(now), month_start(now)
    out = []
    with ledger._read() as conn:
        rows = conn.execute(
            select(budgets).where(budgets.c.owner == owner).order_by(budgets.c.backend)
        ).mappings()
        for row in rows.all():
            shots = usd = None
            if row["shots_per_day"] is not None:
                used = shots_used(conn, owner, day, row["backend"])
                limit = row["shots_per_day"]
                shots = BudgetLimit(
                    limit=limit, used=used, remaining=max(0, limit - used), period_start=day
                )
            if row["usd_per_month"] is not None:
                used_usd = round(usd_used(conn, owner, month, row["backend"]), 6)
                limit_usd = row["usd_per_month"]
                usd = BudgetLimit(
                    limit=limit_usd,
                    used=used_usd,
                    remaining=round(max(0.0, limit_usd - used_usd), 6),
                    period_start=month,
                )
            out.append(
                BudgetStatus(
                    owner=owner,
                    backend=row["backend"],
                    shots_per_day=shots,
                    usd_per_month=usd,
                    updated_at=row["updated_at"],
                )
            )
    return out


def refusals_of(ledger: Ledger, owner: str, limit: int = 20) -> list[BudgetRefusal]:
    """The owner's most recent refused submissions, newest first."""
    with ledger._read() as conn:
        rows = conn.execute(
            select(refusals)
            .where(refusals.c.owner == owner)
            .order_by(refusals.c.at.desc(), refusals.c.id.desc())
            .limit(limit)
        ).mappings()
        return [BudgetRefusal(**{k: r[k] for k in BudgetRefusal.model_fields}) for r in rows]


def shots_used_today(ledger: Ledger, owner: str | None = None) -> int:
    """Shots used today (UTC) by ``owner``, or by everyone: ``quantum_shots_used_daily``."""
    now = ledger.clock()
    total = func.coalesce(func.sum(JOB_SHOTS), 0)
    where = [jobs.c.created_at >= day_start(now), BILLABLE]
    if owner is not None:
        where.append(jobs.c.owner == owner)
    with ledger._read() as conn:
        return int(conn.execute(select(total).where(*where)).scalar_one())
