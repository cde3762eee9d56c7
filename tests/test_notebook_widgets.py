"""The notebook widgets at model level: real Aer jobs in a real ledger, a real in-process client
(and, for the job monitor, a real ``jupyter server`` process pushing job events), MLflow's real
embedded store. What a browser renders is tested in test_notebook_browser.py; the credential
form's browser code runs here under Node.js with a stand-in page, against a recording
``fetch``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import BELL_QASM2, JupyterServer, running_server, slow_circuits, wait_for
from qmlops_testing import GHZ3_QASM2 as GHZ3

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.engine import Engine
from qmlops_jupyter.errors import InvalidRequest
from qmlops_jupyter.notebook import widgets
from qmlops_jupyter.notebook.widgets import (
    BackendPicker,
    CredentialForm,
    JobMonitor,
    ResultHistogram,
    RunBrowser,
)
from qmlops_jupyter.remote import RemoteClient, ServerUnavailable
from qmlops_jupyter.states import JobState

FORM_JS = Path(widgets.__file__).with_name("credential_form.js")


def run_engine(client: Client, job_ids: list[str]) -> None:
    """An engine host's steps, in this thread, until the jobs are finished."""
    engine = Engine(client.ledger, client.registry, holder="test-engine", isolate_local=False)
    for _ in range(50):
        engine.step()
        if all(client.ledger.get_job(i).state.terminal for i in job_ids):
            return
        time.sleep(0.02)
    raise AssertionError("the engine did not finish the jobs")


def row(monitor: JobMonitor, job_id: str) -> dict[str, Any]:
    (found,) = [r for r in monitor.rows if r["id"] == job_id]
    return found


def row_html(monitor: JobMonitor, job_id: str) -> str:
    return monitor._views[job_id].cells.value


def state_of(monitor: JobMonitor, job_id: str) -> str | None:
    return next((r["state"] for r in monitor.rows if r["id"] == job_id), None)


class FlakyClient:
    """The real client, with job_events / get_job failing while told to (a server gone away)."""

    def __init__(self, client: Client) -> None:
        self._real = client
        self.events_fail = False
        self.reads_fail = False
        self.event_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def job_events(self, *args: Any, **kwargs: Any) -> Any:
        self.event_calls += 1
        if self.events_fail:
            raise ServerUnavailable("the qmlops server at http://127.0.0.1:1/ did not answer")
        return self._real.job_events(*args, **kwargs)

    def get_job(self, job_id: str) -> Any:
        if self.reads_fail:
            raise ServerUnavailable("the qmlops server at http://127.0.0.1:1/ did not answer")
        return self._real.get_job(job_id)


# -- JobMonitor ----------------------------------------------------------------------------------


def test_monitor_rows_follow_real_transitions_fed_by_apply_events(client: Client) -> None:
    first = client.submit(BELL_QASM2, name="first", shots=100, wait=False)
    second = client.submit([BELL_QASM2, GHZ3], name="second", shots=100, wait=False)
    monitor = JobMonitor(client=client, autostart=False)
    try:
        assert not monitor.running
        assert monitor.job_ids == [second.id, first.id]  # newest first
        assert [r["state"] for r in monitor.rows] == ["CREATED", "CREATED"]
        assert set(monitor.rows[0]) == {
            "id",
            "name",
            "backend",
            "state",
            "queue_position",
            "eta",
            "elapsed",
            "cost_usd",
        }
        assert 'data-state="CREATED"' in row_html(monitor, first.id)
        assert all(b.layout.visibility == "visible" for b in monitor.cancel_buttons.values())

        _, position = client.job_events(None)
        run_engine(client, [first.id, second.id])
        events, _ = client.job_events(position)
        assert {e["job_id"] for e in events} == {first.id, second.id}
        assert [r["state"] for r in monitor.rows] == ["CREATED", "CREATED"]  # nothing pushed yet

        monitor.apply_events(events)
        for job in (first, second):
            shown = row(monitor, job.id)
            record = client.get_job(job.id).record
            assert shown["state"] == "COMPLETED" and record.state is JobState.COMPLETED
            assert shown["name"] == record.name and shown["backend"] == "aer"
            assert shown["elapsed"] == pytest.approx(
                (record.finished_at - record.created_at).total_seconds()
            )
            assert shown["cost_usd"] == record.estimated_cost_usd == 0.0
            html = row_html(monitor, job.id)
            assert 'class="qmlops-state qmlops-state-completed" data-state="COMPLETED"' in html
            assert "free" in html
            assert monitor.cancel_buttons[job.id].layout.visibility == "hidden"
        assert monitor.status == ""
    finally:
        monitor.close()


