"""What the dashboards show, read from real ledgers (SQLite and PostgreSQL) seeded with known
jobs, checked against the seeded rows themselves; the figures' SVG; the widgets of each
dashboard in this process (no browser: ``tests/test_dashboards_browser.py`` renders them
through Voila)."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import BELL_QASM2

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.dashboards import UnknownDashboard, charts, dashboard, data, notebook_path
from qmlops_jupyter.ledger.store import Ledger
from qmlops_jupyter.testing.seed import seed_jobs

ACTIVE = {"CREATED", "SUBMITTING", "QUEUED", "RUNNING", "CANCELLING"}


def _billable(row: dict[str, Any]) -> bool:
    return not (row["state"] == "CANCELLED" and row["submitted_at"] is None)


def _cost(row: dict[str, Any]) -> float:
    for key in ("actual_cost_usd", "estimated_cost_usd"):
        if row[key] is not None:
            return float(row[key])
    return 0.0


@pytest.fixture
def seeded(ledger: Ledger) -> tuple[Ledger, list[dict[str, Any]]]:
    rows = seed_jobs(ledger, 600, ("alice", "bob"), days=10, seed=7)
    return ledger, rows


def test_counts_pages_and_filters_match_the_seeded_jobs(
    seeded: tuple[Ledger, list[dict[str, Any]]],
) -> None:
    ledger, rows = seeded
    alice = [r for r in rows if r["owner"] == "alice"]
    counts = data.job_counts(ledger, data.JobFilter("alice"))
    assert counts.total == len(alice) == 300
    assert counts.by_state == dict(Counter(r["state"] for r in alice))
    assert counts.by_backend == dict(Counter(r["backend"] for r in alice))
    assert sum(sum(v.values()) for v in counts.by_backend_state.values()) == 300
    assert data.job_counts(ledger, data.JobFilter(None)).total == 600

    newest = sorted(alice, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    first = data.job_page(ledger, data.JobFilter("alice"), 1, 50)
    assert (first.total, first.pages, first.first, first.last) == (300, 6, 1, 50)
    assert [j.id for j in first.jobs] == [r["id"] for r in newest[:50]]
    third = data.job_page(ledger, data.JobFilter("alice"), 3, 50)
    assert [j.id for j in third.jobs] == [r["id"] for r in newest[100:150]]
    past = data.job_page(ledger, data.JobFilter("alice"), 99, 50)
    assert past.page == 6 and [j.id for j in past.jobs] == [r["id"] for r in newest[250:]]

    failed = data.job_page(ledger, data.JobFilter("alice", states=("failed",)), 1, 1000)
    assert {j.id for j in failed.jobs} == {r["id"] for r in alice if r["state"] == "FAILED"}
    backend = alice[0]["backend"]
    on_one = data.job_page(ledger, data.JobFilter("alice", backends=(backend,)), 1, 1000)
    assert on_one.total == sum(r["backend"] == backend for r in alice)

    named = next(r for r in alice if r["name"])
    found = data.job_page(ledger, data.JobFilter("alice", text=named["name"].upper()), 1, 50)
    assert [j.id for j in found.jobs] == [named["id"]]
    by_id = data.job_page(ledger, data.JobFilter("alice", text=alice[5]["id"][:10]), 1, 50)
    assert alice[5]["id"] in {j.id for j in by_id.jobs}
    # LIKE's wildcards are text, not patterns.
    for text in ("%", "_", "seeded-%"):
        assert data.job_page(ledger, data.JobFilter("alice", text=text), 1, 50).total == 0
    with pytest.raises(data.InvalidRequest, match="page_size"):
        data.job_page(ledger, data.JobFilter("alice"), 1, 0)


def test_durations_attention_spend_and_the_queued_estimate(
    seeded: tuple[Ledger, list[dict[str, Any]]],
) -> None:
    ledger, rows = seeded
    alice = [r for r in rows if r["owner"] == "alice"]
    times = data.durations(ledger, data.JobFilter("alice"))
    started = [r for r in alice if r["started_at"] is not None]
    assert times.sampled == len(started)
    assert len(times.queue_seconds) == sum(r["submitted_at"] is not None for r in started)
    assert len(times.run_seconds) == sum(r["finished_at"] is not None for r in started)
    expected_queue = sorted(
        (r["started_at"] - r["submitted_at"]).total_seconds()
        for r in started
        if r["submitted_at"] is not None
    )
    assert sorted(times.queue_seconds) == pytest.approx(expected_queue, abs=1e-5)

    now = ledger.clock()
    flagged = data.attention(ledger, "alice", limit=1000)
    expected = {
        r["id"]
        for r in alice
        if r["state"] == "NEEDS_ATTENTION"
        or (r["state"] == "FAILED" and r["finished_at"] >= now - timedelta(days=1))
        or (r["state"] in ("QUEUED", "SUBMITTING") and r["created_at"] < now - timedelta(days=1))
    }
    assert {a.job.id for a in flagged} == expected and expected
    reasons = {a.job.state.value: a.reason for a in flagged}
    assert "check with the provider" in reasons["NEEDS_ATTENTION"]
    assert reasons["FAILED"] == "failed: the device refused the circuit"

    spend = data.spend(ledger, None, days=30)
    totals: dict[tuple[Any, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for r in rows:
        if _billable(r):
            cell = totals[(r["created_at"].date(), r["backend"], r["owner"])]
            cell[0] += 1
            cell[1] += r["shots"] * r["num_circuits"]
            cell[2] += _cost(r)
    got = {(s.day, s.backend, s.owner): [s.jobs, s.shots, s.usd] for s in spend}
    assert got.keys() == totals.keys()
    for key, (n, shots, usd) in totals.items():
        assert got[key][:2] == [n, shots] and got[key][2] == pytest.approx(usd, abs=1e-5)
    assert {s.owner for s in data.spend(ledger, "bob", days=30)} == {"bob"}
    recent = data.spend(ledger, "alice", days=1)
    assert all(s.day == now.date() for s in recent)
    with pytest.raises(data.InvalidRequest, match="days"):
        data.spend(ledger, "alice", days=0)

    queued = data.queued_estimate(ledger, "alice")
    active = [r for r in alice if r["state"] in ACTIVE]
    assert queued.jobs == len(active)
    assert queued.shots == sum(r["shots"] * r["num_circuits"] for r in active)
    assert queued.usd == pytest.approx(sum(r["estimated_cost_usd"] or 0 for r in active))
    assert set(queued.by_backend) == {r["backend"] for r in active}


def test_seeded_unfinished_jobs_are_remote_and_leased_elsewhere(ledger: Ledger) -> None:
    """So an engine here never claims them and no local simulator's slots are taken."""
    rows = seed_jobs(ledger, 300, ("alice",), seed=3)
    unfinished = [r for r in rows if r["state"] not in ("COMPLETED", "FAILED", "CANCELLED")]
    assert unfinished
    assert not {r["backend"] for r in unfinished} & {"aer", "ibm:fake_manila"}
    assert all(r["lease_expires_at"] > datetime.now(UTC) + timedelta(days=300) for r in unfinished)
    assert ledger.count_in_flight(None, "aer") == 0


