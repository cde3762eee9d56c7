"""The team's MLflow tracking server as the JupyterHub-managed service ``mlflow``, behind the
hub's authentication.

``python -m qmlops_jupyter.server.hub.mlflow_service`` is the command of the hub service. It

- starts ``mlflow server`` (one worker) on a private 127.0.0.1 port, with the UI and the REST
  API under the service prefix (``--static-prefix``), the backend store from
  ``QMLOPS_MLFLOW_BACKEND_URI`` (passed in the environment, never on a command line) and
  artifacts proxied through the server into ``QMLOPS_MLFLOW_ARTIFACTS``;
- serves, on the host and port of ``JUPYTERHUB_SERVICE_URL`` (127.0.0.1 only), a reverse proxy
  to it that authenticates every request with the hub: a token in the ``Authorization`` header
  (``token`` or ``bearer``: the MLflow client sends ``MLFLOW_TRACKING_TOKEN`` as a bearer
  token) or, for a browser, the hub OAuth cookie of this service;
- lets through only identities with the service's access scope **and** one of the scopes in
  ``QMLOPS_MLFLOW_ALLOW_SCOPES`` (default ``custom:qmlops:admin``) or a hub service named in
  ``QMLOPS_MLFLOW_ALLOW_SERVICES`` (default ``qmlops``, the engine host that logs every user's
  runs). MLflow has no per-run permissions: anyone let through reads and writes every run.
  Everybody else gets 403 and reads their own runs through the qmlops REST API;
- answers ``GET {prefix}health`` itself, without authentication and without data;
- stops MLflow and all its processes on SIGTERM or SIGINT (the hub's stop), or when the hub
  goes away.

MLflow never sees the hub's credentials: the ``Authorization`` header and the hub's cookies are
taken off every request, and the hub's environment is not passed on to it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from tornado import httpclient, httputil, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from ...errors import one_line
from ...tracking.config import TrackingConfig, register_uri_secrets, safe_uri, scrub
from ...tracking.ui import HOST, mlflow_server_command
from ...vault.redaction import redact
from ..mlflow_proxy import PARENT_POLL, START_TIMEOUT, _say, _stop_event, _stop_group

log = logging.getLogger("qmlops_jupyter.server.hub.mlflow_service")

#: The scopes that open the service by default: the team's admins.
DEFAULT_ALLOW_SCOPES = "custom:qmlops:admin"
#: The hub services let through by default: the engine host that logs every user's runs.
DEFAULT_ALLOW_SERVICES = "qmlops"
#: Largest request or response body the proxy passes (artifacts stream through it).
MAX_BODY = 16 * 1024**3
#: Whole-request limit towards MLflow (a large artifact upload or download).
UPSTREAM_TIMEOUT = 3600.0
#: Request headers that describe one connection, not the request (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
#: Environment variables of the hub that MLflow must not inherit (credentials, mostly).
HUB_ENV_PREFIXES = ("JUPYTERHUB_",)


class SettingsError(ValueError):
    """A setting of the service is missing or wrong (one line, no secret)."""


@dataclass(frozen=True)
class ServiceSettings:
    """What the hub and the deployment tell the service, read from the environment."""

    #: The MLflow backend store (a PostgreSQL URL in a deployment; may carry a password).
    backend_uri: str
    #: Where proxied artifacts are written: a folder, or a URI MLflow can write to.
    artifacts_destination: str
    #: The service's URL path prefix with its trailing slash, e.g. ``/services/mlflow/``.
    prefix: str
    #: The port of ``JUPYTERHUB_SERVICE_URL`` the proxy listens on (on 127.0.0.1).
    port: int
    #: Scopes of which one opens the service (beside the access scope).
    allow_scopes: frozenset[str]
    #: Hub services let through by name (beside the access scope).
    allow_services: frozenset[str]
    #: The service's name on the hub.
    name: str

    @property
    def static_prefix(self) -> str:
        """MLflow's ``--static-prefix``: the prefix without its trailing slash."""
        return self.prefix.rstrip("/")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ

        def required(name: str) -> str:
            value = (env.get(name) or "").strip()
            if not value:
                raise SettingsError(f"{name} is not set")
            return value

        backend = required("QMLOPS_MLFLOW_BACKEND_URI")
        register_uri_secrets(backend)
        artifacts = required("QMLOPS_MLFLOW_ARTIFACTS")
        service_url = required("JUPYTERHUB_SERVICE_URL")
        try:
            parts = urllib.parse.urlsplit(service_url)
            port = parts.port
        except ValueError:
            raise SettingsError("JUPYTERHUB_SERVICE_URL is not a URL") from None
        if parts.hostname not in ("127.0.0.1", "localhost") or not port:
            raise SettingsError(
                "JUPYTERHUB_SERVICE_URL must be http://127.0.0.1:PORT (the service listens on "
                f"loopback only), not {parts.scheme}://{parts.netloc}"
            )
        prefix = (env.get("JUPYTERHUB_SERVICE_PREFIX") or "").strip()
        name = (env.get("JUPYTERHUB_SERVICE_NAME") or "mlflow").strip()
        prefix = prefix or f"/services/{name}/"
        if not prefix.startswith("/") or "{" in prefix or "}" in prefix:
            raise SettingsError(f"JUPYTERHUB_SERVICE_PREFIX {prefix!r} is not a URL path")
        if not prefix.endswith("/"):
            prefix += "/"
        return cls(
            backend_uri=backend,
            artifacts_destination=_artifacts_destination(artifacts),
            prefix=prefix,
            port=port,
            allow_scopes=_names(env.get("QMLOPS_MLFLOW_ALLOW_SCOPES", DEFAULT_ALLOW_SCOPES)),
            allow_services=_names(env.get("QMLOPS_MLFLOW_ALLOW_SERVICES", DEFAULT_ALLOW_SERVICES)),
            name=name,
        )


