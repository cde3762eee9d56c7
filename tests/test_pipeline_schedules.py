"""Saved pipelines on cron schedules, run by engine hosts.

Real here: croniter, the ledger (SQLite in the test's home; PostgreSQL for two engine hosts),
the Engine (in-process on asyncio, or ``qmlops engine`` processes), the runner processes an
engine host launches (``qmlops pipeline run-queued``), papermill and ipykernel kernels running
a tiny notebook. The catch-up test gives the engine host's pipeline duties a settable clock
(``FakeClock``) so due times an hour apart pass in a moment; everything else runs on real time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import qmlops_testing
import sqlalchemy as sa
from pipeline_helpers import cli_invoker, parameterised_notebook
from qmlops_testing import FakeClock, wait_for

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.errors import InvalidRequest, PipelineExists, PipelineNotFound
from qmlops_jupyter.ledger import Ledger
from qmlops_jupyter.pipelines import watch
from qmlops_jupyter.pipelines.host import PipelineHost
from qmlops_jupyter.pipelines.models import CatchUp, Schedule
from qmlops_jupyter.pipelines.schedules import (
    Pipelines,
    check_cron,
    choose_due_time,
    list_runs,
    next_due,
    run_now,
)
from qmlops_jupyter.pipelines.store import PipelineRuns, runs

SECRET = "sk-schedule-test-0123456789abcdef"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def write_notebook(path: Path, *cells: str) -> Path:
    return parameterised_notebook(path, "n = 1", *(cells or ("print('n is', n)",)))


@pytest.fixture
def run(home: Path, monkeypatch: pytest.MonkeyPatch):
    return cli_invoker(monkeypatch)


def table_count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def run_rows(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger._read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(runs)).all()]


def live_processes(run_id: str) -> list[int]:
    """Processes (not zombies) whose environment names the run: papermill's child, the kernel."""
    found = []
    marker = f"QMLOPS_PIPELINE_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and marker in (entry / "environ").read_bytes().split(b"\0")
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_run_processes(run_ids: list[str]) -> None:
    """SIGKILL whatever still runs for these runs (papermill's child, its kernel)."""
    markers = {f"QMLOPS_PIPELINE_RUN_ID={r}".encode() for r in run_ids}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if markers & set((entry / "environ").read_bytes().split(b"\0")):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


class EngineThread:
    """A real :class:`~qmlops_jupyter.engine.Engine` on its own asyncio loop in a thread."""

    def __init__(self, client: Client, pipelines: PipelineHost) -> None:
        from qmlops_jupyter.engine import Engine

        self.engine = Engine(
            client.ledger,
            client.registry,
            owner=client.owner,
            tick=0.2,
            holder=pipelines.holder,
            isolate_local=False,
            pipelines=pipelines,
            pipelines_every=0.05,
        )
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self.ready.wait(60), "the engine did not start"

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        await self.engine.start()
        self.ready.set()
        await self.stopping.wait()
        await self.engine.stop()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(60)
        assert not self.thread.is_alive()


# -- the rules, without processes ----------------------------------------------------------------


