"""The team's MLflow server as the hub-managed service ``mlflow``.

Real components only: a ``jupyterhub`` process on loopback (configurable-http-proxy installed
with npm into the pytest cache), the service ``python -m qmlops_jupyter.server.hub.mlflow_service``
managed by it, a real ``mlflow server`` behind that on a fresh PostgreSQL database, and the real
MLflow client logging through the hub's proxy with hub tokens. The hub and the service start
once for the module (MLflow takes 11-20 s to start).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from qmlops_testing import (
    configurable_http_proxy,
    free_port,
    parent_pids,
    postgres_database,
    process_cmdline,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SERVICE_MODULE = "qmlops_jupyter.server.hub.mlflow_service"
USER_PASSWORD = "shared-password-for-tests"
#: Tokens of the two config-defined services (the operator that creates user tokens, and the
#: engine host ``qmlops``).
OPS_TOKEN = "ops-" + uuid.uuid4().hex
QMLOPS_TOKEN = "qmlops-" + uuid.uuid4().hex
ADMIN, MEMBER = "alice", "bob"


def _pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@dataclass
class Hub:
    url: str  # the hub's proxy, as users reach it
    service_url: str  # {url}/services/mlflow
    db_url: str  # the MLflow backend store
    artifacts: Path
    log: Path
    proc: subprocess.Popen[bytes]
    tokens: dict[str, str]

    def api(self, method: str, path: str, token: str = OPS_TOKEN, **kw: object) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}/hub/api{path}",
            headers={"Authorization": f"token {token}"},
            timeout=30,
            **kw,  # type: ignore[arg-type]
        )


def _write_config(
    path: Path, *, chp: str, ports: dict[str, int], env: dict[str, str], tmp: Path
) -> None:
    service = {
        "name": "mlflow",
        "url": f"http://127.0.0.1:{ports['service']}",
        "command": [sys.executable, "-m", SERVICE_MODULE],
        "environment": env,
        "oauth_no_confirm": True,
        # Tokens issued to the service in a browser login carry the admin scope when the user
        # has it (without this, an admin's browser login would be refused).
        "oauth_client_allowed_scopes": ["custom:qmlops:admin"],
    }
    config = f"""
