"""``qmlops pipeline``: run notebooks with papermill as recorded pipeline runs, and read them
back (see docs/pipelines.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .main import _client, _json_out, _table, handle_errors

if TYPE_CHECKING:
    from ..pipelines.models import PipelineRun


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
    if run.error:
        where = f"cell {run.error_cell}: " if run.error_cell is not None else ""
        click.echo(f"error     {where}{run.error}")


@click.group()
def pipeline() -> None:
    """Run notebooks as pipelines (papermill) and look at their runs."""


@pipeline.command("run")
@click.argument("notebook")
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A notebook parameter, typed like papermill's -p (int, float, True/False, None, text).",
)
@click.option("--backend", "-b", default=None, help="Passed to the notebook as `backend`.")
@click.option(
    "--credential",
    default=None,
    metavar="ALIAS",
    help="A stored credential's alias, passed as `credential` (the alias, never the secret).",
)
@click.option("--experiment", "-e", default=None, help="MLflow experiment of the run.")
@click.option("--timeout", default=None, type=float, help="Stop the whole run after S seconds.")
@click.option("--retries", default=0, type=int, show_default=True, help="Attempts after a failure.")
@click.option(
    "--retry-delay",
    default=1.0,
    type=float,
    hidden=True,
    help="Base of the exponential backoff between attempts, in seconds.",
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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handle_errors
def runs_command(limit: int, as_json: bool) -> None:
    """List your pipeline runs, newest first."""
    from ..pipelines.store import PipelineRuns

    client = _client()
    found = PipelineRuns(client.ledger).list(client.owner, limit)
    if as_json:
        _json_out([_run_json(r) for r in found])
        return
    if not found:
        click.echo("no pipeline runs yet: start one with 'qmlops pipeline run NOTEBOOK'")
        return
    rows = [["RUN ID", "STATE", "CREATED", "ATTEMPTS", "DURATION", "NOTEBOOK"]]
    for r in found:
        rows.append(
            [
                r.id,
                r.state.value,
                r.created_at.isoformat()[:19].replace("T", " "),
                str(r.attempts),
                "" if r.duration_s is None else f"{r.duration_s:.1f} s",
                r.notebook,
            ]
        )
    _table(rows)


@pipeline.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@handle_errors
def show_command(run_id: str, as_json: bool) -> None:
    """One pipeline run (by id or a unique prefix)."""
    from ..pipelines.store import PipelineRuns

    client = _client()
    run = PipelineRuns(client.ledger).get(run_id, client.owner)
    if as_json:
        _json_out(_run_json(run))
    else:
        _show(run)


from .pipeline_sweep import sweep_command  # noqa: E402  (its own module)

pipeline.add_command(sweep_command)
