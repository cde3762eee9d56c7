"""Every qmlops route, read from the running app's router, refuses what it must: a request with
no token, a user the server's authorizer denies the route's ``qmlops:*`` resource, a
cookie-authenticated write without its XSRF token; and a kernel's scoped token opens the qmlops
API and nothing else of the server."""

from __future__ import annotations

import json
import re
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth import Authorizer
from qmlops_testing import BELL_QASM2
from tornado import web
from traitlets.config import Config

API = "qmlops/api/v1"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
#: The resource each route is authorized as (what a JupyterHub role grants).
RESOURCES = {
    "/jobs": "qmlops:jobs",
    "/jobs/{job_id}": "qmlops:jobs",
    "/jobs/{job_id}/cancel": "qmlops:jobs",
    "/events": "qmlops:jobs",
    "/backends": "qmlops:backends",
    "/backends/{name}": "qmlops:backends",
    "/health": "qmlops:backends",
    "/openapi.json": "qmlops:backends",
    "/credentials": "qmlops:credentials",
    "/credentials/{alias}": "qmlops:credentials",
    "/credentials/{alias}/test": "qmlops:credentials",
    "/budget": "qmlops:budget",
    "/estimate": "qmlops:budget",
    "/runs": "qmlops:runs",
    "/dashboards": "qmlops:dashboards",
    "/audit": "qmlops:audit",
    "/pipelines": "qmlops:pipelines",
    "/pipelines/{name_or_id}": "qmlops:pipelines",
    "/pipelines/{name_or_id}/pause": "qmlops:pipelines",
    "/pipelines/{name_or_id}/resume": "qmlops:pipelines",
    "/pipelines/{name_or_id}/runs": "qmlops:pipelines",
    "/pipeline-runs": "qmlops:pipelines",
    "/pipeline-runs/{run_id}": "qmlops:pipelines",
}
ACTIONS = {"GET": "read", "POST": "write", "PUT": "write", "DELETE": "write", "PATCH": "write"}
SERVER_ENV = ("QMLOPS_SERVER_URL", "QMLOPS_SERVER_TOKEN_FILE", "MLFLOW_TRACKING_URI")


class DenyQmlops(Authorizer):
    """Allows everything of the server except the qmlops API; remembers what it was asked."""

    asked: list[tuple[str, str, str]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource.startswith("qmlops"):
            DenyQmlops.asked.append((handler.request.path, action, resource))
            return False
        return True


@pytest.fixture
def authorizer() -> type[Authorizer] | None:
    return None


@pytest.fixture
def jp_server_config(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, authorizer: Any
) -> Config:
    path = tmp_path / "qmlops"
    monkeypatch.setenv("QMLOPS_HOME", str(path))
    for var in SERVER_ENV:
        monkeypatch.setenv(var, "")  # recorded, so the teardown removes what the server sets
        monkeypatch.delenv(var)
    server: dict[str, Any] = {"jpserver_extensions": {"qmlops_jupyter": True}}
    if authorizer is not None:
        server["authorizer_class"] = authorizer
    return Config({"ServerApp": server, "QmlopsApp": {"home": str(path)}})


@pytest.fixture
def server(jp_serverapp: Any, jp_asyncio_loop: Any) -> Any:
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    return jp_serverapp


@pytest.fixture
def fetch(server: Any, http_server_client: Any, jp_base_url: str) -> Any:
    """A request with only the headers given (no token unless asked); never raises on status."""

    def call(
        path: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None
    ):
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b"{}"
        elif body is not None and not isinstance(body, str | bytes):
            body = json.dumps(body)
        return http_server_client.fetch(
            jp_base_url + path.lstrip("/"),
            method=method,
            headers=headers or {},
            body=body,
            raise_error=False,
            follow_redirects=False,
            allow_nonstandard_methods=True,
        )

    return call


def qmlops_routes(serverapp: Any) -> list[tuple[str, str, str]]:
    """(spec-style path, a concrete URL path, method) for every method every qmlops handler
    defines, as registered in the running app."""
    found = []
    for rule in serverapp.web_app.default_router.rules:
        for inner in getattr(rule.target, "rules", [rule]):
            pattern = inner.matcher.regex.pattern
            if API not in pattern:
                continue
            path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.split(API, 1)[1].rstrip("$"))
            concrete = re.sub(r"\{\w+\}", "abcd1234", path)
            handler = inner.target
            for method in METHODS:
                if getattr(handler, method.lower()) is not getattr(
                    web.RequestHandler, method.lower()
                ):
                    found.append((path, f"{API}{concrete}", method))
    return found


