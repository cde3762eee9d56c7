"""``qmlops pipeline sweep``: one pipeline run per grid point, on Dask (see
qmlops_jupyter/pipelines/sweep.py and docs/pipelines.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from .main import _client, _json_out, _table, handle_errors
from .notebook_options import notebook_options

if TYPE_CHECKING:
    from ..pipelines.sweep import SweepResult


def _summary(result: SweepResult, names: list[str]) -> None:
    rows = [["POINT", "PARAMETERS", "STATE", "DURATION", "MLFLOW RUN", "ERROR"]]
    for run in result.points:
        shown = " ".join(
            f"{n}={json.dumps(run.parameters[n], default=str)}"
            for n in names
            if n in run.parameters
        )
        error = run.error or ""
        if run.error_cell is not None:
            error = f"cell {run.error_cell}: {error}"
        rows.append(
            [
                str(run.sweep_point),
                shown,
                run.state.value,
                "" if run.duration_s is None else f"{run.duration_s:.1f} s",
                run.mlflow_run_id or "",
                error if len(error) <= 80 else error[:77] + "...",
            ]
        )
    _table(rows)
    done = len(result.points) - len(result.incomplete)
    click.echo(f"sweep {result.sweep_id}: {done} of {len(result.points)} points completed")
    if result.mlflow_parent_run_id:
        experiment = result.points[0].experiment if result.points else None
        click.echo(f"mlflow parent run {result.mlflow_parent_run_id} ({experiment})")


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.command("sweep")
@click.argument("notebook")
@click.option(
    "--grid",
    "grid",
    required=True,
    metavar="PARAMS.yaml",
    help="YAML: parameter name -> list of values (their cartesian product), and optionally "
    "'points:', a list of explicit parameter mappings.",
)
@click.option(
    "--workers",
    default=None,
    type=int,
    help="Points run at once on the local Dask cluster (default: one per point, at most one per "
    "CPU).",
)
@click.option(
    "--dask-scheduler",
    "scheduler",
    default=None,
    metavar="ADDR",
    help="Run on this Dask scheduler (tcp://host:8786) instead of a local cluster.",
)
@notebook_options(
    parameter="A parameter for every point, typed like papermill's -p.",
    experiment="MLflow experiment of the sweep.",
    timeout="Stop each point's run after S seconds.",
    retries="Attempts after a point fails.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the sweep and its runs as JSON.")
@handle_errors
def sweep_command(
    notebook: str,
    grid: str,
    workers: int | None,
    scheduler: str | None,
    parameters: tuple[tuple[str, str], ...],
    backend: str | None,
    credential: str | None,
    experiment: str | None,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    as_json: bool,
) -> None:
    """Run NOTEBOOK once per point of a parameter grid, on Dask, as nested MLflow runs under
    one parent; print a summary. Exits 8 when a point did not complete."""
    from ..errors import PipelineRunFailed
    from ..pipelines.runner import parse_parameters
    from ..pipelines.sweep import SweepRequest, plan_sweep, run_sweep, sweep_failure_message

    request = SweepRequest(
        notebook=notebook,
        grid=grid,
        parameters=parse_parameters(parameters),
        backend=backend,
        credential=credential,
        experiment=experiment,
        timeout=timeout,
        retries=retries,
        retry_delay=retry_delay,
        workers=workers,
        scheduler=scheduler,
    )
    client = _client()
    plan = plan_sweep(client, request)
    result = run_sweep(client, request, say=_say, plan=plan)
    if as_json:
        _json_out(result.model_dump(mode="json"))
    else:
        _summary(result, plan.grid.names)
    if result.incomplete:
        raise PipelineRunFailed(sweep_failure_message(result), result.incomplete[0])
