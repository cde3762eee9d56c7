"""The server's Prometheus metrics, end to end: a real ``jupyter server`` whose engine runs Bell
jobs submitted through the core client (on Aer, and on IonQ's loopback emulator answering with
injected errors), its token-protected ``/metrics``, a real Prometheus scraping it with the
shipped scrape config and alert rules, ``promtool`` on the rules and their unit tests, and the
Grafana dashboard's queries run against that Prometheus.

Prometheus and promtool come from Debian's ``prometheus`` package (``.ci/run`` installs it);
these tests fail, not skip, without them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from qmlops_testing import BELL_QASM2, free_port, wait_for

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.server.metrics import EXPORTED, series_names
from qmlops_jupyter.states import JobState
from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alert-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alert-rules.test.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "qmlops-dashboard.json"

#: Distinctive, so a label that leaks it is found.
OWNER = "metrics-owner-q7x"
JOBS = 3
SHOTS = 100
SHOTS_PER_DAY = 1000
IONQ = "ionq:qpu.aria-1"
IONQ_KEY = "ionq-emulator-key-m3tr1cs"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install prometheus (Debian), as .ci/run does")
    return path


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def tail(path: Path, secret: str, lines: int = 40) -> str:
    """The end of a process's log for a failure message, with the token masked."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.replace(secret, "<token>").splitlines()[-lines:])


