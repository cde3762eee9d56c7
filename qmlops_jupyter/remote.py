"""A kernel's client: jobs go through the REST API of the jupyter server that started it.

A server running the qmlops extension gives the kernels it starts two variables:
``QMLOPS_SERVER_URL`` and ``QMLOPS_SERVER_TOKEN_FILE`` (a file, readable by its user only, holding
a token that opens the qmlops API and nothing else). There :func:`qmlops_jupyter.get_client`
returns a :class:`RemoteClient`, so the server's engine owns every job a notebook submits: the
kernel never simulates in its own process, and a kernel that dies or restarts loses nothing.

``RemoteClient`` offers what :class:`~qmlops_jupyter.client.Client` offers for jobs, with the same
arguments, the same job handle (:class:`RemoteJob` is a :class:`~qmlops_jupyter.client.Job`) and
the same error classes (the API's ``{"error": code}`` becomes the core's class again), so code
written against one runs unchanged against the other. Circuits are turned into OpenQASM text here
(a Qiskit, Braket or PennyLane object becomes OpenQASM 3). Everything else (tracking runs and the
lineage of a submission, the vault, budgets, the ledger itself) stays on a local
:class:`~qmlops_jupyter.client.Client` on the same ledger: the kernel knows which notebook it
runs, the server does not.

The token is read from its file and sent in one header; it never enters the environment, a
message, a ``repr`` or an exception.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import Client, Job
from .config import Settings
from .errors import InvalidCircuit, InvalidRequest, QmlopsError, WaitTimeout
from .models import BackendInfo, JobEvent, JobRecord
from .states import JobState
from .tracking import active

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("qmlops_jupyter.remote")

#: The REST base under the server's URL (as ``qmlops_jupyter.server.handlers.base.API``; not
#: imported from there, which would import jupyter_server into every kernel).
API_PATH = "qmlops/api/v1"
#: The header carrying the kernel's token (``qmlops_jupyter.server.app.KERNEL_TOKEN_HEADER``).
TOKEN_HEADER = "X-Qmlops-Kernel-Token"
#: Seconds the server is given to answer the one health check that decides remote or local.
PROBE_TIMEOUT = 3.0
#: Longest single long-poll the API accepts (``?wait=``), in seconds.
MAX_WAIT = 300.0
#: Longest single wait of ``GET /events`` (the route's ``MAX_WAIT``), in seconds.
MAX_EVENTS_WAIT = 30.0
#: Seconds a rich display of a job may spend re-reading it before showing what it knew.
DISPLAY_TIMEOUT = 2.0
#: ``QMLOPS_REMOTE`` values that keep this process on the in-process client.
OFF = frozenset({"off", "0", "false", "no", "local"})


class ServerUnavailable(QmlopsError):
    """The jupyter server this process sends its jobs through cannot be reached, or no longer
    accepts its token (a restarted server gives new ones): ``qmlops_jupyter.reset_client()``
    decides again between the server and the in-process client."""

    http_status = 503
    exit_code = 5
    code = "server_unavailable"


class ServerError(QmlopsError):
    """An error answer of the server that names no qmlops error (a proxy's 502, a 405 ...)."""

    code = "server_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status


def connect_from_env(probe_timeout: float = PROBE_TIMEOUT) -> RemoteClient | None:
    """A :class:`RemoteClient` when this process was started by a jupyter server with qmlops
    that answers now, else None (the caller uses the in-process client).

    Remote only when ``QMLOPS_SERVER_URL`` and ``QMLOPS_SERVER_TOKEN_FILE`` are set, the token
    file can be read, lives in this process's ``QMLOPS_HOME`` (a process pointed at another
    home must not write to the server's ledger), is not the server's own, and
    ``GET .../health`` answers with JSON within ``probe_timeout`` seconds (200 or 503: a server
    whose engine is slow is still the one to use). ``QMLOPS_REMOTE=off`` keeps it local.
    """
    env = os.environ
    if env.get("QMLOPS_REMOTE", "").strip().lower() in OFF:
        return None
    url = env.get("QMLOPS_SERVER_URL", "").strip()
    token_file = env.get("QMLOPS_SERVER_TOKEN_FILE", "").strip()
    if not url or not token_file:
        return None
    path = Path(token_file)
    if path.name == f"server-{os.getpid()}.token":
        return None  # the server itself: its code uses its own client
    settings = Settings.from_env()
    try:
        token_home = path.resolve().parent.parent
    except OSError:
        return None
    if token_home != settings.home:
        log.debug("qmlops server at %s uses another QMLOPS_HOME; staying local", url)
        return None
    try:
        import httpx  # noqa: F401  (installed with the jupyter extra)
    except ImportError:
        log.debug("httpx is not installed; staying local")
        return None
    try:
        client = RemoteClient(url, path, settings=settings)
    except ServerUnavailable as exc:
        log.debug("%s; staying local", exc)
        return None
    if not client.reachable(probe_timeout):
        if client.service_mode:
            # A team's service is the only ledger there is: a slow answer (a service that
            # just restarted) must not send this process to a local one.
            log.info("qmlops server at %s is slow to answer; using it (service mode)", url)
            return client
        client.close()
        log.debug("qmlops server at %s does not answer; staying local", url)
        return None
    return client


class RemoteClient:
    """Jobs through a jupyter server's qmlops API (see the module doc). Thread-safe."""

    def __init__(
        self,
        url: str,
        token_file: str | Path,
        *,
        settings: Settings | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.api = f"{self.url}{API_PATH}"
        self.settings = settings or Settings.from_env()
        #: Seconds an ordinary request may take (long polls get their wait on top).
        self.timeout = timeout
        self._token = _read_token(Path(token_file))
        self._http: httpx.Client | None = None
        self._local: Client | None = None
        self._lock = threading.Lock()
        #: The server forwards to a team's ``qmlops`` service (``QMLOPS_SERVICE_URL``): the vault
        #: and budgets are the service's too, never a local ledger in the user's home.
        self.service_mode = bool(os.environ.get("QMLOPS_SERVICE_URL"))

    def __repr__(self) -> str:
        return f"<RemoteClient {self.api}>"

    # -- what stays local ------------------------------------------------------------------------

    @property
    def local(self) -> Client:
        """The in-process client on the same ledger, for everything but jobs' lifecycles."""
        if self._local is None:
            with self._lock:
                if self._local is None:
                    self._local = Client(self.settings)
        return self._local

    @property
    def owner(self) -> str:
        return self.settings.owner

    @property
    def ledger(self) -> Any:
        return self.local.ledger

    @property
    def registry(self) -> Any:
        return self.local.registry

    @property
    def vault(self) -> Any:
        return RemoteVault(self) if self.service_mode else self.local.vault

    @property
    def tracking(self) -> Any:
        return self.local.tracking

    @property
    def driver(self) -> Any:
        return self.local.driver

    def budgets(self) -> list[Any]:
        if not self.service_mode:
            return self.local.budgets()
        from .cost.budgets import BudgetStatus

        return [BudgetStatus.model_validate(b) for b in self._call("GET", "/budget")]

    def set_budget(self, **limits: Any) -> Any:
        if not self.service_mode:
            return self.local.set_budget(**limits)
        body = {k: v for k, v in limits.items() if v is not None}
        from .cost.budgets import BudgetStatus

        return [BudgetStatus.model_validate(b) for b in self._call("PUT", "/budget", json=body)]

    def schedule_pipeline(self, notebook: str | Path, **fields: Any) -> Any:
        """Save ``notebook`` (its content, read here) as a pipeline on a cron schedule through
        the server: ``POST /pipelines`` with the fields of ``qmlops pipeline schedule``."""
        import json as json_module

        from .pipelines.models import Pipeline

        path = Path(notebook).expanduser()
        if path.suffix != ".ipynb":
            raise InvalidRequest(f"{notebook}: not a notebook (expected a .ipynb file)")
        try:
            content = json_module.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidRequest(
                f"{notebook}: cannot read the notebook ({exc.__class__.__name__})"
            ) from None
        body = {k: v for k, v in fields.items() if v is not None}
        body.update(notebook=path.name, content=content)
        return Pipeline.model_validate(self._call("POST", "/pipelines", json=body))

    def engine_alive(self) -> bool:
        return self.local.engine_alive()

    def close(self) -> None:
        """Close the connections to the server and the local client's."""
        with self._lock:
            http, self._http = self._http, None
            local, self._local = self._local, None
        if http is not None:
            http.close()
        if local is not None:
            local.close()

    # -- jobs ----------------------------------------------------------------------------------

    def submit(
        self,
        circuits: Any,
        backend: str = "aer",
        shots: int = 1024,
        name: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        *,
        seed: int | None = None,
        tags: dict[str, str] | None = None,
        job_timeout: float | None = None,
        wait_timeout: float | None = None,
        labels: Sequence[str] | None = None,
        observables: Sequence[str] | None = None,
        credential: str | None = None,
    ) -> RemoteJob:
        """Submit a job through the server (see :meth:`Client.submit`); with ``wait``, follow it
        until it ends. The server's engine runs it."""
        started = time.perf_counter()
        body: dict[str, Any] = {
            "backend": backend,
            "circuits": openqasm(circuits, labels=labels),
            "shots": _integer("shots", shots),
        }
        optional = {
            "name": name,
            "idempotency_key": idempotency_key,
            "credential": credential,
            "tags": tags,
            "seed": None if seed is None else _integer("seed", seed),
            "observables": _strings(observables),
            "job_timeout": job_timeout,
            # Where the job comes from is known here (the notebook, its git state, the open
            # tracked run), not in the server.
            "lineage": self.tracking.lineage(),
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        job = RemoteJob(self, _record(self._call("POST", "/jobs", json=body)))
        if active.anything_open():
            active.note_submitted(job, time.perf_counter() - started)
        if wait:
            job.wait(wait_timeout)
        return job

    def get_job(self, job_id: str) -> RemoteJob:
        return RemoteJob(self, self._get(job_id))

    def jobs(
        self,
        state: str | None = None,
        backend: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> list[RemoteJob]:
        """This owner's jobs, newest first."""
        params = {"state": state, "backend": backend, "limit": limit, "cursor": cursor}
        page = self._call("GET", "/jobs", params={k: v for k, v in params.items() if v})
        return [RemoteJob(self, _record(r)) for r in page["jobs"]]

    def cancel(self, job_id: str) -> JobRecord:
        return _record(self._call("POST", f"/jobs/{_segment(job_id)}/cancel"))

    def events(self, job_id: str) -> list[JobEvent]:
        data = self._call("GET", f"/jobs/{_segment(job_id)}", params={"events": "true"})
        return [JobEvent.model_validate(e) for e in data.get("events", [])]

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Wait until the job is finished (or needs attention); WaitTimeout after ``timeout``."""
        return self._timed_wait(self._get(job_id), timeout)

    def _timed_wait(self, record: JobRecord, timeout: float | None) -> JobRecord:
        """Follow the job with the server's long polls; counted by open profiles."""
        started = time.perf_counter()
        try:
            return self._follow(record, timeout)
        finally:
            if active.anything_open():
                active.note_waited(time.perf_counter() - started)

    def _follow(self, record: JobRecord, timeout: float | None) -> JobRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (record.state.terminal or record.state is JobState.NEEDS_ATTENTION):
            chunk = MAX_WAIT if deadline is None else min(MAX_WAIT, deadline - time.monotonic())
            if chunk < 0.001:
                raise WaitTimeout(
                    f"job {record.id} is still {record.state.value} after {timeout:g} s; "
                    "it goes on, wait again later"
                )
            record = self._get(record.id, wait=chunk)
        return record

    def _get(
        self, job_id: str, wait: float | None = None, *, timeout: float | None = None
    ) -> JobRecord:
        path = f"/jobs/{_segment(job_id)}"
        if wait is None:
            return _record(self._call("GET", path, timeout=timeout))
        return _record(self._call("GET", path, params={"wait": f"{wait:.3f}"}, extra_time=wait))

    def job_events(
        self,
        after: int | None = None,
        wait: float = 0.0,
        job_ids: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """As :meth:`Client.job_events`, through the server's ``GET /events`` long poll: this
        owner's job status changes (``job_status`` v1 dicts, oldest first) past event sequence
        number ``after``, and the number to pass as ``after`` next time. The server answers as
        soon as its event pump sees a change; a ``wait`` longer than one request allows (30 s)
        is made of several."""
        if after is None:
            return [], int(self._call("GET", "/events")["next"])
        after = _integer("after", after)
        ids = _strings(job_ids)
        deadline = time.monotonic() + max(0.0, float(wait))
        if ids is not None and not ids:
            time.sleep(max(0.0, deadline - time.monotonic()))  # no job chosen: none can change
            return [], after
        while True:
            chunk = min(MAX_EVENTS_WAIT, max(0.0, deadline - time.monotonic()))
            params: dict[str, Any] = {"after": after, "wait": f"{chunk:.3f}"}
            if ids is not None:
                params["job_id"] = ids
            data = self._call("GET", "/events", params=params, extra_time=chunk)
            changes, after = list(data["events"]), int(data["next"])
            # Rows that were no state change move ``after`` on; the wait goes on past them.
            if changes or time.monotonic() >= deadline:
                return changes, after

    # -- backends and prices -------------------------------------------------------------------

    def backends(self) -> list[BackendInfo]:
        """Every backend the server knows, with its limits and availability."""
        data = self._call("GET", "/backends")
        items = data.get("backends", []) if isinstance(data, dict) else data
        return [BackendInfo.model_validate(b) for b in items]

    def estimate(self, circuits: Any, backend: str = "aer", shots: int = 1024) -> Any:
        """What a job would cost (a :class:`qmlops_jupyter.cost.Estimate`); nothing is
        written."""
        from .cost.estimate import Estimate

        body = {
            "backend": backend,
            "circuits": openqasm(circuits),
            "shots": _integer("shots", shots),
        }
        return Estimate.model_validate(self._call("POST", "/estimate", json=body))

    # -- HTTP ------------------------------------------------------------------------------------

    def reachable(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """Whether the server's qmlops API answers its health check (healthy or not) with JSON,
        to this process's token, within ``timeout`` seconds."""
        import httpx

        try:
            resp = self._client().get("/health", headers=self._auth(), timeout=timeout)
        except httpx.HTTPError:
            return False
        if resp.status_code not in (200, 503):
            return False
        try:
            return isinstance(resp.json(), dict)
        except ValueError:
            return False

    def _auth(self) -> dict[str, str]:
        return {TOKEN_HEADER: self._token}

    def _client(self) -> httpx.Client:
        if self._http is None:
            import httpx

            with self._lock:
                if self._http is None:
                    self._http = httpx.Client(
                        base_url=self.api,
                        timeout=httpx.Timeout(self.timeout, connect=5.0),
                        # A connection refused once (a server busy accepting) is tried again;
                        # nothing that reached the server is.
                        transport=httpx.HTTPTransport(retries=1),
                        # The server is this machine's jupyter server: no proxy in between.
                        trust_env=False,
                    )
        return self._http

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        extra_time: float = 0.0,
        timeout: float | None = None,
    ) -> Any:
        import httpx

        seconds = self.timeout + extra_time if timeout is None else timeout
        timeout_ = httpx.Timeout(seconds, connect=min(5.0, seconds))
        try:
            resp = self._client().request(
                method, path, json=json, params=params, headers=self._auth(), timeout=timeout_
            )
        except httpx.HTTPError as exc:
            raise ServerUnavailable(
                f"the qmlops server at {self.url} did not answer {method} {path} "
                f"({exc.__class__.__name__})"
            ) from None
        if resp.status_code >= 400:
            raise _error(resp, self.url)
        if resp.status_code == 204:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ServerError(
                f"the qmlops server at {self.url} answered {method} {path} with no JSON",
                resp.status_code,
            ) from None


class RemoteVault:
    """The vault of a team's ``qmlops`` service, through the API (service mode): what the
    magics, widgets and CLI ask of a vault, write-only as the API is. Secrets go in and never
    come out; nothing is kept in the user's home."""

    def __init__(self, client: RemoteClient) -> None:
        self.client = client
        self.owner = client.owner

    def list(self) -> list[Any]:
        from .vault.store import CredentialInfo

        return [CredentialInfo.model_validate(c) for c in self.client._call("GET", "/credentials")]

    def info(self, alias: str) -> Any:
        from .errors import CredentialNotFound

        for found in self.list():
            if found.alias == alias:
                return found
        raise CredentialNotFound(f"no credential named {alias!r}")

    def has_provider(self, provider: str) -> bool:
        return any(c.provider == provider for c in self.list())

    def set(self, alias: str, provider: str, values: Any) -> Any:
        from urllib.parse import quote

        from .vault.store import CredentialInfo

        secret = {k: v for k, v in dict(values).items() if v is not None}
        stored = self.client._call(
            "PUT",
            f"/credentials/{quote(alias, safe='')}",
            json={"provider": provider, "secret": secret},
        )
        return CredentialInfo.model_validate(stored)

    def delete(self, alias: str) -> None:
        from urllib.parse import quote

        self.client._call("DELETE", f"/credentials/{quote(alias, safe='')}")

    def rotate(self) -> int:
        raise InvalidRequest(
            "the team's vault key is the operator's: they rotate it with 'qmlops admin rotate-keys'"
        )

    def get(self, alias: str) -> Any:
        raise InvalidRequest(
            f"credential {alias!r} is used by the team's service; it never leaves it"
        )

    resolve = get


class RemoteJob(Job):
    """A :class:`~qmlops_jupyter.client.Job` read and followed through the server."""

    def __init__(self, client: RemoteClient, record: JobRecord) -> None:
        super().__init__(client, record)  # type: ignore[arg-type]
        self._remote = client

    def refresh(self) -> JobRecord:
        if not self._record.terminal:
            self._record = self._remote._get(self.id)
        return self._record

    def _display_record(self) -> JobRecord:
        """As :meth:`Job._display_record`, with a short timeout: a server that is slow to
        answer leaves the display with what was known."""
        if not self._record.terminal:
            with contextlib.suppress(Exception):
                self._record = self._remote._get(self.id, timeout=DISPLAY_TIMEOUT)
        return self._record

    @property
    def mlflow_run_id(self) -> str | None:
        """As :attr:`Job.mlflow_run_id`: a completed tracked job not sent to MLflow yet is sent
        from here now (waiting up to 10 s for the tracking store)."""
        record = self.refresh()
        if record.terminal and record.lineage and not record.mlflow_run_id:
            record = self._record = self._remote._get(self.id)  # sent meanwhile?
        if record.mlflow_run_id or not record.lineage or record.state is not JobState.COMPLETED:
            return record.mlflow_run_id
        self._remote.tracking.flush(job_ids=[self.id], timeout=10.0)
        self._record = self._remote._get(self.id)
        return self._record.mlflow_run_id


# -- circuits ------------------------------------------------------------------------------------


def openqasm(circuits: Any, *, labels: Sequence[str] | None = None) -> list[str]:
    """One circuit or a list as OpenQASM text, one string per circuit: text as given (checked
    and parsed by the server), Qiskit circuits and Braket or PennyLane objects as OpenQASM 3.
    Plain text never imports Qiskit."""
    if isinstance(circuits, str | bytes | bytearray):
        items: list[Any] = [circuits]
    elif isinstance(circuits, list | tuple):
        items = list(circuits)
    else:
        from .circuits import _as_list

        items = _as_list(circuits)
    if not items:
        raise InvalidCircuit("a job needs at least one circuit")
    if not all(isinstance(i, str | bytes | bytearray) for i in items):
        from .circuits import _expand_foreign

        items = _expand_foreign(items)
    texts = []
    for i, item in enumerate(items):
        label = labels[i] if labels and i < len(labels) else f"circuit {i}"
        texts.append(_text(item, label))
    return texts


def _text(item: Any, label: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | bytearray):
        if b"\x00" in item:
            raise InvalidCircuit(f"{label}: not OpenQASM text (binary data)")
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCircuit(f"{label}: not OpenQASM text (not UTF-8)") from None
    from qiskit import QuantumCircuit

    from .circuits import _QISKIT_LOCK, _parser_message, to_qasm3

    if not isinstance(item, QuantumCircuit):
        raise InvalidCircuit(
            f"{label}: expected OpenQASM text, a qiskit QuantumCircuit, a Braket Circuit "
            f"or a PennyLane tape, QNode or quantum function, got {type(item).__name__}"
        )
    if item.num_parameters:
        names = ", ".join(p.name for p in list(item.parameters)[:5])
        raise InvalidCircuit(
            f"{label}: has unbound parameters ({names}); bind them with assign_parameters"
        )
    try:
        with _QISKIT_LOCK:
            return to_qasm3(item)
    except Exception as exc:  # qiskit.qasm3.QASM3ExporterError and friends
        raise InvalidCircuit(
            f"{label}: cannot be written as OpenQASM 3 to send to the server: "
            f"{_parser_message(exc)}"
        ) from None


# -- helpers -------------------------------------------------------------------------------------


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerUnavailable(
            f"cannot read the qmlops server's token file {path} ({exc.__class__.__name__})"
        ) from None
    if not token:
        raise ServerUnavailable(f"the qmlops server's token file {path} is empty")
    return token


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidRequest(f"{name} must be an integer, not {value!r}") from None


def _strings(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


def _segment(job_id: str) -> str:
    """A job id as one URL path segment (an id with a ``/`` must not reach another route)."""
    from urllib.parse import quote

    return quote(str(job_id), safe="")


def _record(data: Any) -> JobRecord:
    return JobRecord.model_validate(data)


_ERRORS: dict[str, type[QmlopsError]] | None = None


def _error_classes() -> dict[str, type[QmlopsError]]:
    """``code`` -> class for every error of :mod:`qmlops_jupyter.errors` (where subclasses
    share a code, the most general class)."""
    global _ERRORS
    if _ERRORS is None:
        from . import errors

        table: dict[str, type[QmlopsError]] = {ServerUnavailable.code: ServerUnavailable}
        pending: list[type[QmlopsError]] = [errors.QmlopsError]
        while pending:
            cls = pending.pop(0)
            if cls.__module__ == errors.__name__:
                table.setdefault(cls.code, cls)
            pending.extend(cls.__subclasses__())
        _ERRORS = table
    return _ERRORS


def _error(resp: httpx.Response, url: str) -> QmlopsError:
    """The core's error for an error answer of the API (its ``{"error", "message"}``)."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    code = data.get("error") if isinstance(data, dict) else None
    message = data.get("message") if isinstance(data, dict) else None
    message = str(message or resp.reason_phrase or "no message")
    cls = _error_classes().get(str(code)) if code else None
    if cls is not None:
        return cls(message)
    if resp.status_code in (401, 403):
        return ServerUnavailable(
            f"the qmlops server at {url} refused this process's token ({resp.status_code}); "
            "after a server restart run qmlops_jupyter.reset_client()"
        )
    status = resp.status_code
    return ServerError(f"the qmlops server answered {status}: {message}", status)
