"""A user's server in "service mode" (``c.QmlopsApp.service_url``): the team's ``qmlops`` JupyterHub
service hosts the engine, the ledger, the vault, budgets and schedules; this server hosts none.

- Every ``/qmlops/api/v1/`` request this server receives (from the sidebar with the user's login,
  from a kernel with its scoped token) is forwarded to the service with this server's hub token
  (``JUPYTERHUB_API_TOKEN``, issued with ``access:services!service=qmlops`` and the user's qmlops
  scopes), and the service's answer is passed back as it is. So the sidebar, magics, widgets and
  pipelines work unchanged, and jobs and schedules live on while this server is stopped or culled.
- ``POST /pipelines`` naming a notebook on this server sends the notebook itself: the service
  reads no user's files.
- :class:`ServiceEvents` follows the service's ``/events`` long poll and re-emits the user's job
  changes as ``job_status`` events on this server's event bus (the sidebar's live updates).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from tornado import httpclient, web

from .background import cancel_and_wait
from .events import JOB_STATUS
from .handlers.base import API, QmlopsHandler

if TYPE_CHECKING:
    from .app import QmlopsApp

#: Seconds a forwarded request may take: the API's longest ``?wait=`` and then some.
FORWARD_TIMEOUT = 330.0
#: Request headers passed on to the service (never the caller's cookies or credentials).
PASSED_HEADERS = ("Content-Type", "Accept")
#: Seconds of one long poll of the service's ``/events``.
EVENTS_WAIT = 25.0


def hub_token() -> str:
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        from ..errors import NotReady

        raise NotReady("service mode needs JUPYTERHUB_API_TOKEN (a server spawned by the hub)")
    return token


async def call_service(
    app: QmlopsApp,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = FORWARD_TIMEOUT,
) -> httpclient.HTTPResponse:
    """One request to the service under its API (``path`` after ``qmlops/api/v1/``), as this
    server's user; an HTTP error status is returned, not raised."""
    from ..errors import NotReady

    request = httpclient.HTTPRequest(
        f"{app.service_url}{API}/{path}",
        method=method,
        body=body if method in ("POST", "PUT", "PATCH") else None,
        headers={**(headers or {}), "Authorization": f"token {hub_token()}"},
        request_timeout=timeout,
        connect_timeout=10.0,
        allow_nonstandard_methods=True,
        follow_redirects=False,
    )
    try:
        return await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, httpclient.HTTPClientError) as exc:
        raise NotReady(
            f"the qmlops service at {app.service_url} does not answer ({type(exc).__name__})"
        ) from None


class ForwardHandler(QmlopsHandler):
    """``/qmlops/api/v1/<path>``, every method: forwarded to the service."""

    auth_resource = "qmlops"
    needs_client = False

    async def _forward(self, path: str) -> None:
        body = self.request.body or None
        if self.request.method == "POST" and path == "pipelines" and body:
            body = await self._with_notebook(body)
        query = self.request.query
        headers = {h: self.request.headers[h] for h in PASSED_HEADERS if h in self.request.headers}
        answer = await call_service(
            self.extensionapp,
            self.request.method or "GET",
            f"{path}?{query}" if query else path,
            body=body,
            headers=headers,
        )
        self.set_status(answer.code, answer.reason)
        for name in ("Content-Type", "Allow", "Retry-After"):
            if name in answer.headers:
                self.set_header(name, answer.headers[name])
        if answer.code != 204 and answer.body:
            self.write(answer.body)
        await self.finish()
        if self.request.method != "GET":
            self.extensionapp.events.poke()

    async def _with_notebook(self, body: bytes) -> bytes:
        """A pipeline named by a path on this server goes with the notebook's content."""
        try:
            data = json.loads(body)
        except ValueError:
            return body  # the service answers 400
        if not isinstance(data, dict) or data.get("content") is not None:
            return body
        path = data.get("notebook")
        if not isinstance(path, str) or not path.endswith(".ipynb"):
            return body
        contents = self.serverapp.contents_manager
        relative = os.path.relpath(path, self.serverapp.root_dir) if os.path.isabs(path) else path
        try:
            model = await _maybe_await(contents.get(relative, content=True, type="notebook"))
        except web.HTTPError:
            from ..errors import InvalidRequest

            raise InvalidRequest(f"{path}: no such notebook") from None
        data["content"] = json.loads(json.dumps(model["content"]))
        return json.dumps(data).encode()

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    @authorized
    async def put(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self._forward(path)


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


def routes() -> list[tuple[str, Any]]:
    return [(rf"/{API}/(?P<path>.*)", ForwardHandler)]


class ServiceEvents:
    """The sidebar's live updates in service mode: the service's job changes of this server's
    user (its ``/events`` long poll, woken by the service's own event pump) re-emitted on this
    server's event bus. Offers what handlers of the local API ask of an event pump."""

    def __init__(self, app: QmlopsApp) -> None:
        self.app = app
        self.last_seq: int | None = None
        self.last_poll: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._poked = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="qmlops-service-events")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def poke(self) -> None:
        """After a change made through this server: look at once."""
        self._poked.set()

    def poke_pipelines(self) -> None:
        self._poked.set()

    async def _loop(self) -> None:
        import time

        backoff = 1.0
        while True:
            try:
                after = "" if self.last_seq is None else f"&after={self.last_seq}"
                wait = 0 if self.last_seq is None else EVENTS_WAIT
                answer = await call_service(
                    self.app, "GET", f"events?wait={wait:g}{after}", timeout=EVENTS_WAIT + 15
                )
                if answer.code != 200:
                    raise RuntimeError(f"the service answered {answer.code}")
                data = json.loads(answer.body)
                for change in data.get("events", []):
                    self.app.serverapp.event_logger.emit(schema_id=JOB_STATUS, data=change)
                self.last_seq = int(data["next"])
                self.last_poll = time.time()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the service restarting, or the hub: try again soon
                self.app.log.warning("qmlops: following the service's events: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
