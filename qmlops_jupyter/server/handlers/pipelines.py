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
        root = None if self.extensionapp.multi_user else self.serverapp.root_dir
        saved = await self.run(_create, self.client, request, root)
        self.reply(_pipeline_json(saved), status=201)


def _create(client: Any, request: Any, root: str | None) -> Any:
    """Save a pipeline with its schedule, as ``qmlops pipeline schedule`` does. The notebook:
    its ``content`` kept under the home (``pipelines/notebooks/<owner>/``) when given; else
    the path, under ``root`` (None: a team's service, which reads no user's files)."""
    from pathlib import Path

    from ...pipelines.runner import PipelineRequest, check_request
    from ...pipelines.schedules import _name_taken, check_cron

    check_cron(request.cron, request.timezone)
    name = request.name or Path(request.notebook).stem
    if _pipelines(client.ledger).find(name, client.owner) is not None:
        raise _name_taken(name)  # before a copy could replace that pipeline's notebook
    if request.content is not None:
        notebook = _keep_copy(client, request)
    elif root is None:
        raise InvalidRequest(
            "content: send the notebook itself; the service cannot read files on your server"
        )
    else:
        path = Path(request.notebook).expanduser()
        notebook = str(path if path.is_absolute() else Path(root) / path)
    check = PipelineRequest(
        notebook=notebook,
        parameters=dict(request.parameters),
        backend=request.backend,
        credential=request.credential,
        experiment=request.experiment,
        timeout=request.timeout,
        retries=request.retries,
    )
    path, injected = check_request(client, check)
    return _pipelines(client.ledger).create(
        owner=client.owner,
        name=name,
        notebook=str(path),
        parameters=injected,
        experiment=request.experiment,
        timeout=request.timeout,
        retries=request.retries,
        cron=request.cron,
        timezone=request.timezone,
        catch_up=request.catch_up,
        stale_after=request.stale_after,
    )


def _keep_copy(client: Any, request: Any) -> str:
    """Write the request's notebook (checked as nbformat 4) to the owner's pipeline folder,
    atomically; return its path."""
    import json
    import os
    import re
    from pathlib import Path

    import nbformat

    try:
        node = nbformat.from_dict(request.content)
        nbformat.validate(node, version=4)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidRequest(f"content: not a valid notebook ({first[:200]})") from None
    stem = request.name or Path(request.notebook).stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "pipeline"
    owner_dir = re.sub(r"[^A-Za-z0-9._-]+", "-", client.owner) or "owner"
    folder = client.settings.home / "pipelines" / "notebooks" / owner_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"{safe}.ipynb"
    temporary = target.with_suffix(".ipynb.tmp")
    temporary.write_text(json.dumps(request.content), encoding="utf-8")
    os.replace(temporary, target)
    return str(target)


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