def test_cron_checks_and_the_catch_up_rules(tmp_path: Path) -> None:
    """Real croniter and zoneinfo; the catch-up choice is a pure function of the clock."""
    assert check_cron("0  3 * * *") == "0 3 * * *"
    assert check_cron("* * * * * */5") == "* * * * * */5"  # a sixth field: seconds
    for bad in ("0 3 * *", "61 * * * *", "every day", ""):
        with pytest.raises(InvalidRequest, match="invalid cron expression"):
            check_cron(bad)
    with pytest.raises(InvalidRequest, match="unknown time zone 'Mars/Olympus'"):
        check_cron("0 3 * * *", "Mars/Olympus")
    # 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer.
    assert next_due("0 3 * * *", "Europe/Paris", T0) == [datetime(2026, 1, 1, 2, tzinfo=UTC)]
    july = datetime(2026, 7, 1, tzinfo=UTC)
    assert next_due("0 3 * * *", "Europe/Paris", july) == [datetime(2026, 7, 1, 1, tzinfo=UTC)]

    def schedule(catch_up: CatchUp, stale_after: float = 86400.0) -> Schedule:
        return Schedule(
            id="s",
            cron="0 * * * *",
            timezone="UTC",
            paused=False,
            catch_up=catch_up,
            stale_after=stale_after,
            next_due_at=T0 + timedelta(hours=1),
            last_scheduled_for=T0,
        )

    on_time = T0 + timedelta(hours=1, seconds=2)
    down = T0 + timedelta(hours=3, minutes=30)  # 01:00, 02:00 and 03:00 went by
    assert choose_due_time(schedule(CatchUp.ONCE), on_time) == (on_time.replace(second=0), 1)
    assert choose_due_time(schedule(CatchUp.SKIP), on_time) == (on_time.replace(second=0), 1)
    assert choose_due_time(schedule(CatchUp.ONCE), down) == (T0 + timedelta(hours=3), 3)
    assert choose_due_time(schedule(CatchUp.SKIP), down) == (None, 3)
    assert choose_due_time(schedule(CatchUp.ONCE, stale_after=600), down) == (None, 3)
    assert choose_due_time(schedule(CatchUp.ONCE, stale_after=1800), down)[0] is not None


def test_the_store_saves_pauses_resumes_and_deletes(tmp_path: Path) -> None:
    """A real SQLite ledger with a settable clock: resuming after a long pause starts from now
    (no burst), names are unique per owner, deleting keeps the runs."""
    clock = FakeClock()
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}", clock=clock)
    store = Pipelines(ledger)
    saved = store.create(owner="ana", notebook="/nb/daily.ipynb", cron="0 3 * * *")
    assert saved.name == "daily" and saved.schedule is not None
    assert saved.schedule.next_due_at == T0 + timedelta(hours=3)
    assert store.create(owner="bo", notebook="/nb/daily.ipynb", cron="0 3 * * *").owner == "bo"
    with pytest.raises(PipelineExists, match="a pipeline named 'daily' already exists"):
        store.create(owner="ana", notebook="/x/daily.ipynb", cron="0 4 * * *")
    with pytest.raises(PipelineNotFound, match="no pipeline 'nope'"):
        store.get("nope", "ana")
    assert store.get(saved.id[:6], "ana").id == saved.id
    assert [p.name for p in store.list("ana")] == ["daily"]
    paused = store.pause("daily", "ana")
    assert paused.schedule.paused and paused.schedule.next_due_at is None
    clock.advance(10 * 86400)  # ten days paused
    resumed = store.resume("daily", "ana")
    assert resumed.schedule.next_due_at == T0 + timedelta(days=10, hours=3)
    PipelineRuns(ledger).create(
        owner="ana",
        notebook="/nb/daily.ipynb",
        parameters={},
        max_retries=0,
        timeout=None,
        experiment=None,
        pipeline_id=saved.id,
    )
    assert store.get("daily", "ana").last_run is not None
    store.delete("daily", "ana")
    assert store.list("ana") == [] and store.find("daily", "ana") is None
    assert len(list_runs(ledger, "ana")) == 1  # the run stays
    assert table_count(f"sqlite:///{tmp_path / 'ledger.sqlite'}", "schedules") == 1  # bo's
    ledger.close()


