"""Notifications: the ends of pipeline runs and jobs, recorded and POSTed to a webhook.

Real throughout: the receiver is an ``http.server`` on 127.0.0.1 in a thread, answering as each
test scripts it; pipeline runs are real ``qmlops pipeline run`` invocations (papermill, an
ipykernel kernel); jobs run on Aer, through a real :class:`~qmlops_jupyter.engine.host.Engine`
or in-process; the ledger is SQLite (and PostgreSQL for the migration). The webhook URL carries
a token in its path and its query: it must show up nowhere but in the requests themselves.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from pipeline_helpers import parameterised_notebook, pipeline_rows
from qmlops_testing import BELL_QASM2, free_port

from qmlops_jupyter._version import __version__
from qmlops_jupyter.cli.main import cli
from qmlops_jupyter.client import Client, reset_client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.ledger import HEAD_REVISION, Ledger
from qmlops_jupyter.ledger.migrate import alembic_config, current_revision
from qmlops_jupyter.pipelines import notify
from qmlops_jupyter.pipelines.host import PipelineHost

PATH_TOKEN = "T0KENpathXq93kd0a8f7e6d5c4b3"
QUERY_TOKEN = "sk-hook-query-5e4d3c2b1a09"
#: Pieces of the URL that must never show: the whole of it, and each token alone.
LEAKS = [PATH_TOKEN, QUERY_TOKEN]


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next scripted status (the
    last one over and over), after ``delay`` seconds, and keeps what it was sent."""

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.answered: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = (
                    receiver.statuses.pop(0)
                    if len(receiver.statuses) > 1
                    else (receiver.statuses[0])
                )
                receiver.answered.append(status)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.stop()


def receiver(receivers: list[Receiver], statuses: list[int], delay: float = 0.0) -> Receiver:
    r = Receiver(statuses, delay)
    receivers.append(r)
    return r


write_notebook = parameterised_notebook


def configure(home: Path, **section: Any) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(yaml.safe_dump({"notifications": section}))


@pytest.fixture
def package_logger() -> Iterator[None]:
    """The CLI sets up the package's logger (its own handler, no propagation): put it back
    afterwards, so caplog sees what the engine side logs."""
    logger = logging.getLogger("qmlops_jupyter")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def host_for(client: Client, name: str = "test-engine") -> PipelineHost:
    return PipelineHost(client.ledger, client.settings, name)


def rows(client: Client) -> list[dict[str, Any]]:
    with client.ledger.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(sa.text("SELECT * FROM notifications ORDER BY id"))
        ]


def assert_no_leak(*texts: object) -> None:
    for text in texts:
        for leak in LEAKS:
            assert leak not in str(text), f"webhook token in {str(text)[:300]!r}"