c = get_config()  # noqa
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {USER_PASSWORD!r}
c.Authenticator.allow_all = True
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {ports["proxy"]}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {ports["hub"]}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["proxy_api"]}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {str(tmp / "proxy.pid")!r}
c.JupyterHub.db_url = {"sqlite:///" + str(tmp / "hub.sqlite")!r}
c.JupyterHub.cookie_secret_file = {str(tmp / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(tmp / "hub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.custom_scopes = {{
    "custom:qmlops:admin": {{"description": "Administer the team's qmlops jobs and MLflow."}},
}}
c.JupyterHub.services = [
    {service!r},
    {{"name": "qmlops", "api_token": {QMLOPS_TOKEN!r}}},
    {{"name": "ops", "api_token": {OPS_TOKEN!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "qmlops-admin", "users": [{ADMIN!r}],
      "scopes": ["custom:qmlops:admin", "access:services!service=mlflow"]}},
    {{"name": "mlflow-member", "users": [{MEMBER!r}],
      "scopes": ["access:services!service=mlflow"]}},
    {{"name": "qmlops-engine", "services": ["qmlops"],
      "scopes": ["access:services!service=mlflow"]}},
    {{"name": "ops", "services": ["ops"],
      "scopes": ["admin:users", "tokens", "custom:qmlops:admin",
                 "access:services!service=mlflow"]}},
]
"""
    path.write_text(config)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Hub]:
    proc: subprocess.Popen[bytes] | None = None
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(postgres_database("qmlops_mlflow"))
        chp = configurable_http_proxy()
        stack.callback(lambda: _stop(proc))
        tmp = tmp_path_factory.mktemp("hub")
        artifacts = tmp / "artifacts"
        ports = {k: free_port() for k in ("proxy", "proxy_api", "hub", "service")}
        env = {
            "QMLOPS_MLFLOW_BACKEND_URI": db_url,
            "QMLOPS_MLFLOW_ARTIFACTS": str(artifacts),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        _write_config(tmp / "jupyterhub_config.py", chp=chp, ports=ports, env=env, tmp=tmp)
        log = tmp / "hub.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{ports['proxy']}"
        hub = Hub(url, f"{url}/services/mlflow", db_url, artifacts, log, proc, {})

        def answers(path: str) -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the hub stopped: {log.read_text()[-2000:]}")
            try:
                return httpx.get(url + path, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: answers("/hub/api/"), 30, "the hub")
        started = time.monotonic()
        wait_for(lambda: answers("/services/mlflow/health"), 60, "the mlflow service")
        print(f"mlflow service ready in {time.monotonic() - started:.1f} s")
        for name in (ADMIN, MEMBER):
            r = hub.api("POST", f"/users/{name}")
            assert r.status_code in (201, 409), r.text
        wanted = {
            "admin": (ADMIN, ["custom:qmlops:admin", "access:services!service=mlflow"]),
            "member": (MEMBER, ["access:services!service=mlflow"]),
            "admin_no_access": (ADMIN, ["custom:qmlops:admin"]),
        }
        for key, (name, scopes) in wanted.items():
            r = hub.api("POST", f"/users/{name}/tokens", json={"scopes": scopes, "note": key})
            assert r.status_code == 201, r.text
            hub.tokens[key] = r.json()["token"]
        hub.tokens["qmlops"] = QMLOPS_TOKEN
        yield hub


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def mlflow_client(hub: Hub, token: str | None, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    if token is None:
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hub.service_url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=hub.service_url)


def log_a_run(
    hub: Hub, token: str, who: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    client = mlflow_client(hub, token, monkeypatch)
    name = f"hub-{who}"
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(exp_id, tags={"qmlops.owner": who})
    run_id = run.info.run_id
    client.log_param(run_id, "shots", 1024)
    client.log_metric(run_id, "fidelity", 0.97)
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"00": 510, "11": 514}))
    client.log_artifact(run_id, str(counts))
    client.set_terminated(run_id)

    back = client.get_run(run_id)
    assert back.data.params["shots"] == "1024"
    assert back.data.metrics["fidelity"] == pytest.approx(0.97)
    assert back.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [f.path for f in client.list_artifacts(run_id)] == ["counts.json"]
    local = client.download_artifacts(run_id, "counts.json", str(tmp_path / "down"))
    assert json.loads(Path(local).read_text()) == {"00": 510, "11": 514}
    return run_id


def test_the_admin_logs_and_reads_a_run_with_an_artifact(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = log_a_run(hub, hub.tokens["admin"], ADMIN, tmp_path, monkeypatch)
    # The artifact went through the proxy into the service's artifact folder.
    stored = list(hub.artifacts.rglob("counts.json"))
    assert any(run_id in str(p) for p in stored), stored
    # The runs are in the PostgreSQL database.
    with _pg_connect(hub.db_url) as conn:
        rows = conn.execute("SELECT run_uuid, status FROM runs").fetchall()
    assert (run_id, "FINISHED") in rows


def test_the_qmlops_service_logs_and_reads_a_run(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = log_a_run(hub, hub.tokens["qmlops"], "qmlops", tmp_path, monkeypatch)
    with _pg_connect(hub.db_url) as conn:
        names = conn.execute(
            "SELECT e.name FROM runs r JOIN experiments e USING (experiment_id) "
            "WHERE r.run_uuid = %s",
            (run_id,),
        ).fetchall()
    assert names == [("hub-qmlops",)]


def search(hub: Hub, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{hub.service_url}/api/2.0/mlflow/experiments/search",
        json={"max_results": 10},
        headers=headers,
        timeout=30,
    )


def assert_refused(response: httpx.Response, needle: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.text.count("\n") == 1
    body = response.json()
    assert set(body) == {"error"} and needle in body["error"], body
    assert "experiments" not in response.text and "hub-" not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "token"])
def test_a_member_is_refused(hub: Hub, scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    token = hub.tokens["member"]
    assert_refused(search(hub, {"Authorization": f"{scheme} {token}"}), "qmlops API")
    from mlflow.exceptions import MlflowException

    client = mlflow_client(hub, token, monkeypatch)
    with pytest.raises(MlflowException, match="may not open"):
        client.search_experiments()


def test_no_token_gets_no_data(hub: Hub) -> None:
    assert_refused(search(hub, {}), "token")
    api = httpx.get(f"{hub.service_url}/api/2.0/mlflow/experiments/search", timeout=30)
    assert api.status_code == 403
    page = httpx.get(f"{hub.service_url}/", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 302
    assert "/hub/api/oauth2/authorize" in page.headers["Location"]
    assert_refused(search(hub, {"Authorization": "Bearer not-a-token-at-all"}), "token")


def test_a_token_without_the_access_scope_is_refused(hub: Hub) -> None:
    token = hub.tokens["admin_no_access"]
    assert_refused(search(hub, {"Authorization": f"Bearer {token}"}), "no access")


def test_health_answers_without_login_and_without_data(hub: Hub) -> None:
    r = httpx.get(f"{hub.service_url}/health", timeout=30)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_an_admin_browser_login_opens_the_ui(hub: Hub) -> None:
    """Hub login, the OAuth round trip to the service, then MLflow's page and an API call of
    the page (same-origin); the same call from another site is refused."""
    with httpx.Client(base_url=hub.url, timeout=30, follow_redirects=True) as browser:
        browser.get("/hub/login")
        r = browser.post(
            "/hub/login",
            data={
                "username": ADMIN,
                "password": USER_PASSWORD,
                "_xsrf": browser.cookies.get("_xsrf", path="/hub/"),
            },
            follow_redirects=False,  # to the user's server, which this hub does not run
        )
        assert r.status_code == 302, r.text[:300]
        page = browser.get("/services/mlflow/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and str(page.url).startswith(hub.service_url)
        assert "<html" in page.text.lower()
        same_site = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        r = browser.post(
            "/services/mlflow/ajax-api/2.0/mlflow/experiments/search",
            json={"max_results": 10},
            headers={**same_site, "Origin": hub.url},
        )
        assert r.status_code == 200, r.text
        assert "experiments" in r.json()
        r = browser.post(
            "/services/mlflow/ajax-api/2.0/mlflow/experiments/search",
            json={"max_results": 10},
            headers={
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "cors",
                "Origin": "http://evil.test",
            },
        )
        assert r.status_code == 403


def test_mlflow_cannot_start_one_line_and_non_zero(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "QMLOPS_MLFLOW_BACKEND_URI": "bogus://user:s3cret-db-pass@nowhere/db",
        "QMLOPS_MLFLOW_ARTIFACTS": str(tmp_path / "artifacts"),
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{free_port()}",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/mlflow/",
        "JUPYTERHUB_SERVICE_NAME": "mlflow",
        "JUPYTERHUB_API_TOKEN": "hub-api-token-never-printed",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    r = subprocess.run(
        [sys.executable, "-m", SERVICE_MODULE], env=env, capture_output=True, text=True, timeout=90
    )
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "could not start" in lines[0]
    assert "s3cret-db-pass" not in lines[0] and "hub-api-token" not in lines[0]


def _descendants(pid: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids().items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if line := process_cmdline(child):
            found[child] = line
        todo.extend(children.get(child, []))
    return found


def test_sigterm_leaves_no_mlflow_process_and_no_secret_in_the_log(hub: Hub) -> None:
    """Last in the module: it stops the service."""
    services = [pid for pid, line in _descendants(hub.proc.pid).items() if SERVICE_MODULE in line]
    assert len(services) == 1, services
    service = services[0]
    mlflow = {p: line for p, line in _descendants(service).items() if "mlflow" in line}
    assert mlflow, "no mlflow process under the service"
    started = time.monotonic()
    os.kill(service, signal.SIGTERM)
    wait_for(lambda: not process_cmdline(service), 20, "the service to stop")
    wait_for(lambda: not any(process_cmdline(p) for p in mlflow), 20, "mlflow to stop")
    print(f"service and mlflow stopped in {time.monotonic() - started:.1f} s")

    log = hub.log.read_text(errors="replace")
    secrets = [OPS_TOKEN, QMLOPS_TOKEN, USER_PASSWORD, *hub.tokens.values()]
    assert not [s for s in secrets if s in log]
    assert not re.search(r"(?i)authorization:\s*(bearer|token)\s+\S", log)
