"""``/qmlops/api/v1/events``: job status changes as a long poll.

For clients that cannot use the server's event-bus websocket (a kernel holding only its scoped
token, Voila, a script): ``GET /events?after=N&wait=S`` answers with this owner's ``job_status``
v1 changes past event sequence number N, oldest first, and ``next``, the number to pass as
``after`` next time. Without ``after`` it answers at once with no changes and the current
position. With ``wait``, it answers as soon as there is a change (woken by the event pump, not
by a timer) or, empty, after S seconds. Another owner's jobs are never read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import InvalidRequest
from .base import API, QmlopsHandler
from .jobs import given, wait_seconds
from .jobs import owners as readable_owners

#: Longest ``?wait=`` the route accepts, in seconds (under common proxies' idle timeouts).
MAX_WAIT = 30.0
#: Most ``?job_id=`` values one request may name.
MAX_JOB_IDS = 100
#: Rows read per answer (``next`` says where the rest start).
PAGE = 500
#: A wait looks at the ledger itself at least this often, in case the pump is behind.
RECHECK = 1.0
#: Largest ``after`` (a 64-bit sequence number).
MAX_SEQ = 2**63 - 1


def _job_ids(handler: QmlopsHandler) -> list[str] | None:
    values = handler.get_query_arguments("job_id")
    if not values:
        return None
    if len(values) > MAX_JOB_IDS:
        raise InvalidRequest(f"at most {MAX_JOB_IDS} job_id values, not {len(values)}")
    for value in values:
        if not value.strip() or len(value) > 128:
            raise InvalidRequest("job_id must be a job id (1 to 128 characters)")
    return values


class EventsHandler(QmlopsHandler):
    auth_resource = "qmlops:jobs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        given(self, "after")
        wait = wait_seconds(self, MAX_WAIT, zero=True) or 0.0
        job_ids = _job_ids(self)
        ledger = self.client.ledger
        if self.query("after") is None:
            newest = await self.run(ledger.last_event_seq)
            self.reply({"events": [], "next": newest})
            return
        after = self.int_query("after", 0, 0, MAX_SEQ)
        events, next_seq = await self._changes(after, wait, job_ids)
        self.reply({"events": events, "next": next_seq})

    async def _changes(
        self, after: int, wait: float, job_ids: list[str] | None
    ) -> tuple[list[dict[str, Any]], int]:
        from ...models import job_status

        client, pump = self.client, self.app.events
        owners = readable_owners(self)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            # What the pump has read before this look: a row it reads later wakes the wait.
            seen = pump.last_seq
            rows = await self.run(
                client.ledger.status_events, owners, after, job_ids=job_ids, limit=PAGE
            )
            if rows:
                changes = [job_status(r) for r in rows if r["kind"] == "transition"]
                return changes, int(rows[-1]["seq"])
            remaining = deadline - loop.time()
            if remaining <= 0:
                # Nothing of these jobs up to what the pump had read: later asks start there.
                skip = seen if job_ids is not None and seen is not None else after
                return [], max(after, skip)
            await pump.wait_for_rows(seen, min(remaining, RECHECK))


ROUTES = [(rf"/{API}/events", EventsHandler)]
