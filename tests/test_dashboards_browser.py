"""The Jobs, Experiments and Cost dashboards as a user sees them: Voila's server extension in a
real ``jupyter server`` (the qmlops and Voila extensions as installed, token auth on) renders
``notebooks/dashboards/*.ipynb`` from the server's root, in headless Chromium (``browser.py``).

The ledger holds 10,000 made-up jobs of ``alice`` (``qmlops_jupyter.testing.seed``), 300 of
``bob`` (who is not the server's user, so none of his may show), two MLflow runs of five real
Aer jobs each (tracking on: the embedded MLflow store), and a budget. Each test reads the
figures off the rendered page (their ``data-figure`` / ``data-value`` attributes, the table's
rows) and compares them with the ledger, read here with plain SQL, and with the MLflow store.
A second server, on an empty ledger, shows every dashboard saying there is nothing yet.
Screenshots of each page go to ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("browser")
from browser import ARTIFACTS, Chromium, wait_until  # noqa: E402
from qmlops_testing import JupyterServer, jupyter_env  # noqa: E402

pytest_plugins = ["browser"]

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "notebooks" / "dashboards"
ALICE_JOBS = 10_000
RENDER_TIMEOUT = 120_000  # ms: a kernel starts per page view

#: Run in the server's environment before it starts: the ledger's known contents.
SEED = """
import json, sys
import qmlops_jupyter as q
from qmlops_jupyter.client import get_client
from qmlops_jupyter.testing.seed import seed_jobs

client = get_client()
seed_jobs(client.ledger, 10_000, ("alice",), seed=1)
seed_jobs(client.ledger, 300, ("bob",), seed=2)
bell = ('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
        'h q[0]; cx q[0], q[1]; c = measure q;')
runs = {}
for lr in (0.1, 0.3):
    with q.track("dash-exp", run_name=f"lr-{lr}", params={"lr": lr}) as run:
        for step in range(5):
            q.submit(bell, shots=100, wait=True, seed=step)
            run.log_step(step, energy=-1.0 - lr * step)
    assert run.flush(60)
    runs[run.run_id] = -1.0 - lr * 4
