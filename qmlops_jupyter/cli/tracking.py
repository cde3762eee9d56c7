"""``qmlops runs`` and ``qmlops mlflow-ui``: the MLflow side of the ledger."""

from __future__ import annotations

import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import ExperimentNotFound, InvalidRequest, TrackingUnavailable
from .main import _client, _json_out, _table, handle_errors


def _mlflow_call(uri: str, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    from ..tracking.config import safe_uri
    from ..vault.redaction import redact

    try:
        return func(*args, **kwargs)
    except Exception as exc:
        raise TrackingUnavailable(
            redact(
                f"tracking store {safe_uri(uri)}: {what} failed: {exc.__class__.__name__}: {exc}"
            )
        ) from None


def run_summary(run: Any, experiments: dict[str, str]) -> dict[str, Any]:
    """A run as ``qmlops runs --json`` (and the REST API) shows it."""
    tags = run.data.tags
    info = run.info

    def when(ms: int | None) -> str | None:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    ids = tags.get("qmlops.job_ids", "")
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": when(info.start_time),
        "end_time": when(info.end_time),
        "user": tags.get("mlflow.user"),
        "job_ids": [j for j in ids.split(",") if j and j != "..."],
        "job_count": int(tags.get("qmlops.job_count", len([j for j in ids.split(",") if j]))),
        "provider_job_ids": [p for p in tags.get("qmlops.provider_job_ids", "").split(",") if p],
        "notebook": tags.get("qmlops.notebook"),
        "source": tags.get("mlflow.source.name"),
        "git_commit": tags.get("qmlops.git.commit"),
        "git_dirty": {"true": True, "false": False}.get(tags.get("qmlops.git.dirty", "")),
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "artifact_uri": info.artifact_uri,
    }


def list_runs(client: Any, experiment: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """This owner's runs that hold jobs, newest first."""
    from ..errors import MissingBackendDependency
    from ..tracking.config import mlflow_installed
    from ..tracking.mlflow_io import client_for

    if not mlflow_installed():
        raise MissingBackendDependency(
            "tracking needs MLflow, which is not installed; install it with: "
            "pip install 'qmlops-jupyter[mlflow]'"
        )
    cfg = client.tracking.config
    uri = cfg.uri
    ml = _mlflow_call(uri, "connecting", client_for, uri)
    if experiment is not None:
        exp = _mlflow_call(uri, "reading experiments", ml.get_experiment_by_name, experiment)
        if exp is None:
            raise ExperimentNotFound(f"no MLflow experiment named {experiment!r}")
        experiments = {exp.experiment_id: exp.name}
    else:
        found = _mlflow_call(uri, "reading experiments", ml.search_experiments)
        experiments = {e.experiment_id: e.name for e in found}
    if not experiments:
        return []
    owner = client.owner.replace("'", "")
    runs = _mlflow_call(
        uri,
        "searching runs",
        ml.search_runs,
        list(experiments),
        filter_string=f"tags.`qmlops.owner` = '{owner}'",
        max_results=limit,
        order_by=["attributes.start_time DESC"],
    )
    return [run_summary(r, experiments) for r in runs]


@click.command()
@click.option("--experiment", "-e", default=None, help="Only runs of this MLflow experiment.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--sync", is_flag=True, help="First send what waits in the tracking outbox, now.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handle_errors
def runs(experiment: str | None, limit: int, sync: bool, as_json: bool) -> None:
    """List your MLflow runs that hold jobs (job ids, notebook, git commit), newest first."""
    from ..tracking.outbox import pending

    client = _client()
    cfg = client.tracking.config
    if sync:
        client.tracking.flush()
    found = list_runs(client, experiment, limit)
    waiting = pending(client.ledger, client.owner)
    if waiting["count"] or waiting["failed"]:
        why = f" (last error: {waiting['last_error']})" if waiting["last_error"] else ""
        click.echo(
            f"{waiting['count']} tracking record(s) wait for the tracking store"
            + (f", {waiting['failed']} refused" if waiting["failed"] else "")
            + why,
            err=True,
        )
    if not cfg.enabled:
        click.echo(f"tracking is off: {cfg.reason}", err=True)
    if as_json:
        _json_out(found)
        return
    if not found:
        click.echo(f"no runs yet in {cfg.safe_uri}: jobs are logged as they complete")
        return
    rows = [["RUN ID", "EXPERIMENT", "NAME", "STATUS", "STARTED", "JOBS", "SOURCE"]]
    for r in found:
        rows.append(
            [
                r["run_id"],
                r["experiment"],
                r["run_name"] or "",
                r["status"],
                (r["start_time"] or "")[:19].replace("T", " "),
                str(r["job_count"]),
                os.path.basename(r["source"] or "")
                + (f" @{r['git_commit'][:8]}" if r["git_commit"] else ""),
            ]
        )
    _table(rows)


@click.command("mlflow-ui")
@click.option("--port", "-p", default=5000, show_default=True, type=click.IntRange(1, 65535))
@handle_errors
def mlflow_ui(port: int) -> None:
    """Serve the MLflow UI for the local tracking store on 127.0.0.1 (Ctrl-C stops it)."""
    from importlib.util import find_spec

    from ..errors import MissingBackendDependency

    client = _client()
    cfg = client.tracking.config
    if cfg.artifact_root is None:
        raise InvalidRequest(
            f"tracking goes to the server at {cfg.safe_uri}: open its UI there "
            "(unset MLFLOW_TRACKING_URI to serve the embedded store)"
        )
    if find_spec("mlflow.server") is None or find_spec("flask") is None:
        raise MissingBackendDependency(
            "the MLflow UI needs the full mlflow package; install it with: "
            "pip install 'qmlops-jupyter[mlflow]'"
        )
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise InvalidRequest(
                f"port {port} on 127.0.0.1 is in use; pick another with --port"
            ) from None
    if cfg.embedded:
        client.settings.ensure_home()
        (client.settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    from ..tracking.ui import mlflow_server_command

    # The store's URI goes in the environment: a command line is readable by any local user.
    argv, extra = mlflow_server_command(cfg, port)
    env = {**os.environ, **extra}
    click.echo(
        f"MLflow UI for {cfg.safe_uri} at http://127.0.0.1:{port}/ (Ctrl-C to stop)", err=True
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
