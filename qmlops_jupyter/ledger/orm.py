"""The ledger's tables (SQLAlchemy 2). The schema is created and changed only by the Alembic
migrations in ``migrations/``; a test checks that these tables and the migrations agree."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Autoincrementing 64-bit key that SQLite also treats as its rowid.
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (sorts the same in SQLite and PostgreSQL); read back as aware UTC."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(256))
    backend: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(20))
    shots: Mapped[int] = mapped_column(Integer)
    num_circuits: Mapped[int] = mapped_column(Integer)
    max_qubits: Mapped[int] = mapped_column(Integer)
    circuits: Mapped[list] = mapped_column(JSON)
    options: Mapped[dict] = mapped_column(JSON)
    tags: Mapped[dict] = mapped_column(JSON)
    phases: Mapped[dict] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    request_hash: Mapped[str] = mapped_column(String(64))
    # Text: a batch at some providers is several task ids (Braket ARNs).
    provider_job_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    #: Where the job stands in its provider's queue, as the provider last said (None: unknown).
    queue_position: Mapped[int | None] = mapped_column(Integer)
    #: The price estimated before submission (None: unknown) and the provider's, when it
    #: reports one; see qmlops_jupyter/cost.
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    actual_cost_usd: Mapped[float | None] = mapped_column(Float)
    timeout: Mapped[float | None] = mapped_column(Float)
    #: Where the job came from (notebook, git commit, pipeline parameters) and which tracked run
    #: it belongs to; None when tracking was off. See qmlops_jupyter/tracking.
    lineage: Mapped[dict | None] = mapped_column(JSON)
    #: The MLflow run the job was logged to, once the tracking outbox has logged it.
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_owner_state_created", "owner", "state", "created_at", "id"),
        Index("ix_jobs_owner_backend_created", "owner", "backend", "created_at", "id"),
        Index("ix_jobs_state_next_attempt", "state", "next_attempt_at"),
        Index("ix_jobs_backend_state", "backend", "state"),
    )


class JobEventRow(Base):
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "job_events"

    seq: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)


class JobPayloadRow(Base):
    """The circuits of a job: one QPY blob (zlib) and OpenQASM 3 text per circuit."""

    __tablename__ = "job_payloads"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    qpy: Mapped[bytes] = mapped_column(LargeBinary)
    qasm3: Mapped[list] = mapped_column(JSON)


class JobResultRow(Base):
    """At most one result per job: the primary key makes a second one impossible."""

    __tablename__ = "job_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    counts: Mapped[list] = mapped_column(JSON)
    meta: Mapped[dict] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EngineRow(Base):
    """Engine hosts and their heartbeats, so any client can tell whether one is alive."""

    __tablename__ = "engines"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    hostname: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CredentialRow(Base):
    """A provider credential of one owner, known by its alias. ``ciphertext`` is the Fernet
    token of the secret fields (JSON); no column ever holds plaintext. ``hint`` is a masked
    tail of the main secret (``…a9f2``) so people can tell keys apart."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("owner", "alias"),)


class BudgetRow(Base):
    """An owner's limits: shots per day and US dollars per month, for one backend or, with
    ``backend`` ``"*"``, for all of them together. A None limit is no limit."""

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128))
    backend: Mapped[str] = mapped_column(String(256))
    shots_per_day: Mapped[int | None] = mapped_column(BigInteger)
    usd_per_month: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("owner", "backend"),)


class BudgetRefusalRow(Base):
    """A submission refused by a budget: the only trace it leaves (no job row). Append-only."""

    __tablename__ = "budget_refusals"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128))
    backend: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    shots: Mapped[int] = mapped_column(BigInteger)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_budget_refusals_owner_at", "owner", "at"),)


class TrackingRunRow(Base):
    """An MLflow run that groups jobs (``qmlops_jupyter.track()``), known by a key of ours so it
    can be created exactly once even when the tracking server is down when it starts."""

    __tablename__ = "tracking_runs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    #: Without any user:password part (MLflow reads those from its own environment variables).
    tracking_uri: Mapped[str] = mapped_column(Text)
    experiment: Mapped[str] = mapped_column(String(256))
    run_name: Mapped[str | None] = mapped_column(String(256))
    parent_key: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[dict] = mapped_column(JSON)
    #: Params already logged to the run (MLflow params cannot change once set).
    params: Mapped[dict] = mapped_column(JSON)
    job_ids: Mapped[list] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_tracking_runs_owner_created", "owner", "created_at"),)