client.set_budget(usd_per_month=50_000.0, shots_per_day=50_000_000)
print(json.dumps(runs))
"""


def _server(folder: Path, **env: str) -> JupyterServer:
    root = folder / "root"
    shutil.copytree(DASHBOARDS, root / "notebooks" / "dashboards")
    environment = jupyter_env(folder / "qmlops-home", folder, **env)
    return JupyterServer(root, environment, folder / "server.log")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("dashboards")
    server = _server(folder, QMLOPS_OWNER="alice", QMLOPS_TRACKING="on")
    (folder / "qmlops-home").mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [sys.executable, "-c", SEED],
        env=server.env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    runs = json.loads(made.stdout.strip().splitlines()[-1])
    server.start()
    try:
        yield {"server": server, "runs": runs, "db": folder / "qmlops-home" / "ledger.sqlite"}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    folder = tmp_path_factory.mktemp("dashboards-empty")
    server = _server(folder, QMLOPS_OWNER="alice", QMLOPS_TRACKING="on")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sql(db: Path, statement: str, **params: Any) -> list[Any]:
    """The ledger, read with plain SQL (not the dashboards' own queries)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(statement), params).all())
    finally:
        engine.dispose()


@pytest.fixture
def page(chromium: Chromium, request: pytest.FixtureRequest) -> Iterator[Any]:
    chromium.enter()
    tab = chromium.context.new_page()
    tab.set_default_timeout(RENDER_TIMEOUT)
    console: list[str] = []
    tab.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    try:
        yield tab
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failed.png"), full_page=True)
            print("browser console:\n" + "\n".join(console[-60:]))
        tab.close()
    finally:
        chromium.leave()


def open_dashboard(page: Any, server: JupyterServer, name: str, wait_for: str) -> None:
    """The dashboard through Voila, logged in by the token; returns once ``wait_for`` shows."""
    url = f"{server.base}/voila/render/notebooks/dashboards/{name}.ipynb?token={server.token}"
    response = page.goto(url)
    assert response is not None and response.status == 200, response and response.status
    page.wait_for_selector(wait_for, state="attached")


def figure(page: Any, name: str) -> float:
    return float(page.locator(f'[data-figure="{name}"]').first.get_attribute("data-value"))


def bars(page: Any, name: str) -> dict[str, float]:
    marks = page.locator(f'[data-figure="{name}"] .qmlops-bar')
    return {
        marks.nth(i).get_attribute("data-label"): float(marks.nth(i).get_attribute("data-value"))
        for i in range(marks.count())
    }


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


# -- Jobs -------------------------------------------------------------------------------------


def test_the_jobs_dashboard_shows_the_ledgers_counts_table_pages_and_filters(
    seeded: dict[str, Any], page: Any
) -> None:
    server, db = seeded["server"], seeded["db"]
    open_dashboard(page, server, "jobs", ".qmlops-job-table")
    screenshot(page, "jobs")

    by_state = dict(sql(db, "SELECT state, count(*) FROM jobs WHERE owner='alice' GROUP BY state"))
    by_backend = dict(
        sql(db, "SELECT backend, count(*) FROM jobs WHERE owner='alice' GROUP BY backend")
    )
    total = sum(by_state.values())
    assert total == ALICE_JOBS + 10  # the seeded jobs and the runs' Aer jobs
    assert figure(page, "total") == total
    assert figure(page, "completed") == by_state["COMPLETED"]
    assert figure(page, "failed") == by_state["FAILED"]
    assert figure(page, "needs_attention") == by_state["NEEDS_ATTENTION"]
    active = ("CREATED", "SUBMITTING", "QUEUED", "RUNNING", "CANCELLING")
    assert figure(page, "active") == sum(by_state.get(s, 0) for s in active)
    assert bars(page, "by_state") == {k: float(v) for k, v in by_state.items()}
    assert bars(page, "by_backend") == {k: float(v) for k, v in by_backend.items()}
    matrix = sql(
        db, "SELECT backend, state, count(*) FROM jobs WHERE owner='alice' GROUP BY backend, state"
    )
    cells = page.locator("table.qmlops-backend-states td[data-state]")
    shown = {
        (
            cells.nth(i).locator("xpath=..").get_attribute("data-backend"),
            cells.nth(i).get_attribute("data-state"),
        ): int(cells.nth(i).get_attribute("data-value"))
        for i in range(cells.count())
    }
    assert {k: v for k, v in shown.items() if v} == {(b, s): n for b, s, n in matrix}

    newest = [
        r[0]
        for r in sql(
            db,
            "SELECT id FROM jobs WHERE owner='alice' ORDER BY created_at DESC, id DESC LIMIT 100",
        )
    ]
    table = page.locator("table.qmlops-job-table")
    assert int(table.get_attribute("data-total")) == total
    assert int(table.get_attribute("data-pages")) == math.ceil(total / 50)
    rows = page.locator("table.qmlops-job-table tbody tr")
    assert rows.count() == 50
    assert [rows.nth(i).get_attribute("data-job") for i in range(50)] == newest[:50]
    bob = {r[0] for r in sql(db, "SELECT id FROM jobs WHERE owner='bob'")}
    assert not bob & set(newest[:50])

    # The next page: jobs 51-100.
    page.locator("button[title='next page']").click()
    page.wait_for_selector("table.qmlops-job-table[data-page='2']", state="attached")
    rows = page.locator("table.qmlops-job-table tbody tr")
    assert [rows.nth(i).get_attribute("data-job") for i in range(50)] == newest[50:100]
    # The last page, at once.
    page.locator("button[title='last page']").click()
    last = math.ceil(total / 50)
    page.wait_for_selector(f"table.qmlops-job-table[data-page='{last}']", state="attached")
    assert rows.count() == total - (last - 1) * 50

    # Filtered by state: the failed jobs only, from page 1.
    page.locator(".widget-dropdown select").first.select_option("FAILED")
    failed = by_state["FAILED"]
    page.wait_for_selector(f"table.qmlops-job-table[data-total='{failed}']", state="attached")
    assert page.locator("table.qmlops-job-table").get_attribute("data-page") == "1"
    states = page.locator("table.qmlops-job-table tbody [data-state]")
    assert {states.nth(i).get_attribute("data-state") for i in range(states.count())} == {"FAILED"}

    # Needing attention: NEEDS_ATTENTION, failures of the last day, jobs queued over a day.
    day_ago = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    expected = sql(
        db,
        "SELECT count(*) FROM jobs WHERE owner='alice' AND (state='NEEDS_ATTENTION' OR "
        "(state='FAILED' AND finished_at >= :day) OR "
        "(state IN ('QUEUED','SUBMITTING') AND created_at < :day))",
        day=day_ago,
    )[0][0]
    shown = int(page.locator(".qmlops-attention").first.get_attribute("data-count"))
    assert shown == min(20, expected) and shown > 0

    # The queue time distribution follows the filter: the failed jobs that started.
    started = sql(
        db,
        "SELECT count(*) FROM jobs WHERE owner='alice' AND state='FAILED' "
        "AND started_at IS NOT NULL AND submitted_at IS NOT NULL",
    )[0][0]
    wait_until(lambda: sum(bars(page, "queue_time").values()) == started, 30, "queue times")


def test_the_jobs_dashboard_follows_the_ledger_live(seeded: dict[str, Any], page: Any) -> None:
    """A job submitted while the page is open is counted without a reload."""
    server = seeded["server"]
    open_dashboard(page, server, "jobs", ".qmlops-job-table")
    before = figure(page, "total")
    job = server.api(
        "POST",
        "/jobs",
        {
            "backend": "aer",
            "circuits": ["OPENQASM 2.0; qreg q[1]; creg c[1]; measure q -> c;"],
            "shots": 10,
        },
    )
    page.wait_for_selector(f'[data-figure="total"][data-value="{int(before) + 1}"]', timeout=30_000)
    page.wait_for_selector(f'table.qmlops-job-table tr[data-job="{job["id"]}"]', state="attached")


# -- Cost -------------------------------------------------------------------------------------


def test_the_cost_dashboard_shows_the_ledgers_spend_budgets_and_queued_estimate(
    seeded: dict[str, Any], page: Any
) -> None:
    db = seeded["db"]
    open_dashboard(page, seeded["server"], "cost", '[data-figure="usd_by_day"]')
    screenshot(page, "cost")
    now = datetime.now(UTC)
    start = (datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=29)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    billable = "owner='alice' AND NOT (state='CANCELLED' AND submitted_at IS NULL)"
    cost = "coalesce(actual_cost_usd, estimated_cost_usd, 0)"
    n, shots, usd = sql(
        db,
        f"SELECT count(*), sum(shots*num_circuits), sum({cost}) FROM jobs "
        f"WHERE {billable} AND created_at >= :start",
        start=start,
    )[0]
    assert figure(page, "jobs_period") == n
    assert figure(page, "shots_period") == shots
    assert figure(page, "usd_period") == pytest.approx(usd, abs=1e-4)
    per_backend = dict(
        sql(
            db,
            f"SELECT backend, sum({cost}) FROM jobs WHERE {billable} AND created_at >= :start "
            "GROUP BY backend",
            start=start,
        )
    )
    assert bars(page, "usd_by_backend") == pytest.approx(per_backend, abs=1e-4)
    assert bars(page, "usd_by_user") == pytest.approx({"alice": usd}, abs=1e-4)
    assert sum(bars(page, "shots_by_day").values()) == shots

    month = datetime(now.year, now.month, 1, tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
    month_usd = sql(
        db, f"SELECT sum({cost}) FROM jobs WHERE {billable} AND created_at >= :m", m=month
    )[0][0]
    meter = page.locator('[data-figure="budget"][data-label="USD this month, all backends"]')
    assert float(meter.get_attribute("data-value")) == pytest.approx(month_usd, abs=1e-4)
    assert float(meter.get_attribute("data-limit")) == 50_000.0

    active = "('CREATED','SUBMITTING','QUEUED','RUNNING','CANCELLING')"
    queued_n, queued_usd = sql(
        db,
        f"SELECT count(*), sum(coalesce(estimated_cost_usd, 0)) FROM jobs "
        f"WHERE owner='alice' AND state IN {active}",
    )[0]
    assert figure(page, "queued_jobs") == queued_n
    assert figure(page, "queued_usd") == pytest.approx(queued_usd, abs=1e-4)


# -- Experiments --------------------------------------------------------------------------------


def test_the_experiments_dashboard_shows_the_runs_their_curves_and_their_jobs(
    seeded: dict[str, Any], page: Any
) -> None:
    db, runs = seeded["db"], seeded["runs"]
    open_dashboard(page, seeded["server"], "experiments", "table.qmlops-runs")
    screenshot(page, "experiments")
    table = page.locator("table.qmlops-runs")
    assert table.get_attribute("data-runs") == "2"
    heads = page.locator("table.qmlops-runs th[data-run]")
    assert {heads.nth(i).get_attribute("data-run") for i in range(2)} == set(runs)
    assert page.locator("table.qmlops-runs tr[data-row='lr'] td").all_inner_texts() in (
        ["0.1", "0.3"],
        ["0.3", "0.1"],
    )
    # The user's metric is the curve shown: one series per run, ending at the last value.
    series = page.locator('[data-figure="metric"] .qmlops-series')
    assert series.count() == 2
    last = sorted(float(series.nth(i).get_attribute("data-value")) for i in range(2))
    assert last == pytest.approx(sorted(runs.values()))
    assert {series.nth(i).get_attribute("data-points") for i in range(2)} == {"5"}

    # The jobs behind the run picked, as the ledger links them, with their circuits.
    label = page.locator(".widget-dropdown select").nth(2).input_value()
    [chosen] = [r for r in runs if f"({r[:8]})" in label]
    jobs = {r[0] for r in sql(db, "SELECT id FROM jobs WHERE mlflow_run_id = :r", r=chosen)}
    assert len(jobs) == 5
    rows = page.locator("table.qmlops-run-jobs tbody tr")
    assert {rows.nth(i).get_attribute("data-job") for i in range(rows.count())} == jobs
    circuit = page.locator("details.qmlops-circuit").first
    circuit.locator("summary").click()
    assert "OPENQASM 3" in circuit.inner_text()


# -- an empty ledger, and who may look ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("jobs", "No jobs in the ledger yet"),
        ("cost", "No jobs in the last 30 days"),
        ("experiments", "No tracked runs yet"),
    ],
)
def test_each_dashboard_says_so_on_an_empty_ledger(
    empty: JupyterServer, page: Any, name: str, says: str
) -> None:
    open_dashboard(page, empty, name, ".qmlops-dashboard-empty")
    assert says in page.locator(".qmlops-dashboard-empty").first.inner_text()
    errors = page.locator('[data-error="true"]')
    assert errors.count() == 0, errors.all_inner_texts()
    if name == "jobs":
        assert figure(page, "total") == 0
    if name == "cost":
        assert figure(page, "usd_period") == 0
    screenshot(page, f"{name}-empty")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=60) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", ""), exc.read().decode(errors="replace")


