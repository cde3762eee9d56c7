"""Budgets: shots per day and USD per month, per owner and optionally per backend; checked
atomically at submit (20 real processes, SQLite and PostgreSQL); reset at the day and month
boundaries; a refused job leaves nothing but its refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from qmlops_testing import BELL_QASM2, FakeClock, submit_together

from qmlops_jupyter.cli import cli
from qmlops_jupyter.client import Client, reset_client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.cost.budgets import refusals_of, shots_used_today
from qmlops_jupyter.errors import BudgetExceeded, InvalidRequest
from qmlops_jupyter.ledger import Ledger


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def budget_client(home: Path, ledger_url: str, clock: FakeClock) -> Iterator[Client]:
    ledger = Ledger.open(ledger_url, clock=clock)
    c = Client(Settings.from_env(home=home), ledger=ledger)
    yield c
    ledger.close()


@pytest.fixture
def priced_aer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Aer at $0.50 a task and $0.01 a shot, so money budgets can be tested offline."""
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text(
        "rules:\n  - match: [aer]\n    model: task_shot\n    per_task: 0.5\n    per_shot: 0.01\n"
    )
    monkeypatch.setenv("QMLOPS_PRICING_FILE", str(pricing))


def counts(ledger: Ledger) -> dict[str, int]:
    with ledger.engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("jobs", "job_payloads", "job_events", "budget_refusals")
        }


def test_shots_per_day_refuses_and_resets_at_the_day_boundary(
    budget_client: Client, clock: FakeClock
) -> None:
    c = budget_client
    c.set_budget(shots_per_day=2500)
    c.submit(BELL_QASM2, shots=1000)
    c.submit([BELL_QASM2, BELL_QASM2], shots=700)  # two circuits: 1400 shots
    with pytest.raises(BudgetExceeded) as err:
        c.submit(BELL_QASM2, shots=200)
    assert str(err.value) == (
        "budget exceeded: shots per day for all backends: limit 2500, used 2400 today, "
        "this job 200 shots"
    )
    assert err.value.exit_code == 9 and err.value.http_status == 422
    c.submit(BELL_QASM2, shots=100)  # exactly fills it
    [status] = c.budgets()
    assert (status.shots_per_day.limit, status.shots_per_day.used) == (2500, 2500)
    assert status.shots_per_day.remaining == 0
    clock.advance(24 * 3600)  # the next UTC day
    [status] = c.budgets()
    assert status.shots_per_day.used == 0 and status.shots_per_day.remaining == 2500
    c.submit(BELL_QASM2, shots=2500)
    assert shots_used_today(c.ledger, c.owner) == 2500


def test_a_refused_job_leaves_only_its_refusal(budget_client: Client) -> None:
    c = budget_client
    c.set_budget(shots_per_day=100)
    before = counts(c.ledger)
    with pytest.raises(BudgetExceeded):
        c.submit(BELL_QASM2, shots=101, name="too-big", idempotency_key="k1")
    after = counts(c.ledger)
    assert after == {**before, "budget_refusals": before["budget_refusals"] + 1}
    [refusal] = refusals_of(c.ledger, c.owner)
    assert refusal.shots == 101 and refusal.backend == "aer"
    assert refusal.message.startswith("budget exceeded: shots per day")
    # The key was not used up: the same request fits once the budget is raised.
    c.set_budget(shots_per_day=1000)
    job = c.submit(BELL_QASM2, shots=101, name="too-big", idempotency_key="k1")
    assert c.get_job(job.id).record.shots == 101


def test_usd_per_month_counts_estimates_and_resets_monthly(
    budget_client: Client, clock: FakeClock, priced_aer: None
) -> None:
    c = budget_client
    clock.now = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    c.set_budget(usd_per_month=5.0)
    c.submit(BELL_QASM2, shots=150)  # $0.50 + $1.50 = $2.00
    c.submit(BELL_QASM2, shots=200)  # $2.50 -> $4.50 used
    with pytest.raises(BudgetExceeded, match=r"limit \$5.00, used \$4.50 this month, this job "):
        c.submit(BELL_QASM2, shots=10)  # $0.60
    [status] = c.budgets()
    assert status.usd_per_month.used == pytest.approx(4.5)
    assert status.usd_per_month.remaining == pytest.approx(0.5)
    clock.advance(3600)  # February
    c.submit(BELL_QASM2, shots=10)
    [status] = c.budgets()
    assert status.usd_per_month.used == pytest.approx(0.6)


def test_actual_cost_replaces_the_estimate_in_usage(
    budget_client: Client, priced_aer: None
) -> None:
    c = budget_client
    job = c.submit(BELL_QASM2, shots=150)  # estimated $2.00
    with c.ledger.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET actual_cost_usd = 0.25 WHERE id = :id"), {"id": job.id}
        )
    c.set_budget(usd_per_month=1.0)
    [status] = c.budgets()
    assert status.usd_per_month.used == pytest.approx(0.25)