@dataclass
class Server:
    url: str
    address: str
    token: str = field(repr=False)
    client: Client
    job_ids: list[str] = field(repr=False)
    log: Path = field(repr=False)

    def metrics(self, token: str | None = None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"token {token}"}
        return httpx.get(f"{self.url}metrics", headers=headers, timeout=30)

    def families(self) -> dict[str, Any]:
        response = self.metrics(self.token)
        assert response.status_code == 200, response.status_code
        return {f.name: f for f in text_string_to_metric_families(response.text)}


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float | None:
    for s in families[family].samples if family in families else []:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A jupyter server (engine on, gauges refreshed every second) on a fresh ledger, which has
    run jobs submitted without waiting by a client in this process: ``JOBS`` Bell jobs on Aer,
    and on IonQ (the loopback emulator) one that met a 429 and a 500 before completing and one
    the provider failed."""
    tmp = tmp_path_factory.mktemp("metrics")
    home = tmp / "home"
    root_dir = tmp / "notebooks"
    root_dir.mkdir()
    database_url = f"sqlite:///{home / 'ledger.sqlite'}"
    token = secrets.token_hex(16)
    port = free_port()
    emulator = EmulatorProcess(tmp / "ionq", queue_seconds=0.5, api_key=IONQ_KEY).start()
    home.mkdir()
    (home / "backends.yaml").write_text(
        f"backends:\n  {IONQ}:\n    options:\n      api_url: {emulator.url}\n      timeout: 5\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QMLOPS_", "MLFLOW_", "JUPYTER_", "IONQ_"))
    }
    env.update(
        QMLOPS_HOME=str(home),
        QMLOPS_DATABASE_URL=database_url,
        QMLOPS_OWNER=OWNER,
        QMLOPS_TRACKING="off",
        IONQ_API_KEY=IONQ_KEY,
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),  # no user config leaks in
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
    )
    argv = [
        sys.executable,
        "-m",
        "jupyter",
        "server",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        "--no-browser",
        f"--ServerApp.root_dir={root_dir}",
        "--QmlopsApp.metrics_interval=1",
    ]
    if os.getuid() == 0:
        argv.append("--allow-root")
    log = tmp / "server.log"
    url = f"http://127.0.0.1:{port}/"
    proc: subprocess.Popen[bytes] | None = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QMLOPS_TRACKING", "off")
        client = Client(Settings.from_env(home=home, database_url=database_url, owner=OWNER))
        try:
            # A budget, so qmlops_budget_used_ratio has something to say.
            client.set_budget(shots_per_day=SHOTS_PER_DAY)
            with open(log, "wb") as out:
                proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            server_proc = proc

            def ready() -> bool:
                """The extension has started: its event pump has looked at the ledger (the
                server answers HTTP before that, and the pump skips what came earlier)."""
                assert server_proc.poll() is None, f"jupyter server exited:\n{tail(log, token)}"
                try:
                    r = httpx.get(
                        f"{url}qmlops/api/v1/health",
                        headers={"Authorization": f"token {token}"},
                        timeout=30,
                    )
                except httpx.TransportError:
                    return False
                return r.status_code == 200 and r.json()["events"]["last_poll"] is not None

            wait_for(ready, 120, "the qmlops extension to start")

            def finish(job_ids: list[str], state: JobState) -> None:
                def done() -> bool:
                    records = [client.get_job(j).record for j in job_ids]
                    for r in records:
                        assert not r.state.terminal or r.state is state, (r.state, r.error)
                    return all(r.state is state for r in records)

                wait_for(done, 120, f"the server's engine to end jobs {state.value}")

            # Jobs only: the server's engine runs them (no wait, no engine here).
            emulator.inject(
                {"on": "POST /v0.3/jobs", "status": 429, "retry_after": 1},
                {"on": "GET /v0.3/jobs/*", "status": 500},
            )
            job_ids = [client.submit(BELL_QASM2, shots=SHOTS).id for _ in range(JOBS)]
            job_ids.append(client.submit(BELL_QASM2, backend=IONQ, shots=SHOTS).id)
            finish(job_ids, JobState.COMPLETED)
            emulator.inject({"on": "run", "failure": {"code": "Internal", "error": "injected"}})
            failed = client.submit(BELL_QASM2, backend=IONQ, shots=SHOTS).id
            finish([failed], JobState.FAILED)
            yield Server(url, f"127.0.0.1:{port}", token, client, [*job_ids, failed], log)
        finally:
            if proc is not None:
                stop(proc)
            emulator.kill()
            client.close()


def test_metrics_of_jobs_run_by_the_server(server: Server) -> None:
    assert server.metrics().status_code == 403, "/metrics must need the token"
    assert server.metrics("not-the-token").status_code == 403

    jobs_total = "quantum_jobs", "quantum_jobs_total"
    duration = "quantum_job_duration_seconds"
    errors = "qmlops_provider_errors", "qmlops_provider_errors_total"

    def settled() -> bool:
        fams = server.families()
        return (
            sample(fams, *jobs_total, backend="aer", state="COMPLETED") == JOBS
            and sample(fams, *jobs_total, backend=IONQ, state="FAILED") == 1
            and sample(
                fams, "quantum_backend_queue_size", "quantum_backend_queue_size", backend="aer"
            )
            == 0
            and sample(fams, "quantum_shots_used_daily", "quantum_shots_used_daily", backend="aer")
            == JOBS * SHOTS
            # What needs the job's record is observed once the metrics task has read it.
            and sample(fams, duration, f"{duration}_count", backend="aer") == JOBS
            and sample(fams, *errors, backend=IONQ, kind="permanent") == 1
        )

    wait_for(settled, 60, "/metrics to count the finished jobs")
    fams = server.families()
    text = server.metrics(server.token).text
    assert f'quantum_jobs_total{{backend="aer",state="COMPLETED"}} {float(JOBS)}' in text
    for state in ("CREATED", "SUBMITTING", "COMPLETED"):
        assert sample(fams, *jobs_total, backend="aer", state=state) == JOBS
    assert sample(fams, *jobs_total, backend="aer", state="FAILED") is None
    assert sample(fams, *jobs_total, backend=IONQ, state="CREATED") == 2
    assert sample(fams, *jobs_total, backend=IONQ, state="COMPLETED") == 1

    # Durations: one observation per finished job, creation to end, under the 72 h top bucket.
    for backend, count in (("aer", JOBS), (IONQ, 2)):
        assert sample(fams, duration, f"{duration}_count", backend=backend) == count
        assert 0 < sample(fams, duration, f"{duration}_sum", backend=backend) < 120 * count
        top = sample(fams, duration, f"{duration}_bucket", backend=backend, le="259200.0")
        assert top == count

    # Depth: every circuit of every job, as the ledger recorded it at creation.
    records = [server.client.get_job(j).record for j in server.job_ids]
    depth = "quantum_circuit_depth"
    for backend in ("aer", IONQ):
        depths = [c.depth for r in records if r.backend == backend for c in r.circuits]
        assert sample(fams, depth, f"{depth}_count", backend=backend) == len(depths)
        assert sample(fams, depth, f"{depth}_sum", backend=backend) == sum(depths)

    # The 429 on the submit and the 500 on a poll were retried; the failure at IonQ was not.
    assert sample(fams, "qmlops_retries", "qmlops_retries_total", backend=IONQ) == 2
    assert sample(fams, *errors, backend=IONQ, kind="transient") == 2
    assert sample(fams, *errors, backend="aer") is None
    assert not fams["qmlops_recovered_jobs"].samples

    # Ledger-wide gauges; every configured backend has a queue, empty now.
    queues = {s.labels["backend"]: s.value for s in fams["quantum_backend_queue_size"].samples}
    assert queues["aer"] == queues[IONQ] == 0 and len(queues) > 2
    shots = sample(fams, "quantum_shots_used_daily", "quantum_shots_used_daily", backend=IONQ)
    assert shots == 2 * SHOTS
    assert sample(fams, "qmlops_jobs_needing_attention", "qmlops_jobs_needing_attention") == 0
    assert sample(fams, "qmlops_tracking_outbox_pending", "qmlops_tracking_outbox_pending") == 0
    ratio = sample(
        fams, "qmlops_budget_used_ratio", "qmlops_budget_used_ratio", backend="*", period="day"
    )
    assert ratio == pytest.approx((JOBS + 2) * SHOTS / SHOTS_PER_DAY)
    tick = sample(
        fams,
        "qmlops_engine_last_tick_timestamp_seconds",
        "qmlops_engine_last_tick_timestamp_seconds",
    )
    assert tick is not None and time.time() - tick < 30
    assert "quantum_fidelity_score" in fams  # declared; these backends report no fidelity
    assert not fams["quantum_fidelity_score"].samples

    # Only the names this module declares; no label naming a user or a job; no key anywhere.
    ours = {
        s.name
        for f in fams.values()
        for s in f.samples
        if s.name.startswith(("quantum_", "qmlops_"))
    }
    assert ours <= series_names(), ours - series_names()
    private = [OWNER, *server.job_ids]
    for family in fams.values():
        for s in family.samples:
            for value in s.labels.values():
                assert not any(x in value for x in private), (s.name, s.labels)
    assert IONQ_KEY not in text and server.token not in text


def prometheus_config(server: Server, folder: Path) -> Path:
    """The shipped scrape config, aimed at the test server: its address, a token file, the
    shipped alert rules, and a 1 s scrape."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    token_file = folder / "jupyter.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(server.token)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    assert job["authorization"]["type"] == "token"
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": [server.address]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would get it from Grafana (variables filled in)."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace('=~"$backend"', '=~".*"')
    )