@pytest.fixture
def routes(server: Any) -> list[tuple[str, str, str]]:
    found = qmlops_routes(server)
    assert {path for path, _, _ in found} == set(RESOURCES), found
    assert len(found) >= 15
    return found


def token(server: Any) -> dict[str, str]:
    return {"Authorization": f"token {server.identity_provider.token}"}


def error_of(response: Any) -> str:
    return json.loads(response.body)["error"]


async def test_every_route_needs_a_token(server: Any, routes: Any, fetch: Any) -> None:
    for _, url, method in routes:
        for headers in ({}, {"Authorization": "token wrong"}, {"X-Qmlops-Kernel-Token": "wrong"}):
            r = await fetch(url, method, headers)
            assert r.code in (401, 403), f"{method} {url} with {headers}: {r.code}"
            assert error_of(r) in ("forbidden", "unauthenticated")
    # The same requests with the token get past authentication (whatever they answer then).
    for _, url, method in routes:
        r = await fetch(url, method, token(server))
        assert r.code not in (401, 403), f"{method} {url}: {r.code} {r.body!r}"


@pytest.mark.parametrize("authorizer", [DenyQmlops])
async def test_an_authorizer_that_denies_qmlops_resources_is_obeyed(
    server: Any, routes: Any, fetch: Any
) -> None:
    DenyQmlops.asked.clear()
    kernel = {"X-Qmlops-Kernel-Token": Path(_token_file()).read_text()}
    for path, url, method in routes:
        for headers in (token(server), kernel):
            r = await fetch(url, method, headers)
            assert r.code == 403, f"{method} {url}: {r.code} {r.body!r}"
            assert error_of(r) == "forbidden"
        asked = DenyQmlops.asked[-1]
        assert asked[0].endswith(url) and asked[1:] == (ACTIONS[method], RESOURCES[path])
    # The rest of the server is not affected.
    assert (await fetch("api/status", "GET", token(server))).code == 200


async def test_a_cookie_session_cannot_write_without_its_xsrf_token(
    server: Any, routes: Any, fetch: Any
) -> None:
    login = await fetch(f"api/status?token={server.identity_provider.token}")
    page = await fetch("login")
    jar = SimpleCookie()
    for response in (login, page):
        for header in response.headers.get_list("Set-Cookie"):
            jar.load(header)
    assert "_xsrf" in jar and any(name.startswith("username-") for name in jar)
    cookie = {"Cookie": "; ".join(f"{k}={v.value}" for k, v in jar.items())}

    assert (await fetch(f"{API}/jobs", "GET", cookie)).code == 200  # the session is good
    for _, url, method in routes:
        if method == "GET":
            continue
        r = await fetch(url, method, cookie)
        assert r.code == 403, f"{method} {url}: {r.code}"
        assert "_xsrf" in json.loads(r.body)["message"]
    with_xsrf = {**cookie, "X-XSRFToken": jar["_xsrf"].value}
    bell = {"backend": "aer", "circuits": [BELL_QASM2], "shots": 10}
    r = await fetch(f"{API}/jobs", "POST", with_xsrf, bell)
    assert r.code == 201, r.body


def _token_file() -> str:
    import os

    return os.environ["QMLOPS_SERVER_TOKEN_FILE"]


async def test_a_kernel_token_opens_the_qmlops_api_only(server: Any, fetch: Any) -> None:
    path = Path(_token_file())
    assert path.stat().st_mode & 0o077 == 0  # readable by this user only
    kernel = {"X-Qmlops-Kernel-Token": path.read_text()}
    assert (await fetch(f"{API}/jobs", "GET", kernel)).code == 200
    bell = {"backend": "aer", "circuits": [BELL_QASM2], "shots": 10}
    made = await fetch(f"{API}/jobs", "POST", kernel, bell)  # a header: no XSRF needed
    assert made.code == 201, made.body
    job_id = json.loads(made.body)["id"]
    assert (await fetch(f"{API}/jobs/{job_id}", "GET", kernel)).code == 200
    for other in ("api/contents", "api/status", "api/kernels", "api/sessions"):
        r = await fetch(other, "GET", kernel)
        assert r.code in (401, 403), f"{other}: {r.code}"
    r = await fetch(
        "api/contents/x.txt", "PUT", kernel, {"type": "file", "format": "text", "content": "x"}
    )
    assert r.code in (401, 403)
    assert (await fetch(f"{API}/jobs", "GET", {"X-Qmlops-Kernel-Token": "x" * 43})).code == 403
