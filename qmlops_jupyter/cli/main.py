"""The ``qmlops`` command line: backends, submit, jobs, show, wait, cancel, engine, demo, creds,
estimate, budget, runs, mlflow-ui, pipeline, dashboard.

Exit codes: 0 success; 1 unexpected error; 2 bad input; 3 unknown backend or job; 4 conflict;
5 backend unavailable; 6 configuration error; 7 wait timed out; 8 job did not complete;
9 budget exceeded.
Errors are one line on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._version import __version__
from ..errors import InvalidRequest, QmlopsError

if TYPE_CHECKING:
    from ..client import Client
    from ..models import JobRecord

F = TypeVar("F", bound=Callable[..., Any])


def _client() -> Client:
    from ..client import get_client

    return get_client()


def handle_errors(func: F) -> F:
    """Turn qmlops errors into a one-line message on stderr and the error's exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QmlopsError as exc:
            from ..vault.redaction import redact

            click.echo(redact(f"qmlops: error: {exc}"), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("qmlops: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _job_json(record: JobRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qmlops")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or one JSON object per line (default: QMLOPS_LOG_FORMAT).",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def cli(log_format: str | None, log_level: str) -> None:
    """qmlops: one persistent job ledger for every quantum backend."""
    from ..logs import configure_logging

    configure_logging(log_format, log_level)


# -- backends ----------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def backends(as_json: bool) -> None:
    """List backends: kind (simulator or QPU), limits, availability and whether credentials
    are configured. Never waits on a provider's network for long."""
    infos = _client().backends()
    if as_json:
        _json_out([i.model_dump(mode="json") for i in infos])
        return
    rows = [["NAME", "KIND", "MAX QUBITS", "MAX SHOTS", "CONCURRENT", "CREDENTIALS", "STATUS"]]
    for i in infos:
        if i.kind == "unknown":
            kind = "-"
        else:
            kind = ("local " if i.local else "") + ("simulator" if i.simulator else "QPU")
        status = i.status if i.available else f"unavailable: {i.status}"
        if not i.enabled:
            status = "disabled"
        rows.append(
            [
                i.name,
                kind,
                str(i.max_qubits or "-"),
                str(i.max_shots),
                str(i.max_concurrent_jobs),
                i.credentials,
                status,
            ]
        )
    _table(rows)


# -- submit ------------------------------------------------------------------------------------


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--backend", "-b", default="aer", show_default=True, help="Backend name.")
@click.option("--shots", "-s", default=1024, show_default=True, type=int)
@click.option("--name", default=None, help="A name for the job.")
@click.option(
    "--idempotency-key",
    default=None,
    help="Submitting again with the same key returns the same job.",
)
@click.option("--seed", default=None, type=int, help="Simulator seed (repeatable counts).")
@click.option(
    "--credential",
    default=None,
    metavar="ALIAS",
    help="A stored credential (see 'qmlops creds') to call the provider with.",
)
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job to finish.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@handle_errors
def submit(
    files: Sequence[str],
    backend: str,
    shots: int,
    name: str | None,
    idempotency_key: str | None,
    seed: int | None,
    credential: str | None,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Submit OpenQASM 2/3 FILEs ('-' reads stdin) as one job."""
    texts, labels = [], []
    for path in files:
        texts.append(_read_circuit(path))
        labels.append("stdin" if path == "-" else path)
    client = _client()
    job = client.submit(
        texts,
        backend=backend,
        shots=shots,
        name=name,
        idempotency_key=idempotency_key,
        seed=seed,
        labels=labels,
        credential=credential,
    )
    if wait_:
        _finish_wait(client, job.id, timeout, as_json)
        return
    record = job.record
    if as_json:
        _json_out(_job_json(record))
        return
    click.echo(f"{record.id}")
    if client.engine_alive():
        click.echo(
            f"job {record.id} is {record.state.value}; an engine host will run it.", err=True
        )
    else:
        click.echo(
            f"job {record.id} is {record.state.value}; no engine host is running: start one "
            f"with 'qmlops engine', or run it here with 'qmlops wait {record.id}'.",
            err=True,
        )


def _read_circuit(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidRequest(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidRequest(f"{path}: is a directory, not an OpenQASM file") from None
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc.strerror}") from None


# -- jobs, show, wait, cancel ------------------------------------------------------------------


@cli.command()
@click.option("--state", default=None, help="Only jobs in this state (e.g. COMPLETED).")
@click.option("--backend", default=None, help="Only jobs of this backend.")
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handle_errors
def jobs(state: str | None, backend: str | None, limit: int, as_json: bool) -> None:
    """List your jobs, newest first."""
    client = _client()
    page = client.ledger.list_jobs(client.owner, state=state, backend=backend, limit=limit)
    if as_json:
        _json_out([_job_json(r) for r in page.jobs])
        return
    if not page.jobs:
        click.echo("no jobs yet: try 'qmlops demo' or 'qmlops submit FILE --wait'")
        return
    rows = [["ID", "STATE", "BACKEND", "SHOTS", "CIRCUITS", "CREATED", "NAME"]]
    for r in page.jobs:
        rows.append(
            [
                r.id,
                r.state.value,
                r.backend,
                str(r.shots),
                str(len(r.circuits)),
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.name or "",
            ]
        )
    _table(rows)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("--events", "with_events", is_flag=True, help="Also show the job's event log.")
@click.option("--qasm", "with_qasm", is_flag=True, help="Also show each circuit's OpenQASM 3.")
@handle_errors
def show(job_id: str, as_json: bool, with_events: bool, with_qasm: bool) -> None:
    """Show one job (an id or a unique prefix of one)."""
    client = _client()
    record = client.ledger.get_job(job_id, client.owner)
    events = client.ledger.events(record.id) if with_events else None
    qasm = client.ledger.circuit_qasm3(record.id) if with_qasm else None
    if as_json:
        data = _job_json(record)
        if events is not None:
            data["events"] = [e.model_dump(mode="json") for e in events]
        if qasm is not None:
            data["qasm3"] = qasm
        _json_out(data)
        return
    _print_job(record)
    if events is not None:
        click.echo("events:")
        for e in events:
            change = f"{e.from_state or '-'} -> {e.to_state}" if e.kind == "transition" else e.kind
            click.echo(
                f"  {e.at:%H:%M:%S.%f}  {change:<28} {e.actor}"
                + (f"  {e.message}" if e.message else "")
            )
    if qasm is not None:
        for i, text in enumerate(qasm):
            click.echo(f"--- circuit {i} (OpenQASM 3) ---\n{text.rstrip()}")


@cli.command()
@click.argument("job_id")
@click.option("--timeout", default=None, type=float, help="Give up after S seconds (exit 7).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@handle_errors
def wait(job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a job; exit 0 only when it COMPLETED."""
    _finish_wait(_client(), job_id, timeout, as_json)


def _finish_wait(client: Client, job_id: str, timeout: float | None, as_json: bool) -> None:
    from ..errors import JobFailed
    from ..states import JobState

    record = client.wait(job_id, timeout)
    if as_json:
        _json_out(_job_json(record))
    else:
        _print_job(record)
    if record.state is not JobState.COMPLETED:
        why = f": {record.error}" if record.error else ""
        raise JobFailed(f"job {record.id} ended {record.state.value}{why}")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@handle_errors
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job (at the provider too, once an engine host sees the request)."""
    record = _client().cancel(job_id)
    if as_json:
        _json_out(_job_json(record))
    else:
        click.echo(f"job {record.id} is {record.state.value}")


# -- engine ------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--tick",
    default=1.0,
    show_default=True,
    type=float,
    help="Seconds between looks at the ledger when nothing wakes the engine.",
)
@click.option(
    "--lease-ttl",
    default=30.0,
    show_default=True,
    type=float,
    help="Seconds a job lease lasts without renewal (crash takeover time).",
)
@handle_errors
def engine(tick: float, lease_ttl: float) -> None:
    """Run an engine host in the foreground until SIGTERM or Ctrl-C."""
    import asyncio
    import signal

    from ..engine import Engine
    from ..ledger.store import default_holder
    from ..pipelines.host import PipelineHost

    if tick <= 0 or lease_ttl <= 0:
        raise InvalidRequest("--tick and --lease-ttl must be positive")
    client = _client()
    holder = default_holder()
    host = Engine(
        client.ledger,
        client.registry,
        owner=client.owner,
        tick=tick,
        lease_ttl=lease_ttl,
        wake_dir=client.settings.home / "run",
        vault=client.vault,
        tracking=client.tracking if client.tracking.config.enabled else None,
        holder=holder,
        pipelines=PipelineHost(client.ledger, client.settings, holder),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.start()
        click.echo(
            f"qmlops engine {host.holder} running; ledger {client.ledger.url}; Ctrl-C to stop",
            err=True,
        )
        await stop.wait()
        click.echo("qmlops engine stopping", err=True)
        await host.stop()

    asyncio.run(main())


# -- demo --------------------------------------------------------------------------------------


@cli.command()
@click.option("--shots", default=1024, show_default=True, type=int)
@click.option("--backend", default="aer", show_default=True)
@handle_errors
def demo(shots: int, backend: str) -> None:
    """Run textbook circuits (Bell, GHZ, QFT) through the ledger and show the results."""
    from .demo import run_demo

    run_demo(_client(), backend=backend, shots=shots, echo=click.echo)


# -- output helpers ----------------------------------------------------------------------------


def _print_job(r: JobRecord) -> None:
    click.echo(f"job       {r.id}" + (f"  ({r.name})" if r.name else ""))
    click.echo(f"state     {r.state.value}" + (f"  error: {r.error}" if r.error else ""))
    click.echo(f"backend   {r.backend}   shots {r.shots}   circuits {len(r.circuits)}")
    click.echo(f"created   {r.created_at:%Y-%m-%d %H:%M:%S %Z}")
    if r.provider_job_id:
        click.echo(f"provider  {r.provider_job_id}")
    if r.queue_position is not None and r.state.value == "QUEUED":
        click.echo(f"queue     position {r.queue_position} at the provider")
    if r.estimated_cost_usd or r.actual_cost_usd is not None:  # free jobs need no line
        est = "unknown" if r.estimated_cost_usd is None else f"${r.estimated_cost_usd:,.2f}"
        actual = "" if r.actual_cost_usd is None else f"   actual ${r.actual_cost_usd:,.2f}"
        click.echo(f"cost      estimated {est}{actual}")
    lineage = r.lineage or {}
    source = lineage.get("notebook") or lineage.get("script")
    if source:
        git = lineage.get("git") or {}
        commit = f" @{git['commit'][:10]}" if git.get("commit") else ""
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        click.echo(f"source    {source}{commit}{dirty}")
    if r.mlflow_run_id:
        click.echo(f"mlflow    run {r.mlflow_run_id}")
    if r.phases:
        click.echo("phases    " + "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in r.phases.items()))
    if r.result is not None:
        for i, counts in enumerate(r.result.counts[:10]):
            click.echo(f"counts[{i}] {format_counts(counts, r.result.shots)}")
        if len(r.result.counts) > 10:
            click.echo(f"... and {len(r.result.counts) - 10} more circuits (use --json)")


def format_counts(counts: dict[str, int], shots: int, top: int = 4) -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values()) or shots or 1
    parts = [f"{k}: {v} ({100 * v / total:.1f}%)" for k, v in ranked[:top]]
    if len(ranked) > top:
        parts.append(f"+{len(ranked) - top} more")
    return "  ".join(parts)


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


from .creds import creds  # noqa: E402  (a command group of its own module)

cli.add_command(creds)

from .cost import budget, estimate  # noqa: E402  (cost commands, their own module)

cli.add_command(estimate)
cli.add_command(budget)

from .tracking import mlflow_ui, runs  # noqa: E402  (tracking commands, their own module)

cli.add_command(runs)
cli.add_command(mlflow_ui)

from .pipeline import pipeline  # noqa: E402  (pipeline commands, their own module)

cli.add_command(pipeline)

from .dashboard import dashboard  # noqa: E402  (the dashboard server, its own module)

cli.add_command(dashboard)

from .admin import admin  # noqa: E402  (operator commands, their own module)

cli.add_command(admin)


def main() -> None:
    cli(prog_name="qmlops")
