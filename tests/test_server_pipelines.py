"""The pipelines routes of the REST API and the ``pipeline_status`` events, against a real
``jupyter server`` process with the qmlops extension (its engine host running).

Real components only: the server process; this test process as another process on the same
SQLite ledger (it saves pipelines through the core API, ``Pipelines.create``, for the server's
owner and for another owner, and writes run states as a runner on another host would); "run
now" starting a real runner process (``qmlops pipeline run-queued``) that executes a tiny
notebook with papermill in a real ipykernel; the server's event websocket
(``/api/events/subscribe``) read as JupyterLab reads it. Every answer is checked against
``openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pipeline_helpers import parameterised_notebook
from qmlops_testing import JupyterServer, running_server, wait_for

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.pipelines.schedules import Pipelines
from qmlops_jupyter.pipelines.store import PipelineRuns

pytestmark = pytest.mark.slow

API = "/qmlops/api/v1"
SPEC_FILE = Path(__file__).resolve().parent.parent / "qmlops_jupyter" / "server" / "openapi.json"
PIPELINE_STATUS = "https://events.qmlops-jupyter.dev/pipeline_status/v1"
OTHER = "mallory"
#: A parameter value that must never travel in an event.
MARKER = "param-value-never-in-an-event-5c1d"


class Spec:
    """openapi.json, checking an answer against the schema it declares for its status."""

    def __init__(self) -> None:
        self.doc = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
        self.paths = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$"), t) for t in self.doc["paths"]
        ]

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        template = next(t for r, t in self.paths if r.match(path.split("?")[0]))
        operation = self.doc["paths"][template][method.lower()]
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {template} answered {status}, not in the spec"
        if "content" not in response:
            assert body is None, f"{method} {template} {status} has a body"
            return
        schema = {**response["content"]["application/json"]["schema"]}
        schema["components"] = self.doc["components"]
        Draft202012Validator(schema, format_checker=FormatChecker()).validate(body)


@dataclass
class Lab:
    server: JupyterServer
    home: Path
    client: Client
    owner: str
    spec: Spec
    good: Path
    bad: Path

    def call(self, method: str, path: str, status: int, token: bool = True) -> Any:
        headers = None if token else {"Content-Type": "application/json"}
        got, body = self.server.request(
            method, API + path, {} if method == "POST" else None, headers=headers
        )
        assert got == status, f"{method} {path}: {got} {body}\n{self.server.log_tail(2000)}"
        self.spec.check(method, path, got, body)
        return body

    def error(self, method: str, path: str, status: int, code: str) -> str:
        body = self.call(method, path, status)
        assert body["error"] == code, body
        assert "\n" not in body["message"] and body["message"]
        return body["message"]


def write_notebook(path: Path, *cells: str) -> Path:
    return parameterised_notebook(path, 'label = "none"', *cells, kernelspec=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    scratch = tmp_path_factory.mktemp("pipelines-server")
    notebooks = scratch / "notebooks"
    notebooks.mkdir()
    good = write_notebook(notebooks / "nightly.ipynb", "print('hello', label)")
    bad = write_notebook(notebooks / "broken.ipynb", "x = 1", "1 / 0")
    with running_server(scratch) as (server, home):
        client = Client(Settings.from_env(home=home))
        try:
            yield Lab(server, home, client, client.owner, Spec(), good, bad)
        finally:
            client.close()


def save(lab: Lab, name: str, notebook: Path, owner: str | None = None, **kw: Any) -> Any:
    return Pipelines(lab.client.ledger).create(
        owner=owner or lab.owner, notebook=str(notebook), cron="0 3 * * *", name=name, **kw
    )


class EventStream:
    """The server's event websocket, read in a thread of its own: every event, in order."""

    def __init__(self, server: JupyterServer) -> None:
        self.url = f"ws://127.0.0.1:{server.port}/api/events/subscribe"
        self.token = server.token
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventStream:
        self._thread.start()
        assert self.opened.wait(30), f"the event websocket did not open: {self.error!r}"
        time.sleep(0.3)  # the subscription is attached once the socket has opened
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._conn is not None:
            self._loop.call_soon_threadsafe(self._conn.close)
        self._thread.join(10)

    def run(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("run_id") == run_id]

    def states(self, run_id: str) -> list[str]:
        return [e["new_state"] for e in self.run(run_id)]

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # reported by __enter__ or by the test's asserts
            self.error = exc
            self.opened.set()

    async def _read(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        self._loop = asyncio.get_running_loop()
        request = HTTPRequest(self.url, headers={"Authorization": f"token {self.token}"})
        self._conn = await asyncio.wait_for(websocket_connect(request), 30)
        self.opened.set()
        while True:
            raw = await self._conn.read_message()
            if raw is None:
                return
            self.events.append(json.loads(raw))


def check_events(events: list[dict[str, Any]]) -> None:
    """What every pipeline_status event is: the schema's, and without the run's parameters."""
    for event in events:
        assert event["schema_id"] == PIPELINE_STATUS
        assert "parameters" not in event
        assert MARKER not in json.dumps(event)


# -- the routes --------------------------------------------------------------------------------


def test_saved_pipelines_are_listed_shown_paused_and_resumed(lab: Lab) -> None:
    """GET /pipelines and /pipelines/{name or id}; pause and resume change the ledger's
    schedule (and say so in the answer); the answers conform to the spec."""
    saved = save(lab, "listed", lab.good, parameters={"label": "x"})
    listed = lab.call("GET", "/pipelines", 200)["pipelines"]
    mine = next(p for p in listed if p["name"] == "listed")
    assert mine["id"] == saved.id and mine["notebook"] == str(lab.good)
    assert mine["schedule"]["cron"] == "0 3 * * *" and mine["schedule"]["paused"] is False
    assert mine["schedule"]["next_due_at"] is not None and mine["last_run"] is None
    assert lab.call("GET", f"/pipelines/{saved.id}", 200) == mine
    assert lab.call("GET", "/pipelines/listed", 200) == mine

    paused = lab.call("POST", "/pipelines/listed/pause", 200)
    assert paused["schedule"]["paused"] is True and paused["schedule"]["next_due_at"] is None
    schedule = Pipelines(lab.client.ledger).get("listed", lab.owner).schedule
    assert schedule is not None and schedule.paused and schedule.next_due_at is None
    resumed = lab.call("POST", f"/pipelines/{saved.id}/resume", 200)
    assert resumed["schedule"]["paused"] is False and resumed["schedule"]["next_due_at"]
    schedule = Pipelines(lab.client.ledger).get("listed", lab.owner).schedule
    assert schedule is not None and not schedule.paused


def test_run_now_runs_the_notebook_and_each_state_is_an_event(lab: Lab) -> None:
    """POST /pipelines/{name}/runs answers 202 with the QUEUED run at once; a real runner
    process executes the notebook; the event websocket carries QUEUED, RUNNING, COMPLETED for
    it (no parameter values); the run is then listed, filtered and shown, and is the
    pipeline's last run."""
    save(lab, "nightly", lab.good, parameters={"label": MARKER})
    with EventStream(lab.server) as stream:
        started = time.monotonic()
        queued = lab.call("POST", "/pipelines/nightly/runs", 202)
        answered = time.monotonic() - started
        assert queued["state"] == "QUEUED" and queued["parameters"]["label"] == MARKER
        run_id = queued["id"]
        wait_for(
            lambda: "COMPLETED" in stream.states(run_id) or "FAILED" in stream.states(run_id),
            90,
            "the run's end event",
        )
    assert stream.error is None, stream.error
    print(f"run now answered 202 in {answered * 1000:.0f} ms")
    assert answered < 5, f"run now took {answered:.1f} s to answer"
    events = stream.run(run_id)
    check_events(events)
    states = [e["new_state"] for e in events]
    assert states[0] == "QUEUED" and states[-1] == "COMPLETED", events
    assert set(states) <= {"QUEUED", "RUNNING", "COMPLETED"}
    assert len(states) == len(set(states))  # each state once
    assert [e["old_state"] for e in events] == [None, *states[:-1]]
    end = events[-1]
    assert end["pipeline"] == "nightly" and end["notebook"] == str(lab.good)
    assert end["error"] is None and end["parked_jobs"] is None

    run = lab.call("GET", f"/pipeline-runs/{run_id}", 200)
    assert run["state"] == "COMPLETED" and run["duration_s"] > 0
    assert lab.call("GET", f"/pipeline-runs/{run_id[:10]}", 200)["id"] == run_id  # a prefix
    assert lab.call("GET", "/pipelines/nightly", 200)["last_run"]["id"] == run_id
    ids = [
        r["id"] for r in lab.call("GET", "/pipeline-runs?pipeline=nightly", 200)["pipeline_runs"]
    ]
    assert ids == [run_id]
    done = lab.call("GET", "/pipeline-runs?state=completed&limit=100", 200)["pipeline_runs"]
    assert run_id in [r["id"] for r in done]
    failed = lab.call("GET", "/pipeline-runs?state=FAILED&pipeline=nightly", 200)
    assert failed == {"pipeline_runs": [], "next": None}


def test_a_failed_run_event_names_the_cell_and_the_error(lab: Lab) -> None:
    """A notebook that raises: its run ends FAILED, and the end event carries the failing
    cell's index and the error on one line."""
    save(lab, "broken", lab.bad)
    with EventStream(lab.server) as stream:
        run_id = lab.call("POST", "/pipelines/broken/runs", 202)["id"]
        wait_for(lambda: "FAILED" in stream.states(run_id), 90, "the run's FAILED event")
    end = stream.run(run_id)[-1]
    check_events([end])
    assert end["new_state"] == "FAILED" and end["error_cell"] == 2
    assert "ZeroDivisionError" in end["error"] and "\n" not in end["error"]
    run = lab.call("GET", f"/pipeline-runs/{run_id}", 200)
    assert run["error_cell"] == 2 and run["error_ename"] == "ZeroDivisionError"


def test_runs_written_by_another_process_are_events_too(lab: Lab) -> None:
    """A runner elsewhere on the ledger (this test process) moves a run QUEUED → RUNNING →
    PARKED → RUNNING → COMPLETED: the server's pump announces every state it sees, the
    PARKED one with how many jobs it waits for."""
    pipeline = save(lab, "elsewhere", lab.good)
    runs = PipelineRuns(lab.client.ledger)
    clock = lab.client.ledger.clock
    with EventStream(lab.server) as stream:
        run = runs.create(
            owner=lab.owner,
            notebook=str(lab.good),
            parameters={"label": MARKER},
            max_retries=0,
            timeout=None,
            experiment=None,
            pipeline_id=pipeline.id,
        )
        steps: list[dict[str, Any]] = [
            {
                "state": "RUNNING",
                "started_at": clock(),
                "runner_host": "runner-elsewhere",
                "heartbeat_at": clock(),
            },
            {"state": "PARKED", "parked_jobs": ["j1", "j2", "j3"], "park_cell": 1},
            {"state": "RUNNING", "heartbeat_at": clock()},
            {"state": "COMPLETED", "finished_at": clock()},
        ]
        delays = []
        for seen, step in enumerate(steps, start=1):
            wait_for(lambda n=seen: len(stream.run(run.id)) == n, 10, "the previous state's event")
            if step["state"] == "PARKED":
                step["parked_at"] = clock()
            runs.update(run.id, **step)
            written = time.monotonic()
            wait_for(lambda n=seen: len(stream.run(run.id)) > n, 10, "this state's event")
            delays.append(time.monotonic() - written)
        time.sleep(1.2)  # a repeat would come with the next looks
    events = stream.run(run.id)
    check_events(events)
    assert [e["new_state"] for e in events] == [
        "QUEUED",
        "RUNNING",
        "PARKED",
        "RUNNING",
        "COMPLETED",
    ]
    assert events[2]["parked_jobs"] == 3 and events[1]["parked_jobs"] is None
    assert all(e["pipeline_id"] == pipeline.id for e in events)
    # The pump looks every PIPELINE_INTERVAL (0.5 s): a change is out within about that.
    print(f"ledger write to event: {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
    assert max(delays) < 3, delays


def test_pipeline_runs_come_newest_first_a_page_at_a_time(lab: Lab) -> None:
    """?limit= pages with a ``next`` cursor, newest first, with no run twice or left out."""
    runs = PipelineRuns(lab.client.ledger)
    pipeline = save(lab, "paged", lab.good)
    made = []
    for _ in range(5):
        run = runs.create(
            owner=lab.owner,
            notebook=str(lab.good),
            parameters={},
            max_retries=0,
            timeout=None,
            experiment=None,
            pipeline_id=pipeline.id,
        )
        runs.update(run.id, state="CANCELLED", finished_at=lab.client.ledger.clock())
        made.append(run.id)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        query = "/pipeline-runs?pipeline=paged&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = lab.call("GET", query, 200)
        seen += [r["id"] for r in page["pipeline_runs"]]
        cursor = page["next"]
    assert cursor is None
    assert seen == list(reversed(made))


def test_delete_takes_the_pipeline_and_keeps_its_runs(lab: Lab) -> None:
    saved = save(lab, "doomed", lab.good)
    run = PipelineRuns(lab.client.ledger).create(
        owner=lab.owner,
        notebook=str(lab.good),
        parameters={},
        max_retries=0,
        timeout=None,
        experiment=None,
        pipeline_id=saved.id,
    )
    assert lab.call("DELETE", "/pipelines/doomed", 204) is None
    lab.error("GET", "/pipelines/doomed", 404, "pipeline_not_found")
    assert Pipelines(lab.client.ledger).find(saved.id, lab.owner) is None
    assert lab.call("GET", f"/pipeline-runs/{run.id}", 200)["pipeline_id"] == saved.id
    PipelineRuns(lab.client.ledger).update(run.id, state="CANCELLED")


# -- errors, and what others own -----------------------------------------------------------------


def test_errors_are_one_line_with_the_right_status(lab: Lab) -> None:
    for method, path in (
        ("GET", "/pipelines/nope"),
        ("DELETE", "/pipelines/nope"),
        ("POST", "/pipelines/nope/pause"),
        ("POST", "/pipelines/nope/resume"),
        ("POST", "/pipelines/nope/runs"),
        ("GET", "/pipeline-runs/ffffffffffff"),
        ("GET", "/pipeline-runs?pipeline=nope"),
    ):
        code = (
            "pipeline_run_not_found" if path.startswith("/pipeline-runs/") else "pipeline_not_found"
        )
        assert "nope" in lab.error(method, path, 404, code) or "ffff" in path
    message = lab.error("GET", "/pipeline-runs?state=DONE", 400, "invalid_request")
    assert "DONE" in message and "COMPLETED" in message
    lab.error("GET", "/pipeline-runs?state=", 400, "invalid_request")
    lab.error("GET", "/pipeline-runs?limit=0", 400, "invalid_request")
    lab.error("GET", "/pipeline-runs?limit=ten", 400, "invalid_request")
    lab.error("GET", "/pipeline-runs?cursor=%25%25", 400, "invalid_request")
    for method, path in (
        ("GET", "/pipelines"),
        ("GET", "/pipelines/x"),
        ("DELETE", "/pipelines/x"),
        ("POST", "/pipelines/x/pause"),
        ("POST", "/pipelines/x/resume"),
        ("POST", "/pipelines/x/runs"),
        ("GET", "/pipeline-runs"),
        ("GET", "/pipeline-runs/x"),
    ):
        lab.call(method, path, 403, token=False)


def test_another_owners_pipelines_and_runs_are_invisible(lab: Lab) -> None:
    """A pipeline and a run of another owner on the same ledger: not listed, not shown, and
    neither paused, run nor deleted through this server (404, the ledger unchanged)."""
    theirs = save(lab, "theirs", lab.good, owner=OTHER)
    run = PipelineRuns(lab.client.ledger).create(
        owner=OTHER,
        notebook=str(lab.good),
        parameters={},
        max_retries=0,
        timeout=None,
        experiment=None,
        pipeline_id=theirs.id,
    )
    names = [p["name"] for p in lab.call("GET", "/pipelines", 200)["pipelines"]]
    assert "theirs" not in names
    listed = lab.call("GET", "/pipeline-runs?limit=1000", 200)["pipeline_runs"]
    assert run.id not in [r["id"] for r in listed]
    assert all(r["owner"] == lab.owner for r in listed)
    for method, path in (
        ("GET", "/pipelines/theirs"),
        ("GET", f"/pipelines/{theirs.id}"),
        ("POST", "/pipelines/theirs/pause"),
        ("POST", f"/pipelines/{theirs.id}/runs"),
        ("DELETE", "/pipelines/theirs"),
        ("GET", f"/pipeline-runs/{run.id}"),
        ("GET", f"/pipeline-runs?pipeline={theirs.id}"),
    ):
        code = (
            "pipeline_run_not_found" if path.startswith("/pipeline-runs/") else "pipeline_not_found"
        )
        lab.error(method, path, 404, code)
    still = Pipelines(lab.client.ledger).get("theirs", OTHER)
    assert still.schedule is not None and not still.schedule.paused and still.last_run is not None
    assert still.last_run.id == run.id  # no run was added
    PipelineRuns(lab.client.ledger).update(run.id, state="CANCELLED")


def test_post_pipelines_saves_a_schedule_from_a_path_or_the_notebook_itself(lab: Lab) -> None:
    post = lambda body: lab.server.request("POST", API + "/pipelines", body)  # noqa: E731
    # A path under the server's root, as the sidebar or a script would name it.
    root = lab.good.parent.parent / "root"  # the server's root (running_server)
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    in_root = root / "notebooks" / "nightly.ipynb"
    in_root.write_text(lab.good.read_text(encoding="utf-8"), encoding="utf-8")
    got, body = post(
        {"notebook": "notebooks/nightly.ipynb", "cron": "0 4 * * *", "name": "by-path"}
    )
    assert got == 201, body
    lab.spec.check("POST", "/pipelines", got, body)
    assert body["name"] == "by-path" and body["notebook"] == str(in_root)
    assert body["schedule"]["cron"] == "0 4 * * *"
    # The notebook itself: kept as the pipeline's own copy under the home.
    content = json.loads(lab.good.read_text(encoding="utf-8"))
    got, body = post(
        {
            "notebook": "elsewhere/copy.ipynb",
            "content": content,
            "cron": "30 5 * * 1",
            "parameters": {"label": "x"},
        }
    )
    assert got == 201, body
    copy = Path(body["notebook"])
    assert body["name"] == "copy" and copy.is_relative_to(lab.home / "pipelines" / "notebooks")
    assert json.loads(copy.read_text(encoding="utf-8")) == content
    # A name taken: 409, and the kept copy is not replaced by the refused request's notebook.
    other = {**content, "cells": content["cells"][:1]}
    got, body = post({"notebook": "copy.ipynb", "content": other, "cron": "0 1 * * *"})
    assert got == 409 and body["error"] == "pipeline_exists", body
    assert json.loads(copy.read_text(encoding="utf-8")) == content
    # Bad input: one line, 400, nothing saved.
    before = len(Pipelines(lab.client.ledger).list(lab.owner))
    for bad in (
        {"notebook": "x.ipynb", "content": {"cells": "no"}, "cron": "0 1 * * *"},
        {"notebook": "notebooks/missing.ipynb", "cron": "0 1 * * *"},
        {"notebook": "notebooks/nightly.ipynb", "cron": "every day", "name": "never"},
        {"notebook": "notebooks/nightly.ipynb", "cron": "0 1 * * *", "timezone": "Mars/Olympus"},
        {"notebook": "notebooks/nightly.ipynb"},
    ):
        got, body = post(bad)
        assert got == 400 and "\n" not in body["message"], (bad, body)
        lab.spec.check("POST", "/pipelines", got, body)
    assert len(Pipelines(lab.client.ledger).list(lab.owner)) == before