def test_the_events_move_the_state_even_when_the_job_cannot_be_read(client: Client) -> None:
    flaky = FlakyClient(client)
    job = client.submit(BELL_QASM2, name="alone", shots=50, wait=False)
    monitor = JobMonitor(client=flaky, autostart=False)
    try:
        _, position = client.job_events(None)
        run_engine(client, [job.id])
        events, _ = client.job_events(position)
        states = [e["new_state"] for e in events]
        assert states[-1] == "COMPLETED" and len(states) >= 2

        flaky.reads_fail = True
        monitor.apply_events(events[:1])  # CREATED -> SUBMITTING: one step only
        assert state_of(monitor, job.id) == states[0]
        assert monitor.status.startswith("ServerUnavailable: the qmlops server")
        monitor.apply_events(events[1:])
        assert state_of(monitor, job.id) == "COMPLETED"
        monitor.apply_events(events[:1])  # a late, stale event changes nothing
        assert state_of(monitor, job.id) == "COMPLETED"

        flaky.reads_fail = False
        monitor.apply_events([])
        assert monitor.status == ""
    finally:
        monitor.close()


def test_the_thread_shows_new_jobs_and_their_transitions_and_stops(client: Client) -> None:
    before = client.submit(BELL_QASM2, name="before", shots=50, wait=True)
    # poll=60: the fallback re-read never runs here, so only pushed events can move the rows.
    monitor = JobMonitor(client=client, poll=60)
    try:
        assert monitor.running and monitor.job_ids == [before.id]
        job = client.submit(BELL_QASM2, name="live", shots=50, wait=True)
        wait_for(lambda: state_of(monitor, job.id) == "COMPLETED", 15, "the new job's row")
        assert monitor.job_ids == [job.id, before.id]
        assert 'data-state="COMPLETED"' in row_html(monitor, job.id)
        assert "live" in monitor._status.value

        monitor.stop(timeout=5)
        assert not monitor.running
        assert not any(t.is_alive() for t in monitor._threads)
        assert "not following updates" in monitor._status.value
        after = client.submit(BELL_QASM2, name="after", shots=50, wait=True)
        time.sleep(0.8)
        assert after.id not in monitor.job_ids

        monitor.start()  # and again: the job made meanwhile shows up
        wait_for(lambda: after.id in monitor.job_ids, 15, "the job made while stopped")
    finally:
        monitor.close()
    assert not monitor.running
    for thread in monitor._threads:
        thread.join(5)
        assert not thread.is_alive()


def test_recent_mode_keeps_the_newest_limit_jobs(client: Client) -> None:
    jobs = [client.submit(BELL_QASM2, name=f"j{i}", shots=20, wait=False) for i in range(3)]
    monitor = JobMonitor(client=client, limit=2, autostart=False)
    try:
        assert monitor.job_ids == [jobs[2].id, jobs[1].id]
        _, position = client.job_events(None)
        newest = client.submit(BELL_QASM2, name="newest", shots=20, wait=False)
        monitor.apply_events(client.job_events(position)[0])
        assert monitor.job_ids == [newest.id, jobs[2].id]
        assert len(monitor._rows_box.children) == 2
    finally:
        monitor.close()


