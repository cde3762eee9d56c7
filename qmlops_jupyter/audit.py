"""The audit log: who used, stored, deleted or rotated a credential, and what an admin did to
another user's jobs or budgets; one append-only ledger table (``audit_log``).

Entries are written in the same transaction as the change they describe where there is one
(a credential stored or deleted), so the log never claims a change that did not happen, nor
misses one that did. They hold names, aliases, job ids and limits, never a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from .ledger.orm import AuditRow
from .ledger.store import utcnow
from .models import AuditEntry

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .ledger import Ledger

log = logging.getLogger("qmlops_jupyter.audit")

audit_log = AuditRow.__table__

#: Most entries one read returns.
MAX_ENTRIES = 1000


def write(
    conn: Connection,
    *,
    actor: str,
    action: str,
    owner: str,
    target: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one entry on ``conn`` (inside the caller's transaction), and log it."""
    conn.execute(
        insert(audit_log).values(
            at=utcnow(),
            actor=actor,
            action=action,
            owner=owner,
            target=target,
            detail=dict(detail or {}),
        )
    )
    log.info(
        "audit: %s %s %s%s",
        actor,
        action,
        owner,
        f" {target}" if target else "",
        extra={"event": "audit", "actor": actor, "action": action},
    )


def record(ledger: Ledger, **entry: Any) -> None:
    """Append one entry in a transaction of its own (see :func:`write`)."""
    with ledger._write() as conn:
        write(conn, **entry)


def entries(
    ledger: Ledger,
    *,
    owner: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first: every owner's (``owner=None``) or one owner's entries, optionally of one
    actor or action (an action ending in ``.`` matches its family, e.g. ``credential.``), older
    than entry id ``before``."""
    from .errors import InvalidRequest

    if not 1 <= limit <= MAX_ENTRIES:
        raise InvalidRequest(f"limit must be between 1 and {MAX_ENTRIES}, not {limit}")
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(audit_log.c.owner == owner)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if action is not None:
        if action.endswith("."):
            query = query.where(audit_log.c.action.startswith(action, autoescape=True))
        else:
            query = query.where(audit_log.c.action == action)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    with ledger._read() as conn:
        rows = conn.execute(query).mappings().all()
    return [AuditEntry(**dict(r)) for r in rows]
