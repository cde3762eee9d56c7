"""The job ledger: every job, its circuits, its result and its append-only event log.

All state changes are compare-and-set UPDATEs (``WHERE state = :old``, and for an engine also
``WHERE lease_holder = :me``) committed together with the event that records them, so a crash
can never leave a change without its event or an event without its change. Results are written
in the same transaction that marks a job COMPLETED.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ClauseElement

from ..errors import IdempotencyConflict, IllegalTransition, InvalidRequest, JobNotFound
from ..models import CircuitInfo, JobEvent, JobPage, JobRecord, JobResult
from ..states import ACTIVE_STATES, IN_FLIGHT_STATES, TERMINAL_STATES, JobState, is_legal
from .orm import (
    EngineRow,
    JobEventRow,
    JobPayloadRow,
    JobResultRow,
    JobRow,
    TrackingOutboxRow,
    UTCDateTime,
    utcnow,
)

if TYPE_CHECKING:
    from ..circuits import PreparedCircuits

log = logging.getLogger("qmlops_jupyter.ledger")

jobs = JobRow.__table__
events = JobEventRow.__table__
payloads = JobPayloadRow.__table__
results = JobResultRow.__table__
engines = EngineRow.__table__
outbox = TrackingOutboxRow.__table__

#: The newest migration; checked on open so Alembic is imported only when there is work to do.
HEAD_REVISION = "0010"

_ACTIVE = [s.value for s in ACTIVE_STATES]
_IN_FLIGHT = [s.value for s in IN_FLIGHT_STATES]

# Statements run on every submission, built once: building a statement and its cache key
# costs more than running it on SQLite.
#: Jobs holding a concurrency slot (leased CREATED jobs count too), as of ``:now``.
_HOLDING = or_(
    jobs.c.state.in_(_IN_FLIGHT),
    and_(
        jobs.c.state == JobState.CREATED.value,
        jobs.c.lease_holder.is_not(None),
        jobs.c.lease_expires_at >= bindparam("now"),
    ),
)
_IN_FLIGHT_ONE = select(func.count()).where(jobs.c.backend == bindparam("backend"), _HOLDING)
_IN_FLIGHT_ALL = select(jobs.c.backend, func.count()).where(_HOLDING).group_by(jobs.c.backend)
_INSERT_EVENT = insert(events)


@functools.lru_cache(maxsize=256)
def _transition_statement(
    new: JobState, field_names: tuple[str, ...], fenced: bool, pid_guard: bool
) -> Any:
    """The compare-and-set UPDATE of a transition to ``new`` setting ``field_names`` too,
    built once per shape. Parameters: ``_id``, ``_old``, ``_new``, ``_now``, ``_holder`` (when
    ``fenced``: the lease holder it must have), ``_pid`` (with ``pid_guard``: a provider job
    id is set at most once) and ``_f_<field>`` per field. Returns backend, owner, lineage."""
    now = bindparam("_now")
    values: dict[str, Any] = {
        "state": bindparam("_new"),
        "updated_at": now,
        "version": jobs.c.version + 1,
        **{name: bindparam(f"_f_{name}", type_=jobs.c[name].type) for name in field_names},
    }
    if new in TERMINAL_STATES:
        values.update(
            finished_at=now, lease_holder=None, lease_expires_at=None, next_attempt_at=None
        )
    # First submission and first start are kept through re-runs after a crash.
    if new is JobState.SUBMITTING and "submitted_at" not in values:
        values["submitted_at"] = func.coalesce(jobs.c.submitted_at, now)
    if new is JobState.RUNNING and "started_at" not in values:
        values["started_at"] = func.coalesce(jobs.c.started_at, now)
    stmt = update(jobs).where(jobs.c.id == bindparam("_id"), jobs.c.state == bindparam("_old"))
    if fenced:
        stmt = stmt.where(jobs.c.lease_holder == bindparam("_holder"))
    if pid_guard:
        stmt = stmt.where(
            or_(jobs.c.provider_job_id.is_(None), jobs.c.provider_job_id == bindparam("_pid"))
        )
    return stmt.values(**values).returning(jobs.c.backend, jobs.c.owner, jobs.c.lineage)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database ``url`` names when it does not exist (connecting to the
    server's ``postgres`` database as the same role); True if it was created. Other databases:
    nothing to do (SQLite makes its file on first use)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(normalise_url(url))
    if not target.get_backend_name().startswith("postgresql") or not target.database:
        return False
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if found is not None:
                return False
            quoted = conn.dialect.identifier_preparer.quote(target.database)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Ledger:
    """Access to one ledger database. Thread-safe; one per process is enough."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.url = engine.url.render_as_string(hide_password=True)
        self.dialect = engine.dialect.name

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        migrate: bool = True,
    ) -> Ledger:
        """Connect, apply any pending migrations, and return the ledger."""
        url = normalise_url(url)
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
            _configure_sqlite(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        ledger = cls(engine, clock=clock)
        if migrate:
            ledger.migrate()
        return ledger

    def migrate(self) -> None:
        from .migrate import upgrade_if_needed

        upgrade_if_needed(self)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction. SQLite takes its write lock at BEGIN (no lock upgrades, so no
        deadlocks between writers); PostgreSQL relies on row-level compare-and-set."""
        with self.engine.connect().execution_options(qmlops_write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _serialise_claims(self, conn: Connection) -> None:
        """Make claim transactions take turns (SQLite already does, through BEGIN IMMEDIATE),
        so concurrency limits hold across engines."""
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7163021)"))

    # -- jobs: create ------------------------------------------------------------------------

    def create_job(
        self,
        *,
        owner: str,
        backend: str,
        shots: int,
        prepared: PreparedCircuits,
        request_hash: str,
        actor: str,
        name: str | None = None,
        idempotency_key: str | None = None,
        options: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        timeout: float | None = None,
        phases: dict[str, float] | None = None,
        lease_holder: str | None = None,
        lease_ttl: float = 30.0,
        max_concurrent: int | None = None,
        start: bool = False,
        estimated_cost_usd: float | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert a job in CREATED with its circuits; return ``(job, created)``.

        With ``lease_holder``, the new job is leased to it in the same transaction (a caller
        about to run it saves a claim), unless ``max_concurrent`` jobs of the backend are
        already in flight: then it is left for whoever gets a slot first. With ``start`` too,
        a leased job also moves on to SUBMITTING in that transaction (both events logged).

        With an idempotency key already used by this owner, return that job when the request is
        the same (``created`` is False) and raise IdempotencyConflict when it differs.

        The owner's budgets are checked in the same transaction, against the job's shots and
        ``estimated_cost_usd``: a job over one raises BudgetExceeded and leaves only a
        ``budget_refusals`` row (see :mod:`qmlops_jupyter.cost.budgets`).

        ``lineage`` (where the job came from, which tracked run it joins) marks the job for
        tracking: its completion queues it in the tracking outbox, in the same transaction.
        """
        from ..cost.budgets import check_budgets, record_refusal
        from ..errors import BudgetExceeded

        if idempotency_key is not None:
            existing = self._by_idempotency_key(owner, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        now = self.clock()
        job_id = new_job_id()
        circuit_dicts = [dict(info.__dict__) for info in prepared.infos]
        row = {
            "id": job_id,
            "owner": owner,
            "name": name,
            "backend": backend,
            "state": JobState.CREATED.value,
            "shots": shots,
            "num_circuits": len(prepared.infos),
            "max_qubits": prepared.max_qubits,
            "circuits": circuit_dicts,
            "options": options or {},
            "tags": tags or {},
            "phases": phases or {},
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "attempts": 0,
            "polls": 0,
            "timeout": timeout,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "lease_holder": lease_holder,
            "lease_expires_at": now + timedelta(seconds=lease_ttl) if lease_holder else None,
            "estimated_cost_usd": estimated_cost_usd,
        }
        if lineage is not None:
            row["lineage"] = lineage
        total_shots = shots * len(prepared.infos)
        try:
            with self._write() as conn:
                check_budgets(
                    conn,
                    self.dialect,
                    owner=owner,
                    backend=backend,
                    shots=total_shots,
                    usd=estimated_cost_usd,
                    now=now,
                )
                if lease_holder is not None and max_concurrent is not None:
                    self._serialise_claims(conn)
                    if self.count_in_flight(conn, backend) >= max_concurrent:
                        row["lease_holder"] = row["lease_expires_at"] = None
                started = start and row["lease_holder"] is not None
                if started:
                    row.update(state=JobState.SUBMITTING.value, submitted_at=now)
                conn.execute(insert(jobs), row)
                conn.execute(
                    insert(payloads),
                    {
                        "job_id": job_id,
                        "owner": owner,
                        "qpy": prepared.qpy,
                        "qasm3": prepared.qasm3,
                    },
                )
                created_event = {
                    "job_id": job_id,
                    "owner": owner,
                    "at": now,
                    "kind": "transition",
                    "from_state": None,
                    "to_state": JobState.CREATED.value,
                    "actor": actor,
                    "message": f"{len(prepared.infos)} circuit(s), {shots} shots on {backend}",
                }
                conn.execute(
                    insert(events),
                    [
                        created_event,
                        {
                            **created_event,
                            "from_state": JobState.CREATED.value,
                            "to_state": JobState.SUBMITTING.value,
                            "actor": lease_holder,
                            "message": None,
                        },
                    ]
                    if started
                    else [created_event],
                )
        except BudgetExceeded as exc:
            record_refusal(
                self,
                owner=owner,
                backend=backend,
                shots=total_shots,
                usd=estimated_cost_usd,
                actor=actor,
                message=str(exc),
                at=now,
            )
            raise
        except IntegrityError:
            # Lost a race on the idempotency key: the other insert won, and nothing of ours
            # was written (the transaction rolled back whole).
            if idempotency_key is None:
                raise
            existing = self._by_idempotency_key(owner, idempotency_key, request_hash)
            if existing is None:
                raise
            return existing, False
        return _record(row, None), True

    def _by_idempotency_key(self, owner: str, key: str, request_hash: str) -> JobRecord | None:
        """The job already made with this key, if the request matches; a conflict if not."""
        with self._read() as conn:
            row = (
                conn.execute(
                    _job_select().where(jobs.c.owner == owner, jobs.c.idempotency_key == key)
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        if row["request_hash"] != request_hash:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request "
                f"(job {row['id']})"
            )
        return _record(row, row)

    # -- jobs: read ----------------------------------------------------------------------------

    def get_job(self, job_id: str, owner: str | None = None) -> JobRecord:
        """One job by id (or by a unique prefix of at least 4 characters)."""
        job_id = (job_id or "").strip()
        if not job_id:
            raise JobNotFound("no job id given")
        with self._read() as conn:
            query = _job_select().where(jobs.c.id == job_id)
            if owner is not None:
                query = query.where(jobs.c.owner == owner)
            row = conn.execute(query).mappings().first()
            if row is None and 4 <= len(job_id) < 32 and job_id.isalnum():
                query = _job_select().where(jobs.c.id.like(f"{job_id}%")).limit(2)
                if owner is not None:
                    query = query.where(jobs.c.owner == owner)
                rows = conn.execute(query).mappings().all()
                if len(rows) > 1:
                    raise JobNotFound(f"job id prefix {job_id!r} matches several jobs")
                row = rows[0] if rows else None
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return _record(row, row)

    def list_jobs(
        self,
        owner: str | Sequence[str] | None,
        *,
        state: JobState | str | None = None,
        backend: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first, ``limit`` at a time; pass the returned ``next`` to get the next page.
        ``owner``: one owner, several, or None for every owner's."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"limit must be between 1 and 1000, not {limit}")
        query = _job_select()
        if owner is not None:
            query = query.where(_owned_by(jobs.c.owner, owner))
        if state is not None:
            query = query.where(jobs.c.state == JobState.parse(str(state)).value)
        if backend is not None:
            query = query.where(jobs.c.backend == backend)
        if cursor:
            created, last_id = _decode_cursor(cursor)
            # A row-value comparison lets both databases seek in the index to the page.
            query = query.where(
                tuple_(jobs.c.created_at, jobs.c.id)
                < tuple_(literal(created, UTCDateTime()), literal(last_id))
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        page = [_record(r, r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = _encode_cursor(last["created_at"], last["id"])
        return JobPage(jobs=page, next=next_cursor)

    def events(self, job_id: str) -> list[JobEvent]:
        with self._read() as conn:
            rows = (
                conn.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.seq))
                .mappings()
                .all()
            )
        return [JobEvent(**{k: r[k] for k in JobEvent.model_fields}) for r in rows]

    def status_events(
        self,
        owner: str | Sequence[str] | None,
        after: int,
        *,
        job_ids: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Event-log rows past sequence number ``after`` (oldest first), with the job's name
        and backend: every kind (transitions, retries, notes), for one ``owner`` (None: all)
        and, with ``job_ids``, those jobs only. What the server's event pump, its
        ``/events`` route and a notebook's job monitor read."""
        query = (
            select(
                events.c.seq,
                events.c.job_id,
                events.c.at,
                events.c.from_state,
                events.c.to_state,
                events.c.message,
                events.c.kind,
                jobs.c.name,
                jobs.c.backend,
            )
            .select_from(events.join(jobs, jobs.c.id == events.c.job_id))
            .where(events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        if owner is not None:
            query = query.where(_owned_by(events.c.owner, owner))
        if job_ids is not None:
            query = query.where(events.c.job_id.in_(list(job_ids)))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def last_event_seq(self) -> int:
        """The newest event's sequence number (0 for an empty log)."""
        with self._read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.seq), 0))).scalar_one())

    def load_circuits(self, job_id: str) -> list[Any]:
        """The job's circuits as Qiskit ``QuantumCircuit`` objects (from the stored QPY)."""
        from ..circuits import load_qpy

        with self._read() as conn:
            blob = conn.execute(
                select(payloads.c.qpy).where(payloads.c.job_id == job_id)
            ).scalar_one_or_none()
        if blob is None:
            raise JobNotFound(f"no circuits stored for job {job_id!r}")
        return load_qpy(blob)

    def circuit_qasm3(self, job_id: str) -> list[str]:
        """OpenQASM 3 of each circuit; renders (and keeps) any not rendered at submission."""
        with self._read() as conn:
            stored = conn.execute(
                select(payloads.c.qasm3).where(payloads.c.job_id == job_id)
            ).scalar_one_or_none()
        if stored is None:
            raise JobNotFound(f"no circuits stored for job {job_id!r}")
        if all(q is not None for q in stored):
            return list(stored)
        from ..circuits import to_qasm3

        circuits = self.load_circuits(job_id)
        rendered = [
            q if q is not None else to_qasm3(c) for q, c in zip(stored, circuits, strict=True)
        ]
        with self._write() as conn:
            conn.execute(update(payloads).where(payloads.c.job_id == job_id).values(qasm3=rendered))
        return rendered

    @overload
    def count_in_flight(self, conn: Connection | None = None) -> dict[str, int]: ...

    @overload
    def count_in_flight(self, conn: Connection | None, backend: str) -> int: ...

    def count_in_flight(
        self, conn: Connection | None = None, backend: str | None = None
    ) -> dict[str, int] | int:
        """Jobs holding a concurrency slot, per backend (leased CREATED jobs count too)."""
        params = {"now": self.clock()}
        with nullcontext(conn) if conn is not None else self._read() as c:
            if backend is not None:
                return int(c.execute(_IN_FLIGHT_ONE, {**params, "backend": backend}).scalar_one())
            return dict(c.execute(_IN_FLIGHT_ALL, params).tuples().all())

    # -- jobs: change --------------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        old: JobState,
        new: JobState,
        *,
        actor: str,
        holder: str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> datetime | None:
        """Compare-and-set ``old -> new`` and log it. Returns the time recorded for the change,
        or None when the job was not in ``old`` (or not leased by ``holder``). Illegal
        transitions raise IllegalTransition."""
        with self._write() as conn:
            changed = self._transition(conn, job_id, old, new, actor, holder, message, fields)
        return None if changed is None else changed.at

    def _transition(
        self,
        conn: Connection,
        job_id: str,
        old: JobState,
        new: JobState,
        actor: str,
        holder: str | None,
        message: str | None,
        fields: dict[str, Any],
    ) -> Changed | None:
        """The CAS itself, inside the caller's transaction; the changed row or None."""
        if not is_legal(old, new):
            raise IllegalTransition(f"job {job_id}: {old.value} -> {new.value} is not allowed")
        now = self.clock()
        if any(isinstance(v, ClauseElement) for v in fields.values()):
            raise TypeError("transition fields must be plain values")
        pid_guard = fields.get("provider_job_id") is not None
        stmt = _transition_statement(new, tuple(sorted(fields)), holder is not None, pid_guard)
        params = {
            "_id": job_id,
            "_old": old.value,
            "_new": new.value,
            "_now": now,
            "_holder": holder,
            **{f"_f_{name}": value for name, value in fields.items()},
        }
        if pid_guard:
            params["_pid"] = fields["provider_job_id"]
        row = conn.execute(stmt, params).first()
        if row is None:
            return None
        changed = Changed(row.backend, row.owner, now, row.lineage)
        conn.execute(
            _INSERT_EVENT,
            {
                "job_id": job_id,
                "owner": changed.owner,
                "at": now,
                "kind": "transition",
                "from_state": old.value,
                "to_state": new.value,
                "actor": actor,
                "message": message,
            },
        )
        log.info(
            "job %s on %s: %s -> %s",
            job_id,
            changed.backend,
            old.value,
            new.value,
            extra={
                "job_id": job_id,
                "backend": changed.backend,
                "old_state": old.value,
                "new_state": new.value,
                "actor": actor,
                "event": "transition",
            },
        )
        return changed

    def complete(
        self,
        job_id: str,
        old: JobState,
        *,
        counts: Sequence[dict[str, int]],
        metadata: dict[str, Any],
        actor: str,
        holder: str | None,
        message: str | None = None,
        **fields: Any,
    ) -> datetime | None:
        """Write the result and mark the job COMPLETED in one transaction; return the time
        recorded (None when the job was not in ``old`` or not leased by ``holder``).

        A tracked job (one with lineage) is queued in the tracking outbox in the same
        transaction: it reaches MLflow later, however long the tracking store is away."""
        with self._write() as conn:
            changed = self._transition(
                conn, job_id, old, JobState.COMPLETED, actor, holder, message, fields
            )
            if changed is None:
                return None
            conn.execute(
                insert(results),
                {
                    "job_id": job_id,
                    "owner": changed.owner,
                    "counts": list(counts),
                    "metadata": metadata,
                    "created_at": changed.at,
                },
            )
            lineage = changed.lineage
            if lineage:
                from ..tracking.outbox import job_outbox_row

                conn.execute(
                    insert(outbox), job_outbox_row(job_id, changed.owner, lineage, changed.at)
                )
        return changed.at

    def note(self, job_id: str, kind: str, actor: str, message: str) -> None:
        """Append a non-transition event (recovery, retry, lease takeover)."""
        with self._write() as conn:
            conn.execute(
                insert(events).values(
                    job_id=job_id,
                    owner=_owner_of(job_id),
                    at=self.clock(),
                    kind=kind,
                    from_state=None,
                    to_state=None,
                    actor=actor,
                    message=message,
                )
            )
        log.info(
            "job %s: %s: %s",
            job_id,
            kind,
            message,
            extra={"job_id": job_id, "event": kind, "actor": actor},
        )

    def update_held(self, job_id: str, holder: str, **fields: Any) -> bool:
        """Change bookkeeping fields (attempts, next poll, phases) of a job this holder leases."""
        with self._write() as conn:
            res = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id, jobs.c.lease_holder == holder, jobs.c.state.in_(_ACTIVE)
                )
                .values(updated_at=self.clock(), **fields)
            )
        return res.rowcount == 1

    def request_cancel(self, job_id: str, *, actor: str, owner: str | None = None) -> JobRecord:
        """Cancel a job: at once if it was never sent; otherwise CANCELLING, which the engine
        turns into a cancel at the provider."""
        for _ in range(10):
            job = self.get_job(job_id, owner)
            state = job.state
            if state in TERMINAL_STATES:
                raise IllegalTransition(f"job {job.id} is already {state.value}")
            if state is JobState.CANCELLING:
                return job
            if state in (JobState.CREATED, JobState.NEEDS_ATTENTION):
                target, message = JobState.CANCELLED, "cancelled before it reached a provider"
                if state is JobState.NEEDS_ATTENTION:
                    message = "cancelled by user while it needed attention"
            else:
                target, message = JobState.CANCELLING, "cancel requested"
            if self.transition(job.id, state, target, actor=actor, message=message):
                return self.get_job(job.id)
        raise IllegalTransition(f"job {job_id} kept changing state; try the cancel again")

    # -- leases --------------------------------------------------------------------------------

    def claim(
        self,
        holder: str,
        ttl: float,
        *,
        job_id: str | None = None,
        limit: int = 1,
        max_concurrent: dict[str, int] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[JobRecord]:
        """Lease due active jobs (or the one ``job_id``) to ``holder``.

        A job is free when unleased, leased by ``holder``, or its lease expired. CREATED jobs are
        only claimed while their backend has a free slot under ``max_concurrent``.
        """
        now = self.clock()
        with self._write() as conn:
            self._serialise_claims(conn)
            query = _job_select().where(
                jobs.c.state.in_(_ACTIVE),
                or_(
                    jobs.c.lease_holder.is_(None),
                    jobs.c.lease_holder == holder,
                    jobs.c.lease_expires_at < now,
                ),
            )
            if job_id is not None:
                query = query.where(jobs.c.id == job_id)
            else:
                query = (
                    query.where(
                        or_(jobs.c.next_attempt_at.is_(None), jobs.c.next_attempt_at <= now)
                    )
                    .order_by(jobs.c.created_at)
                    .limit(max(limit * 4, 16))
                )
            if exclude:
                query = query.where(jobs.c.id.not_in(list(exclude)))
            candidates = conn.execute(query).mappings().all()
            if not candidates:
                return []
            in_flight = self.count_in_flight(conn) if max_concurrent is not None else {}
            claimed: list[JobRecord] = []
            expires = now + timedelta(seconds=ttl)
            for row in candidates:
                if len(claimed) >= limit:
                    break
                backend = row["backend"]
                mine = row["lease_holder"] == holder and row["lease_expires_at"] >= now
                if (
                    row["state"] == JobState.CREATED.value
                    and max_concurrent is not None
                    and not mine
                ):
                    cap = max_concurrent.get(backend)
                    if cap is not None and in_flight.get(backend, 0) >= cap:
                        continue
                    in_flight[backend] = in_flight.get(backend, 0) + 1
                res = conn.execute(
                    update(jobs)
                    .where(jobs.c.id == row["id"], jobs.c.version == row["version"])
                    .values(
                        lease_holder=holder, lease_expires_at=expires, version=jobs.c.version + 1
                    )
                )
                if res.rowcount == 1:
                    previous = row["lease_holder"]
                    if previous is not None and previous != holder:
                        conn.execute(
                            insert(events),
                            {
                                "job_id": row["id"],
                                "owner": row["owner"],
                                "at": now,
                                "kind": "lease",
                                "from_state": None,
                                "to_state": None,
                                "actor": holder,
                                "message": f"lease taken over from {previous} "
                                f"(expired {row['lease_expires_at'].isoformat()})",
                            },
                        )
                    claimed.append(_record(row, row))
            return claimed

    def renew_leases(self, holder: str, ttl: float, job_ids: Sequence[str]) -> set[str]:
        """Extend this holder's leases; return the ids it still holds."""
        if not job_ids:
            return set()
        now = self.clock()
        with self._write() as conn:
            conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.lease_holder == holder,
                    jobs.c.state.in_(_ACTIVE),
                )
                .values(lease_expires_at=now + timedelta(seconds=ttl))
            )
            held = (
                conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.id.in_(list(job_ids)),
                        jobs.c.lease_holder == holder,
                        jobs.c.state.in_(_ACTIVE),
                    )
                )
                .scalars()
                .all()
            )
        return set(held)

    def renew_lease(self, holder: str, ttl: float, job_id: str) -> JobState | None:
        """Extend one lease and say what state the job is in now; None if not ours anymore."""
        with self._write() as conn:
            state = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id, jobs.c.lease_holder == holder, jobs.c.state.in_(_ACTIVE)
                )
                .values(lease_expires_at=self.clock() + timedelta(seconds=ttl))
                .returning(jobs.c.state)
            ).scalar_one_or_none()
        return None if state is None else JobState(state)

    def release(self, holder: str, job_ids: Sequence[str] | None = None) -> int:
        """Give up leases (all of the holder's, or the listed ones)."""
        with self._write() as conn:
            stmt = update(jobs).where(jobs.c.lease_holder == holder)
            if job_ids is not None:
                stmt = stmt.where(jobs.c.id.in_(list(job_ids)))
            return conn.execute(stmt.values(lease_holder=None, lease_expires_at=None)).rowcount

    def lease_holder(self, job_id: str) -> str | None:
        with self._read() as conn:
            return conn.execute(
                select(jobs.c.lease_holder).where(jobs.c.id == job_id)
            ).scalar_one_or_none()

    # -- engine hosts --------------------------------------------------------------------------

    def engine_heartbeat(self, engine_id: str, owner: str) -> None:
        now = self.clock()
        with self._write() as conn:
            res = conn.execute(
                update(engines)
                .where(engines.c.id == engine_id)
                .values(heartbeat_at=now, stopped_at=None)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(engines),
                    {
                        "id": engine_id,
                        "owner": owner,
                        "hostname": socket.gethostname(),
                        "pid": os.getpid(),
                        "started_at": now,
                        "heartbeat_at": now,
                    },
                )

    def engine_stopped(self, engine_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(engines).where(engines.c.id == engine_id).values(stopped_at=self.clock())
            )

    def live_engines(self, max_age: float = 15.0) -> list[dict[str, Any]]:
        """Engine hosts whose heartbeat is fresh (and that did not stop)."""
        since = self.clock() - timedelta(seconds=max_age)
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(engines).where(
                        engines.c.heartbeat_at >= since, engines.c.stopped_at.is_(None)
                    )
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def dead_local_holders(self) -> list[str]:
        """Engines on this host whose process is gone (killed, crashed): their leases can be
        taken over at once instead of waiting for them to expire."""
        host = socket.gethostname()
        with self._read() as conn:
            rows = conn.execute(
                select(engines.c.id, engines.c.pid).where(
                    engines.c.hostname == host, engines.c.stopped_at.is_(None)
                )
            ).all()
        return [engine_id for engine_id, pid in rows if not _pid_alive(pid)]

    def reap_dead_local_leases(self, actor: str) -> int:
        """Expire live leases whose holder was a process on this host that is gone (an engine
        killed with SIGKILL, a notebook kernel that died mid-run), so their jobs are taken over
        now rather than when the lease runs out. Returns how many leases were freed."""
        now = self.clock()
        host = socket.gethostname()
        with self._read() as conn:
            holders = (
                conn.execute(
                    select(jobs.c.lease_holder)
                    .distinct()
                    .where(
                        jobs.c.state.in_(_ACTIVE),
                        jobs.c.lease_holder.is_not(None),
                        jobs.c.lease_expires_at >= now,
                    )
                )
                .scalars()
                .all()
            )
        dead = [
            h
            for h in holders
            if _holder_host_pid(h)
            and _holder_host_pid(h)[0] == host
            and not _pid_alive(_holder_host_pid(h)[1])
        ]
        if not dead:
            return 0
        with self._write() as conn:
            freed = conn.execute(
                update(jobs)
                .where(jobs.c.lease_holder.in_(dead), jobs.c.state.in_(_ACTIVE))
                .values(lease_expires_at=now - timedelta(seconds=1))
            ).rowcount
        log.warning(
            "took back %d lease(s) of dead local process(es) %s",
            freed,
            ", ".join(dead),
            extra={"event": "lease", "actor": actor},
        )
        return freed


