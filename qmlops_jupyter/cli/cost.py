"""``qmlops estimate`` and ``qmlops budget``: what a job would cost, and the owner's limits.

``estimate`` prices OpenQASM files on a backend from the public prices in the pricing file,
saying how; ``budget set`` / ``show`` / ``remove`` keep the shots-per-day and USD-per-month
limits every submit is checked against (a job over one fails with exit code 9).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from ..errors import InvalidRequest
from .main import _client, _json_out, _read_circuit, _table, handle_errors

if TYPE_CHECKING:
    from ..cost.budgets import BudgetStatus


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--backend", "-b", default="aer", show_default=True, help="Backend name.")
@click.option("--shots", "-s", default=1024, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@handle_errors
def estimate(files: Sequence[str], backend: str, shots: int, as_json: bool) -> None:
    """Estimate the price of running OpenQASM FILEs ('-' reads stdin) as one job.

    Nothing is submitted or written; the job's checks (circuit text, qubits, shots) run.
    """
    texts = [_read_circuit(path) for path in files]
    result = _client().estimate(texts, backend=backend, shots=shots)
    if as_json:
        _json_out(result.model_dump(mode="json"))
        return
    price = "unknown" if result.usd is None else f"${result.usd:,.2f}"
    if result.usd is not None and 0 < result.usd < 0.01:
        price = f"${result.usd:.6f}".rstrip("0")
    click.echo(f"estimate  {price}  ({result.circuits} circuit(s) x {shots} shots on {backend})")
    click.echo(f"basis     {result.basis}")
    for part, value in result.breakdown.items():
        click.echo(f"  {part:<16}{value:g}")
    if result.as_of:
        click.echo(f"prices    as of {result.as_of}; an estimate, not a quote")


@click.group()
def budget() -> None:
    """Your budgets: shots per day and USD per month, for all backends or for one."""


@budget.command("set")
@click.option("--shots-per-day", type=int, default=None, help="Most shots per UTC day.")
@click.option("--usd-per-month", type=float, default=None, help="Most USD per calendar month.")
@click.option("--backend", "-b", default=None, help="Only for this backend (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the budget as JSON.")
@handle_errors
def budget_set(
    shots_per_day: int | None, usd_per_month: float | None, backend: str | None, as_json: bool
) -> None:
    """Set (or change) a budget; limits not given keep their values."""
    if shots_per_day is None and usd_per_month is None:
        raise InvalidRequest("give --shots-per-day, --usd-per-month or both")
    status = _client().set_budget(
        backend=backend, shots_per_day=shots_per_day, usd_per_month=usd_per_month
    )
    if as_json:
        _json_out(status.model_dump(mode="json"))
        return
    _show([status])


@budget.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@handle_errors
def budget_show(as_json: bool) -> None:
    """Each budget: its limit, what is used this day/month, and what remains."""
    statuses = _client().budgets()
    if as_json:
        _json_out([s.model_dump(mode="json") for s in statuses])
        return
    if not statuses:
        click.echo("no budgets (qmlops budget set --shots-per-day N --usd-per-month X)")
        return
    _show(statuses)


@budget.command("remove")
@click.option("--backend", "-b", default=None, help="The backend's budget (default: all).")
@handle_errors
def budget_remove(backend: str | None) -> None:
    """Remove a budget."""
    from ..cost.budgets import remove_budget

    client = _client()
    if not remove_budget(client.ledger, client.owner, backend):
        click.echo(f"no budget for {backend or 'all backends'}", err=True)


def _show(statuses: Sequence[BudgetStatus]) -> None:
    from ..cost.budgets import BUDGET_COLUMNS, budget_rows

    _table([list(BUDGET_COLUMNS), *budget_rows(statuses)])
