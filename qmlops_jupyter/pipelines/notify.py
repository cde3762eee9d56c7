"""Notifications of pipeline runs' and jobs' ends: a log event, a row, and an optional webhook.

Every end is recorded once — a structured log event (``extra={"event": "job.failed"}``...)
and a row in the ledger's ``notifications`` table, unique per (kind, subject) — so people hear
about the overnight run that finished while they were away. With a webhook configured
(``notifications.webhook_url`` in ``config.yaml``, or ``QMLOPS_WEBHOOK_URL``), the ends it asks
for are POSTed to it as JSON from that table, an outbox:

* a pipeline run's end arrives through :func:`pipeline_run_ended`, called by the runner once
  the run's last row is written; the row is recorded and one delivery is tried at once, bounded
  by the webhook's ``timeout`` (the run is never failed, nor slowed by more than that);
* a job's end is found by :func:`send_due`, which the engine host calls about once a second:
  it reads the ledger's append-only job event log past a cursor kept in the ledger (started at
  the log's end, so a first start does not announce every job of the past);
* :func:`send_due` also sends what is due: each row is claimed with a compare-and-set lease
  (two engine hosts never send one row at once), connection errors, timeouts, 5xx and 429 are
  retried with exponential backoff and jitter across ticks (``next_attempt_at``) up to
  ``max_attempts``; any other 4xx is final. Each POST carries the row's id as a delivery id
  (``X-Qmlops-Delivery`` and ``delivery_id``), so a receiver can drop a repeat.

The webhook URL is a secret (Slack- and Teams-style URLs carry their token): it is never
logged, stored, put in an error or an answer; only its scheme and host are shown. Rows recorded
while no webhook is configured (or for ends it did not ask for) are ``skipped``: configuring a
webhook later does not send the past.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from sqlalchemy import insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import ConfigError, InvalidRequest, one_line
from ..ledger.orm import JobEventRow, JobRow, NotificationCursorRow, NotificationRow
from ..ledger.store import default_holder
from ..states import TERMINAL_STATES
from ..vault.redaction import redact

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ..client import Client
    from ..config import Settings
    from ..ledger import Ledger
    from .models import PipelineRun

log = logging.getLogger("qmlops_jupyter.notifications")

table = NotificationRow.__table__
cursors = NotificationCursorRow.__table__
job_events = JobEventRow.__table__
jobs = JobRow.__table__

#: The cursor row of the job event log.
JOB_CURSOR = "job_events"
#: Events read from the job event log in one pass.
EVENT_BATCH = 500
#: Rows one pass sends at most (the rest wait for the next tick).
SEND_BATCH = 20
#: The longest wait between two attempts, whatever ``retry_delay`` and Retry-After say.
MAX_RETRY_DELAY = 3600.0
#: On PostgreSQL an event may commit after one with a higher sequence number: the cursor does
#: not move past a gap in the sequence until the event after it is this old.
GAP_WAIT = timedelta(seconds=5)
_JOB_ENDS = frozenset(s.value for s in TERMINAL_STATES)
_ERROR_LENGTH = 500

State = Literal["pending", "sent", "failed", "skipped"]


class Notification(BaseModel):
    """One recorded end, as an API shows it (the lease columns stay inside)."""

    #: Also the delivery id the webhook receives.
    id: int
    kind: Literal["pipeline_run", "job"]
    subject_id: str
    owner: str
    #: ``pipeline_run.completed``, ``job.failed`` ...
    event: str
    #: ``pending`` (to be sent), ``sent``, ``failed`` (given up), ``skipped`` (not to be sent).
    state: State
    #: What is (or would be) POSTed, without ``delivery_id``.
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None


def notifications(ledger: Ledger, owner: str | None, limit: int = 20) -> list[Notification]:
    """The newest recorded ends of ``owner`` (None: everyone's), newest first."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest(f"limit must be between 1 and 1000, not {limit}")
    query = select(table).order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(table.c.owner == owner)
    with ledger._read() as conn:
        rows = conn.execute(query).mappings().all()
    return [Notification(**{k: row[k] for k in Notification.model_fields}) for row in rows]


# -- the webhook's settings ----------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    """The ``notifications`` settings of one process, with a webhook to call."""

    url: str = field(repr=False)
    events: frozenset[str]
    #: None: every end state.
    states: frozenset[str] | None
    timeout: float
    max_attempts: int
    retry_delay: float

    @property
    def target(self) -> str:
        """Scheme and host only: what may be shown of the URL."""
        import urllib.parse

        parts = urllib.parse.urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"

    def wants(self, kind: str, state: str) -> bool:
        return kind in self.events and (self.states is None or state in self.states)

    @property
    def lease_seconds(self) -> float:
        # Connect, write and read may each take up to ``timeout``.
        return 3 * self.timeout + 30.0


_settings_cache: dict[str, tuple[Any, Webhook | None]] = {}


def webhook(settings: Settings) -> Webhook | None:
    """The webhook this process sends to, or None. Read from ``config.yaml`` (and
    ``QMLOPS_WEBHOOK_URL``) again only when they change: the engine host asks every second.
    Raises ConfigError (one line, naming the field) for a bad section."""
    import os

    from ..config import WEBHOOK_ENV

    path = settings.config_file
    try:
        stat = path.stat()
        version: Any = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        version = None
    key = (version, os.environ.get(WEBHOOK_ENV))
    cached = _settings_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    section = settings.config().notifications
    hook = None
    if section.webhook_url is not None:
        hook = Webhook(
            url=section.webhook_url.get_secret_value(),
            events=frozenset(section.events),
            states=frozenset(section.states) if section.states is not None else None,
            timeout=section.timeout,
            max_attempts=section.max_attempts,
            retry_delay=section.retry_delay,
        )
    _settings_cache[str(path)] = (key, hook)
    return hook


# -- recording ends ------------------------------------------------------------------------------


def pipeline_run_ended(client: Client, run: PipelineRun) -> None:
    """Record the end of ``run`` (called by the runner once its last row is written) and, with
    a webhook, try one delivery now: at most the webhook's ``timeout``; retries are the engine
    host's. Never raises."""
    try:
        if not run.state.terminal:
            return
        try:
            hook = webhook(client.settings)
        except ConfigError as exc:  # checked when the run started; changed since
            log.warning("notifications: %s; the end of run %s is not sent", exc, run.id)
            hook = None
        ledger = client.ledger
        with ledger._write() as conn:
            recorded = _record(
                ledger, conn, "pipeline_run", run.id, run.owner, _run_payload(run), hook
            )
        if recorded is None:
            return  # already recorded
        _announce(recorded, hook, actor=f"runner:{run.id}")
        if recorded["state"] == "pending" and hook is not None:
            _send_soon(ledger, hook, recorded["id"])
    except Exception:
        log.warning("pipeline run %s: its end was not recorded", run.id, exc_info=True)


def _record(
    ledger: Ledger,
    conn: Connection,
    kind: str,
    subject_id: str,
    owner: str,
    payload: dict[str, Any],
    hook: Webhook | None,
) -> dict[str, Any] | None:
    """Insert the row of an end unless there is one; the new row, or None."""
    now = ledger.clock()
    wanted = hook is not None and hook.wants(kind, payload["state"])
    values = {
        "kind": kind,
        "subject_id": subject_id,
        "owner": owner,
        "event": payload["event"],
        "state": "pending" if wanted else "skipped",
        "payload": payload,
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now if wanted else None,
    }
    # The ledger runs on SQLite or PostgreSQL; both say ON CONFLICT DO NOTHING.
    dialect = postgresql if ledger.dialect == "postgresql" else sqlite
    stmt = (
        dialect.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "subject_id"])
        .returning(table.c.id)
    )
    new_id = conn.execute(stmt).scalar_one_or_none()
    return None if new_id is None else {**values, "id": int(new_id)}