def _names(value: str) -> frozenset[str]:
    return frozenset(n.strip() for n in value.replace(",", " ").split() if n.strip())


def _artifacts_destination(value: str) -> str:
    """A folder (created if need be) as an absolute path; a URI with a scheme as it is."""
    if urllib.parse.urlsplit(value).scheme not in ("", "file"):
        return value
    path = Path(value.removeprefix("file://")).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"QMLOPS_MLFLOW_ARTIFACTS {path} cannot be created: {exc.strerror}"
        ) from None
    return str(path)


def _backend_for_mlflow(uri: str) -> str:
    """MLflow opens the store with SQLAlchemy, which would pick psycopg2 for a plain
    ``postgresql://`` URL; the toolkit installs psycopg 3."""
    from ...ledger.store import normalise_url

    return normalise_url(uri)


def mlflow_command(settings: ServiceSettings, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` of the service on 127.0.0.1:``port``, served from the listening
    socket inherited as descriptor 0, and the environment it runs with (the hub's variables
    taken out, the store's URI and the artifact destination put in)."""
    cfg = TrackingConfig(
        enabled=True,
        uri=_backend_for_mlflow(settings.backend_uri),
        experiment="Default",
        # New experiments keep their artifacts behind the server: clients need no credentials.
        artifact_root="mlflow-artifacts:/",
        embedded=False,
    )
    argv, extra = mlflow_server_command(cfg, port, listen_fd=0)
    argv += ["--serve-artifacts", "--static-prefix", settings.static_prefix]
    env = {k: v for k, v in os.environ.items() if not k.startswith(HUB_ENV_PREFIXES)}
    env.update(extra)
    # In the environment too: an object-store URI may carry a key.
    env["MLFLOW_ARTIFACTS_DESTINATION"] = settings.artifacts_destination
    return argv, env


# -- the MLflow process ---------------------------------------------------------------------------


class MlflowProcess:
    """``mlflow server`` in its own process group; its output is kept quiet until it answers
    (so that a failed start is reported in one line), then goes to this process's stderr with
    any password taken out."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = asyncio.Event()
        self._echo = threading.Event()
        self._last: collections.deque[str] = collections.deque(maxlen=40)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        # Taken now and handed over: requests wait in its queue while MLflow starts.
        listener.listen(128)
        self.port = listener.getsockname()[1]
        argv, env = mlflow_command(self.settings, self.port)
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=listener.fileno(),  # uvicorn --fd 0
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopped as one
            )
        finally:
            listener.close()  # MLflow holds it now; if MLflow dies, connections are refused
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = scrub(redact(raw.decode(errors="replace").rstrip("\n")))
            self._last.append(line)
            if self._echo.is_set():
                _say(line)

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> str | None:
        """None once MLflow answers its health check; else why it did not, in one line."""
        assert self.proc is not None
        client = httpclient.AsyncHTTPClient()
        url = f"http://{HOST}:{self.port}{self.settings.static_prefix}/health"
        started = time.monotonic()
        while self.proc.poll() is None:
            left = started + timeout - time.monotonic()
            if left <= 0:
                return f"it did not answer within {timeout:.0f} s"
            try:
                response = await client.fetch(
                    url, request_timeout=min(left, 5.0), raise_error=False
                )
                if response.code == 200:
                    self._echo.set()
                    self.ready.set()
                    log.info("MLflow ready in %.1f s", time.monotonic() - started)
                    return None
            except (OSError, httpclient.HTTPClientError):
                pass
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)  # the last lines of its output
        return f"it stopped (exit code {self.proc.returncode}){self._last_error()}"

    def _last_error(self) -> str:
        for line in reversed(self._last):
            text = one_line(line)
            if text and not text.startswith(("raise ", "^", "~")):
                return ": " + (text if len(text) <= 300 else text[:297] + "...")
        return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)


# -- the proxy ------------------------------------------------------------------------------------


def may_open(model: dict[str, Any], settings: ServiceSettings, hub_auth: HubOAuth) -> bool:
    """Whether an identity that has the access scope may use MLflow: a service named in
    ``allow_services``, or a token holding one of ``allow_scopes`` (filters understood as the
    hub does: ``access:services`` covers ``access:services!service=mlflow``)."""
    if model.get("kind") == "service" and model.get("name") in settings.allow_services:
        return True
    return any(hub_auth.check_scopes({scope}, model) for scope in settings.allow_scopes)


class JsonErrors(web.RequestHandler):
    """Errors as one-line JSON, never a traceback."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message % exc.args if exc.args else exc.log_message
        self.refuse(status_code, one_line(reason))

    def refuse(self, status: int, message: str) -> None:
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": message}) + "\n")


class HealthHandler(JsonErrors):
    """``GET {prefix}health``: 200 once MLflow answers, 503 before; no data, no login."""

    def initialize(self, mlflow: MlflowProcess) -> None:
        self.mlflow = mlflow

    def get(self) -> None:
        ok = self.mlflow.ready.is_set() and self.mlflow.alive
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": "ok" if ok else "unavailable"}) + "\n")


@web.stream_request_body
class MlflowProxyHandler(HubOAuthenticated, JsonErrors):
    """Every other path under the prefix: authenticated by the hub, then streamed to MLflow."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self, settings: ServiceSettings, mlflow: MlflowProcess) -> None:
        self.settings_ = settings
        self.mlflow = mlflow
        self._body: asyncio.Queue[bytes | None] | None = None
        self._upstream: asyncio.Task[None] | None = None
        self._status_line: httputil.ResponseStartLine | None = None
        self._headers = httputil.HTTPHeaders()
        self._started = False
        self._refusal: tuple[int, str] | None = None

    def check_xsrf_cookie(self) -> None:
        """For requests authenticated by the hub cookie. MLflow's pages send no XSRF token;
        a request the browser marks as coming from this same origin (Fetch Metadata, which a
        page of another site cannot forge) is accepted; the hub's check decides the rest."""
        if self.request.headers.get("Sec-Fetch-Site") == "same-origin":
            return
        super().check_xsrf_cookie()

    def _deny(self, status: int, message: str) -> None:
        """Refuse the request, once its body (if any) has been read: answering before it is read
        closes the connection under the hub's proxy while it still sends, and the proxy then
        answers 503 in place of the refusal."""
        if self._has_body():
            self._refusal = (status, message)
        else:
            self.refuse(status, message)

    def _has_body(self) -> bool:
        return int(self.request.headers.get("Content-Length") or 0) > 0 or (
            "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        )

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            if self._is_page_view() and not self.request.headers.get("Authorization"):
                self.redirect(self.get_login_url())
            else:
                self._deny(403, "a hub token with access to this service is required")
            return
        kind, name = model.get("kind", "user"), model.get("name", "?")
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            self._deny(403, f"{kind} {name} has no access to the {self.settings_.name} service")
            return
        if not may_open(model, self.settings_, self.hub_auth):
            self._deny(
                403,
                f"{kind} {name} may not open the team's MLflow server: read your own runs "
                "through the qmlops API",
            )
            return
        self.current_user = model
        if not self.mlflow.ready.is_set():
            try:
                await asyncio.wait_for(self.mlflow.ready.wait(), START_TIMEOUT)
            except TimeoutError:
                self._deny(503, "the MLflow server is not available")
                return
        self._start_upstream()

    def _is_page_view(self) -> bool:
        return self.request.method in ("GET", "HEAD") and "text/html" in self.request.headers.get(
            "Accept", ""
        )

    def _start_upstream(self) -> None:
        headers = httputil.HTTPHeaders()
        for key, value in self.request.headers.get_all():
            lowered = key.lower()
            if lowered in HOP_BY_HOP or lowered in ("host", "authorization", "cookie"):
                continue
            if lowered == "origin" and self.request.headers.get("Sec-Fetch-Site") == "same-origin":
                continue  # checked above; MLflow would refuse a public host name it does not know
            headers.add(key, value)
        cookie = self._mlflow_cookies()
        if cookie:
            headers["Cookie"] = cookie
        # MLflow answers loopback host names only (DNS-rebinding protection).
        headers["Host"] = f"{HOST}:{self.mlflow.port}"
        body_producer = None
        if self._has_body():
            self._body = asyncio.Queue(maxsize=4)
            body_producer = self._produce_body
        request = httpclient.HTTPRequest(
            url=f"http://{HOST}:{self.mlflow.port}{self.request.uri}",
            method=self.request.method,
            headers=headers,
            body_producer=body_producer,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
            header_callback=self._on_header_line,
            streaming_callback=self._on_chunk,
            connect_timeout=30,
            request_timeout=UPSTREAM_TIMEOUT,
        )
        self._upstream = asyncio.ensure_future(self._fetch(request))

    def _mlflow_cookies(self) -> str:
        """The request's cookies without the hub's (its login, OAuth state and XSRF cookies)."""
        client_id = self.hub_auth.oauth_client_id
        kept = []
        for chunk in self.request.headers.get("Cookie", "").split(";"):
            name = chunk.partition("=")[0].strip()
            bare = name.removeprefix("__Host-")
            if not name or name == "_xsrf" or bare.startswith(("jupyterhub-", client_id)):
                continue
            kept.append(chunk.strip())
        return "; ".join(kept)

    async def _produce_body(self, write: Any) -> None:
        assert self._body is not None
        while (chunk := await self._body.get()) is not None:
            await write(chunk)

    async def data_received(self, chunk: bytes) -> None:
        if self._body is not None:
            await self._body.put(chunk)

    def _on_header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            # A new response (after a 100 Continue, the real one).
            self._status_line = httputil.parse_response_start_line(line.strip())
            self._headers = httputil.HTTPHeaders()
        elif line.strip():
            self._headers.parse_line(line)

    def _send_headers(self) -> None:
        if self._started or self._status_line is None:
            return
        self._started = True
        self.clear()
        self.clear_header("Content-Type")
        self.set_status(self._status_line.code, self._status_line.reason)
        seen: set[str] = set()
        for key, value in self._headers.get_all():
            lowered = key.lower()
            if lowered in HOP_BY_HOP:
                continue
            if lowered in seen:
                self.add_header(key, value)  # Set-Cookie and the like, repeated
            else:
                self.set_header(key, value)  # in place of this server's Date, Server ...
                seen.add(lowered)

    def _on_chunk(self, chunk: bytes) -> None:
        self._send_headers()
        self.write(chunk)
        self.flush()

    async def _fetch(self, request: httpclient.HTTPRequest) -> None:
        try:
            await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except Exception as exc:
            log.warning(
                "MLflow did not answer %s %s: %s",
                self.request.method,
                self.request.path,
                one_line(exc),
            )
            if not self._started:
                self.refuse(502, "the MLflow server did not answer")
            else:
                self.request.connection.close()  # type: ignore[union-attr]
            return
        self._send_headers()
        if not self._finished:
            self.finish()

    async def _forward(self, *args: Any) -> None:
        if self._refusal is not None:  # the body is read: refuse now
            self.refuse(*self._refusal)
            return
        if self._body is not None:
            await self._body.put(None)
        if self._upstream is not None:
            await self._upstream

    get = head = post = delete = patch = put = options = _forward  # type: ignore[assignment]

    def on_connection_close(self) -> None:
        if self._upstream is not None and not self._upstream.done():
            self._upstream.cancel()


class NotFound(JsonErrors):
    def prepare(self) -> None:
        self.refuse(404, "not found")


def _log_request(handler: web.RequestHandler) -> None:
    """Method, path (never the query string), status, who, time."""
    status = handler.get_status()
    user = getattr(handler, "_hub_auth_user_cache", None) or getattr(handler, "_current_user", None)
    who = user.get("name", "-") if isinstance(user, dict) else "-"
    level = logging.INFO if status < 400 or status in (401, 403, 404) else logging.WARNING
    if isinstance(handler, HealthHandler):
        level = logging.DEBUG
    log.log(
        level,
        "%d %s %s (%s) %.1f ms",
        status,
        handler.request.method,
        handler.request.path,
        who,
        1000 * handler.request.request_time(),
    )


def make_app(
    settings: ServiceSettings, mlflow: MlflowProcess, hub_auth: HubOAuth
) -> web.Application:
    prefix = settings.prefix
    callback = urllib.parse.urlsplit(hub_auth.oauth_redirect_uri or "").path
    callback = callback or f"{prefix}oauth_callback"
    routes = [
        (re.escape(f"{prefix}health"), HealthHandler, {"mlflow": mlflow}),
        (re.escape(callback), HubOAuthCallbackHandler),
        (
            re.escape(settings.static_prefix) + "(/.*)?",
            MlflowProxyHandler,
            {"settings": settings, "mlflow": mlflow},
        ),
        (r".*", NotFound),
    ]
    return web.Application(
        routes,  # type: ignore[arg-type]
        cookie_secret=os.urandom(32),
        log_function=_log_request,
        default_handler_class=NotFound,
    )


def _hub_auth(settings: ServiceSettings) -> HubOAuth:
    """The hub's OAuth client of this service, one per process (the callback handler finds it
    with ``HubOAuth.instance()``). Tokens in URLs are refused: they end up in logs."""
    return HubOAuth.instance(allow_token_in_url=False, cache_max_age=60)


async def serve(settings: ServiceSettings, stop: threading.Event) -> int:
    mlflow = MlflowProcess(settings)
    httpclient.AsyncHTTPClient.configure(None, max_body_size=MAX_BODY, max_buffer_size=MAX_BODY)
    hub_auth = _hub_auth(settings)
    server = HTTPServer(make_app(settings, mlflow, hub_auth), max_body_size=MAX_BODY, xheaders=True)
    try:
        server.listen(settings.port, address=HOST)
    except OSError as exc:
        _say(
            f"qmlops: the {settings.name} service cannot listen on {HOST}:{settings.port}: "
            f"{exc.strerror}"
        )
        return 1
    mlflow.start()
    log.debug(
        "the %s service on %s:%d%s: MLflow for %s starting on %s:%d (pid %d)",
        settings.name,
        HOST,
        settings.port,
        settings.prefix,
        safe_uri(settings.backend_uri),
        HOST,
        mlflow.port,
        mlflow.proc.pid if mlflow.proc else 0,
    )
    done = asyncio.Event()
    ticker = PeriodicCallback(lambda: done.set() if stop.is_set() else None, PARENT_POLL * 1000)
    ticker.start()
    exit_code = 0
    try:
        waiting = asyncio.ensure_future(mlflow.wait_ready())
        stopping = asyncio.ensure_future(done.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        why = waiting.result() if waiting.done() else None
        for task in (waiting, stopping):
            task.cancel()
        await asyncio.gather(waiting, stopping, return_exceptions=True)
        if why is not None:
            _say(
                f"qmlops: the MLflow server for {safe_uri(settings.backend_uri)} could not "
                f"start: {why}"
            )
            return 1
        while not done.is_set():
            await asyncio.sleep(PARENT_POLL)
            if not mlflow.alive:
                _say(
                    f"qmlops: the MLflow server stopped (exit code {mlflow.proc.returncode})"
                    if mlflow.proc
                    else "qmlops: the MLflow server stopped"
                )
                exit_code = 1
                break
        return exit_code
    finally:
        ticker.stop()
        server.stop()
        mlflow.stop()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m qmlops_jupyter.server.hub.mlflow_service",
        description="The team's MLflow tracking server behind the hub's authentication: the "
        "command of the JupyterHub-managed service 'mlflow', configured by the environment "
        "(QMLOPS_MLFLOW_BACKEND_URI, QMLOPS_MLFLOW_ARTIFACTS, QMLOPS_MLFLOW_ALLOW_SCOPES, "
        "QMLOPS_MLFLOW_ALLOW_SERVICES and the JUPYTERHUB_* variables the hub sets).",
    ).parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("QMLOPS_LOG_LEVEL", "INFO").upper(),
        format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    from ...vault.redaction import install, register

    install(logging.getLogger())
    register(os.environ.get("JUPYTERHUB_API_TOKEN"))
    try:
        settings = ServiceSettings.from_env()
    except SettingsError as exc:
        _say(f"qmlops: the MLflow service cannot start: {exc}")
        return 2
    stop = _stop_event()
    # The hub stops a managed service with SIGINT first (then SIGTERM, then SIGKILL).
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return IOLoop.current().run_sync(lambda: serve(settings, stop))


if __name__ == "__main__":
    sys.exit(main())
