"""The tracking outbox: the ledger records first, MLflow hears about it after.

A completed tracked job is queued here in the transaction that completes it; step metrics,
params and the end of a tracked run are queued by :mod:`.run`. :func:`drain` sends what is due
and marks it done. While the tracking store is down, rows stay and are retried with backoff;
nothing is lost and the jobs themselves never wait on MLflow.

No duplicate runs: a run is created with a tag ``qmlops.run_key`` naming its key, and any retry
that might follow a half-finished attempt looks for that tag before creating anything. All rows
of one run are claimed together, under a lease, so two drainers never work on one run at once.
Re-sending a batch is harmless: MLflow keeps one copy of an identical metric, param or tag.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, insert, or_, select, text, update

from ..ledger.orm import JobEventRow, JobRow, TrackingOutboxRow, TrackingRunRow
from ..vault.redaction import redact

if TYPE_CHECKING:
    from ..ledger import Ledger

log = logging.getLogger("qmlops_jupyter.tracking")

outbox = TrackingOutboxRow.__table__
runs = TrackingRunRow.__table__
jobs = JobRow.__table__
events = JobEventRow.__table__

LEASE_SECONDS = 120.0
#: Seconds before retrying an unreachable store: 2, 4, 8 ... up to this.
MAX_BACKOFF = 60.0


def job_run_key(job_id: str) -> str:
    return f"job-{job_id}"


def job_outbox_row(job_id: str, owner: str, lineage: dict[str, Any], at: datetime) -> dict:
    """The outbox row for a tracked job that just completed (see ``Ledger.complete``)."""
    return _row(owner, "job", lineage.get("run_key") or job_run_key(job_id), at, job_id=job_id)


def _row(
    owner: str, kind: str, run_key: str, at: datetime, *, job_id: str | None = None, payload=None
) -> dict:
    return {
        "owner": owner,
        "kind": kind,
        "run_key": run_key,
        "job_id": job_id,
        "payload": payload or {},
        "created_at": at,
        "attempts": 0,
        "failed": False,
    }


def enqueue(ledger: Ledger, owner: str, kind: str, run_key: str, payload: dict) -> None:
    with ledger._write() as conn:
        conn.execute(insert(outbox), _row(owner, kind, run_key, ledger.clock(), payload=payload))


def pending(ledger: Ledger, owner: str | None = None) -> dict[str, Any]:
    """``{"count", "failed", "last_error"}`` of what has not reached MLflow yet."""
    with ledger._read() as conn:
        query = select(outbox.c.failed, outbox.c.error).where(outbox.c.done_at.is_(None))
        if owner is not None:
            query = query.where(outbox.c.owner == owner)
        rows = conn.execute(query.order_by(outbox.c.id.desc())).all()
    waiting = [r for r in rows if not r.failed]
    errors = [r.error for r in rows if r.error]
    return {
        "count": len(waiting),
        "failed": len(rows) - len(waiting),
        "last_error": errors[0] if errors else None,
    }


def has_due(ledger: Ledger, owner: str | None = None) -> bool:
    """Cheap check (no MLflow import) for rows to send now."""
    now = ledger.clock()
    query = (
        select(outbox.c.id)
        .where(
            outbox.c.done_at.is_(None),
            outbox.c.failed.is_(False),
            or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
        )
        .limit(1)
    )
    if owner is not None:
        query = query.where(outbox.c.owner == owner)
    with ledger._read() as conn:
        return conn.execute(query).first() is not None


# -- the tracked runs table ----------------------------------------------------------------------


def create_run_row(
    ledger: Ledger,
    *,
    key: str,
    owner: str,
    tracking_uri: str,
    experiment: str,
    run_name: str | None,
    parent_key: str | None,
    tags: dict[str, str],
    artifact_root: str | None,
    params: dict[str, str] | None = None,
) -> None:
    """Record a tracked run and queue its creation (and any params) in one transaction."""
    now = ledger.clock()
    with ledger._write() as conn:
        conn.execute(
            insert(runs),
            {
                "key": key,
                "owner": owner,
                "tracking_uri": tracking_uri,
                "experiment": experiment,
                "run_name": run_name,
                "parent_key": parent_key,
                "tags": {**tags, "_artifact_root": artifact_root},
                "params": {},
                "job_ids": [],
                "mlflow_run_id": None,
                "status": "RUNNING",
                "created_at": now,
            },
        )
        conn.execute(insert(outbox), _row(owner, "start", key, now))
        if params:
            conn.execute(
                insert(outbox), _row(owner, "params", key, now, payload={"params": params})
            )


def run_row(ledger: Ledger, key: str) -> dict[str, Any] | None:
    with ledger._read() as conn:
        row = conn.execute(select(runs).where(runs.c.key == key)).mappings().first()
    return dict(row) if row is not None else None


# -- draining ------------------------------------------------------------------------------------


@dataclass
class DrainReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    runs: list[str] = field(default_factory=list)
    error: str | None = None


def drain(
    ledger: Ledger,
    holder: str,
    *,
    owner: str | None = None,
    run_keys: Sequence[str] | None = None,
    job_ids: Sequence[str] | None = None,
    uris: dict[str, str] | None = None,
    force: bool = False,
    limit: int = 500,
) -> DrainReport:
    """Send due outbox rows to MLflow; return what happened.

    ``uris`` maps a stored (password-free) tracking URI to the full one this process was
    configured with. ``force`` ignores the retry backoff (the store is known to be back).
    """
    report = DrainReport()
    # Each drain leases under a name of its own, so two drains in one process (the background
    # sender and a flush) never take each other's rows.
    holder = f"{holder}/{uuid.uuid4().hex[:8]}"
    claimed = _claim(ledger, holder, owner, run_keys, job_ids, force, limit)
    if not claimed:
        return report
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in claimed:
        groups.setdefault(row["run_key"], []).append(row)
    down: set[str] = set()
    for key, rows in groups.items():
        uri = None
        try:
            uri = _uri_for(ledger, key, rows, uris or {})
            if uri in down:
                raise ConnectionError("tracking store unreachable")
            run_id = _send(ledger, key, rows, uri, holder)
        except Exception as exc:
            from .mlflow_io import is_unreachable

            transient = is_unreachable(exc)
            if transient and uri is not None:
                down.add(uri)
            from .config import scrub

            message = scrub(redact(f"{exc.__class__.__name__}: {exc}"))[:2000]
            _fail(ledger, holder, rows, message, permanent=not transient)
            if transient:
                report.retrying += len(rows)
            else:
                report.failed += len(rows)
                log.error("tracking run %s refused: %s", key, message)
            report.error = message
            continue
        report.sent += len(rows)
        report.runs.append(run_id)
    if report.sent:
        purge_sent(ledger)
    return report


#: Sent rows are kept this long (for ``qmlops runs`` and audits), then deleted.
KEEP_SENT = timedelta(days=7)
_last_purge = 0.0


def purge_sent(ledger: Ledger, *, every: float = 600.0) -> int:
    """Delete rows sent more than :data:`KEEP_SENT` ago (at most every ``every`` seconds per
    process); the jobs keep their ``mlflow_run_id``."""
    global _last_purge
    if time.monotonic() - _last_purge < every:
        return 0
    _last_purge = time.monotonic()
    with ledger._write() as conn:
        return conn.execute(
            delete(outbox).where(outbox.c.done_at < ledger.clock() - KEEP_SENT)
        ).rowcount


def _claim(
    ledger: Ledger,
    holder: str,
    owner: str | None,
    run_keys: Sequence[str] | None,
    job_ids: Sequence[str] | None,
    force: bool,
    limit: int,
) -> list[dict[str, Any]]:
    now = ledger.clock()
    free = or_(outbox.c.lease_holder.is_(None), outbox.c.lease_expires_at < now)
    due = and_(outbox.c.done_at.is_(None), outbox.c.failed.is_(False))
    with ledger._write() as conn:
        if ledger.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7163022)"))
        query = select(outbox.c.run_key).where(due, free)
        if not force:
            query = query.where(
                or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now)
            )
        if owner is not None:
            query = query.where(outbox.c.owner == owner)
        if run_keys is not None:
            query = query.where(outbox.c.run_key.in_(list(run_keys)))
        if job_ids is not None:
            keyed = select(outbox.c.run_key).where(outbox.c.job_id.in_(list(job_ids)))
            query = query.where(outbox.c.run_key.in_(keyed))
        keys = list(dict.fromkeys(conn.execute(query.order_by(outbox.c.id).limit(limit)).scalars()))
        if not keys:
            return []
        # A run another drainer is working on is left alone: one run, one drainer.
        busy = set(
            conn.execute(
                select(outbox.c.run_key).where(
                    outbox.c.run_key.in_(keys),
                    due,
                    outbox.c.lease_holder.is_not(None),
                    outbox.c.lease_holder != holder,
                    outbox.c.lease_expires_at >= now,
                )
            ).scalars()
        )
        keys = [k for k in keys if k not in busy]
        if not keys:
            return []
        conn.execute(
            update(outbox)
            .where(outbox.c.run_key.in_(keys), due, free)
            .values(
                lease_holder=holder,
                lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
                attempts=outbox.c.attempts + 1,
            )
        )
        rows = (
            conn.execute(
                select(outbox)
                .where(outbox.c.run_key.in_(keys), due, outbox.c.lease_holder == holder)
                .order_by(outbox.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def _uri_for(ledger: Ledger, key: str, rows: list[dict], uris: dict[str, str]) -> str:
    if key.startswith("job-"):
        stored = (ledger.get_job(rows[0]["job_id"]).lineage or {}).get("uri")
    else:
        found = run_row(ledger, key)
        stored = found["tracking_uri"] if found else None
    if not stored:
        raise ValueError(f"no tracking URI recorded for {key}")
    return uris.get(stored, stored)


def _send(ledger: Ledger, key: str, rows: list[dict[str, Any]], uri: str, holder: str) -> str:
    if key.startswith("job-"):
        return _send_job_run(ledger, key, rows, uri, holder)
    return _send_group(ledger, key, rows, uri, holder)


def _send_job_run(
    ledger: Ledger, key: str, rows: list[dict[str, Any]], uri: str, holder: str
) -> str:
    """A job alone in its run: create (or find) the run, log everything, end it."""
    from .mlflow_io import client_for, experiment_id, find_run, job_content, log_content

    row = rows[0]
    record = ledger.get_job(row["job_id"])
    lineage = record.lineage or {}
    client = client_for(uri)
    exp_id = experiment_id(
        client, uri, lineage.get("experiment") or "qmlops", lineage.get("artifact_root")
    )
    content = job_content(record, ledger.circuit_qasm3(record.id), group=False)
    found = find_run(client, exp_id, key) if max(r["attempts"] for r in rows) > 1 else None
    if found is None:
        # Every tag goes in with the run: one call fewer than a separate set.
        run = client.create_run(
            exp_id,
            start_time=int(record.created_at.timestamp() * 1000),
            tags={**content.tags, "qmlops.run_key": key},
            run_name=record.name or f"{record.backend}-{record.id[:8]}",
        )
        run_id, artifact_uri = run.info.run_id, run.info.artifact_uri
        content.tags = {}
    else:
        run_id, artifact_uri = found, None
    log_content(client, run_id, content, artifact_uri)
    end = record.finished_at or record.updated_at
    client.set_terminated(run_id, "FINISHED", end_time=int(end.timestamp() * 1000))
    _done(ledger, rows, run_id, holder)
    return run_id


def _ensure_group_run(ledger: Ledger, key: str, uri: str) -> tuple[dict[str, Any], str]:
    """The group run's MLflow id, creating the run (and its parents) once."""
    from .mlflow_io import client_for, experiment_id, find_run

    found = run_row(ledger, key)
    if found is None:
        raise ValueError(f"no tracked run {key}")
    if found["mlflow_run_id"]:
        return found, found["mlflow_run_id"]
    client = client_for(uri)
    tags = {k: v for k, v in (found["tags"] or {}).items() if not k.startswith("_")}
    artifact_root = (found["tags"] or {}).get("_artifact_root")
    exp_id = experiment_id(client, uri, found["experiment"], artifact_root)
    if found["parent_key"]:
        _parent, parent_id = _ensure_group_run(ledger, found["parent_key"], uri)
        tags["mlflow.parentRunId"] = parent_id
    run_id = find_run(client, exp_id, key)
    if run_id is None:
        run = client.create_run(
            exp_id,
            start_time=int(found["created_at"].timestamp() * 1000),
            tags={**tags, "qmlops.run_key": key},
            run_name=found["run_name"],
        )
        run_id = run.info.run_id
    with ledger._write() as conn:
        conn.execute(update(runs).where(runs.c.key == key).values(mlflow_run_id=run_id))
    found["mlflow_run_id"] = run_id
    return found, run_id


