"""``qmlops pipeline``: run notebooks with papermill as recorded pipeline runs, save them as
pipelines on a cron schedule (run by the engine hosts), and read them back (see
docs/pipelines.md)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from ..errors import InvalidRequest
from .main import _client, _json_out, _table, handle_errors
from .notebook_options import notebook_options

if TYPE_CHECKING:
    from datetime import datetime, tzinfo

    from ..client import Client
    from ..pipelines.models import Pipeline, PipelineRun

#: Due times ``schedule`` and ``show`` print.
NEXT_SHOWN = 3


def _run_json(run: PipelineRun) -> dict:
    return run.model_dump(mode="json")


def _show(run: PipelineRun) -> None:
    click.echo(f"id        {run.id}")
    click.echo(f"state     {run.state.value}")
    click.echo(f"notebook  {run.notebook}")
    for name, value in run.parameters.items():
        click.echo(f"param     {name} = {value!r}")
    attempts = f"{run.attempts} of at most {run.max_retries + 1}"
    click.echo(f"attempts  {attempts}")
    if run.timeout is not None:
        click.echo(f"timeout   {run.timeout:g} s")
    if run.duration_s is not None:
        click.echo(f"duration  {run.duration_s:.1f} s")
    if run.output_path:
        click.echo(f"output    {run.output_path}")
    if run.mlflow_run_id:
        click.echo(f"mlflow    run {run.mlflow_run_id} ({run.experiment})")
    if run.state.value == "PARKED":
        jobs = ", ".join(run.parked_jobs or [])
        click.echo(f"parked    at cell {run.park_cell} until job(s) {jobs} end")
    if run.error:
        where = f"cell {run.error_cell}: " if run.error_cell is not None else ""
        click.echo(f"error     {where}{run.error}")


@click.group()
def pipeline() -> None:
    """Run notebooks as pipelines (papermill) and look at their runs."""


@pipeline.command("run")
@click.argument("notebook")
@notebook_options(
    parameter="A notebook parameter, typed like papermill's -p (int, float, True/False, None, "
    "text).",
    experiment="MLflow experiment of the run.",
    timeout="Stop the whole run after S seconds.",
    retries="Attempts after a failure.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@handle_errors
def run_command(
    notebook: str,
    parameters: tuple[tuple[str, str], ...],
    backend: str | None,
    credential: str | None,
    experiment: str | None,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    as_json: bool,
) -> None:
    """Execute NOTEBOOK with papermill, keep the executed notebook, log it to MLflow. Exits 8
    when the run fails or times out, with the failing cell's error on stderr."""
    from ..errors import PipelineRunFailed
    from ..pipelines.runner import PipelineRequest, parse_parameters, run_pipeline

    request = PipelineRequest(
        notebook=notebook,
        parameters=parse_parameters(parameters),
        backend=backend,
        credential=credential,
        experiment=experiment,
        timeout=timeout,
        retries=retries,
        retry_delay=retry_delay,
    )
    try:
        run = run_pipeline(_client(), request, say=lambda m: click.echo(m, err=True))
    except PipelineRunFailed as exc:
        if as_json:
            _json_out(_run_json(exc.run))
        else:
            _show(exc.run)
        raise
    if as_json:
        _json_out(_run_json(run))
    else:
        _show(run)