class TrackingOutboxRow(Base):
    """What still has to reach MLflow: a completed job, step metrics, the end of a run. Written
    in the ledger's own transactions (a job's row with its completion), sent by whoever drains
    the outbox, retried while the tracking store is unreachable, marked done once sent."""

    __tablename__ = "tracking_outbox"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    run_key: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("kind", "job_id"),
        Index("ix_tracking_outbox_pending", "done_at", "next_attempt_at"),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class PipelineRunRow(Base):
    """One execution of a notebook by ``qmlops pipeline run`` (papermill): its parameters, its
    attempts, where the executed notebook was kept, and how it ended."""

    __tablename__ = "pipeline_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    #: The input notebook, as an absolute path.
    notebook: Mapped[str] = mapped_column(Text)
    #: What papermill injected (never a secret: credentials pass by alias).
    parameters: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    #: Seconds the whole run may take (None: no limit).
    timeout: Mapped[float | None] = mapped_column(Float)
    output_path: Mapped[str | None] = mapped_column(Text)
    experiment: Mapped[str | None] = mapped_column(String(256))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    #: The failing cell's index in the input notebook (0-based) and its exception's name.
    error_cell: Mapped[int | None] = mapped_column(Integer)
    error_ename: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The saved pipeline this run belongs to, and the schedule and due time that started it:
    #: one run per (pipeline, scheduled time), whatever the number of engine hosts.
    pipeline_id: Mapped[str | None] = mapped_column(String(32))
    schedule_id: Mapped[str | None] = mapped_column(String(32))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A sweep's runs: the sweep's id and the grid point's index in it.
    sweep_id: Mapped[str | None] = mapped_column(String(32))
    sweep_point: Mapped[int | None] = mapped_column(Integer)
    #: The MLflow run this run's MLflow run is nested under (a sweep's parent run).
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64))
    #: A parked run: the jobs it waits for, the cell it stopped in (0-based, input notebook)
    #: and when it parked.
    parked_jobs: Mapped[list | None] = mapped_column(JSON)
    park_cell: Mapped[int | None] = mapped_column(Integer)
    parked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The process running the run now, and its last sign of life: a run whose runner died
    #: is ended by an engine host instead of staying RUNNING.
    runner_host: Mapped[str | None] = mapped_column(String(255))
    runner_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: An engine host's claim on the run (starting a scheduled run, resuming a parked one).
    lease_holder: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_pipeline_runs_owner_created", "owner", "created_at", "id"),
        UniqueConstraint("pipeline_id", "scheduled_for"),
        Index("ix_pipeline_runs_state", "state"),
        Index("ix_pipeline_runs_sweep_id", "sweep_id", "sweep_point"),
    )


class PipelineRow(Base):
    """A saved pipeline: a notebook and how to run it (``qmlops pipeline schedule``)."""

    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    #: Unique per owner; the notebook's stem unless given.
    name: Mapped[str] = mapped_column(String(128))
    notebook: Mapped[str] = mapped_column(Text)
    #: The ``-p`` values, ``backend`` and ``credential`` (an alias) as the run gets them.
    parameters: Mapped[dict] = mapped_column(JSON)
    experiment: Mapped[str | None] = mapped_column(String(256))
    timeout: Mapped[float | None] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("owner", "name"),)


class ScheduleRow(Base):
    """When a pipeline runs: a cron expression, read by the engine hosts."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(128))
    cron: Mapped[str] = mapped_column(String(128))
    #: The IANA time zone the cron expression is read in.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    #: After downtime: ``once`` runs the latest missed time (if not stale), ``skip`` none.
    catch_up: Mapped[str] = mapped_column(String(16), default="once")
    #: A missed time older than this many seconds is never run.
    stale_after: Mapped[float] = mapped_column(Float, default=86400.0)
    #: The next time it is due (UTC); None while paused.
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_schedules_next_due_at", "paused", "next_due_at"),)


class NotificationRow(Base):
    """The end of a pipeline run or a job, recorded once (unique per kind and subject) and,
    when a webhook was configured for it, delivered from here: an outbox with a lease so two
    engine hosts never send one row at once, and a backoff between attempts. ``payload`` is
    what is sent (never a secret; the webhook URL itself is never stored)."""

    __tablename__ = "notifications"

    #: Also the delivery id receivers see, to drop a repeated delivery.
    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    #: ``pipeline_run`` or ``job``, and that run's or job's id.
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(128))
    #: ``pipeline_run.completed``, ``job.failed`` ...
    event: Mapped[str] = mapped_column(String(64))
    #: ``pending`` (to be sent), ``sent``, ``failed`` (given up) or ``skipped`` (not to be
    #: sent: no webhook, or not an end the webhook asked for).
    state: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When a pending row is due; None for every other state (so the due rows are one range
    #: of the index).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_holder: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("kind", "subject_id"),
        Index("ix_notifications_next_attempt_at", "next_attempt_at"),
        Index("ix_notifications_owner_created", "owner", "created_at", "id"),
    )


class NotificationCursorRow(Base):
    """How far a reader of an append-only log has got: for notifications, the last
    ``job_events.seq`` looked at for job ends."""

    __tablename__ = "notification_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """Who did what to whose credentials and jobs, and when: every use, store, delete and
    rotation of a credential, and every action an admin takes on another user's jobs or
    budgets. Append-only; never a secret (an alias, a job id, a limit)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: ``user:alice``, ``admin:dave``, ``engine`` ...
    actor: Mapped[str] = mapped_column(String(160))
    #: ``credential.used``, ``credential.stored``, ``admin.cancel`` ...
    action: Mapped[str] = mapped_column(String(64))
    #: Whose credential, job or budget it was.
    owner: Mapped[str] = mapped_column(String(128))
    #: A credential's alias, a job's id, a budget's backend (or None).
    target: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_audit_log_at", "at", "id"),
        Index("ix_audit_log_owner_at", "owner", "at"),
    )