def _send_group(ledger: Ledger, key: str, rows: list[dict[str, Any]], uri: str, holder: str) -> str:
    """Rows of a tracked run, oldest first, in one batch of MLflow calls."""
    from .mlflow_io import (
        MAX_TAG_LENGTH,
        Content,
        client_for,
        job_content,
        log_content,
    )

    found, run_id = _ensure_group_run(ledger, key, uri)
    client = client_for(uri)
    logged: dict[str, str] = dict(found["params"] or {})
    job_ids: list[list[Any]] = [list(p) for p in found["job_ids"] or []]
    content = Content()
    varied: set[str] = set()
    end: dict[str, Any] | None = None

    def add_params(params: dict[str, str]) -> None:
        for name, value in params.items():
            known = logged.get(name, content.params.get(name))
            if known is None:
                content.params[name] = value
            elif known != value:
                varied.add(name)

    for row in rows:
        kind, payload = row["kind"], row["payload"] or {}
        if kind == "job":
            record = ledger.get_job(row["job_id"])
            step = int((record.lineage or {}).get("step") or 0)
            part = job_content(record, ledger.circuit_qasm3(record.id), group=True, step=step)
            add_params(part.params)
            content.metrics.extend(part.metrics)
            content.files.update(part.files)
            if record.id not in [j[0] for j in job_ids]:
                job_ids.append([record.id, record.provider_job_id])
        elif kind == "params":
            add_params({k: str(v) for k, v in payload.get("params", {}).items()})
        elif kind == "metrics":
            content.metrics.extend(
                (str(k), float(v), int(s), int(t)) for k, v, s, t in payload.get("metrics", [])
            )
        elif kind == "tags":
            content.tags.update({str(k): str(v) for k, v in payload.get("tags", {}).items()})
        elif kind == "end":
            end = payload
    if job_ids:
        content.tags["qmlops.job_ids"] = _fit(",".join(j[0] for j in job_ids), MAX_TAG_LENGTH)
        content.tags["qmlops.job_count"] = str(len(job_ids))
        providers = ",".join(str(j[1]) for j in job_ids if j[1])
        if providers:
            content.tags["qmlops.provider_job_ids"] = _fit(providers, MAX_TAG_LENGTH)
    if varied:
        already = set(filter(None, (found["tags"] or {}).get("_varied", "").split(",")))
        content.tags["qmlops.varied_params"] = ",".join(sorted(varied | already))
    log_content(client, run_id, content)
    if end is not None:
        client.set_terminated(run_id, end.get("status", "FINISHED"), end_time=end.get("end_time"))
    logged.update(content.params)
    _done(
        ledger,
        rows,
        run_id,
        holder,
        run_update={
            "params": logged,
            "job_ids": job_ids,
            **({"status": end.get("status", "FINISHED")} if end is not None else {}),
            **(
                {"tags": {**(found["tags"] or {}), "_varied": content.tags["qmlops.varied_params"]}}
                if varied
                else {}
            ),
        },
        key=key,
    )
    return run_id