def send_until(host: PipelineHost, done: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "notification not delivered in time"
        notify.send_due(host)
        time.sleep(0.05)


# -- pipeline runs ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pipeline_run_end_is_delivered_once_after_retries(
    home: Path,
    tmp_path: Path,
    receivers: list[Receiver],
    package_logger: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real ``qmlops pipeline run`` (papermill, a kernel) against a receiver that answers
    500, 500, then 200: the run tries once itself, the engine host's pass retries with backoff,
    and exactly one delivery succeeds, every attempt with the same delivery id."""
    hook = receiver(receivers, [500, 500, 200])
    configure(home, webhook_url=hook.url, retry_delay=0.2, timeout=5, max_attempts=5)
    notebook = write_notebook(tmp_path / "overnight.ipynb", "n = 1", "print(n * 2)")
    caplog.set_level(logging.DEBUG)
    reset_client()
    result = CliRunner().invoke(
        cli,
        ["--log-level", "DEBUG", "--log-format", "json", "pipeline", "run", str(notebook),
         "-p", "n", "21", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["state"] == "COMPLETED"
    # The run's own try: one POST, answered 500.
    assert hook.answered == [500]
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (ended,) = [e for e in logged if e.get("event") == "pipeline_run.completed"]
    assert run["id"] in ended["message"] and "http://127.0.0.1" in ended["message"]
    assert_no_leak(result.stdout, result.stderr)

    client = Client(Settings.from_env(home=home))
    host = host_for(client)
    (row,) = rows(client)
    assert row["state"] == "pending" and row["attempts"] == 1 and row["subject_id"] == run["id"]
    assert row["last_error"] == f"HTTP 500 from http://127.0.0.1:{hook.server.server_port}"
    send_until(host, lambda: rows(client)[0]["state"] == "sent")
    for _ in range(5):  # nothing more to send
        notify.send_due(host)
    assert hook.answered == [500, 500, 200]
    (row,) = rows(client)
    assert row["attempts"] == 3 and row["last_error"] is None and row["sent_at"] is not None
    # Every attempt was the same delivery.
    assert {r["headers"]["X-Qmlops-Delivery"] for r in hook.requests} == {str(row["id"])}
    sent = hook.requests[-1]
    assert sent["path"] == f"/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}"
    assert sent["headers"]["User-Agent"] == f"qmlops-jupyter/{__version__}"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-Qmlops-Event"] == "pipeline_run.completed"
    body = sent["body"]
    assert body["delivery_id"] == row["id"]
    assert body["event"] == "pipeline_run.completed" and body["kind"] == "pipeline_run"
    assert body["id"] == run["id"] and body["state"] == "COMPLETED"
    assert body["owner"] == run["owner"] and body["notebook"] == str(notebook.resolve())
    assert body["output_path"] == run["output_path"] and body["error"] is None
    assert body["mlflow_run_id"] is None  # tracking is off here
    assert body["finished_at"] == run["finished_at"].replace("Z", "+00:00")
    assert body["text"].startswith(f"qmlops: pipeline run {run['id']} (overnight.ipynb) completed")
    # The read API.
    (listed,) = notify.notifications(client.ledger, run["owner"])
    assert listed.id == row["id"] and listed.state == "sent" and listed.attempts == 3
    assert listed.payload == {k: v for k, v in body.items() if k != "delivery_id"}
    assert notify.notifications(client.ledger, "someone-else") == []
    assert_no_leak(caplog.text, rows(client), listed.model_dump_json())
    client.close()


@pytest.mark.slow
def test_a_failed_run_is_sent_and_a_filter_skips_the_rest(
    home: Path, tmp_path: Path, receivers: list[Receiver]
) -> None:
    """``states: [FAILED]``: a failing notebook's end is POSTed with its cell and error line;
    a completed run's end is recorded but marked skipped (no POST)."""
    hook = receiver(receivers, [204])
    configure(home, webhook_url=hook.url, states=["failed"])
    good = write_notebook(tmp_path / "good.ipynb", "n = 1", "print(n)")
    bad = write_notebook(tmp_path / "bad.ipynb", "n = 1", "raise ValueError(f'bad n: {n}')")
    runner = CliRunner()
    reset_client()
    assert runner.invoke(cli, ["pipeline", "run", str(good)]).exit_code == 0
    reset_client()
    failed = runner.invoke(cli, ["pipeline", "run", str(bad), "--json"])
    assert failed.exit_code == 8
    run = json.loads(failed.stdout)
    assert len(hook.requests) == 1
    body = hook.requests[0]["body"]
    assert body["event"] == "pipeline_run.failed" and body["id"] == run["id"]
    assert body["error"] == "ValueError: bad n: 1" and body["error_cell"] == 1
    assert "failed after" in body["text"] and "at cell 1: ValueError: bad n: 1" in body["text"]
    client = Client(Settings.from_env(home=home))
    states = {r["event"]: (r["state"], r["attempts"]) for r in rows(client)}
    assert states == {
        "pipeline_run.completed": ("skipped", 0),
        "pipeline_run.failed": ("sent", 1),
    }
    client.close()


def test_the_runs_own_try_waits_at_most_the_timeout(
    client: Client, receivers: list[Receiver]
) -> None:
    """A receiver slower than ``timeout``: recording the run's end returns after about the
    timeout, and the row stays leased (pending) for the engine host to finish."""
    from qmlops_jupyter.pipelines.models import PipelineRunState
    from qmlops_jupyter.pipelines.store import PipelineRuns

    hook = receiver(receivers, [200], delay=4.0)
    configure(client.settings.home, webhook_url=hook.url, timeout=1)
    store = PipelineRuns(client.ledger)
    run = store.create(
        owner=client.owner, notebook="/nb/slow.ipynb", parameters={}, max_retries=0,
        timeout=None, experiment=None,
    )  # fmt: skip
    run = store.update(run.id, state=PipelineRunState.COMPLETED, finished_at=client.ledger.clock())
    started = time.monotonic()
    notify.pipeline_run_ended(client, run)
    took = time.monotonic() - started
    assert took < 1.8, f"the run's end took {took:.1f} s to record"
    assert len(hook.requests) == 1
    (row,) = rows(client)
    assert row["state"] == "pending" and row["lease_holder"] is not None
    # Leased: the engine host's pass does not send it again meanwhile.
    notify.send_due(host_for(client))
    assert len(hook.requests) == 1
    # Recording the same end again changes nothing.
    notify.pipeline_run_ended(client, run)
    assert len(rows(client)) == 1 and len(hook.requests) == 1


# -- jobs ------------------------------------------------------------------------------------------


def test_a_job_ended_by_a_real_engine_is_delivered(
    client: Client, receivers: list[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    """A job run on Aer by a real engine host: the next notifications pass finds its end in
    the job event log and POSTs ``job.completed``; the passes after find nothing."""
    from qmlops_jupyter.engine.host import Engine

    hook = receiver(receivers, [200])
    configure(client.settings.home, webhook_url=hook.url, events=["job"])
    caplog.set_level(logging.INFO, logger="qmlops_jupyter")
    host = host_for(client)
    notify.send_due(host)
    job = client.submit(BELL_QASM2, shots=64, name="bell-night")
    engine = Engine(client.ledger, client.registry, holder="test-engine", isolate_local=False)
    deadline = time.monotonic() + 60
    while not client.ledger.get_job(job.id).state.terminal:
        engine.step()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    notify.send_due(host)  # one pass finds the end and sends it
    assert len(hook.requests) == 1
    for _ in range(3):
        notify.send_due(host)
    assert len(hook.requests) == 1
    record = client.ledger.get_job(job.id)
    body = hook.requests[0]["body"]
    assert body["event"] == "job.completed" and body["kind"] == "job"
    assert body["id"] == job.id and body["state"] == "COMPLETED" and body["owner"] == client.owner
    assert body["name"] == "bell-night" and body["backend"] == "aer" and body["shots"] == 64
    assert body["finished_at"] == record.finished_at.isoformat()
    assert body["text"] == f"qmlops: job {job.id} (bell-night) on aer completed"
    (row,) = rows(client)
    assert row["kind"] == "job" and row["subject_id"] == job.id and row["state"] == "sent"
    assert hook.requests[0]["headers"]["X-Qmlops-Delivery"] == str(row["id"])
    events = [r for r in caplog.records if getattr(r, "event", None) == "job.completed"]
    assert len(events) == 1 and events[0].job_id == job.id
    assert_no_leak(caplog.text, rows(client))


def test_a_first_start_does_not_announce_the_past(
    client: Client, receivers: list[Receiver]
) -> None:
    """Without a cursor (an engine meeting this ledger for the first time), reading starts at
    the log's end: jobs that ended before are not announced, the next one is. Without a
    webhook, ends are still recorded, as skipped."""
    hook = receiver(receivers, [200])
    with client.ledger.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM notification_cursors"))
    old = client.submit(BELL_QASM2, shots=10, wait=True)
    configure(client.settings.home, webhook_url=hook.url)
    host = host_for(client)
    notify.send_due(host)
    assert rows(client) == [] and hook.requests == []
    new = client.submit(BELL_QASM2, shots=10, wait=True)
    send_until(host, lambda: len(hook.requests) == 1)
    assert hook.requests[0]["body"]["id"] == new.id != old.id
    # No webhook: the end is recorded, not sent.
    configure(client.settings.home)
    third = client.submit(BELL_QASM2, shots=10, wait=True)
    notify.send_due(host)
    by_subject = {r["subject_id"]: r["state"] for r in rows(client)}
    assert by_subject == {new.id: "sent", third.id: "skipped"}
    assert len(hook.requests) == 1


def test_a_404_is_final_and_not_retried(
    client: Client, receivers: list[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    """A 4xx other than 429 will not get better: one attempt, the row failed with the status,
    a warning naming the receiver by scheme and host only."""
    hook = receiver(receivers, [404])
    configure(client.settings.home, webhook_url=hook.url, retry_delay=0, max_attempts=5)
    caplog.set_level(logging.DEBUG)
    host = host_for(client)
    job = client.submit(BELL_QASM2, shots=10, wait=True)
    send_until(host, lambda: rows(client) and rows(client)[0]["state"] != "pending")
    for _ in range(5):
        notify.send_due(host)
    assert hook.answered == [404]
    (row,) = rows(client)
    target = f"http://127.0.0.1:{hook.server.server_port}"
    assert row["subject_id"] == job.id and row["state"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == f"HTTP 404 from {target}"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        f"notification {row['id']} (job.completed, job {job.id}) was not delivered to {target}: "
        f"refused at attempt 1: HTTP 404 from {target}"
    )
    assert_no_leak(caplog.text, rows(client))


def test_an_unreachable_receiver_is_given_up_after_max_attempts(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the port: each attempt is a connection error, retried with backoff
    until ``max_attempts``; the last error is kept and a warning logged, without the URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}"
    configure(client.settings.home, webhook_url=url, retry_delay=0.05, max_attempts=3)
    caplog.set_level(logging.DEBUG)
    host = host_for(client)
    client.submit(BELL_QASM2, shots=10, wait=True)
    attempts: list[int] = []

    def given_up() -> bool:
        (row,) = rows(client) or [None]
        if row is not None and (not attempts or attempts[-1] != row["attempts"]):
            attempts.append(row["attempts"])
        return row is not None and row["state"] == "failed"

    send_until(host, given_up)
    (row,) = rows(client)
    assert row["attempts"] == 3 and attempts[-3:] == [1, 2, 3]
    assert row["last_error"].startswith(f"could not reach http://127.0.0.1:{port}: ConnectError")
    assert row["next_attempt_at"] is None and row["lease_holder"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gave up after attempt 3" in warnings[0]
    assert_no_leak(caplog.text, rows(client))
    assert url not in caplog.text


def test_hosts_on_one_ledger_never_send_one_row_twice(
    home: Path, ledger_url: str, receivers: list[Receiver]
) -> None:
    """Three engine hosts' passes at once on one ledger (SQLite, PostgreSQL), each with its
    own connections, and a slow receiver: every end is delivered exactly once."""
    hook = receiver(receivers, [200], delay=0.1)
    configure(home, webhook_url=hook.url)
    settings = Settings.from_env(home=home, database_url=ledger_url)
    clients = [Client(settings) for _ in range(3)]
    jobs = [clients[0].submit(BELL_QASM2, shots=10, wait=True) for _ in range(6)]
    hosts = [PipelineHost(c.ledger, c.settings, f"engine-{i}") for i, c in enumerate(clients)]
    go = threading.Barrier(len(hosts))

    def work(h: PipelineHost) -> None:
        go.wait()
        for _ in range(20):
            notify.send_due(h)

    threads = [threading.Thread(target=work, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["body"]["id"] for r in hook.requests) == sorted(j.id for j in jobs)
    assert [(r["state"], r["attempts"]) for r in rows(clients[0])] == [("sent", 1)] * 6
    for c in clients:
        c.close()


def test_an_idle_pass_is_one_indexed_select(client: Client, receivers: list[Receiver]) -> None:
    """When nothing happened, the engine host's pass costs one SELECT, and it searches the
    job event log's key and the outbox's due-time index (no scan)."""
    hook = receiver(receivers, [200])
    configure(client.settings.home, webhook_url=hook.url)
    host = host_for(client)
    client.submit(BELL_QASM2, shots=10, wait=True)
    notify.send_due(host)
    assert len(hook.requests) == 1
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if not statement.startswith(("BEGIN", "PRAGMA")):
            statements.append((statement, parameters))

    sa.event.listen(client.ledger.engine, "before_cursor_execute", seen)
    try:
        for _ in range(3):
            notify.send_due(host)
    finally:
        sa.event.remove(client.ledger.engine, "before_cursor_execute", seen)
    assert len(statements) == 3 and all(s.lstrip().startswith("SELECT") for s, _ in statements)
    statement, parameters = statements[0]
    with client.ledger.engine.connect() as conn:
        plan = " ".join(
            str(r) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        )
    assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), plan
    assert "ix_notifications_next_attempt_at" in plan and "INTEGER PRIMARY KEY" in plan, plan


def test_an_event_committed_late_is_not_skipped(postgres_url: str, home: Path) -> None:
    """PostgreSQL hands out event sequence numbers at insert, and transactions commit in any
    order: a job's end written in a transaction still open when a later event is already
    visible must still be found once it commits (the cursor waits at the gap)."""
    from qmlops_jupyter.circuits import prepare
    from qmlops_jupyter.states import JobState

    configure(home)
    client = Client(Settings.from_env(home=home, database_url=postgres_url))
    ledger = client.ledger
    host = host_for(client)
    notify.send_due(host)

    def new_job() -> str:
        job, _ = ledger.create_job(
            owner="alice", backend="aer", shots=10, prepared=prepare(BELL_QASM2),
            request_hash="h", actor="test",
        )  # fmt: skip
        return job.id

    early, late = new_job(), new_job()
    with ledger._write() as conn:
        # The early job's end takes its sequence number now; it commits at the end of this block.
        ledger._transition(conn, early, JobState.CREATED, JobState.CANCELLED, "t", None, None, {})
        assert ledger.transition(late, JobState.CREATED, JobState.CANCELLED, actor="t")
        notify.send_due(host)  # sees the late end past a gap: waits
        assert rows(client) == []
    notify.send_due(host)
    assert {r["subject_id"]: r["event"] for r in rows(client)} == {
        early: "job.cancelled",
        late: "job.cancelled",
    }
    client.close()


# -- config ----------------------------------------------------------------------------------------


def test_bad_notification_config_is_a_one_line_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook that is not http(s), an unknown state, a bad QMLOPS_WEBHOOK_URL: exit 6 with
    one line naming the field (never the URL), before any run is written."""
    notebook = write_notebook(tmp_path / "nb.ipynb", "n = 1", "print(n)")
    runner = CliRunner()
    ftp = f"ftp://files.example.com/{PATH_TOKEN}?token={QUERY_TOKEN}"
    cases: list[tuple[dict[str, Any], str | None, str]] = [
        ({"webhook_url": ftp}, None, "notifications.webhook_url: Value error, must be an "
         "http:// or https:// URL"),
        ({"states": ["DONE"]}, None, "notifications.states: Value error, unknown state 'DONE'"),
        ({"timeout": 0}, None, "notifications.timeout: Input should be greater than 0"),
        ({"events": ["pipeline_run", "email"]}, None, "notifications.events.1: Input should be"),
        ({}, ftp, "QMLOPS_WEBHOOK_URL: must be an http:// or https:// URL"),
    ]  # fmt: skip
    for section, env, message in cases:
        configure(home, **section)
        if env is None:
            monkeypatch.delenv("QMLOPS_WEBHOOK_URL", raising=False)
        else:
            monkeypatch.setenv("QMLOPS_WEBHOOK_URL", env)
        reset_client()
        result = runner.invoke(cli, ["pipeline", "run", str(notebook)])
        assert result.exit_code == 6, (section, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qmlops: error: "), lines
        assert message in lines[0], lines
        assert_no_leak(result.output)
    assert pipeline_rows(home) == []


def test_the_environment_wins_and_off_turns_it_off(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real config file and environment: QMLOPS_WEBHOOK_URL wins over the file, ``off``
    turns the webhook off, and the URL shows in no repr or dump (scheme and host only)."""
    configure(home, webhook_url="https://hooks.example.com/from-file", timeout=3)
    settings = Settings.from_env(home=home)
    assert notify.webhook(settings).target == "https://hooks.example.com"
    monkeypatch.setenv("QMLOPS_WEBHOOK_URL", f"https://other.example.org:8443/x/{PATH_TOKEN}")
    hook = notify.webhook(settings)
    assert hook.target == "https://other.example.org:8443" and hook.timeout == 3
    assert_no_leak(repr(hook), settings.config().model_dump_json())
    monkeypatch.setenv("QMLOPS_WEBHOOK_URL", "off")
    assert notify.webhook(settings) is None


# -- the migration ---------------------------------------------------------------------------------


def test_migration_0009_upgrades_and_downgrades(ledger_url: str) -> None:
    """On SQLite and PostgreSQL: head has the tables and a cursor at the log's end; down to
    0008 removes them; up again restores them."""
    from alembic import command

    ledger = Ledger.open(ledger_url)
    try:
        assert current_revision(ledger) == HEAD_REVISION

        def tables() -> set[str]:
            with ledger.engine.connect() as conn:
                return set(sa.inspect(conn).get_table_names())

        assert {"notifications", "notification_cursors"} <= tables()
        with ledger.engine.connect() as conn:
            cursor = conn.execute(sa.text("SELECT name, seq FROM notification_cursors")).all()
        assert [tuple(c) for c in cursor] == [("job_events", 0)]
        with ledger.engine.begin() as conn:
            command.downgrade(alembic_config(ledger, conn), "0008")
        assert current_revision(ledger) == "0008"
        assert not {"notifications", "notification_cursors"} & tables()
        with ledger.engine.begin() as conn:
            command.upgrade(alembic_config(ledger, conn), "head")
        assert current_revision(ledger) == HEAD_REVISION
        assert {"notifications", "notification_cursors"} <= tables()
    finally:
        ledger.close()