def test_the_cancel_button_cancels_a_real_job_and_given_jobs_only_are_followed(
    client: Client,
) -> None:
    slow = client.submit(slow_circuits(2), name="slow", shots=10, wait=False)
    other = client.submit(BELL_QASM2, name="other", shots=10, wait=False)
    monitor = JobMonitor([slow], autostart=False)  # the client comes from the job
    try:
        assert monitor._client is client
        assert monitor.job_ids == [slow.id]
        button = monitor.cancel_buttons[slow.id]
        assert "qmlops-cancel" in button._dom_classes and not button.disabled
        assert {"qmlops-job-row", f"qmlops-job-{slow.id}"} <= set(
            monitor._views[slow.id].box._dom_classes
        )

        _, position = client.job_events(None)
        button.click()
        assert client.get_job(slow.id).record.state is JobState.CANCELLED
        assert state_of(monitor, slow.id) == "CANCELLED"
        assert button.layout.visibility == "hidden" and button.disabled

        client.cancel(other.id)
        monitor.apply_events(client.job_events(position)[0])
        assert monitor.job_ids == [slow.id]  # the other job is not followed

        # Cancelling what cannot be cancelled any more: the status line says why.
        assert monitor.cancel(slow.id) is None
        assert monitor.status
    finally:
        monitor.close()


def test_the_thread_survives_errors_backs_off_and_recovers(client: Client) -> None:
    flaky = FlakyClient(client)
    flaky.events_fail = True
    monitor = JobMonitor(client=flaky, poll=60, autostart=False)
    monitor.backoff = (0.05, 0.2)
    monitor.start()
    try:
        wait_for(lambda: flaky.event_calls >= 4, 10, "retries after errors")
        assert monitor.running
        assert monitor.status.startswith("ServerUnavailable: the qmlops server")
        assert "trying again in" in monitor.status
        assert "⚠" in monitor._status.value

        flaky.events_fail = False
        job = client.submit(BELL_QASM2, name="after the outage", shots=20, wait=True)
        wait_for(lambda: state_of(monitor, job.id) == "COMPLETED", 15, "the row after recovery")
        wait_for(lambda: monitor.status == "", 5, "the status line to clear")
    finally:
        monitor.close()


def test_monitor_arguments_are_checked(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="limit must be a positive integer"):
        JobMonitor(client=client, limit=0, autostart=False)
    with pytest.raises(InvalidRequest, match="JobMonitor follows jobs"):
        JobMonitor([3.5], client=client, autostart=False)
    monitor = JobMonitor([], client=client, autostart=False)
    assert monitor.rows == [] and monitor._rows_box.children == (monitor._empty,)
    monitor.close()
    with pytest.raises(InvalidRequest, match="closed"):
        monitor.start()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterServer, Path]]:
    """One server (QMLOPS_HOME in a temporary folder, tracking off) for the module's tests."""
    with running_server(tmp_path_factory.mktemp("widgets-server")) as served:
        yield served


@pytest.mark.slow
def test_a_monitor_on_a_server_is_pushed_the_engine_s_transitions(
    served: tuple[JupyterServer, Path],
) -> None:
    """Through a real jupyter server: jobs run by the server's engine, changes pushed by its
    ``GET /events`` long poll (a 25 s wait, so the rows can only move because the server
    answered early), a cancel through the API."""
    server, home = served
    (token_file,) = (home / "run").glob("server-*.token")
    remote = RemoteClient(server.base, token_file, settings=Settings.from_env(home=home))
    monitor = JobMonitor(client=remote, poll=60)
    try:
        assert monitor._remote and monitor.running
        job = remote.submit(slow_circuits(1, qubits=18), name="served", shots=20, wait=False)
        wait_for(lambda: state_of(monitor, job.id) == "COMPLETED", 60, "the served job's row")
        events = [e for e in remote.events(job.id) if e.kind == "transition"]
        assert [e.to_state for e in events][-1] is JobState.COMPLETED
        assert row(monitor, job.id)["elapsed"] > 0
        monitor.stop()
    finally:
        monitor.close()
        remote.close()


# -- BackendPicker -------------------------------------------------------------------------------