def _fit(text_value: str, limit: int) -> str:
    """The newest ids that fit in a tag (the ledger has them all)."""
    if len(text_value) <= limit:
        return text_value
    return "..." + text_value[-(limit - 3) :].split(",", 1)[-1]


def _done(
    ledger: Ledger,
    rows: list[dict[str, Any]],
    run_id: str,
    holder: str,
    *,
    run_update: dict[str, Any] | None = None,
    key: str | None = None,
) -> None:
    now = ledger.clock()
    ids = [r["id"] for r in rows]
    job_ids = [r["job_id"] for r in rows if r["job_id"]]
    with ledger._write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .values(done_at=now, lease_holder=None, lease_expires_at=None, error=None)
        )
        if job_ids:
            conn.execute(update(jobs).where(jobs.c.id.in_(job_ids)).values(mlflow_run_id=run_id))
            owners = {r["job_id"]: r["owner"] for r in rows if r["job_id"]}
            conn.execute(
                insert(events),
                [
                    {
                        "job_id": job_id,
                        "owner": owners[job_id],
                        "at": now,
                        "kind": "note",
                        "from_state": None,
                        "to_state": None,
                        "actor": holder,
                        "message": f"logged to MLflow run {run_id}",
                    }
                    for job_id in job_ids
                ],
            )
        if run_update and key is not None:
            conn.execute(update(runs).where(runs.c.key == key).values(**run_update))