def _announce(row: dict[str, Any], hook: Webhook | None, actor: str) -> None:
    """The structured log event of an end."""
    payload = row["payload"]
    if row["state"] == "pending" and hook is not None:
        fate = f"to be sent to {hook.target}"
    else:
        fate = "not sent (no webhook)" if hook is None else "not sent (not asked for)"
    extra: dict[str, Any] = {"event": row["event"], "new_state": payload["state"], "actor": actor}
    if row["kind"] == "job":
        extra.update(job_id=row["subject_id"], backend=payload.get("backend"))
    log.info(
        "%s %s ended %s (notification %d, %s)",
        "pipeline run" if row["kind"] == "pipeline_run" else "job",
        row["subject_id"],
        payload["state"],
        row["id"],
        fate,
        extra=extra,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _error_line(error: str | None) -> str | None:
    return redact(one_line(error))[:_ERROR_LENGTH] if error else None


def _run_payload(run: PipelineRun) -> dict[str, Any]:
    state = run.state.value
    name = Path(run.notebook).name
    text = f"qmlops: pipeline run {run.id} ({name}) {state.lower().replace('_', ' ')}"
    if run.duration_s is not None:
        text += f" after {run.duration_s:.1f} s"
    error = _error_line(run.error)
    if error:
        where = f" at cell {run.error_cell}" if run.error_cell is not None else ""
        text += f"{where}: {error}"
    return {
        "event": f"pipeline_run.{state.lower()}",
        "kind": "pipeline_run",
        "id": run.id,
        "owner": run.owner,
        "state": state,
        "notebook": run.notebook,
        "error": error,
        "error_cell": run.error_cell,
        "attempts": run.attempts,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_s": run.duration_s,
        "output_path": run.output_path,
        "experiment": run.experiment,
        "mlflow_run_id": run.mlflow_run_id,
        "pipeline_id": run.pipeline_id,
        "schedule_id": run.schedule_id,
        "scheduled_for": _iso(run.scheduled_for),
        "sweep_id": run.sweep_id,
        "sweep_point": run.sweep_point,
        # Chat webhooks (Slack, Teams, Mattermost) show this field as the message.
        "text": text,
    }


#: What a job's notification says of it.
_JOB_COLUMNS = [
    jobs.c[name]
    for name in (
        "id",
        "owner",
        "name",
        "backend",
        "shots",
        "error",
        "lineage",
        "mlflow_run_id",
        "created_at",
        "started_at",
        "finished_at",
    )
]


def _job_payload(job: Any, state: str) -> dict[str, Any]:
    lineage = job["lineage"] or {}
    notebook = lineage.get("notebook")
    label = job["name"] or (Path(notebook).name if notebook else None)
    text = f"qmlops: job {job['id']}" + (f" ({label})" if label else "")
    text += f" on {job['backend']} {state.lower()}"
    error = _error_line(job["error"])
    if error:
        text += f": {error}"
    started, finished = job["started_at"], job["finished_at"]
    return {
        "event": f"job.{state.lower()}",
        "kind": "job",
        "id": job["id"],
        "owner": job["owner"],
        "state": state,
        "name": job["name"],
        "backend": job["backend"],
        "shots": job["shots"],
        "notebook": notebook,
        "pipeline_run": lineage.get("pipeline_run"),
        "error": error,
        "created_at": _iso(job["created_at"]),
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": (finished - started).total_seconds() if started and finished else None,
        "output_path": None,
        "mlflow_run_id": job["mlflow_run_id"],
        "text": text,
    }


# -- the engine host's pass ----------------------------------------------------------------------


@dataclass
class _LedgerState:
    cursor_checked: bool = False
    config_error: str | None = None


_states: weakref.WeakKeyDictionary[Any, _LedgerState] = weakref.WeakKeyDictionary()


def send_due(host: Any) -> None:
    """One pass of the engine host's duty (``host.ledger``, ``host.settings``,
    ``host.holder``): record the jobs that ended since the last pass, then send what is due.
    When nothing happened, this is one indexed SELECT."""
    ledger = host.ledger
    state = _states.setdefault(ledger, _LedgerState())
    try:
        hook = webhook(host.settings)
    except ConfigError as exc:
        # Nothing is recorded meanwhile (the cursor waits): no end is lost to a typo.
        if state.config_error != str(exc):
            state.config_error = str(exc)
            log.warning("notifications paused until the config is fixed: %s", exc)
        return
    if state.config_error is not None:
        state.config_error = None
        log.warning("notifications resumed: the config is valid again")
    if not state.cursor_checked:
        _start_cursor(ledger)
        state.cursor_checked = True
    now = ledger.clock()
    new_events, due = _probe(ledger, now, delivering=hook is not None)
    if new_events:
        recorded = record_job_ends(ledger, hook, host.holder)
        due = due or any(row["state"] == "pending" for row in recorded)
    if due and hook is not None:
        deliver_due(ledger, hook, host.holder)


def _probe(ledger: Ledger, now: datetime, delivering: bool) -> tuple[bool, bool]:
    """Are there events past the cursor, and (when ``delivering``) rows due? One SELECT."""
    after = select(cursors.c.seq).where(cursors.c.name == JOB_CURSOR).scalar_subquery()
    columns = [select(job_events.c.seq).where(job_events.c.seq > after).exists()]
    if delivering:
        columns.append(select(table.c.id).where(table.c.next_attempt_at <= now).exists())
    with ledger._read() as conn:
        found = conn.execute(select(*columns)).one()
    return bool(found[0]), bool(delivering and found[1])


def _start_cursor(ledger: Ledger) -> None:
    """A missing cursor starts at the log's end (migration 0009 makes one; this covers a
    deleted one): only jobs that end from now on are announced."""
    with ledger._read() as conn:
        if conn.execute(select(cursors.c.seq).where(cursors.c.name == JOB_CURSOR)).first():
            return
    with ledger._write() as conn:
        if conn.execute(select(cursors.c.seq).where(cursors.c.name == JOB_CURSOR)).first():
            return
        last = conn.execute(select(job_events.c.seq).order_by(job_events.c.seq.desc()).limit(1))
        seq = last.scalar_one_or_none() or 0
        conn.execute(insert(cursors).values(name=JOB_CURSOR, seq=seq, updated_at=ledger.clock()))
    log.info("notifications: job ends are read from event %d on", seq)


def record_job_ends(ledger: Ledger, hook: Webhook | None, actor: str) -> list[dict[str, Any]]:
    """Record the ends of jobs found in the event log past the cursor, and move the cursor;
    the rows that are new. Safe to run on several hosts at once: an end is recorded once, and the
    cursor only moves forward."""
    now = ledger.clock()
    recorded: list[dict[str, Any]] = []
    with ledger._write() as conn:
        cursor = conn.execute(
            select(cursors.c.seq).where(cursors.c.name == JOB_CURSOR)
        ).scalar_one_or_none()
        if cursor is None:
            return []
        rows = conn.execute(
            select(
                job_events.c.seq,
                job_events.c.at,
                job_events.c.kind,
                job_events.c.to_state,
                job_events.c.job_id,
            )
            .where(job_events.c.seq > cursor)
            .order_by(job_events.c.seq)
            .limit(EVENT_BATCH)
        ).all()
        position = cursor
        ends: dict[str, str] = {}
        for row in rows:
            # On SQLite writers take turns, so sequence numbers become visible in order.
            if ledger.dialect != "sqlite" and row.seq != position + 1 and now - row.at < GAP_WAIT:
                break
            position = row.seq
            if row.kind == "transition" and row.to_state in _JOB_ENDS:
                ends[row.job_id] = row.to_state
        if ends:
            found = conn.execute(select(*_JOB_COLUMNS).where(jobs.c.id.in_(list(ends))))
            for job in found.mappings().all():
                payload = _job_payload(job, ends[job["id"]])
                new = _record(ledger, conn, "job", job["id"], job["owner"], payload, hook)
                if new is not None:
                    recorded.append(new)
        if position != cursor:
            conn.execute(
                update(cursors)
                .where(cursors.c.name == JOB_CURSOR, cursors.c.seq < position)
                .values(seq=position, updated_at=now)
            )
    for row in recorded:
        _announce(row, hook, actor)
    return recorded


# -- delivery ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    #: ``sent``, ``retry`` (try again later) or ``final`` (never again).
    status: Literal["sent", "retry", "final"]
    error: str | None = None
    #: Seconds the receiver asked to wait (Retry-After).
    retry_after: float | None = None


def deliver_due(ledger: Ledger, hook: Webhook, holder: str) -> int:
    """Send due rows one at a time, each under a lease; stop at the first that must be
    retried (the receiver is struggling: the others wait too) or after a few timeouts' time.
    How many were sent."""
    sent = 0
    started = time.monotonic()
    budget = max(2 * hook.timeout, 5.0)
    for _ in range(SEND_BATCH):
        if time.monotonic() - started > budget:
            break
        claimed = _claim(ledger, holder, hook)
        if claimed is None:
            break
        outcome = _deliver_claimed(ledger, hook, claimed, holder)
        if outcome.status == "sent":
            sent += 1
        elif outcome.status == "retry":
            break
    return sent


def _send_soon(ledger: Ledger, hook: Webhook, row_id: int) -> None:
    """One delivery of a new row, in a thread the caller waits for at most ``timeout``: a
    receiver slower than that is left to the engine host (the lease keeps it from sending the
    row twice at once)."""
    holder = f"notify:{default_holder()}"
    claimed = _claim(ledger, holder, hook, row_id=row_id)
    if claimed is None:
        return

    def deliver() -> None:
        try:
            _deliver_claimed(ledger, hook, claimed, holder)
        except Exception:
            log.warning("notification %d: delivery not recorded", row_id, exc_info=True)

    thread = threading.Thread(target=deliver, name=f"qmlops-notify-{row_id}", daemon=True)
    thread.start()
    thread.join(hook.timeout)


def _claim(
    ledger: Ledger, holder: str, hook: Webhook, row_id: int | None = None
) -> dict[str, Any] | None:
    """Lease one due row to ``holder`` (compare-and-set: a row leased by another holder whose
    lease has not run out is never taken)."""
    now = ledger.clock()
    free = or_(table.c.lease_until.is_(None), table.c.lease_until < now)
    query = select(table).where(table.c.state == "pending", table.c.next_attempt_at <= now, free)
    if row_id is not None:
        query = query.where(table.c.id == row_id)
    query = query.order_by(table.c.next_attempt_at, table.c.id).limit(5)
    with ledger._write() as conn:
        for row in conn.execute(query).mappings().all():
            taken = conn.execute(
                update(table)
                .where(table.c.id == row["id"], table.c.state == "pending", free)
                .values(
                    lease_holder=holder,
                    lease_until=now + timedelta(seconds=hook.lease_seconds),
                )
            ).rowcount
            if taken == 1:
                return dict(row)
    return None


def _deliver_claimed(ledger: Ledger, hook: Webhook, row: dict[str, Any], holder: str) -> Outcome:
    outcome = post(hook, row["id"], row["event"], row["payload"])
    attempts = row["attempts"] + 1
    now = ledger.clock()
    values: dict[str, Any] = {"attempts": attempts, "lease_holder": None, "lease_until": None}
    if outcome.status == "sent":
        values.update(state="sent", sent_at=now, next_attempt_at=None, last_error=None)
    elif outcome.status == "retry" and attempts < hook.max_attempts:
        delay = hook.retry_delay * 2 ** (attempts - 1) * (0.5 + random.random())
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        delay = min(delay, MAX_RETRY_DELAY)
        values.update(next_attempt_at=now + timedelta(seconds=delay), last_error=outcome.error)
    else:
        values.update(state="failed", next_attempt_at=None, last_error=outcome.error)
    with ledger._write() as conn:
        conn.execute(
            update(table)
            .where(table.c.id == row["id"], table.c.lease_holder == holder)
            .values(**values)
        )
    subject = f"{row['kind'].replace('_', ' ')} {row['subject_id']}"
    if values.get("state") == "failed":
        given_up = "gave up after" if outcome.status == "retry" else "refused at"
        log.warning(
            "notification %d (%s, %s) was not delivered to %s: %s attempt %d: %s",
            row["id"],
            row["event"],
            subject,
            hook.target,
            given_up,
            attempts,
            outcome.error,
            extra={"event": "notification_failed", "actor": holder},
        )
    elif outcome.status == "retry":
        log.info(
            "notification %d (%s) to %s: attempt %d failed (%s); retrying",
            row["id"],
            row["event"],
            hook.target,
            attempts,
            outcome.error,
            extra={"event": "notification_retry", "actor": holder},
        )
    else:
        log.info(
            "notification %d (%s) delivered to %s",
            row["id"],
            row["event"],
            hook.target,
            extra={"event": "notification_sent", "actor": holder},
        )
    return outcome


def post(hook: Webhook, delivery_id: int, event: str, payload: dict[str, Any]) -> Outcome:
    """POST one notification; what came of it. Errors name the receiver by scheme and host
    only (an error of the HTTP library may quote the URL: it is redacted and cut)."""
    try:
        import httpx
    except ImportError:
        return Outcome("final", "webhooks need httpx, which is not installed: pip install httpx")
    from .._version import __version__
    from ..vault.redaction import install, register

    register(str(httpx.URL(hook.url)))  # as httpx writes it, in its own log lines
    install(logging.getLogger("httpx"))
    install(logging.getLogger("httpcore"))
    body = json.dumps({**payload, "delivery_id": delivery_id}, default=str)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"qmlops-jupyter/{__version__}",
        "X-Qmlops-Delivery": str(delivery_id),
        "X-Qmlops-Event": event,
    }
    try:
        with httpx.Client(timeout=hook.timeout, follow_redirects=False) as http:
            response = http.post(hook.url, content=body.encode(), headers=headers)
    except httpx.TimeoutException:
        return Outcome("retry", f"no answer within {hook.timeout:g} s")
    except httpx.TransportError as exc:
        return Outcome("retry", f"could not reach {hook.target}: {_describe(exc)}")
    except Exception as exc:  # an invalid URL, an unsupported protocol ...
        return Outcome("final", f"could not send: {_describe(exc)}")
    code = response.status_code
    if 200 <= code < 300:
        return Outcome("sent")
    error = f"HTTP {code} from {hook.target}"
    if code == 429 or code >= 500:
        return Outcome("retry", error, _retry_after(response.headers.get("Retry-After")))
    if 300 <= code < 400:
        return Outcome("final", f"{error} (redirects are not followed)")
    return Outcome("final", error)


def _describe(exc: BaseException) -> str:
    detail = redact(one_line(exc))
    # Nothing past a URL-looking token: an unregistered spelling of the URL stays out.
    detail = " ".join(w for w in detail.split() if "://" not in w)[:200]
    return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the backoff decides