def test_backend_picker_is_built_from_the_backends_capabilities(home: Path, client: Client) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        "backends:\n"
        "  aer:\n    max_shots: 5000\n"
        "  ionq:simulator:\n    max_shots: 2000\n"
        "  pennylane:default.mixed:\n    enabled: false\n",
        encoding="utf-8",
    )
    secret = "ionq-key-" + "Q7" * 12
    client.vault.set("ionq-main", "ionq", {"api_key": secret})
    infos = {i.name: i for i in client.backends()}
    picker = BackendPicker(client=client)
    changes: list[dict[str, Any]] = []
    picker.on_change(changes.append)

    values = [v for _, v in picker.backend.options]
    assert set(values) == set(infos)
    usable = [n for n in values if infos[n].enabled and infos[n].available]
    assert values[: len(usable)] == usable  # usable first, the others after
    labels = dict((v, label) for label, v in picker.backend.options)
    assert "(disabled)" in labels["pennylane:default.mixed"]
    for name, info in infos.items():
        assert f"≤ {info.max_shots:,} shots" in labels[name]
        if info.enabled and not info.available:
            assert labels[name].endswith("(unavailable)")

    assert picker.value == {"backend": "aer", "shots": 1024, "credential": None}
    assert picker.shots.max == 5000 == infos["aer"].max_shots
    assert picker.credential.disabled and picker.credential.options == (("not needed", None),)
    picker.shots.value = 9999
    assert picker.value["shots"] == 5000  # bounded by the backend's max_shots
    picker.shots.value = 4000

    picker.backend.value = "ionq:simulator"
    assert picker.shots.max == 2000 and picker.value["shots"] == 2000
    assert not picker.credential.disabled
    assert ("ionq-main (…Q7Q7)", "ionq-main") in picker.credential.options
    picker.credential.value = "ionq-main"
    assert picker.value == {"backend": "ionq:simulator", "shots": 2000, "credential": "ionq-main"}
    assert changes[-1] == picker.value
    assert "≤ 2,000" in picker.details.value and "qmlops-backend-unavailable" not in (
        picker.details.value if infos["ionq:simulator"].available else "qmlops-backend-unavailable"
    )

    picker.backend.value = "aer"
    assert picker.value["shots"] == 4000  # what was asked, now allowed again
    assert picker.value["credential"] is None

    everything = json.dumps(
        [w.get_state() for w in (picker, picker.backend, picker.credential, picker.details)],
        default=str,
    )
    assert secret not in everything

    with pytest.raises(InvalidRequest, match="unknown backend 'nope'"):
        BackendPicker(client=client, backend="nope")
    job = BackendPicker(client=client, backend="aer", shots=64).submit(BELL_QASM2, wait=True)
    assert job.record.shots == 64 and job.state is JobState.COMPLETED


# -- CredentialForm ------------------------------------------------------------------------------

#: Widget bookkeeping every anywidget has; everything else must be one of the form's own traits.
_BASE_STATE = {
    "_anywidget_id",
    "_dom_classes",
    "_model_module",
    "_model_module_version",
    "_model_name",
    "_view_count",
    "_view_module",
    "_view_module_version",
    "_view_name",
    "_esm",
    "_css",
    "layout",
    "tabbable",
    "tooltip",
}


def test_no_credential_form_trait_holds_a_secret(client: Client) -> None:
    secret = "ibm-token-" + "Zx9" * 10
    client.vault.set("ibm-main", "ibm", {"token": secret, "channel": "ibm_cloud"})
    form = CredentialForm(client=client, alias="ibm-new", provider="IBM")
    state = form.get_state()
    assert set(state) - _BASE_STATE == {
        "alias",
        "provider",
        "status",
        "saved",
        "providers",
        "stored",
    }
    assert state["provider"] == "ibm" and state["alias"] == "ibm-new"
    assert state["stored"] == [{"alias": "ibm-main", "provider": "ibm", "hint": "…" + secret[-4:]}]
    fields = {f["name"]: f for f in state["providers"]["aws"]["fields"]}
    assert [n for n, f in fields.items() if f["secret"]] == [
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    ]
    assert fields["aws_access_key_id"]["required"] and not fields["region"]["secret"]
    assert secret not in json.dumps(state, default=str)

    # What the browser reports after saving is kept masked, whatever else comes with it.
    form.saved = {"alias": "ibm-new", "provider": "ibm", "hint": "…abcd", "token": secret}
    assert form.saved == {"alias": "ibm-new", "provider": "ibm", "hint": "…abcd"}
    assert secret not in json.dumps(form.get_state(), default=str)

    form.status = "line one\nline two"
    assert form.status == "line one line two"
    with pytest.raises(Exception, match="unknown provider 'acme'"):
        form.provider = "acme"