@pipeline.command("runs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--pipeline", "pipeline_name", default=None, metavar="NAME_OR_ID", help="Only this pipeline's."
)
@click.option("--state", default=None, help="Only runs in this state (COMPLETED, FAILED ...).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handle_errors
def runs_command(limit: int, pipeline_name: str | None, state: str | None, as_json: bool) -> None:
    """List your pipeline runs, newest first."""
    from ..pipelines.schedules import list_runs

    client = _client()
    found = list_runs(client.ledger, client.owner, pipeline=pipeline_name, state=state, limit=limit)
    if as_json:
        _json_out([_run_json(r) for r in found])
        return
    if not found:
        if pipeline_name is None and state is None:
            click.echo("no pipeline runs yet: start one with 'qmlops pipeline run NOTEBOOK'")
        else:
            click.echo("no pipeline runs match")
        return
    rows = [["RUN ID", "STATE", "CREATED", "ATTEMPTS", "DURATION", "NOTEBOOK"]]
    for r in found:
        rows.append(
            [
                r.id,
                r.state.value,
                _when(r.created_at),
                str(r.attempts),
                "" if r.duration_s is None else f"{r.duration_s:.1f} s",
                r.notebook,
            ]
        )
    _table(rows)


@pipeline.command("show")
@click.argument("name_or_id")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@handle_errors
def show_command(name_or_id: str, as_json: bool) -> None:
    """A saved pipeline (by name or id), else a pipeline run (by id or a unique prefix)."""
    from ..errors import PipelineRunNotFound
    from ..pipelines.schedules import Pipelines
    from ..pipelines.store import PipelineRuns

    client = _client()
    saved = Pipelines(client.ledger).find(name_or_id, client.owner)
    if saved is not None:
        _print_pipeline(saved, as_json)
        return
    try:
        run = PipelineRuns(client.ledger).get(name_or_id, client.owner)
    except PipelineRunNotFound:
        raise PipelineRunNotFound(f"no pipeline or pipeline run {name_or_id.strip()!r}") from None
    if as_json:
        _json_out(_run_json(run))
    else:
        _show(run)


# -- saved pipelines and their schedules ---------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()[:19].replace("T", " ")


def _next_due(saved: Pipeline) -> list[datetime]:
    from ..pipelines.schedules import next_due

    sched = saved.schedule
    if sched is None or sched.paused or sched.next_due_at is None:
        return []
    later = next_due(sched.cron, sched.timezone, sched.next_due_at, NEXT_SHOWN - 1)
    return [sched.next_due_at, *later]


def _pipeline_json(saved: Pipeline) -> dict:
    return {
        **saved.model_dump(mode="json"),
        "next_due": [t.isoformat().replace("+00:00", "Z") for t in _next_due(saved)],
    }


def _print_pipeline(saved: Pipeline, as_json: bool) -> None:
    if as_json:
        _json_out(_pipeline_json(saved))
        return
    click.echo(f"name      {saved.name}")
    click.echo(f"id        {saved.id}")
    click.echo(f"notebook  {saved.notebook}")
    for name, value in saved.parameters.items():
        click.echo(f"param     {name} = {value!r}")
    if saved.experiment:
        click.echo(f"mlflow    experiment {saved.experiment}")
    if saved.timeout is not None:
        click.echo(f"timeout   {saved.timeout:g} s")
    click.echo(f"retries   {saved.retries}")
    sched = saved.schedule
    if sched is not None:
        state = "paused" if sched.paused else "active"
        click.echo(f"cron      {sched.cron} ({sched.timezone}), {state}")
        click.echo(f"catch-up  {sched.catch_up.value}, stale after {sched.stale_after:g} s")
        for due in _next_due(saved):
            local = due.astimezone(_zone(sched.timezone))
            click.echo(f"next due  {_when(due)} UTC ({local.isoformat()[:19].replace('T', ' ')})")
    last = saved.last_run
    if last is not None:
        click.echo(f"last run  {last.id} {last.state.value} ({_when(last.created_at)} UTC)")


def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@pipeline.command("schedule")
@click.argument("notebook")
@click.option("--cron", required=True, help='When to run, e.g. "0 3 * * *" (a 6th field: seconds).')
@notebook_options(
    parameter="A notebook parameter, typed like papermill's -p.",
    experiment="MLflow experiment of its runs.",
    timeout="Stop a run after S seconds.",
    retries="Attempts after a failure.",
    retry_delay=False,
)
@click.option("--name", default=None, help="The pipeline's name (default: the notebook's stem).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone the cron is read in.")
@click.option(
    "--catch-up",
    type=click.Choice(["once", "skip"]),
    default="once",
    show_default=True,
    help="After downtime: run the latest missed time once, or skip missed times.",
)
@click.option(
    "--stale-after",
    default=86400.0,
    type=float,
    show_default=True,
    help="Seconds after which a missed due time is never run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline as JSON.")
@handle_errors
def schedule_command(
    notebook: str,
    cron: str,
    parameters: tuple[tuple[str, str], ...],
    name: str | None,
    backend: str | None,
    credential: str | None,
    experiment: str | None,
    timeout: float | None,
    retries: int,
    timezone: str,
    catch_up: str,
    stale_after: float,
    as_json: bool,
) -> None:
    """Save NOTEBOOK as a pipeline that an engine host ('qmlops engine', or the Jupyter
    server's) runs on a cron schedule, while you are logged out too."""
    from ..pipelines.runner import parse_parameters
    from ..pipelines.schedules import check_cron, schedule_notebook

    check_cron(cron, timezone)  # the cheap checks first
    client = _client()
    fields: dict[str, Any] = {
        "cron": cron,
        "name": name,
        "parameters": parse_parameters(parameters),
        "backend": backend,
        "credential": credential,
        "experiment": experiment,
        "timeout": timeout,
        "retries": retries,
        "timezone": timezone,
        "catch_up": catch_up,
        "stale_after": stale_after,
    }
    if getattr(client, "service_mode", False):
        # A team's service runs the schedule: it gets the notebook itself (it reads no files
        # of this server's) and checks the rest as this command would.
        _print_pipeline(client.schedule_pipeline(notebook, **fields), as_json)
        return
    saved = schedule_notebook(client, notebook=notebook, root=os.getcwd(), **fields)
    _print_pipeline(saved, as_json)
    if not as_json and not client.engine_alive():
        click.echo(
            "no engine host is running: start one with 'qmlops engine' (or JupyterLab) for it "
            "to run",
            err=True,
        )


@pipeline.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handle_errors
def list_command(as_json: bool) -> None:
    """Your saved pipelines and their schedules."""
    from ..pipelines.schedules import Pipelines

    client = _client()
    found = Pipelines(client.ledger).list(client.owner)
    if as_json:
        _json_out([_pipeline_json(p) for p in found])
        return
    if not found:
        click.echo("no pipelines yet: save one with 'qmlops pipeline schedule NOTEBOOK --cron ...'")
        return
    rows = [["NAME", "CRON", "TIMEZONE", "STATE", "NEXT DUE (UTC)", "LAST RUN"]]
    for p in found:
        sched = p.schedule
        rows.append(
            [
                p.name,
                sched.cron if sched else "",
                sched.timezone if sched else "",
                "" if sched is None else ("paused" if sched.paused else "active"),
                _when(sched.next_due_at if sched else None),
                p.last_run.state.value if p.last_run else "",
            ]
        )
    _table(rows)


@pipeline.command("pause")
@click.argument("name_or_id")
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline as JSON.")
@handle_errors
def pause_command(name_or_id: str, as_json: bool) -> None:
    """Stop starting runs of a pipeline (a run already started goes on)."""
    from ..pipelines.schedules import Pipelines

    client = _client()
    saved = Pipelines(client.ledger).pause(name_or_id, client.owner)
    if as_json:
        _json_out(_pipeline_json(saved))
    else:
        click.echo(f"pipeline {saved.name} paused")


@pipeline.command("resume")
@click.argument("name_or_id")
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline as JSON.")
@handle_errors
def resume_command(name_or_id: str, as_json: bool) -> None:
    """Run a paused pipeline again, from its next due time on (missed times are not run)."""
    from ..pipelines.schedules import Pipelines

    client = _client()
    saved = Pipelines(client.ledger).resume(name_or_id, client.owner)
    if as_json:
        _json_out(_pipeline_json(saved))
    else:
        due = _next_due(saved)
        click.echo(f"pipeline {saved.name} resumed; next due {_when(due[0]) if due else '?'} UTC")


@pipeline.command("delete")
@click.argument("name_or_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.option("--json", "as_json", is_flag=True, help="Print the deleted pipeline as JSON.")
@handle_errors
def delete_command(name_or_id: str, yes: bool, as_json: bool) -> None:
    """Delete a pipeline and its schedule (its past runs are kept)."""
    from ..pipelines.schedules import Pipelines

    client = _client()
    store = Pipelines(client.ledger)
    saved = store.get(name_or_id, client.owner)
    if not yes and not click.confirm(f"delete pipeline {saved.name} and its schedule?"):
        click.echo("nothing deleted", err=True)
        raise SystemExit(1)
    store.delete(saved.id, client.owner)
    if as_json:
        _json_out(_pipeline_json(saved))
    else:
        click.echo(f"pipeline {saved.name} deleted (its runs are kept)")


@pipeline.command("run-queued", hidden=True)
@click.argument("run_id")
@handle_errors
def run_queued_command(run_id: str) -> None:
    """Run a QUEUED run of a saved pipeline (what an engine host starts for a due schedule)."""
    from ..errors import PipelineRunFailed, QmlopsError
    from ..pipelines.runner import PipelineRequest, run_pipeline
    from ..pipelines.schedules import Pipelines
    from ..pipelines.store import PipelineRuns

    client = _client()
    queued = PipelineRuns(client.ledger).get(run_id, client.owner)
    try:
        if queued.pipeline_id is None:
            raise InvalidRequest(f"pipeline run {queued.id} belongs to no saved pipeline")
        saved = Pipelines(client.ledger).get(queued.pipeline_id, client.owner)
        parameters = dict(saved.parameters)
        request = PipelineRequest(
            notebook=saved.notebook,
            parameters=parameters,
            # Checked again now: the notebook may have moved, the credential been deleted.
            backend=parameters.pop("backend", None),
            credential=parameters.pop("credential", None),
            experiment=saved.experiment,
            timeout=saved.timeout,
            retries=saved.retries,
            run_id=queued.id,
        )
        run_pipeline(client, request, say=lambda m: click.echo(m, err=True))
    except PipelineRunFailed:
        raise
    except QmlopsError as exc:
        _fail_queued(client, queued.id, exc)  # a no-op once the run has begun
        raise


def _fail_queued(client: Client, run_id: str, exc: Exception) -> None:
    """A run that cannot start ends FAILED with the reason (never left QUEUED)."""
    from sqlalchemy import update

    from ..pipelines.models import PipelineRunState
    from ..pipelines.store import runs

    with client.ledger._write() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.state == PipelineRunState.QUEUED.value)
            .values(
                state=PipelineRunState.FAILED.value,
                error=f"the run could not start: {exc}"[:4000],
                error_ename=exc.__class__.__name__,
                finished_at=client.ledger.clock(),
                lease_holder=None,
                lease_until=None,
            )
        )


from .pipeline_sweep import sweep_command  # noqa: E402  (its own module)

pipeline.add_command(sweep_command)