# -- the registry ---------------------------------------------------------------------------------


def test_the_registry_names_three_dashboards_and_finds_their_notebooks() -> None:
    for name in ("jobs", "experiments", "cost"):
        path = notebook_path(name)
        assert path.name == f"{name}.ipynb" and path.is_file()
        assert f"{name}_dashboard()" in path.read_text()
    assert dashboard(" Jobs ").name == "jobs"
    with pytest.raises(UnknownDashboard, match="no dashboard named 'nope'; there are: jobs"):
        dashboard("nope")


# -- figures ----------------------------------------------------------------------------------


def test_the_charts_carry_what_they_show() -> None:
    svg = charts.bar_chart("by_state", "Jobs by state", [("COMPLETED", 7), ("FAILED", 2)])
    marks = dict(re.findall(r'data-label="([^"]+)" data-value="([^"]+)"', svg))
    assert marks == {"COMPLETED": "7", "FAILED": "2"}
    assert 'data-empty="true"' in charts.bar_chart("x", "X", [])
    buckets = dict(charts.duration_buckets([0.05, 0.5, 5, 30, 120, 1200, 7200, 30000, 1e6]))
    assert all(n == 1 for n in buckets.values()) and len(buckets) == 9
    line = charts.line_chart("metric", "loss", {"a": [(0, 1.0), (1, 0.5)], "b": [(0, 2.0)]})
    assert re.findall(r'class="qmlops-series" data-label="(\w)" data-value="([\d.]+)"', line) == [
        ("a", "0.5"),
        ("b", "2.0"),
    ]
    assert "<script" not in charts.bar_chart("x", "<script>", [("<script>", 1)])
    arn = "braket:arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"
    assert charts.short_backend(arn) == "braket:ionq/Aria-1"
    assert charts.short_backend("aer") == "aer"


