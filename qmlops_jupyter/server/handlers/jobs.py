"""``/qmlops/api/v1/jobs``: submit, list, show, wait for and cancel jobs.

A job's JSON is exactly ``qmlops show --json`` (``JobRecord``). A submission is recorded and
left to this server's engine (woken at once through the core's wake socket), so a request never
simulates in the server's event loop; ``?wait=S`` then follows the job through the event pump
until it is finished or S seconds pass, and answers with the job as it stands.
"""

from __future__ import annotations

import asyncio
import json
import math
from functools import partial
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import Forbidden, InvalidRequest
from ...states import JobState
from .base import API, QmlopsHandler

if TYPE_CHECKING:
    from ...models import JobRecord

#: Longest ``?wait=`` a request may ask for, in seconds.
MAX_WAIT = 300.0
#: A wait re-reads the job at least this often, in case a transition raced the pump.
RECHECK = 0.5


def _lineage(given: dict[str, Any] | None) -> dict[str, Any] | None:
    """A caller's lineage, kept to plain JSON and redacted (it is the caller's own account of
    itself, stored with the job and logged to MLflow)."""
    if given is None:
        return None
    from ...tracking.lineage import _clean

    return _clean(given)


def job_json(record: JobRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def given(handler: QmlopsHandler, *names: str) -> None:
    """Refuse ``?name=`` given empty for parameters whose empty value means nothing (a number,
    a flag, a state): a mistake, not a default."""
    for name in names:
        if handler.get_query_argument(name, None) == "":
            raise InvalidRequest(f"{name} is empty")


def wait_seconds(
    handler: QmlopsHandler, maximum: float = MAX_WAIT, *, zero: bool = False
) -> float | None:
    """``?wait=S`` as seconds (0 < S <= ``maximum``; 0 too with ``zero``), or None when not
    asked."""
    given(handler, "wait")
    raw = handler.query("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise InvalidRequest(f"wait must be a number of seconds, not {raw!r}") from None
    above_low = seconds >= 0 if zero else seconds > 0
    if not (math.isfinite(seconds) and above_low and seconds <= maximum):
        low = "between 0 and" if zero else "more than 0 and at most"
        raise InvalidRequest(f"wait must be {low} {maximum:g} seconds")
    return seconds


def flag(handler: QmlopsHandler, name: str) -> bool:
    given(handler, name)
    raw = (handler.query(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"{name} must be true or false, not {raw!r}")
    return raw in ("true", "1")


async def follow(handler: QmlopsHandler, record: JobRecord, seconds: float) -> JobRecord:
    """The job once it is finished (or needs attention), or as it is after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    ledger = handler.client.ledger
    while not (record.terminal or record.state is JobState.NEEDS_ATTENTION):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await handler.app.events.wait_for_change(record.id, min(remaining, RECHECK))
        record = await handler.run(ledger.get_job, record.id)
    return record


class JobsHandler(QmlopsHandler):
    auth_resource = "qmlops:jobs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        given(self, "state", "limit")
        client = self.client
        limit = self.int_query("limit", 50, 1, 1000)
        page = await self.run(
            client.ledger.list_jobs,
            owners(self),
            state=self.query("state"),
            backend=self.query("backend"),
            limit=limit,
            cursor=self.query("cursor"),
        )
        # pydantic's own serializer, record by record: a page of 50 is ~130 KB of JSON.
        body = ",".join(r.model_dump_json() for r in page.jobs)
        self.set_header("Content-Type", "application/json")
        self.finish(f'{{"jobs": [{body}], "next": {json.dumps(page.next)}}}')

    @web.authenticated
    @authorized
    async def post(self) -> None:
        wait = wait_seconds(self)
        from .models import JobRequest

        request = self.body(JobRequest)
        client = self.client
        caller_lineage = (
            {"lineage": _lineage(request.lineage)} if "lineage" in request.model_fields_set else {}
        )
        submit = partial(
            client.submit,
            request.circuits,
            backend=request.backend,
            shots=request.shots,
            name=request.name,
            idempotency_key=request.idempotency_key,
            seed=request.seed,
            tags=request.tags,
            observables=request.observables,
            credential=request.credential,
            job_timeout=request.job_timeout,
            **caller_lineage,
        )
        job, ran_here = await self.run(_submit, client, submit, request.backend, wait)
        record = job.record
        if wait is not None and not ran_here:
            record = await follow(self, record, wait)
        # An idempotency key seen before answers with the job made then: 200, not 201.
        self.set_status(201 if job.created else 200)
        self.set_header("Content-Type", "application/json")
        await self.finish(record.model_dump_json())
        # After the answer: the pump's read of the new transitions must not delay it.
        self.app.events.poke()


def _submit(client: Any, submit: Any, backend: str, wait: float | None) -> tuple[Any, bool]:
    """Record the job; returns it and whether it was run here.

    A caller that waits on a local simulator gets the job run at once in this (API) thread,
    as an in-process ``submit(wait=True)`` would: leased to this server from the moment it is
    recorded, so nobody else runs it, and answered from the record the driver finished (a big
    job still goes to a worker process). Past ``wait`` seconds, the wait lets the job go to
    the engine (and wakes it), and the job is answered as it stands. Anything else is recorded
    and left to the engine, woken at once."""
    from ...errors import QmlopsError, WaitTimeout

    try:
        local = bool(client.registry.get(backend).capabilities.local)
    except QmlopsError:
        local = False  # not a backend: the submission itself says what is wrong
    if wait is None or not local:
        return submit(wait=False), False
    try:
        return submit(wait=True, wait_timeout=wait), True
    except WaitTimeout as timed_out:  # the job was let go, and the engine told of it
        job = timed_out.job
        job.refresh()
        return job, True


class JobHandler(QmlopsHandler):
    auth_resource = "qmlops:jobs"

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        wait = wait_seconds(self)
        with_events, with_qasm = flag(self, "events"), flag(self, "qasm")
        client = self.client
        record = await readable_job(self, job_id)
        if wait is not None:
            record = await follow(self, record, wait)
        data = job_json(record)
        if with_events:
            events = await self.run(client.ledger.events, record.id)
            data["events"] = [e.model_dump(mode="json") for e in events]
        if with_qasm:
            data["qasm3"] = await self.run(client.ledger.circuit_qasm3, record.id)
        self.reply(data)


class CancelHandler(QmlopsHandler):
    auth_resource = "qmlops:jobs"

    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        record = await readable_job(self, job_id)
        access = self.access
        if record.owner == access.user:
            record = await self.run(self.client.cancel, job_id)
        elif access.can_change(record.owner):  # an admin's act on another user's job
            client = self.extensionapp.client_for(record.owner)
            record = await self.run(
                self.client.ledger.request_cancel,
                job_id,
                actor=f"admin:{access.user}",
                owner=record.owner,
            )
            client._notify_engines()
            await self.audit("admin.cancel", record.owner, job_id, state=record.state.value)
        else:
            raise Forbidden(f"only {record.owner} or an admin may cancel job {job_id}")
        self.reply(job_json(record))


def owners(handler: QmlopsHandler) -> str | list[str] | None:
    """Whose jobs a listing covers: ``?owner=NAME`` (one the caller may read), else every owner
    the caller may read (one's own; a viewer's grants; everyone's for an admin)."""
    access = handler.access
    asked = handler.owner_query()
    if asked is not None:
        if not access.can_read(asked):
            raise Forbidden(f"you may not read {asked}'s jobs")
        return asked
    return access.owners()


async def readable_job(handler: QmlopsHandler, job_id: str) -> JobRecord:
    """The job, if the caller may read it; JobNotFound (404) otherwise, as for a job that does
    not exist: another user's job ids are not confirmed."""
    from ...errors import JobNotFound

    access = handler.access
    only = next(iter(access.readable)) if access.readable and len(access.readable) == 1 else None
    # One readable owner: ids (and id prefixes) are looked up among that owner's jobs alone.
    record = await handler.run(handler.client.ledger.get_job, job_id, only)
    if not access.can_read(record.owner):
        raise JobNotFound(f"no job with id {job_id!r}")
    return record


ROUTES = [
    (rf"/{API}/jobs", JobsHandler),
    (rf"/{API}/jobs/(?P<job_id>[^/]+)", JobHandler),
    (rf"/{API}/jobs/(?P<job_id>[^/]+)/cancel", CancelHandler),
]