def _fail(
    ledger: Ledger, holder: str, rows: list[dict[str, Any]], message: str, *, permanent: bool
) -> None:
    now = ledger.clock()
    attempts = max(r["attempts"] for r in rows)
    delay = min(MAX_BACKOFF, 2.0 ** min(attempts, 10))
    with ledger._write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([r["id"] for r in rows]), outbox.c.lease_holder == holder)
            .values(
                lease_holder=None,
                lease_expires_at=None,
                error=message,
                failed=permanent,
                next_attempt_at=now + timedelta(seconds=delay),
            )
        )


def wait_until_sent(
    ledger: Ledger,
    holder: str,
    *,
    run_keys: Sequence[str] | None = None,
    job_ids: Sequence[str] | None = None,
    owner: str | None = None,
    uris: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> bool:
    """Drain the given rows (or all of ``owner``'s) now, ignoring backoff once, waiting up to
    ``timeout`` seconds for rows another drainer holds; True when none of them is left."""
    deadline = time.monotonic() + timeout
    force = True
    while True:
        drain(
            ledger,
            holder,
            owner=owner,
            run_keys=run_keys,
            job_ids=job_ids,
            uris=uris,
            force=force,
            limit=10_000,
        )
        force = False
        now = ledger.clock()
        with ledger._read() as conn:
            due = and_(outbox.c.done_at.is_(None), outbox.c.failed.is_(False))
            query = select(
                outbox.c.run_key, outbox.c.error, outbox.c.lease_holder, outbox.c.lease_expires_at
            ).where(due)
            if owner is not None:
                query = query.where(outbox.c.owner == owner)
            if run_keys is not None:
                query = query.where(outbox.c.run_key.in_(list(run_keys)))
            if job_ids is not None:
                query = query.where(outbox.c.job_id.in_(list(job_ids)))
            left = conn.execute(query).all()
            # A run is sent by one drainer at a time: its rows queued after another drainer
            # claimed it wait for that drainer too.
            busy = set(
                conn.execute(
                    select(outbox.c.run_key).where(
                        outbox.c.run_key.in_({r.run_key for r in left}),
                        due,
                        outbox.c.lease_holder.is_not(None),
                        outbox.c.lease_holder != holder,
                        outbox.c.lease_expires_at >= now,
                    )
                ).scalars()
            )
        if not left:
            return True
        # Rows another drainer is sending: wait for it. Rows that failed just now with no one
        # on them: the store is down, waiting longer will not help.
        held = [
            r for r in left if r.run_key in busy or (r.lease_holder and r.lease_expires_at >= now)
        ]
        if len(held) < len(left) or time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