# -- the widgets, in this process ----------------------------------------------------------------


@pytest.fixture
def dash_client(home: Path) -> Client:
    client = Client(Settings.from_env(home=home, owner="alice"))
    yield client
    client.close()


def test_the_jobs_dashboard_pages_filters_and_follows_the_ledger(dash_client: Client) -> None:
    from qmlops_jupyter.dashboards.views import JobsDashboard

    seed_jobs(dash_client.ledger, 130, ("alice",), seed=11)
    board = JobsDashboard(dash_client, live=True, interval=0.1)
    try:
        assert 'data-figure="total" data-value="130"' in board.headline.value
        assert 'data-pages="3"' in board.table.value
        assert board.prev_button.disabled and not board.next_button.disabled
        board.last_button.click()
        assert board.page == 3 and board.next_button.disabled
        assert board.table.value.count("<tr data-job=") == 30
        board.state_filter.value = "COMPLETED"
        assert board.page == 1
        completed = data.job_counts(dash_client.ledger, data.JobFilter("alice")).by_state[
            "COMPLETED"
        ]
        assert f'data-total="{completed}"' in board.table.value
        assert "data-error" not in board.status.value or 'data-error="false"' in board.status.value
        # A job moves: the page reads the ledger again by itself.
        dash_client.submit(BELL_QASM2, shots=10, wait=True)
        deadline = time.monotonic() + 10
        while 'data-value="131"' not in board.headline.value and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'data-figure="total" data-value="131"' in board.headline.value
    finally:
        board.close()
    assert board._thread is not None
    board._thread.join(5)
    assert not board._thread.is_alive()  # closing the page stops its thread


def test_the_cost_dashboard_adds_up_the_period_and_shows_the_budgets(dash_client: Client) -> None:
    from qmlops_jupyter.dashboards.views import CostDashboard

    rows = seed_jobs(dash_client.ledger, 200, ("alice",), days=20, seed=5)
    dash_client.set_budget(usd_per_month=1000.0)
    board = CostDashboard(dash_client, days=7)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(6)
    week = [r for r in rows if _billable(r) and r["created_at"] >= start]
    shown = re.search(r'data-figure="jobs_period" data-value="(\d+)"', board.headline.value)
    assert shown and int(shown.group(1)) == len(week)
    usd = float(re.search(r'data-figure="usd_period" data-value="([\d.e-]+)"',
                          board.headline.value).group(1))  # fmt: skip
    assert usd == pytest.approx(sum(_cost(r) for r in week), abs=1e-4)
    assert 'data-label="USD this month, all backends"' in board.budget_box.value
    board.period.value = 30
    shown = re.search(r'data-figure="jobs_period" data-value="(\d+)"', board.headline.value)
    assert int(shown.group(1)) == sum(_billable(r) for r in rows)
    board.close()


def test_a_dashboard_says_what_went_wrong_on_one_line(
    dash_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger that cannot be read: the status line says so in one line, nothing raises, and
    the page recovers on the next refresh."""
    from qmlops_jupyter.dashboards.views import JobsDashboard

    board = JobsDashboard(dash_client, live=False)

    def unreadable(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the disk is gone\nsecond line")

    with monkeypatch.context() as patch:
        patch.setattr(data, "job_counts", unreadable)
        board.refresh()
    assert 'data-error="true"' in board.status.value
    assert "RuntimeError: the disk is gone second line" in board.status.value
    board.refresh()
    assert 'data-error="false"' in board.status.value
    board.close()