# -- helpers -------------------------------------------------------------------------------------


class Changed(NamedTuple):
    """What a successful transition touched."""

    backend: str
    owner: str
    at: datetime
    #: The job's lineage (set when it is tracked: its completion goes to the outbox).
    lineage: Any = None


def _owned_by(column: Any, owner: str | Sequence[str]) -> Any:
    return column == owner if isinstance(owner, str) else column.in_(list(owner))


def _owner_of(job_id: str) -> Any:
    return select(jobs.c.owner).where(jobs.c.id == job_id).scalar_subquery()


def _job_select() -> Any:
    return select(
        jobs,
        results.c.counts.label("result_counts"),
        results.c.metadata.label("result_metadata"),
    ).select_from(jobs.outerjoin(results, results.c.job_id == jobs.c.id))


_RECORD_FIELDS = [
    "id",
    "owner",
    "name",
    "backend",
    "state",
    "shots",
    "created_at",
    "updated_at",
    "submitted_at",
    "started_at",
    "finished_at",
    "provider_job_id",
    "error",
    "error_kind",
    "idempotency_key",
    "attempts",
    "polls",
    "timeout",
    "phases",
    "tags",
    "options",
    "queue_position",
    "estimated_cost_usd",
    "actual_cost_usd",
    "lineage",
    "mlflow_run_id",
]


def _record(row: Any, result_row: Any) -> JobRecord:
    data = {k: row.get(k) for k in _RECORD_FIELDS}
    data["options"] = {k: v for k, v in (data["options"] or {}).items() if not k.startswith("_")}
    data["phases"] = data["phases"] or {}
    data["tags"] = data["tags"] or {}
    counts = result_row.get("result_counts") if result_row is not None else None
    # Every field is passed: model_construct would otherwise run the default factories, which
    # costs more than the rest of the conversion.
    data["state"] = JobState(row["state"])
    data["circuits"] = [CircuitInfo.model_construct(**c) for c in row.get("circuits") or []]
    data["result"] = (
        JobResult.model_construct(
            counts=counts, shots=row["shots"], metadata=result_row.get("result_metadata") or {}
        )
        if counts is not None
        else None
    )
    return JobRecord.model_construct(**data)


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(f"invalid page cursor {cursor!r}") from None


def _holder_host_pid(holder: str) -> tuple[str, int] | None:
    """``host:pid:tag`` (engines) or ``client:host:pid:tag`` (in-process waiters)."""
    parts = holder.removeprefix("client:").split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below emit BEGIN itself (pysqlite's own handling of
        # transactions would defer the write lock).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("qmlops_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