@pytest.mark.parametrize(
    "given",
    [
        {"api_key": "k-123456789012"},
        {"token": "t-123456789012"},
        {"secret": {"api_key": "k-123456789012"}},
        {"aws_secret_access_key": "s-123456789012"},
        {"password": "p-123456789012"},
    ],
)
def test_the_credential_form_refuses_a_secret_argument(
    client: Client, given: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest, match="CredentialForm takes no secret") as caught:
        CredentialForm(client=client, **given)
    assert "123456789012" not in str(caught.value)


def test_the_credential_form_checks_alias_and_provider(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="bad credential alias"):
        CredentialForm(client=client, alias="no spaces")
    with pytest.raises(InvalidRequest, match="unknown provider 'acme'"):
        CredentialForm(client=client, provider="acme")
    assert CredentialForm(client=client, provider="braket").provider == "aws"


def test_the_form_script_sets_no_trait_but_the_safe_ones() -> None:
    source = FORM_JS.read_text(encoding="utf-8")
    assert set(re.findall(r'model\.set\("(\w+)"', source)) == {
        "alias",
        "provider",
        "status",
        "saved",
    }
    assert "innerHTML" not in source and "jQuery" not in source and "$(" not in source
    assert "console." not in source  # nothing typed is ever logged


_PAGE = r"""
class El {
  constructor(tag) {
    Object.assign(this, { tag, children: [], attrs: {}, dataset: {}, listeners: {} });
    Object.assign(this, { value: "", disabled: false, textContent: "", className: "" });
  }
  setAttribute(k, v) {
    this.attrs[k] = v;
    if (k === "id" || k === "type") this[k] = v;
    if (k.startsWith("data-")) this.dataset[k.slice(5)] = v;
  }
  appendChild(c) { this.children.push(c); return c; }
  append(...cs) { this.children.push(...cs); }
  replaceChildren(...cs) { this.children = cs; }
  addEventListener(n, f) { (this.listeners[n] ||= []).push(f); }
  fire(n) { for (const f of this.listeners[n] || []) f({ preventDefault() {} }); }
  all() { return [this, ...this.children.flatMap((c) => c.all())]; }
  find(c) { return this.all().filter((e) => e.className.split(" ").includes(c)); }
}
const [, , modulePath, withConfig] = process.argv;
globalThis.document = {
  createElement: (t) => new El(t),
  getElementById: (id) =>
    withConfig === "yes" && id === "jupyter-config-data"
      ? { textContent: JSON.stringify({ baseUrl: "/user/ada/", token: "PAGE-TOKEN" }) }
      : null,
  cookie: "other=1; _xsrf=2|ab12|cd34|ef56; more=2",
};
const requests = [];
globalThis.fetch = async (url, init) => {
  requests.push({ url, method: init.method, headers: init.headers, body: init.body });
  const data = url.endsWith("/test")
    ? { alias: "ionq-main", ok: true, message: "IonQ accepted the key" }
    : { alias: "ionq-main", provider: "ionq", owner: "ada", hint: "…WXYZ",
        created_at: "2026-01-01T00:00:00", updated_at: "2026-01-01T00:00:00" };
  return { ok: true, status: 201, json: async () => data };
};
const state = {
  alias: "", provider: "ionq", status: "", saved: {}, stored: [],
  providers: {
    ionq: { fields: [{ name: "api_key", label: "API key", secret: true, required: true }] },
    ibm: { fields: [
      { name: "token", label: "API token", secret: true, required: true },
      { name: "channel", label: "channel", secret: false, required: false } ] },
  },
};
const sets = [];
const handlers = {};
const model = {
  get: (k) => state[k],
  set: (k, v) => {
    sets.push([k, v]); state[k] = v;
    for (const f of handlers["change:" + k] || []) f();
  },
  save_changes() {},
  on: (n, f) => (handlers[n] ||= []).push(f),
  off: (n, f) => { handlers[n] = (handlers[n] || []).filter((g) => g !== f); },
};
const { default: widget } = await import(modulePath);
const el = new El("div");
const cleanup = widget.render({ model, el });
const one = (c) => el.find(c)[0];
const settle = () => new Promise((r) => setTimeout(r, 20));
const out = { noConfig: null, steps: [] };
if (withConfig !== "yes") {
  out.noConfig = { status: one("qmlops-cred-status").textContent,
                   state: one("qmlops-cred-status").dataset.state,
                   saveDisabled: one("qmlops-cred-save").disabled };
} else {
  const key = one("qmlops-cred-field-api_key");
  out.key = { type: key.type, aria: key.attrs["aria-label"], field: key.dataset.field,
              autocomplete: key.attrs.autocomplete };
  one("qmlops-credential-form").fire("submit");
  await settle();
  out.steps.push(one("qmlops-cred-status").textContent);
  one("qmlops-cred-alias").value = "ionq-main";
  key.value = "TYPED-SECRET-0123456789";
  one("qmlops-credential-form").fire("submit");
  await settle();
  out.steps.push(one("qmlops-cred-status").textContent);
  out.keyAfter = key.value;
  out.saved = one("qmlops-cred-saved").textContent;
  one("qmlops-cred-test").fire("click");
  await settle();
  out.steps.push(one("qmlops-cred-status").textContent);
  model.set("provider", "ibm");
  out.ibm = el.find("qmlops-cred-field").map((e) => [e.dataset.field, e.type]);
}
cleanup();
out.requests = requests;
out.sets = sets;
console.log(JSON.stringify(out));
"""


