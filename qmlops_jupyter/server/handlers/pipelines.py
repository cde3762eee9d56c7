"""``/qmlops/api/v1/pipelines`` and ``/qmlops/api/v1/pipeline-runs``: the owner's saved
pipelines (with their schedule and last run), pause, resume, delete and run now; and their
pipeline runs, newest first.

A pipeline's JSON is ``qmlops pipeline show --json`` (``Pipeline``), a run's is
``qmlops pipeline runs --json`` (``PipelineRun``). "Run now" records a QUEUED run and starts its
runner as a process of its own (the engine host's launcher), so the answer is 202 at once and
the run goes on whether or not this server does; its state changes arrive as
``pipeline_status`` events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import InvalidRequest
from .base import API, QmlopsHandler
from .jobs import given

if TYPE_CHECKING:
    from ...ledger import Ledger
    from ...pipelines.models import PipelineRun

#: The most runs one page holds.
MAX_RUNS = 1000


def _pipelines(ledger: Ledger) -> Any:
    from ...pipelines.schedules import Pipelines

    return Pipelines(ledger)


def _pipeline_json(pipeline: Any) -> dict[str, Any]:
    return pipeline.model_dump(mode="json")


def _run_json(run: PipelineRun) -> dict[str, Any]:
    return run.model_dump(mode="json")


def parse_state(raw: str | None) -> str | None:
    """``?state=`` as a pipeline run state (any case); 400 naming the known ones otherwise."""
    if raw is None:
        return None
    from ...pipelines.models import PipelineRunState

    try:
        return PipelineRunState(raw.strip().upper()).value
    except ValueError:
        known = ", ".join(s.value for s in PipelineRunState)
        raise InvalidRequest(
            f"unknown pipeline run state {raw!r}; expected one of {known}"
        ) from None


def list_runs(
    ledger: Ledger,
    owner: str,
    *,
    state: str | None,
    pipeline: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[PipelineRun], str | None]:
    """The owner's runs, newest first, filtered by state and by pipeline (a name or an id of
    the owner's: unknown is 404), ``limit`` at a time; and the cursor of the next page."""
    from sqlalchemy import literal, select, tuple_

    from ...ledger.orm import UTCDateTime
    from ...ledger.store import _decode_cursor, _encode_cursor
    from ...pipelines.store import _model, runs

    query = select(runs).where(runs.c.owner == owner)
    if state is not None:
        query = query.where(runs.c.state == state)
    if pipeline is not None:
        query = query.where(runs.c.pipeline_id == _pipelines(ledger).get(pipeline, owner).id)
    if cursor:
        created, last_id = _decode_cursor(cursor)
        query = query.where(
            tuple_(runs.c.created_at, runs.c.id)
            < tuple_(literal(created, UTCDateTime()), literal(last_id))
        )
    query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
    with ledger._read() as conn:
        rows = conn.execute(query).all()
    page = [_model(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = _encode_cursor(last.created_at, last.id)
    return page, next_cursor


class PipelinesHandler(QmlopsHandler):
    auth_resource = "qmlops:pipelines"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        client = self.client
        found = await self.run(lambda: _pipelines(client.ledger).list(client.owner))
        self.reply({"pipelines": [_pipeline_json(p) for p in found]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from .models import PipelineCreateRequest

        request = self.body(PipelineCreateRequest)
        from ...pipelines.schedules import schedule_notebook

        # A team's service reads no user's files: it takes the notebook's content only.
        root = None if self.extensionapp.multi_user else self.serverapp.root_dir
        fields = request.model_dump()
        saved = await self.run(lambda: schedule_notebook(self.client, root=root, **fields))
        self.reply(_pipeline_json(saved), status=201)


class PipelineHandler(QmlopsHandler):
    auth_resource = "qmlops:pipelines"

    @web.authenticated
    @authorized
    async def get(self, name_or_id: str) -> None:
        client = self.client
        pipeline = await self.run(lambda: _pipelines(client.ledger).get(name_or_id, client.owner))
        self.reply(_pipeline_json(pipeline))

    @web.authenticated
    @authorized
    async def delete(self, name_or_id: str) -> None:
        client = self.client
        await self.run(lambda: _pipelines(client.ledger).delete(name_or_id, client.owner))
        self.set_status(204)
        self.finish()


def _set_paused(ledger: Ledger, owner: str, name_or_id: str, paused: bool) -> Any:
    pipelines = _pipelines(ledger)
    change = pipelines.pause if paused else pipelines.resume
    return change(name_or_id, owner)


class PauseHandler(QmlopsHandler):
    auth_resource = "qmlops:pipelines"
    paused = True

    @web.authenticated
    @authorized
    async def post(self, name_or_id: str) -> None:
        client = self.client
        pipeline = await self.run(_set_paused, client.ledger, client.owner, name_or_id, self.paused)
        self.reply(_pipeline_json(pipeline))


class ResumeHandler(PauseHandler):
    paused = False


class RunNowHandler(QmlopsHandler):
    auth_resource = "qmlops:pipelines"

    @web.authenticated
    @authorized
    async def post(self, name_or_id: str) -> None:
        from ...pipelines.schedules import run_now

        client = self.client
        run = await self.run(run_now, client.ledger, client.settings, client.owner, name_or_id)
        self.reply(_run_json(run), status=202)
        # After the answer: the new run's QUEUED event goes out now, not at the next look.
        self.app.events.poke_pipelines()


class PipelineRunsHandler(QmlopsHandler):
    auth_resource = "qmlops:pipelines"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        given(self, "state", "limit", "pipeline")
        state = parse_state(self.query("state"))
        limit = self.int_query("limit", 20, 1, MAX_RUNS)
        client = self.client
        page, next_cursor = await self.run(
            list_runs,
            client.ledger,
            client.owner,
            state=state,
            pipeline=self.query("pipeline"),
            limit=limit,
            cursor=self.query("cursor"),
        )
        self.reply({"pipeline_runs": [_run_json(r) for r in page], "next": next_cursor})


class PipelineRunHandler(QmlopsHandler):
    auth_resource = "qmlops:pipelines"

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        from ...pipelines.store import PipelineRuns

        client = self.client
        run = await self.run(PipelineRuns(client.ledger).get, run_id, client.owner)
        self.reply(_run_json(run))


ROUTES = [
    (rf"/{API}/pipelines", PipelinesHandler),
    (rf"/{API}/pipelines/(?P<name_or_id>[^/]+)", PipelineHandler),
    (rf"/{API}/pipelines/(?P<name_or_id>[^/]+)/pause", PauseHandler),
    (rf"/{API}/pipelines/(?P<name_or_id>[^/]+)/resume", ResumeHandler),
    (rf"/{API}/pipelines/(?P<name_or_id>[^/]+)/runs", RunNowHandler),
    (rf"/{API}/pipeline-runs", PipelineRunsHandler),
    (rf"/{API}/pipeline-runs/(?P<run_id>[^/]+)", PipelineRunHandler),
]