def test_dead_runners_are_ended_and_nothing_else(tmp_path: Path) -> None:
    """A real SQLite ledger and a real dead process id: each kind of run the watch looks at."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    settings = Settings.from_env(home=tmp_path / "home")
    host = PipelineHost(ledger, settings, "test-host")
    store = PipelineRuns(ledger)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = ledger.clock()
    here = socket.gethostname()
    cases = {
        "dead_here": dict(state="RUNNING", runner_host=here, runner_pid=gone.pid),
        "alive_here": dict(state="RUNNING", runner_host=here, runner_pid=os.getpid()),
        "silent_there": dict(
            state="RUNNING",
            runner_host="elsewhere",
            runner_pid=4242,
            heartbeat_at=now - timedelta(seconds=120),
        ),
        "beating_there": dict(
            state="RUNNING", runner_host="elsewhere", runner_pid=4242, heartbeat_at=now
        ),
        "never_launched": dict(
            state="QUEUED", lease_holder="host-x", lease_until=now - timedelta(seconds=1)
        ),
        "launching": dict(state="QUEUED", lease_until=now + timedelta(seconds=60)),
        "parked": dict(state="PARKED", runner_host=here, runner_pid=gone.pid),
        "done": dict(state="COMPLETED", runner_host=here, runner_pid=gone.pid),
    }
    ids = {}
    for name, fields in cases.items():
        made = store.create(
            owner="ana",
            notebook=f"/nb/{name}.ipynb",
            parameters={},
            max_retries=0,
            timeout=None,
            experiment=None,
            pipeline_id="p",
        )
        store.update(made.id, **fields)
        ids[name] = made.id
    ended = watch.end_dead_runs(host)
    assert sorted(ended) == sorted([ids["dead_here"], ids["silent_there"], ids["never_launched"]])
    states = {name: store.get(ids[name], "ana") for name in cases}
    assert states["dead_here"].error == f"its runner process (pid {gone.pid} on {here}) died"
    assert "no heartbeat for over 90 s" in states["silent_there"].error
    assert states["never_launched"].error == "its runner never started (launched by host-x)"
    for name in ("alive_here", "beating_there", "launching", "parked", "done"):
        assert states[name].state.value == cases[name]["state"], name
    assert watch.end_dead_runs(host) == []  # already ended: never twice
    ledger.close()


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_round_trip_and_refusals(
    run, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real CLI on a real ledger: schedule, list, show, pause, resume, delete, runs; bad
    input exits with the error's code and writes nothing."""
    notebook = write_notebook(tmp_path / "nightly.ipynb")
    db = f"sqlite:///{home / 'ledger.sqlite'}"
    refused = [
        (["--cron", "0 3 * *"], 2, "invalid cron expression '0 3 * *'"),
        (["--cron", "0 3 * * *", "--timezone", "Nowhere/City"], 2, "unknown time zone"),
        (["--cron", "0 3 * * *", "--retries", "-1"], 2, "--retries must be 0 or more"),
        (["--cron", "0 3 * * *", "-p", "key", SECRET], 2, "parameter 'key' holds a secret"),
        (["--cron", "0 3 * * *", "--backend", "nosuch"], 3, "unknown backend 'nosuch'"),
        (["--cron", "0 3 * * *", "--credential", "nosuch"], 3, "nosuch"),
    ]
    for extra, code, message in refused:
        if "-p" in extra:  # a provider's secret in the environment, passed as a parameter
            monkeypatch.setenv("IONQ_API_KEY", SECRET)
        result = run("pipeline", "schedule", str(notebook), *extra)
        monkeypatch.delenv("IONQ_API_KEY", raising=False)
        assert result.exit_code == code, (extra, result.output)
        assert message in result.stderr and SECRET not in result.output
        assert len(result.stderr.strip().splitlines()) == 1
    result = run("pipeline", "schedule", str(tmp_path / "missing.ipynb"), "--cron", "0 3 * * *")
    assert result.exit_code == 2 and "no such notebook" in result.stderr
    if (home / "ledger.sqlite").exists():
        assert table_count(db, "pipelines") == 0 and table_count(db, "schedules") == 0

    result = run(
        "pipeline", "schedule", str(notebook), "--cron", "30 2 * * 1-5", "-p", "n", "5",
        "--timezone", "Europe/Paris", "--catch-up", "skip", "--stale-after", "600",
        "--retries", "1", "--timeout", "60", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads(result.stdout)
    assert saved["name"] == "nightly" and saved["notebook"] == str(notebook.resolve())
    assert saved["parameters"] == {"n": 5} and saved["retries"] == 1 and saved["timeout"] == 60
    sched = saved["schedule"]
    assert (sched["cron"], sched["timezone"], sched["catch_up"]) == (
        "30 2 * * 1-5",
        "Europe/Paris",
        "skip",
    )
    assert sched["paused"] is False and sched["stale_after"] == 600
    assert len(saved["next_due"]) == 3 and saved["next_due"][0] == sched["next_due_at"]
    assert saved["last_run"] is None
    again = run("pipeline", "schedule", str(notebook), "--cron", "0 3 * * *")
    assert again.exit_code == 4 and "a pipeline named 'nightly' already exists" in again.stderr
    named = run("pipeline", "schedule", str(notebook), "--cron", "0 3 * * *", "--name", "second")
    assert named.exit_code == 0 and "next due" in named.stdout
    assert table_count(db, "pipelines") == 2

    listed = json.loads(run("pipeline", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["nightly", "second"]
    table = run("pipeline", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "CRON", "TIMEZONE", "STATE"]
    assert "Europe/Paris" in table[1] and "active" in table[1]
    assert json.loads(run("pipeline", "show", "nightly", "--json").stdout) == saved
    assert json.loads(run("pipeline", "show", saved["id"], "--json").stdout)["name"] == "nightly"
    assert (
        "cron      30 2 * * 1-5 (Europe/Paris), active" in run("pipeline", "show", "nightly").stdout
    )
    missing = run("pipeline", "show", "nope")
    assert missing.exit_code == 3 and "no pipeline or pipeline run 'nope'" in missing.stderr

    paused = json.loads(run("pipeline", "pause", "nightly", "--json").stdout)
    assert paused["schedule"]["paused"] is True and paused["next_due"] == []
    assert "paused" in run("pipeline", "list").stdout
    resumed = run("pipeline", "resume", "nightly")
    assert resumed.exit_code == 0 and "resumed; next due" in resumed.stdout
    assert json.loads(run("pipeline", "show", "nightly", "--json").stdout)["next_due"]
    assert run("pipeline", "pause", "nope").exit_code == 3

    kept = run("pipeline", "delete", "second", input="n\n")
    assert kept.exit_code == 1 and table_count(db, "pipelines") == 2
    gone = run("pipeline", "delete", "second", "--yes", "--json")
    assert gone.exit_code == 0 and json.loads(gone.stdout)["name"] == "second"
    assert [p["name"] for p in json.loads(run("pipeline", "list", "--json").stdout)] == ["nightly"]

    assert json.loads(run("pipeline", "runs", "--pipeline", "nightly", "--json").stdout) == []
    bad_state = run("pipeline", "runs", "--state", "SLEEPING")
    assert bad_state.exit_code == 2 and "unknown run state 'SLEEPING'" in bad_state.stderr


# -- engine hosts --------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_engine_follows_the_catch_up_policy_across_downtime(
    home: Path, tmp_path: Path, client: Client
) -> None:
    """A real Engine (asyncio, in this process) whose pipeline duties read a settable clock;
    the runs it starts are real runner processes running the notebook with papermill."""
    notebook = str(write_notebook(tmp_path / "hourly.ipynb").resolve())
    clock = FakeClock()  # 2026-01-01 00:00 UTC
    assert client.ledger  # made (and migrated) first
    fake = Ledger.open(client.settings.database_url, clock=clock)
    store = Pipelines(fake)
    once = store.create(owner=client.owner, notebook=notebook, cron="0 * * * *", name="once")
    skip = store.create(
        owner=client.owner, notebook=notebook, cron="0 * * * *", name="skip", catch_up="skip"
    )
    stale = store.create(
        owner=client.owner, notebook=notebook, cron="0 * * * *", name="stale", stale_after=600
    )
    ids = {once.id: "once", skip.id: "skip", stale.id: "stale"}

    def scheduled() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {name: [] for name in ids.values()}
        for row in run_rows(fake):
            found[ids[row["pipeline_id"]]].append(row["scheduled_for"].hour)
        return {name: sorted(hours) for name, hours in found.items()}

    def states() -> set[str]:
        return {row["state"] for row in run_rows(fake)}

    started: list[str] = []
    try:
        clock.advance(3600 + 2)  # 01:00:02: the first due time, seen on time
        engine = EngineThread(client, PipelineHost(fake, client.settings, "host-a"))
        wait_for(lambda: len(run_rows(fake)) == 3, 30, "the 01:00 runs")
        wait_for(lambda: states() <= {"RUNNING", "COMPLETED"}, 60, "their runners to start")
        engine.stop()
        started += [r["id"] for r in run_rows(fake)]
        assert scheduled() == {"once": [1], "skip": [1], "stale": [1]}

        clock.advance(2.5 * 3600)  # down across 02:00 and 03:00; now 03:30
        engine = EngineThread(client, PipelineHost(fake, client.settings, "host-b"))
        wait_for(lambda: len(run_rows(fake)) == 4, 30, "the catch-up run")
        time.sleep(engine.engine.pipelines_every * 10)  # more passes: nothing else is due
        engine.stop()
        assert scheduled() == {"once": [1, 3], "skip": [1], "stale": [1]}
        for saved in store.list(client.owner):
            assert saved.schedule.next_due_at == T0 + timedelta(hours=4), saved.name
        catch_up = [r for r in run_rows(fake) if r["pipeline_id"] == once.id][-1]
        assert catch_up["schedule_id"] == once.schedule.id
        started += [r["id"] for r in run_rows(fake)]
        wait_for(lambda: states() == {"COMPLETED"}, 90, "every run to complete")
        for row in run_rows(fake):
            assert row["attempts"] == 1 and row["parameters"]["qmlops_pipeline_run_id"] == row["id"]
            assert Path(row["output_path"]).is_file()
        assert store.get("once", client.owner).last_run.state.value == "COMPLETED"
    finally:
        kill_run_processes(started)
        fake.close()


def engine_env(home: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QMLOPS_HOME=str(home), QMLOPS_DATABASE_URL=url, QMLOPS_OWNER="ana")
    env.pop("QMLOPS_PIPELINE_RUN_ID", None)
    return env


def start_engine(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*qmlops_testing.QMLOPS, "--log-level", "INFO", "--log-format", "json", "engine"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


@pytest.mark.slow
def test_two_engine_hosts_on_postgres_run_each_due_time_once(
    home: Path, tmp_path: Path, postgres_url: str
) -> None:
    """Two real ``qmlops engine`` processes on one real PostgreSQL ledger, a cron due every
    3 seconds: one run per due time, started by one of them, and each completes."""
    notebook = str(write_notebook(tmp_path / "often.ipynb").resolve())
    ledger = Ledger.open(postgres_url)  # migrated once, before either engine starts
    saved = Pipelines(ledger).create(owner="ana", notebook=notebook, cron="* * * * * */3")
    env = engine_env(home, postgres_url)
    logs = [tmp_path / "engine-a.log", tmp_path / "engine-b.log"]
    engines = [start_engine(env, log) for log in logs]
    rows: list[dict[str, Any]] = []
    try:
        wait_for(lambda: len(run_rows(ledger)) >= 4, 60, "four due times")
        Pipelines(ledger).pause(saved.id, "ana")
        rows = run_rows(ledger)
        times = sorted(r["scheduled_for"] for r in rows)
        assert len(set(times)) == len(times)
        # Every due time from the first to the last has its run: none missed, none twice.
        expected = [times[0]]
        while len(expected) < len(times):
            expected.append(next_due("* * * * * */3", "UTC", expected[-1])[0])
        assert times == expected
        wait_for(
            lambda: {r["state"] for r in run_rows(ledger)} == {"COMPLETED"}, 90, "the runs to end"
        )
        rows = run_rows(ledger)
    finally:
        for process in engines:
            stop(process)
        kill_run_processes([r["id"] for r in rows])
    launched = [e for log in logs for e in events(log, "pipeline_run_started")]
    assert len(launched) == len(rows)  # each run's runner started by one host only
    assert {e["actor"] for e in launched} <= {
        e["actor"] for log in logs for e in events(log, "engine_start")
    }
    assert all(r["pipeline_id"] == saved.id and r["attempts"] == 1 for r in rows)
    ledger.close()


@pytest.mark.slow
def test_an_engine_ends_a_run_whose_runner_was_killed(
    home: Path, tmp_path: Path, client: Client
) -> None:
    """A real ``qmlops engine`` starts a due run of a slow notebook; its runner process is
    SIGKILLed; the engine's watch ends the run FAILED, naming the process."""
    notebook = str(write_notebook(tmp_path / "slow.ipynb", "import time; time.sleep(120)"))
    saved = Pipelines(client.ledger).create(
        owner=client.owner, notebook=notebook, cron="* * * * * */2"
    )
    env = engine_env(home, client.settings.database_url)
    env["QMLOPS_OWNER"] = client.owner
    log = tmp_path / "engine.log"
    engine = start_engine(env, log)
    store = PipelineRuns(client.ledger)
    run_id = None
    try:
        wait_for(lambda: list_runs(client.ledger, client.owner), 60, "a due run")
        Pipelines(client.ledger).pause(saved.id, client.owner)
        run_id = list_runs(client.ledger, client.owner)[-1].id
        wait_for(lambda: store.get(run_id, client.owner).state.value == "RUNNING", 60, "RUNNING")
        with client.ledger._read() as conn:
            pid = conn.execute(sa.select(runs.c.runner_pid).where(runs.c.id == run_id)).scalar()
        wait_for(lambda: live_processes(run_id), 30, "papermill's child and kernel to start")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: store.get(run_id, client.owner).state.value == "FAILED", 30, "FAILED")
        # What the runner left (papermill's child, the kernel) is stopped too.
        wait_for(lambda: not live_processes(run_id), 10, "its leftover processes to end")
        ended = store.get(run_id, client.owner)
        assert ended.error == f"its runner process (pid {pid} on {socket.gethostname()}) died"
        assert ended.finished_at is not None
        assert events(log, "pipeline_run_runner_died")
    finally:
        stop(engine)
        if run_id:
            kill_run_processes([r.id for r in list_runs(client.ledger, client.owner)])


@pytest.mark.slow
def test_run_now_starts_a_linked_run(home: Path, tmp_path: Path, client: Client) -> None:
    """``run_now`` (what the REST route calls) launches a real runner process at once."""
    notebook = str(write_notebook(tmp_path / "now.ipynb").resolve())
    Pipelines(client.ledger).create(
        owner=client.owner, notebook=notebook, cron="0 3 * * *", parameters={"n": 9}
    )
    queued = run_now(client.ledger, client.settings, client.owner, "now")
    assert queued.state.value == "QUEUED" and queued.pipeline_id is not None
    store = PipelineRuns(client.ledger)
    try:
        wait_for(lambda: store.get(queued.id, client.owner).state.terminal, 60, "the run")
        done = store.get(queued.id, client.owner)
        assert done.state.value == "COMPLETED" and done.scheduled_for is None
        assert done.parameters["n"] == 9
        text = Path(done.output_path).read_text()
        assert "n is 9" in text
        listed = list_runs(client.ledger, client.owner, pipeline="now", state="completed")
        assert [r.id for r in listed] == [queued.id]
    finally:
        kill_run_processes([queued.id])