def _run_form(tmp_path: Path, with_config: bool) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the credential form's script test needs Node.js: apt-get install nodejs")
    module = tmp_path / "credential_form.mjs"
    module.write_text(FORM_JS.read_text(encoding="utf-8"), encoding="utf-8")
    page = tmp_path / "page.mjs"
    page.write_text(_PAGE, encoding="utf-8")
    done = subprocess.run(
        [node, str(page), module.as_uri(), "yes" if with_config else "no"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_form_script_puts_the_secret_to_the_server_and_nowhere_else(tmp_path: Path) -> None:
    out = _run_form(tmp_path, with_config=True)
    assert out["key"] == {
        "type": "password",
        "aria": "ionq API key",
        "field": "api_key",
        "autocomplete": "new-password",
    }
    assert out["steps"][0].startswith("Give the credential an alias")
    assert out["steps"][1] == "Saved ionq-main (ionq, …WXYZ)."
    assert out["steps"][2] == "Test passed: IonQ accepted the key"
    assert out["keyAfter"] == ""  # cleared once saved
    assert out["saved"] == "Saved: ionq-main (ionq, …WXYZ)"
    put, test = out["requests"]
    assert put["url"] == "/user/ada/qmlops/api/v1/credentials/ionq-main"
    assert put["method"] == "PUT"
    assert json.loads(put["body"]) == {
        "provider": "ionq",
        "secret": {"api_key": "TYPED-SECRET-0123456789"},
    }
    assert put["headers"]["Authorization"] == "token PAGE-TOKEN"
    assert put["headers"]["X-XSRFToken"] == "2|ab12|cd34|ef56"
    assert (test["url"], test["method"]) == (
        "/user/ada/qmlops/api/v1/credentials/ionq-main/test",
        "POST",
    )
    assert "TYPED-SECRET" not in json.dumps(out["sets"])  # the model never saw it
    assert {name for name, _ in out["sets"]} <= {"alias", "status", "saved", "provider"}
    saved = [value for name, value in out["sets"] if name == "saved"]
    assert saved == [
        {
            "alias": "ionq-main",
            "provider": "ionq",
            "hint": "…WXYZ",
            "created_at": "2026-01-01T00:00:00",
            "updated_at": "2026-01-01T00:00:00",
        }
    ]
    assert out["ibm"] == [["token", "password"], ["channel", "text"]]


def test_the_form_says_so_outside_a_jupyter_server_page(tmp_path: Path) -> None:
    out = _run_form(tmp_path, with_config=False)
    assert out["noConfig"]["state"] == "unavailable" and out["noConfig"]["saveDisabled"]
    assert "not served by one" in out["noConfig"]["status"]
    assert "qmlops creds set" in out["noConfig"]["status"]
    assert out["requests"] == []


# -- ResultHistogram -----------------------------------------------------------------------------


def test_result_histogram_draws_one_chart_per_circuit(client: Client) -> None:
    job = client.submit([BELL_QASM2, GHZ3], shots=200, wait=True, seed=7, observables=["ZZ", "ZZZ"])
    result = job.result()
    for given in (job, result, result.counts):
        chart = ResultHistogram(given)
        assert chart.counts == result.counts
        assert chart.value.count('<figure class="qmlops-result-histogram"') == 2
        assert 'data-circuit="1"' in chart.value and "circuit 1" in chart.value
        assert chart.value.count("<svg") == 2
    assert "⟨O⟩ = 1.0000" in ResultHistogram(result).value
    single = ResultHistogram({"0": 3, "1": 1}, title="coin")
    assert single.value.count("<svg") == 1 and "coin" in single.value
    assert "200 shots" in ResultHistogram(result).value

    waiting = client.submit(BELL_QASM2, shots=10, wait=False)
    pending = ResultHistogram(waiting)
    assert pending.counts == [] and f"job {waiting.id} is CREATED" in pending.value
    pending.update(job)
    assert pending.counts == result.counts
    with pytest.raises(TypeError, match="ResultHistogram draws"):
        ResultHistogram(42)


# -- RunBrowser ----------------------------------------------------------------------------------


def test_run_browser_lists_this_notebook_s_runs_with_key_metrics(
    tracking: Path, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qmlops_jupyter import track

    here = tmp_path / "analysis.ipynb"
    elsewhere = tmp_path / "other.ipynb"
    monkeypatch.setenv("QMLOPS_NOTEBOOK_PATH", str(here))
    with track("widgets", run_name="sweep-1", client=client) as run:
        job = client.submit(BELL_QASM2, shots=100, wait=True, seed=1)
        run.log_metrics({"loss": 0.25})
    assert client.tracking.flush(timeout=30)
    monkeypatch.setenv("QMLOPS_NOTEBOOK_PATH", str(elsewhere))
    other = client.submit(BELL_QASM2, shots=100, wait=True, seed=2)
    assert other.mlflow_run_id

    monkeypatch.setenv("QMLOPS_NOTEBOOK_PATH", str(here))
    browser = RunBrowser(client=client)
    assert browser.notebook == str(here.resolve())
    assert [r["run_name"] for r in browser.runs] == ["sweep-1"]
    assert browser.runs[0]["job_ids"] == [job.id]
    run_id = browser.runs[0]["run_id"]
    html = browser.table.value
    assert f'data-run-id="{run_id}"' in html and "qmlops-run-metrics" in html
    assert "loss = 0.25" in html  # the notebook's own metric comes first
    shown = widgets.key_metrics(browser.runs[0]["metrics"])
    assert shown[0] == ("loss", 0.25)
    assert any(name.endswith("p_max") for name, _ in shown)

    everyone = RunBrowser(client=client, notebook=False)
    assert {r["run_id"] for r in everyone.runs} == {run_id, other.mlflow_run_id}
    assert len(RunBrowser(client=client, notebook=str(elsewhere)).runs) == 1

    third = client.submit(GHZ3, shots=100, wait=True, seed=3)
    assert third.mlflow_run_id
    browser.refresh_button.click()
    assert [r["job_ids"] for r in browser.runs] == [[third.id], [job.id]]
    assert browser.status.value == ""


def test_run_browser_says_why_it_has_no_runs(home: Path, client: Client) -> None:
    browser = RunBrowser(client=client, notebook=False, experiment="nope")
    assert browser.runs == []
    assert "no MLflow experiment named" in browser.status.value
    assert "No runs yet" in browser.table.value
