"""``QmlopsApp``: the extension's only wiring point.

It builds one :class:`qmlops_jupyter.client.Client` for the server's user, hosts an engine in the
server's event loop (started and stopped with the server), pumps job transitions from the ledger
onto the server's event bus and into Prometheus metrics, and tells kernels it launches where its
API is. Every setting is a traitlet: ``c.QmlopsApp.<name>`` in ``jupyter_server_config.py``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, Unicode

#: Header a kernel launched by this server sends with the token it was given (see
#: :meth:`QmlopsApp.expose_to_kernels`); accepted by the qmlops API only.
KERNEL_TOKEN_HEADER = "X-Qmlops-Kernel-Token"
#: JupyterLab extensions Voila pages do without: they need JupyterLab's own modules.
VOILA_EXTENSION_DENYLIST = ("qmlops-jupyter", "@jupyterhub/jupyter-server-proxy")


class QmlopsApp(ExtensionApp):
    name = "qmlops_jupyter"
    description = "Quantum job ledger, engine and tracking for Jupyter"

    home = Unicode(
        None,
        allow_none=True,
        config=True,
        help="State folder (ledger, backends.yaml, MLflow store). Default: QMLOPS_HOME, else "
        "<jupyter data dir>/qmlops.",
    )
    database_url = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Ledger URL. Default: QMLOPS_DATABASE_URL, else SQLite in the home.",
    )
    owner = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Owner of the jobs made here (default: the OS user).",
    )
    tracking_uri = Unicode(
        None,
        allow_none=True,
        config=True,
        help="MLflow tracking URI for this server and the kernels it starts (default: "
        "MLFLOW_TRACKING_URI, else the embedded store).",
    )
    run_engine = Bool(
        True,
        config=True,
        help="Host an engine in the server's event loop (jobs advance while "
        "the server runs, and recover when it restarts).",
    )
    engine_tick = Float(1.0, config=True, help="Seconds between the engine's looks at the ledger.")
    lease_ttl = Float(30.0, config=True, help="Seconds a job lease lasts without renewal.")
    warm_up_delay = Float(
        3.0,
        config=True,
        help="Seconds after start before the engine starts the local simulators' worker "
        "processes (they import the simulator on every CPU; the server answers its first "
        "requests meanwhile). Small jobs never wait for them.",
    )
    events_interval = Float(
        0.1, config=True, help="Seconds between looks for new job transitions (events, metrics)."
    )
    metrics_interval = Float(
        15.0, config=True, help="Seconds between refreshes of the ledger-wide gauges."
    )
    expose_to_kernels = Bool(
        True,
        config=True,
        help="Give kernels this server starts its URL and a token for the qmlops API only, so "
        "qmlops_jupyter.submit in a notebook goes through this server.",
    )
    workers = Int(8, config=True, help="Threads for ledger and provider calls of API requests.")
    multi_user = Bool(
        False,
        config=True,
        help="Serve a team from this one engine (the `qmlops` JupyterHub service): every "
        "request acts as the hub user whose token it carries, within that user's role "
        "(qmlops_jupyter.access). Set by `python -m qmlops_jupyter.server.hub.service`.",
    )
    service_url = Unicode(
        None,
        allow_none=True,
        config=True,
        help="URL of the team's `qmlops` service (e.g. http://127.0.0.1:8000/services/qmlops/). "
        "When set, this server hosts no engine and opens no ledger: its qmlops API (the "
        "sidebar's, the kernels') is forwarded to the service with this server's hub token, "
        "and the service's job events are re-emitted on this server's event bus. Default: "
        "QMLOPS_SERVICE_URL.",
    )

    # -- set up ------------------------------------------------------------------------------------

    def initialize_settings(self) -> None:
        # Only what the server needs before it listens; the client, its ledger and everything
        # built on pydantic and SQLAlchemy come in the start hook, after it listens.
        # Kernels this server starts inherit its environment: what is set here, they use too.
        if self.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        for variable, value in (
            ("QMLOPS_HOME", self.home),
            ("QMLOPS_DATABASE_URL", self.database_url),
            ("QMLOPS_OWNER", self.owner),
        ):
            if value:
                os.environ[variable] = value
        if not self.service_url and os.environ.get("QMLOPS_SERVICE_URL"):
            self.service_url = os.environ["QMLOPS_SERVICE_URL"]
        if self.service_url and not self.service_url.endswith("/"):
            self.service_url += "/"
        #: The core client (ledger, backends, vault, tracking); set by the start hook. Handlers
        #: wait for :meth:`ready` before they use it. None for good in service mode.
        self.client: Any = None
        #: Clients of the users a multi-user host serves, by user name (sharing one ledger).
        self._user_clients: dict[str, Any] = {}
        self._ready = asyncio.Event()
        self._start_error: str | None = None
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="qmlops-api")
        self.engine: Any = None
        self.kernel_token = secrets.token_urlsafe(32)
        #: Ledger changes from this moment on are emitted as events (see EventPump).
        self.started_at = datetime.now(UTC)
        from .events import EventPump, register_schemas
        from .metrics import Metrics

        self._configure_voila()
        register_schemas(self.serverapp.event_logger)
        if self.service_url:
            from .service_mode import ServiceEvents

            self.metrics = None
            self.events = ServiceEvents(self)
        else:
            self.metrics = Metrics(self)
            self.events = EventPump(self)
        if self.expose_to_kernels:
            self._expose_to_kernels()

    def _configure_voila(self) -> None:
        """Voila's defaults for the dashboards it renders in this server (its extension loads
        after this one and reads them then): tracebacks never reach a page, and the JupyterLab
        extensions that only work inside JupyterLab are not loaded into one. What the user's
        config says of either is kept."""
        voila = self.serverapp.config.VoilaConfiguration
        if "show_tracebacks" not in voila:
            voila.show_tracebacks = False
        if "extension_denylist" not in voila:
            voila.extension_denylist = list(VOILA_EXTENSION_DENYLIST)

    def initialize_handlers(self) -> None:
        if self.service_url:
            from .service_mode import routes as forwarded

            self.handlers.extend(forwarded())
            return
        from .handlers import routes

        self.handlers.extend(routes())

    def _expose_to_kernels(self) -> None:
        """Kernels inherit this process's environment: put the API's URL there, and the path of
        a file (readable by this user only) holding a token that opens the qmlops API and
        nothing else. The token itself never enters a kernel's environment."""
        from ..paths import resolve_home

        run_dir = resolve_home(self.home) / "run"
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in run_dir.glob("server-*.token"):  # left by servers killed with SIGKILL
            pid = stale.stem.removeprefix("server-")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                stale.unlink(missing_ok=True)
        token_file = run_dir / f"server-{os.getpid()}.token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.kernel_token)
        self._token_file = token_file
        os.environ["QMLOPS_SERVER_URL"] = self.serverapp.connection_url.rstrip("/") + "/"
        os.environ["QMLOPS_SERVER_TOKEN_FILE"] = str(token_file)

    # -- start and stop with the server -----------------------------------------------------------

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.service_url:
            self._ready.set()
            await self.events.start()
            self.log.info(
                "qmlops: API at %sqmlops/api/v1/, forwarded to the service at %s",
                self.serverapp.base_url,
                self.service_url,
            )
            return
        loop = asyncio.get_running_loop()
        try:
            # The client, and the ledger opened (and migrated), off the event loop.
            self.client = await loop.run_in_executor(self.executor, self._open_client)
        except Exception as exc:
            from ..errors import one_line

            self._start_error = one_line(exc)
            raise
        finally:
            self._ready.set()
        if self.run_engine:
            from ..engine import Engine
            from ..ledger.store import default_holder
            from ..pipelines.host import PipelineHost

            tracking = self.client.tracking
            holder = default_holder()
            self.engine = Engine(
                self.client.ledger,
                self.client.registry,
                owner=self.client.owner,
                tick=self.engine_tick,
                lease_ttl=self.lease_ttl,
                wake_dir=self.client.settings.home / "run",
                vault=self.client.vault,
                tracking=tracking if tracking.config.enabled else None,
                on_step=self.events.poke,
                warm_up_delay=self.warm_up_delay,
                holder=holder,
                pipelines=PipelineHost(self.client.ledger, self.client.settings, holder),
            )
            await self.engine.start()
        await self.events.start()
        await self.metrics.start()
        self.log.info(
            "qmlops: API at %sqmlops/api/v1/, ledger %s, engine %s",
            self.serverapp.base_url,
            self.client.ledger.url,
            "on" if self.engine else "off",
        )

    def _open_client(self) -> Any:
        from ..client import Client
        from ..config import Settings
        from .handlers import models  # noqa: F401 - the request models, built before requests

        overrides = {
            k: v
            for k, v in (
                ("home", self.home),
                ("database_url", self.database_url),
                ("owner", self.owner),
            )
            if v
        }
        client = Client(Settings.from_env(**overrides), lease_ttl=self.lease_ttl)
        try:
            client.ledger  # noqa: B018 - opens and migrates the ledger
        except BaseException:
            client.close()
            raise
        return client

    @property
    def local_owner(self) -> str:
        """Whose server this is: the kernels' tokens act as this user."""
        if self.client is not None:
            return str(self.client.owner)
        from ..config import Settings

        return self.owner or os.environ.get("JUPYTERHUB_USER") or Settings.from_env().owner

    def client_for(self, user: str) -> Any:
        """The client acting as ``user`` (a multi-user host's caller), on this host's ledger,
        backends file and key; built once per user."""
        client = self._user_clients.get(user)
        if client is None:
            from ..client import Client
            from ..config import Settings

            overrides = {
                k: v for k, v in (("home", self.home), ("database_url", self.database_url)) if v
            }
            client = Client(
                Settings.from_env(owner=user, **overrides),
                ledger=self.client.ledger,
                lease_ttl=self.lease_ttl,
            )
            client = self._user_clients.setdefault(user, client)
        return client

    async def ready(self) -> Any:
        """The client, once the start hook has built it; NotReady (503) if it failed."""
        if self.client is None:
            await self._ready.wait()
        if self.client is None:
            from ..errors import NotReady

            raise NotReady(f"the qmlops extension could not start: {self._start_error}")
        return self.client

    async def stop_extension(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        await self.events.stop()
        for user_client in self._user_clients.values():
            if user_client._tracking is not None:  # the ledger is this host's: kept open
                user_client._tracking.close()
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        token_file = getattr(self, "_token_file", None)
        if token_file is not None:
            Path(token_file).unlink(missing_ok=True)
        if self.client is not None:
            self.client.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- helpers for handlers ---------------------------------------------------------------------

    async def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run blocking core work (ledger, providers) in the API's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: func(*args, **kwargs))