@pytest.mark.parametrize("name", ["jobs", "experiments", "cost"])
def test_the_dashboards_refuse_requests_without_the_token(
    seeded: dict[str, Any], name: str
) -> None:
    server = seeded["server"]
    url = f"{server.base}/voila/render/notebooks/dashboards/{name}.ipynb"
    for headers in ({}, {"Authorization": "token not-the-token"}):
        status, location, body = _get(url, headers)
        assert status in (302, 403), (status, body[:300])
        assert status == 403 or "/login" in location
        assert "qmlops" not in body
    status, _, _ = _get(url, {"Authorization": f"token {server.token}"})
    assert status == 200


def test_a_failing_dashboard_cell_shows_no_traceback(seeded: dict[str, Any], page: Any) -> None:
    """Voila's tracebacks are off: an error says a cell failed, never what or where."""
    server = seeded["server"]
    broken = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "boom",
                "metadata": {},
                "outputs": [],
                "source": "raise RuntimeError('private detail /srv/secret-path')",
            }
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (server.root / "broken.ipynb").write_text(json.dumps(broken))
    response = page.goto(f"{server.base}/voila/render/broken.ipynb?token={server.token}")
    assert response is not None and response.status == 200
    page.wait_for_load_state("networkidle")
    html = page.content()
    assert "secret-path" not in html and "Traceback" not in html