def test_backend_budgets_apply_to_that_backend_only(budget_client: Client) -> None:
    c = budget_client
    c.set_budget(backend="braket_local", shots_per_day=100)
    c.submit(BELL_QASM2, shots=5000)  # aer: not limited
    c.submit(BELL_QASM2, backend="braket_local", shots=100)
    with pytest.raises(BudgetExceeded, match="for backend braket_local: limit 100, used 100"):
        c.submit(BELL_QASM2, backend="braket_local", shots=1)
    # An all-backends budget applies on top of it.
    c.set_budget(shots_per_day=5100)
    with pytest.raises(BudgetExceeded, match="for all backends: limit 5100, used 5100"):
        c.submit(BELL_QASM2, shots=1)
    statuses = {s.backend: s for s in c.budgets()}
    assert set(statuses) == {"*", "braket_local"}
    assert statuses["*"].shots_per_day.used == 5100


def test_setting_one_limit_keeps_the_other(budget_client: Client) -> None:
    c = budget_client
    c.set_budget(shots_per_day=10, usd_per_month=3.0)
    status = c.set_budget(shots_per_day=20)
    assert status.shots_per_day.limit == 20 and status.usd_per_month.limit == 3.0
    with pytest.raises(InvalidRequest):
        c.set_budget()
    with pytest.raises(InvalidRequest):
        c.set_budget(shots_per_day=-1)


def test_budgets_are_per_owner(budget_client: Client, home: Path) -> None:
    c = budget_client
    c.set_budget(shots_per_day=10)
    other = Client(Settings.from_env(home=home, owner="someone-else"), ledger=c.ledger)
    other.submit(BELL_QASM2, shots=1000)
    assert other.budgets() == []
    c.submit(BELL_QASM2, shots=10)


def test_budget_cli_set_show_json_and_exit_code(home: Path, tmp_path: Path) -> None:
    bell = tmp_path / "bell.qasm"
    bell.write_text(BELL_QASM2)
    runner = CliRunner()

    def run(*args: str):
        reset_client()
        return runner.invoke(cli, list(args), catch_exceptions=False)

    assert run("budget", "show").output.startswith("no budgets")
    out = run("budget", "set", "--shots-per-day", "1500", "--usd-per-month", "20")
    assert out.exit_code == 0 and "1500 shots" in out.output
    assert run("budget", "set").exit_code == 2
    assert run("budget", "set", "--shots-per-day", "5", "--backend", "nope:x").exit_code == 3
    assert run("submit", str(bell), "--shots", "1000").exit_code == 0
    refused = run("submit", str(bell), "--shots", "1000")
    assert refused.exit_code == 9
    assert "budget exceeded: shots per day for all backends: limit 1500, used 1000" in (
        refused.output
    )
    [data] = json.loads(run("budget", "show", "--json").output)
    assert data["backend"] == "*"
    assert data["shots_per_day"]["limit"] == 1500
    assert data["shots_per_day"]["used"] == 1000
    assert data["shots_per_day"]["remaining"] == 500
    assert data["usd_per_month"] == {
        "limit": 20.0,
        "used": 0.0,
        "remaining": 20.0,
        "period_start": data["usd_per_month"]["period_start"],
    }
    text = run("budget", "show").output
    assert "REMAINING" in text and "500" in text
    assert run("budget", "remove").exit_code == 0
    assert run("budget", "show").output.startswith("no budgets")


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_twenty_concurrent_submits_against_a_budget_for_ten(
    home: Path, tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """Twenty `qmlops submit` processes at once, 100 shots each, 1000 shots a day left:
    exactly ten are accepted, ten refused (exit 9), and usage never passes the limit."""
    url = None if database == "sqlite" else request.getfixturevalue("postgres_url")
    settings = Settings.from_env(home=home, database_url=url)
    setup = Client(settings)
    setup.set_budget(shots_per_day=1000)
    setup.ledger.close()
    circuit = tmp_path / "bell.qasm"
    circuit.write_text(BELL_QASM2)
    env = {"QMLOPS_HOME": str(home)}
    if url:
        env["QMLOPS_DATABASE_URL"] = url
    outcomes = submit_together(
        env, ["submit", str(circuit), "--shots", "100", "--json"], 20, tmp_path / "go"
    )
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0] * 10 + [9] * 10, [err.decode()[-300:] for *_, err in outcomes]
    for code, _, err in outcomes:
        if code == 9:
            assert b"budget exceeded: shots per day" in err
    check = Client(settings)
    assert shots_used_today(check.ledger, check.owner) == 1000
    [status] = check.budgets()
    assert status.shots_per_day.used == 1000 and status.shots_per_day.remaining == 0
    with check.ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 10
        assert conn.execute(sa.text("SELECT count(*) FROM job_payloads")).scalar() == 10
        assert conn.execute(sa.text("SELECT count(*) FROM budget_refusals")).scalar() == 10
    check.ledger.close()