def test_prometheus_scrapes_the_server(server: Server, tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    config = prometheus_config(server, tmp_path)
    checked = subprocess.run(
        [tool("promtool"), "check", "config", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def query(promql: str) -> dict[str, Any]:
            assert proc.poll() is None, f"prometheus exited:\n{tail(log, server.token)}"
            r = httpx.get(f"{api}/query", params={"query": promql}, timeout=10)
            assert r.status_code in (200, 400, 422), r.status_code
            return r.json()

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{tail(log, server.token)}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, "prometheus to start")

        def scraped() -> bool:
            try:
                data = query('quantum_jobs_total{backend="aer",state="COMPLETED"}')
            except httpx.TransportError:
                return False
            return bool(data["data"]["result"])

        wait_for(scraped, 90, f"prometheus to scrape the server (its log: {log})")
        (series,) = query('quantum_jobs_total{backend="aer",state="COMPLETED"}')["data"]["result"]
        assert series["metric"]["job"] == "qmlops-jupyter"
        assert series["metric"]["instance"] == server.address
        assert float(series["value"][1]) == JOBS
        (up,) = query('up{job="qmlops-jupyter"}')["data"]["result"]
        assert up["value"][1] == "1"
        aer = query('quantum_jobs_total{backend="aer"}')["data"]["result"]
        states = {r["metric"]["state"] for r in aer}
        assert {"CREATED", "SUBMITTING", "COMPLETED"} <= states <= {*JobState.__members__}
        assert "FAILED" not in states

        # The shipped rules load and evaluate; none fires on this healthy server.
        def rules_evaluated() -> bool:
            groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            never = "0001-01-01T00:00:00Z"
            return len(rules) == 6 and all(r["lastEvaluation"] != never for r in rules)

        wait_for(rules_evaluated, 30, "prometheus to evaluate the alert rules")
        groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        for rule in (r for g in groups for r in g["rules"]):
            assert rule["health"] == "ok", rule
            assert rule["state"] == "inactive", rule

        # Every dashboard query parses and runs; those on series the server has return data.
        for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
            answer = query(grafana_to_promql(expr))
            assert answer["status"] == "success", (expr, answer.get("error"))
        for expr in (
            "max by (backend) (quantum_backend_queue_size)",
            "histogram_quantile(0.5, sum by (le) (quantum_job_duration_seconds_bucket))",
            "time() - max(qmlops_engine_last_tick_timestamp_seconds)",
        ):
            assert query(expr)["data"]["result"], expr
    finally:
        stop(proc)


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    promtool = tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


# -- the dashboard and the rules name only what the server exports -------------------------------

PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names in matchers or groupings, durations or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr, flags=re.I
    )
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        word, call = match.groups()
        if call is None and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def test_metric_name_extraction() -> None:
    assert metric_names(
        "histogram_quantile(0.9, sum by (le) (rate(quantum_job_duration_seconds_bucket"
        '{backend=~"$backend"}[$__rate_interval])))'
    ) == {"quantum_job_duration_seconds_bucket"}
    assert metric_names("time() - max(qmlops_engine_last_tick_timestamp_seconds) > 60") == {
        "qmlops_engine_last_tick_timestamp_seconds"
    }
    assert metric_names('up{job="x"} == 0 and on (instance) foo_total') == {"up", "foo_total"}


def test_dashboard_is_valid_and_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "qmlops-jupyter" and dashboard["title"]
    (source,) = dashboard["__inputs"]
    assert source["name"] == "DS_PROMETHEUS" and source["pluginId"] == "prometheus"
    titles = {p["title"] for p in dashboard["panels"]}
    for title in (
        "Jobs by state",
        "Job duration (creation to end)",
        "Queue size",
        "Shots used today",
        "Circuit depth",
        "Engine last tick",
        "Jobs needing attention",
        "Provider errors",
    ):
        assert title in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = series_names()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    (variable,) = dashboard["templating"]["list"]
    label_values = re.fullmatch(r"label_values\((\w+), backend\)", variable["definition"])
    assert label_values and label_values.group(1) in exported
    # Every exported metric has a place on the dashboard.
    assert {n for n in EXPORTED} <= {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}, set(
        EXPORTED
    ) - {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}


def test_alert_rules_use_only_exported_metrics() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "QmlopsEngineStale",
        "QmlopsJobsNeedAttention",
        "QmlopsProviderErrors",
        "QmlopsBudgetNearlySpent",
    }
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= series_names() | {"up"}, (rule["alert"], names)
