"""Notebook widgets (ipywidgets 8): a live job monitor, a backend picker, a credential form,
an MLflow run browser and a result histogram.

- :class:`JobMonitor` follows jobs as they move. Its thread waits on the client's job status
  changes (``client.job_events``: through a Jupyter server, a long poll the server answers as
  soon as a job moves; with an in-process client, the ledger read a few times a second) and
  re-reads only the jobs that changed. A slow periodic re-read of the active jobs is the
  fallback (queue positions make no event). Jobs belong to the engine, so a monitor can be
  closed, or the kernel restarted, without touching them.
- :class:`BackendPicker` is built from the backends' declared capabilities.
- :class:`CredentialForm` (anywidget) sends a secret from the browser straight to the server's
  credential route: the secret is never a widget trait, so it never reaches the kernel, the
  widget state or the saved notebook.
- :class:`RunBrowser` lists the MLflow runs of this notebook with their key metrics.
- :class:`ResultHistogram` draws counts (one chart per circuit of a batch).

Everything renders with JupyterLab's CSS variables (with fallbacks elsewhere) and carries stable
``qmlops-*`` class names, listed in each class's docstring.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import traitlets

from ..errors import InvalidRequest, one_line
from ..models import JobRecord, JobResult
from ..states import JobState
from .display import aware, duration_text, elapsed, money_text, state_chip

__all__ = [
    "BackendPicker",
    "CredentialForm",
    "JobMonitor",
    "ResultHistogram",
    "RunBrowser",
]

_TEXT = "var(--jp-ui-font-color1, #222)"
_MUTED = "var(--jp-ui-font-color2, #666)"
_BORDER = "var(--jp-border-color2, #e0e0e0)"
_FONT = "var(--jp-ui-font-family, system-ui, sans-serif)"
_SIZE = "var(--jp-ui-font-size1, 13px)"
_ERROR = "var(--jp-error-color1, #d32f2f)"


def _client_or_default(client: Any) -> Any:
    if client is not None:
        return client
    from ..client import get_client

    return get_client()


def _is_remote(client: Any) -> bool:
    from ..remote import RemoteClient

    return isinstance(client, RemoteClient)


def _problem(exc: BaseException) -> str:
    """One line naming an error, with anything secret-looking masked."""
    from ..vault.redaction import redact

    text = one_line(redact(f"{exc.__class__.__name__}: {exc}"))
    return text if len(text) <= 240 else text[:239] + "…"


# -- JobMonitor ----------------------------------------------------------------------------------

#: Columns of the monitor: name (and id), backend, state, queue, elapsed, cost.
_GRID = "minmax(10em, 2fr) minmax(7em, 1.3fr) 11em 8em 6.5em 6em"
_BUTTON_WIDTH = "84px"


def _eta(record: JobRecord) -> str | None:
    """The provider's estimate of when a queued job starts, where the record has one."""
    value = getattr(record, "estimated_start_time", None) or (record.options or {}).get(
        "estimated_start_time"
    )
    return None if value is None else str(value)


def job_row(record: JobRecord, now: datetime | None = None) -> dict[str, Any]:
    """A job as a :class:`JobMonitor` row: id, name, backend, state, queue_position, eta,
    elapsed (seconds since it was created, until it finished) and cost_usd (what the provider
    charged, else the estimate)."""
    seconds = max(0.0, elapsed(record, now or datetime.now(UTC)))
    cost = record.actual_cost_usd if record.actual_cost_usd is not None else None
    if cost is None:
        cost = record.estimated_cost_usd
    return {
        "id": record.id,
        "name": record.name,
        "backend": record.backend,
        "state": record.state.value,
        "queue_position": record.queue_position,
        "eta": _eta(record),
        "elapsed": seconds,
        "cost_usd": cost,
    }


def _row_html(record: JobRecord, now: datetime) -> str:
    row = job_row(record, now)
    name = escape(record.name) if record.name else f'<span style="color:{_MUTED}">(no name)</span>'
    queue = "—"
    if record.state is JobState.QUEUED and row["queue_position"] is not None:
        queue = f"#{row['queue_position']}"
    if row["eta"] and not record.terminal:
        queue += f'<br><span style="color:{_MUTED}">ETA {escape(row["eta"][:19])}</span>'
    cost = "—" if row["cost_usd"] is None else money_text(row["cost_usd"])
    if record.actual_cost_usd is None and record.estimated_cost_usd:
        cost = f'<span title="estimated before submission">≈ {cost}</span>'
    return (
        f'<div class="qmlops-job-cells" data-job-id="{escape(record.id)}" '
        f'data-state="{record.state.value}" style="display:grid;grid-template-columns:{_GRID};'
        f"gap:8px;align-items:center;padding:3px 0;border-bottom:1px solid {_BORDER};"
        f'font-family:{_FONT};font-size:{_SIZE};color:{_TEXT};line-height:1.35">'
        f'<span class="qmlops-job-name">{name}<br>'
        f'<code class="qmlops-job-id" style="color:{_MUTED};font-size:11px">{record.id}</code>'
        f"</span>"
        f'<span class="qmlops-job-backend">{escape(record.backend)}</span>'
        f"<span>{state_chip(record.state.value, record.error)}</span>"
        f'<span class="qmlops-job-queue">{queue}</span>'
        f'<span class="qmlops-job-elapsed">{duration_text(row["elapsed"])}</span>'
        f'<span class="qmlops-job-cost">{cost}</span>'
        "</div>"
    )


def _header_html() -> str:
    cells = "".join(
        f"<span>{label}</span>"
        for label in ("job", "backend", "state", "queue / ETA", "elapsed", "cost")
    )
    return (
        f'<div style="display:grid;grid-template-columns:{_GRID};gap:8px;padding:2px 0;'
        f"border-bottom:2px solid {_BORDER};font-family:{_FONT};font-size:{_SIZE};"
        f'font-weight:600;color:{_MUTED}">{cells}</div>'
    )


class _RowView:
    """The widgets of one monitor row."""

    def __init__(self, job_id: str, on_cancel: Callable[[str], None]) -> None:
        self.cells = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", width="auto"))
        self.cells.add_class("qmlops-job-cells-box")
        self.cancel = widgets.Button(
            description="Cancel",
            icon="times",
            tooltip=f"Cancel job {job_id}",
            layout=widgets.Layout(width=_BUTTON_WIDTH, flex="0 0 auto"),
        )
        self.cancel.add_class("qmlops-cancel")
        self.cancel.on_click(lambda _button: on_cancel(job_id))
        self.box = widgets.HBox(
            [self.cells, self.cancel], layout=widgets.Layout(align_items="center", width="100%")
        )
        self.box.add_class("qmlops-job-row")
        self.box.add_class(f"qmlops-job-{job_id}")
        self.html = ""

    def close(self) -> None:
        for widget in (self.box, self.cells, self.cancel):
            widget.close()

    def show(self, record: JobRecord, now: datetime) -> None:
        html = _row_html(record, now)
        if html != self.html:
            self.html = html
            self.cells.value = html
        active = not record.terminal and record.state is not JobState.NEEDS_ATTENTION
        visibility = "visible" if active else "hidden"
        if self.cancel.layout.visibility != visibility:
            self.cancel.layout.visibility = visibility
        disabled = record.state is JobState.CANCELLING or not active
        if self.cancel.disabled != disabled:
            self.cancel.disabled = disabled


class JobMonitor(widgets.VBox):
    """A live table of jobs: name, backend, state, queue position / ETA, elapsed time, cost,
    and a cancel button per active job.

    ``jobs``: the jobs to follow (:class:`~qmlops_jupyter.client.Job` handles, records or ids);
    None follows this owner's ``limit`` most recent jobs, and new jobs appear as they are
    submitted. Updates are pushed by the client's job events (see the module doc); every
    ``poll`` seconds the active jobs are re-read as a fallback (queue positions, which make no
    event) and their elapsed times move on. ``wait``: seconds one long poll of a server may
    last (default 25). :meth:`stop` (or closing the widget) ends the updates; the jobs go on.

    DOM: the widget ``.qmlops-job-monitor``; each row ``.qmlops-job-row.qmlops-job-<id>``
    holding ``.qmlops-job-cells[data-job-id][data-state]`` (cells ``.qmlops-job-name``,
    ``.qmlops-job-id``, ``.qmlops-job-backend``, ``.qmlops-state[data-state]``,
    ``.qmlops-job-queue``, ``.qmlops-job-elapsed``, ``.qmlops-job-cost``) and a
    ``.qmlops-cancel`` button; the status line ``.qmlops-monitor-status``.
    """

    #: Seconds between reads of the ledger when the client is in-process.
    local_interval = 0.25
    #: First and longest pause after a failed read (doubling in between).
    backoff = (0.5, 30.0)

    def __init__(
        self,
        jobs: Any = None,
        *,
        client: Any = None,
        limit: int = 20,
        poll: float = 2.0,
        autostart: bool = True,
        wait: float = 25.0,
    ) -> None:
        # What close() needs, first: ipywidgets closes even a widget whose __init__ failed.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._views: dict[str, _RowView] = {}
        self._parts: list[widgets.Widget] = []
        self._closed = False
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidRequest(f"limit must be a positive integer, not {limit!r}")
        if poll <= 0:
            raise InvalidRequest(f"poll must be a positive number of seconds, not {poll!r}")
        given = None if jobs is None else _as_list(jobs)
        if client is None and given:
            client = getattr(given[0], "_client", None)
        self._client = _client_or_default(client)
        self.limit = limit
        self.poll = float(poll)
        self.wait = float(wait)
        self._remote = _is_remote(self._client)
        self._records: dict[str, JobRecord] = {}
        self._order: list[str] = []
        self._problems: dict[str, str] = {}
        self._follow_recent = given is None

        header = widgets.HBox(
            [
                widgets.HTML(_header_html(), layout=widgets.Layout(flex="1 1 auto")),
                widgets.Box(layout=widgets.Layout(width=_BUTTON_WIDTH, flex="0 0 auto")),
            ],
            layout=widgets.Layout(width="100%"),
        )
        header.add_class("qmlops-job-header")
        self._rows_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self._rows_box.add_class("qmlops-job-rows")
        self._empty = widgets.HTML(
            f'<div style="color:{_MUTED};font-family:{_FONT};font-size:{_SIZE};padding:4px 0">'
            "No jobs yet: jobs you submit appear here.</div>"
        )
        self._empty.add_class("qmlops-job-empty")
        self._status = widgets.HTML()
        self._status.add_class("qmlops-monitor-status")
        self._parts = [*header.children, header, self._rows_box, self._empty, self._status]
        super().__init__([header, self._rows_box, self._status])
        self.add_class("qmlops-job-monitor")

        self._after: int | None = None
        if given is not None:
            self._store([self._record_of(item) for item in given])
        try:
            self._begin()
        except Exception as exc:  # a server away for now: the thread tries again
            self._report("events", exc)
        self._render()
        if autostart:
            self.start()

    # -- public ----------------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows shown, top to bottom (see :func:`job_row`)."""
        now = datetime.now(UTC)
        with self._lock:
            return [job_row(self._records[i], now) for i in self._order]

    @property
    def job_ids(self) -> list[str]:
        with self._lock:
            return list(self._order)

    @property
    def cancel_buttons(self) -> dict[str, widgets.Button]:
        """Each row's cancel button, by job id."""
        with self._lock:
            return {i: self._views[i].cancel for i in self._order if i in self._views}

    @property
    def status(self) -> str:
        """The status line's text: empty while all is well, else what went wrong."""
        with self._lock:
            return next(iter(self._problems.values()), "")

    @property
    def running(self) -> bool:
        """Whether the monitor is following updates."""
        return not self._stopping.is_set() and any(t.is_alive() for t in self._threads)

    def apply_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Apply job status changes (``job_status`` v1 dicts, oldest first): the state moves at
        once, then each changed job is read again for its queue position, cost and times. In
        a monitor of recent jobs, a job it has not seen is added."""
        changed: list[str] = []
        with self._lock:
            for event in events:
                job_id = str(event.get("job_id") or "")
                if not job_id:
                    continue
                record = self._records.get(job_id)
                if record is not None:
                    self._move(record, event)
                elif not self._follow_recent:
                    continue
                if job_id not in changed:
                    changed.append(job_id)
            self._render(changed)
        fresh: list[JobRecord] = []
        for job_id in changed:
            try:
                fresh.append(self._client.get_job(job_id).record)
            except Exception as exc:
                self._report("read", exc)
                return
        self._report("read", None)
        with self._lock:
            self._store(fresh)
            self._render()

    def refresh(self) -> None:
        """Read the followed jobs again (the recent ones anew, in recent mode)."""
        if self._follow_recent:
            records = [job.record for job in self._client.jobs(limit=self.limit)]
        else:
            records = [self._client.get_job(i).record for i in self.job_ids]
        with self._lock:
            self._store(records)
            self._render()

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel one of the shown jobs (what its button does); None when the request failed
        (the status line says why)."""
        view = self._views.get(job_id)
        if view is not None:
            view.cancel.disabled = True
        try:
            record = self._client.cancel(job_id)
        except Exception as exc:
            self._report("cancel", exc)
            with self._lock:
                self._render([job_id])
            return None
        self._report("cancel", None)
        with self._lock:
            self._store([record])
            self._render()
        return record

    def start(self) -> None:
        """Follow updates (again, after :meth:`stop`)."""
        if self._closed:
            raise InvalidRequest("this job monitor was closed; make a new one")
        if self.running:
            return
        for thread in self._threads:
            thread.join(timeout=0.1)
        if any(t.is_alive() for t in self._threads):
            raise InvalidRequest("the job monitor is still stopping; start it again in a moment")
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._follow, args=(self._stopping,), name="qmlops-monitor", daemon=True
            ),
            threading.Thread(
                target=self._tick, args=(self._stopping,), name="qmlops-monitor-tick", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()
        self._render_status()

    def stop(self, timeout: float | None = 0.0) -> None:
        """Stop following updates; wait up to ``timeout`` seconds (None: until) for the threads
        to end. A long poll of a server in progress ends on its own (its answer is dropped)."""
        self._stopping.set()
        if timeout is None or timeout > 0:
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in self._threads:
                if thread is threading.current_thread():
                    continue
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(left)
        self._render_status()

    def close(self) -> None:
        self._closed = True
        self._stopping.set()
        if hasattr(self, "_status"):
            self.stop()
        with self._lock:
            for view in self._views.values():
                view.close()
            self._views.clear()
        for part in self._parts:
            part.close()
        super().close()

    # -- the threads ---------------------------------------------------------------------------

    def _begin(self) -> None:
        """Take the position in the event log, then read the jobs: a change in between is
        seen twice, never missed."""
        _, after = self._client.job_events(None)
        self.refresh()
        self._after = after

    def _follow(self, stopping: threading.Event) -> None:
        pause = self.backoff[0]
        while not stopping.is_set():
            try:
                if self._after is None:
                    self._begin()
                ids = None if self._follow_recent else self.job_ids
                if ids is not None and not ids:
                    stopping.wait(self.poll)
                    continue
                wait = self.wait if self._remote else 0.0
                events, after = self._client.job_events(self._after, wait=wait, job_ids=ids)
                if stopping.is_set():
                    return
                self._after = after
                if events:
                    self.apply_events(events)
                self._report("events", None)
                pause = self.backoff[0]
                if not events and not self._remote:
                    stopping.wait(self.local_interval)
            except Exception as exc:  # never let the thread die: say so, back off, go on
                self._report("events", exc, retry_in=pause)
                stopping.wait(pause)
                pause = min(pause * 2, self.backoff[1])

    def _tick(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.poll):
            try:
                with self._lock:
                    active = [i for i in self._order if not self._records[i].terminal]
                if not active:
                    continue
                if self._follow_recent:
                    records = [job.record for job in self._client.jobs(limit=self.limit)]
                else:
                    records = [self._client.get_job(i).record for i in active]
                if stopping.is_set():
                    return
                with self._lock:
                    self._store(records)
                    self._render(active)
                self._report("refresh", None)
            except Exception as exc:
                self._report("refresh", exc)

    # -- the model -----------------------------------------------------------------------------

    def _record_of(self, item: Any) -> JobRecord:
        if isinstance(item, JobRecord):
            return item
        if isinstance(item, str):
            return self._client.get_job(item).record
        record = getattr(item, "record", None)
        if isinstance(record, JobRecord):
            return record
        raise InvalidRequest(
            f"JobMonitor follows jobs, job records or job ids, not {type(item).__name__}"
        )

    def _move(self, record: JobRecord, event: Mapping[str, Any]) -> None:
        """The state an event announces, when it follows from the state known here (a re-read
        that was ahead of the event wins)."""
        if record.terminal:
            return
        try:
            new = JobState(str(event.get("new_state")))
        except ValueError:
            return
        old = event.get("old_state")
        if old is not None and old != record.state.value:
            return
        self._records[record.id] = record.model_copy(update={"state": new})

    def _store(self, records: Sequence[JobRecord]) -> None:
        """Keep the newer of each record; new jobs take their place (newest first in recent
        mode, where only ``limit`` rows are kept)."""
        for record in records:
            known = self._records.get(record.id)
            if known is not None:
                if known.terminal and not record.terminal:
                    continue
                if aware(record.updated_at) < aware(known.updated_at):
                    continue
                # The same row read twice: the copy an event moved may be ahead.
                if record.updated_at == known.updated_at and _rank(known.state) > _rank(
                    record.state
                ):
                    continue
            self._records[record.id] = record
            if record.id not in self._order:
                self._order.append(record.id)
        if self._follow_recent:
            self._order.sort(key=lambda i: aware(self._records[i].created_at), reverse=True)
            for gone in self._order[self.limit :]:
                self._records.pop(gone, None)
                view = self._views.pop(gone, None)
                if view is not None:
                    view.close()
            del self._order[self.limit :]

    # -- the view ------------------------------------------------------------------------------

    def _render(self, only: Iterable[str] | None = None) -> None:
        now = datetime.now(UTC)
        for job_id in self._order:
            if job_id not in self._views:
                self._views[job_id] = _RowView(job_id, self._on_cancel)
                only = None
        targets = self._order if only is None else [i for i in only if i in self._views]
        for job_id in targets:
            self._views[job_id].show(self._records[job_id], now)
        children = tuple(self._views[i].box for i in self._order) or (self._empty,)
        if self._rows_box.children != children:
            self._rows_box.children = children
            self._render_status()

    def _on_cancel(self, job_id: str) -> None:
        self.cancel(job_id)

    def _report(self, what: str, exc: BaseException | None, retry_in: float | None = None) -> None:
        with self._lock:
            if exc is None:
                if self._problems.pop(what, None) is None:
                    return
            else:
                again = f"; trying again in {retry_in:g} s" if retry_in is not None else ""
                self._problems[what] = f"{_problem(exc)}{again}"
        self._render_status()

    def _render_status(self) -> None:
        problem = self.status
        with self._lock:
            count = len(self._order)
        jobs = f"{count} job{'s' if count != 1 else ''}"
        if problem:
            text = f'<span style="color:{_ERROR}">⚠ {escape(problem)}</span>'
        elif self._closed or self._stopping.is_set() or not self._threads:
            text = f"{jobs} · not following updates"
        else:
            text = f"{jobs} · live"
        html = (
            f'<div style="color:{_MUTED};font-family:{_FONT};font-size:11px;padding-top:2px">'
            f"{text}</div>"
        )
        if self._status.value != html:
            self._status.value = html


_RANKS = {
    JobState.CREATED: 0,
    JobState.SUBMITTING: 1,
    JobState.QUEUED: 2,
    JobState.RUNNING: 3,
    JobState.CANCELLING: 4,
    JobState.NEEDS_ATTENTION: 4,
}


def _rank(state: JobState) -> int:
    return 5 if state.terminal else _RANKS.get(state, 0)


def _as_list(jobs: Any) -> list[Any]:
    if isinstance(jobs, str | JobRecord) or hasattr(jobs, "record"):
        return [jobs]
    return list(jobs)


# -- BackendPicker -------------------------------------------------------------------------------


class BackendPicker(widgets.VBox):
    """Choose a backend, a shot count and a credential, from the backends' declared
    capabilities.

    The backend list shows each backend's kind, qubits and shot limit; unavailable ones are
    listed last, marked, with the reason in the details. Shots are bounded by the chosen
    backend's ``max_shots``; the credential list holds this owner's stored credentials for the
    backend's provider (aliases and masked hints only). ``.value`` is ``{"backend", "shots",
    "credential"}``, ready for ``submit(circuits, **picker.value)``.

    DOM: ``.qmlops-backend-picker``, ``.qmlops-backend-select``, ``.qmlops-shots``,
    ``.qmlops-credential-select``, ``.qmlops-backend-details``.
    """

    def __init__(
        self,
        *,
        client: Any = None,
        backend: str | None = None,
        shots: int = 1024,
        credential: str | None = None,
    ) -> None:
        self._client = _client_or_default(client)
        self._callbacks: list[Callable[[dict[str, Any]], Any]] = []
        self._quiet = False
        self.infos: dict[str, Any] = {}
        self.backend = widgets.Dropdown(description="Backend", layout=widgets.Layout(width="34em"))
        self.backend.add_class("qmlops-backend-select")
        self.shots = widgets.BoundedIntText(
            value=1, min=1, max=1, description="Shots", layout=widgets.Layout(width="16em")
        )
        self.shots.add_class("qmlops-shots")
        self.credential = widgets.Dropdown(
            description="Credential", layout=widgets.Layout(width="26em")
        )
        self.credential.add_class("qmlops-credential-select")
        self.details = widgets.HTML()
        self.details.add_class("qmlops-backend-details")
        super().__init__(
            [self.backend, widgets.HBox([self.shots, self.credential]), self.details],
        )
        self.add_class("qmlops-backend-picker")
        self._wanted_shots = int(shots)
        self.refresh(backend=backend, credential=credential)
        self.backend.observe(self._backend_changed, names="value")
        self.shots.observe(self._changed, names="value")
        self.credential.observe(self._changed, names="value")

    @property
    def value(self) -> dict[str, Any]:
        return {
            "backend": self.backend.value,
            "shots": int(self.shots.value),
            "credential": self.credential.value,
        }

    def on_change(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``callback(picker.value)`` whenever the backend, shots or credential change."""
        self._callbacks.append(callback)

    def submit(self, circuits: Any, **kwargs: Any) -> Any:
        """Submit ``circuits`` with the chosen backend, shots and credential."""
        return self._client.submit(circuits, **{**self.value, **kwargs})

    def refresh(self, *, backend: str | None = None, credential: str | None = None) -> None:
        """Read the backends and the credentials again."""
        infos = list(self._client.backends())
        usable = [i for i in infos if i.enabled and i.available]
        others = [i for i in infos if not (i.enabled and i.available)]
        self.infos = {i.name: i for i in infos}
        options = [(_backend_label(i), i.name) for i in usable + others]
        if backend is not None and backend not in self.infos:
            raise InvalidRequest(
                f"unknown backend {backend!r}; known: {', '.join(sorted(self.infos))}"
            )
        chosen = backend or self.backend.value
        if chosen not in self.infos:
            chosen = "aer" if "aer" in {i.name for i in usable} else None
            chosen = chosen or (usable[0].name if usable else (infos[0].name if infos else None))
        self._quiet = True
        try:
            self.backend.options = options
            self.backend.value = chosen
            self._fit(credential=credential)
        finally:
            self._quiet = False

    # -- internals -----------------------------------------------------------------------------

    def _fit(self, credential: str | None = None) -> None:
        """Shots bounds, credential choices and details for the chosen backend."""
        info = self.infos.get(self.backend.value)
        if info is None:
            self.details.value = f'<span style="color:{_MUTED}">no backends</span>'
            return
        top = max(1, int(info.max_shots or 1))
        wanted = min(max(1, self._wanted_shots), top)
        # Order matters: never let value fall outside [min, max] on the way.
        if wanted > self.shots.max:
            self.shots.max = top
            self.shots.value = wanted
        else:
            self.shots.value = wanted
            self.shots.max = top
        self.credential.options, self.credential.disabled = self._credential_options(info)
        aliases = [v for _, v in self.credential.options]
        self.credential.value = credential if credential in aliases else aliases[0]
        if credential is not None and credential not in aliases:
            raise InvalidRequest(
                f"no {info.provider} credential named {credential!r} for backend {info.name}"
            )
        self.details.value = _backend_details(info)

    def _credential_options(self, info: Any) -> tuple[list[tuple[str, str | None]], bool]:
        from ..vault.store import provider_for_backend

        provider = provider_for_backend(info.provider)
        if provider is None:
            return [("not needed", None)], True
        try:
            stored = [c for c in self._client.vault.list() if c.provider == provider]
        except Exception as exc:
            return [(f"cannot read the vault: {_problem(exc)}"[:80], None)], True
        options: list[tuple[str, str | None]] = [("default (environment)", None)]
        options += [(f"{c.alias} ({c.hint})", c.alias) for c in stored]
        return options, False

    def _backend_changed(self, change: Any) -> None:
        if self._quiet:
            return
        self._quiet = True
        try:
            self._fit()
        finally:
            self._quiet = False
        self._notify()

    def _changed(self, change: Any) -> None:
        if self._quiet:
            return
        if change["owner"] is self.shots:
            self._wanted_shots = int(self.shots.value)
        self._notify()

    def _notify(self) -> None:
        value = self.value
        for callback in list(self._callbacks):
            callback(value)


def _backend_label(info: Any) -> str:
    qubits = f"{info.max_qubits} qubits" if info.max_qubits else "qubits: no limit"
    label = f"{info.name} — {info.kind}, {qubits}, ≤ {info.max_shots:,} shots"
    if not info.enabled:
        return f"{label} (disabled)"
    if not info.available:
        return f"{label} (unavailable)"
    return label


def _backend_details(info: Any) -> str:
    facts = [
        ("provider", info.provider),
        ("kind", f"{info.kind}{', local' if info.local else ''}"),
        ("qubits", str(info.max_qubits) if info.max_qubits else "no limit"),
        ("shots", f"≤ {info.max_shots:,}"),
        ("jobs at once", str(info.max_concurrent_jobs)),
        ("credentials", info.credentials),
        ("status", info.status),
    ]
    cells = "".join(
        f'<span style="color:{_MUTED}">{escape(k)}</span><span>{escape(str(v))}</span>'
        for k, v in facts
    )
    warn = ""
    if not info.enabled or not info.available:
        warn = (
            f'<div class="qmlops-backend-unavailable" style="color:{_ERROR}">'
            f"{escape(info.name)} is {'disabled' if not info.enabled else 'unavailable'}: "
            f"{escape(info.status)}</div>"
        )
    described = f"<div>{escape(info.description)}</div>" if info.description else ""
    return (
        f'<div style="font-family:{_FONT};font-size:{_SIZE};color:{_TEXT}">{warn}{described}'
        f'<div style="display:grid;grid-template-columns:max-content 1fr;gap:0 12px">{cells}'
        "</div></div>"
    )


# -- CredentialForm ------------------------------------------------------------------------------

_FIELD_LABELS = {
    "token": "API token",
    "channel": "channel (ibm_quantum_platform or ibm_cloud)",
    "instance": "instance (CRN)",
    "aws_access_key_id": "access key ID",
    "aws_secret_access_key": "secret access key",
    "aws_session_token": "session token",
    "region": "region",
    "api_key": "API key",
}
#: What the browser may report back of a saved credential (the server's masked answer).
_MASKED_KEYS = ("alias", "provider", "hint", "created_at", "updated_at", "last_used_at")
#: Keyword arguments that would carry a secret into the kernel.
_SECRET_WORDS = frozenset(
    {"secret", "secrets", "password", "key", "apikey", "values", "fields", "credentials"}
)

_FORM_CSS = """
.qmlops-credential-form {
  font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px);
  color: var(--jp-ui-font-color1, #222);
  display: grid;
  grid-template-columns: max-content minmax(14em, 26em);
  gap: 6px 12px;
  align-items: center;
  padding: 8px 4px;
}
.qmlops-credential-form label { color: var(--jp-ui-font-color2, #555); }
.qmlops-credential-form input, .qmlops-credential-form select {
  font: inherit;
  color: inherit;
  background: var(--jp-input-background, #fff);
  border: var(--jp-border-width, 1px) solid var(--jp-input-border-color, #bbb);
  border-radius: 2px;
  padding: 3px 6px;
}
.qmlops-credential-form input:focus, .qmlops-credential-form select:focus {
  outline: 1px solid var(--jp-input-active-border-color, #1976d2);
}
.qmlops-cred-buttons { grid-column: 2; display: flex; gap: 8px; }
.qmlops-credential-form button {
  font: inherit;
  padding: 3px 14px;
  border-radius: 2px;
  border: var(--jp-border-width, 1px) solid var(--jp-border-color1, #bbb);
  background: var(--jp-layout-color2, #eee);
  color: var(--jp-ui-font-color1, #222);
  cursor: pointer;
}
.qmlops-credential-form button.qmlops-cred-save {
  background: var(--jp-brand-color1, #1976d2);
  border-color: var(--jp-brand-color1, #1976d2);
  color: var(--jp-ui-inverse-font-color1, #fff);
}
.qmlops-credential-form button:disabled { opacity: 0.5; cursor: default; }
.qmlops-cred-status, .qmlops-cred-saved, .qmlops-cred-stored, .qmlops-cred-note {
  grid-column: 1 / -1;
}
.qmlops-cred-status[data-state="error"] { color: var(--jp-error-color1, #d32f2f); }
.qmlops-cred-status[data-state="ok"] { color: var(--jp-success-color1, #388e3c); }
.qmlops-cred-saved, .qmlops-cred-stored, .qmlops-cred-note {
  color: var(--jp-ui-font-color2, #555);
}
"""


def _provider_fields() -> dict[str, Any]:
    from ..vault.store import PROVIDERS

    return {
        name: {
            "fields": [
                {
                    "name": field,
                    "label": _FIELD_LABELS.get(field, field.replace("_", " ")),
                    "secret": field in spec.secrets,
                    "required": field in spec.required,
                }
                for field in spec.fields
            ]
        }
        for name, spec in PROVIDERS.items()
    }


class CredentialForm(anywidget.AnyWidget):
    """Store a provider credential in the vault from the notebook, without the secret ever
    reaching the kernel.

    The form (``credential_form.js``) reads the Jupyter server's base URL and token from the
    page's configuration and PUTs ``{"provider", "secret"}`` from the browser to
    ``qmlops/api/v1/credentials/<alias>``; **Test** POSTs ``.../test``. Secret inputs are
    password fields, bound to no trait and cleared once saved, so a saved notebook (with widget
    state) holds only the alias, the provider, a status line and the server's masked answer
    (``saved``: alias, provider, hint such as ``…a9f2``, dates). Outside a page served by a
    Jupyter server the form says so: use ``qmlops creds set`` in a terminal there.

    DOM: ``.qmlops-credential-form``; inputs ``.qmlops-cred-alias``, ``.qmlops-cred-provider``
    (a select), ``.qmlops-cred-field[data-field=NAME]`` (also ``.qmlops-cred-field-NAME``, each
    with an ``aria-label``); buttons ``.qmlops-cred-save`` and ``.qmlops-cred-test``;
    ``.qmlops-cred-status[data-state]`` (idle, busy, ok, error, unavailable) and
    ``.qmlops-cred-saved``.
    """

    _esm = Path(__file__).with_name("credential_form.js")
    _css = _FORM_CSS

    alias = traitlets.Unicode("").tag(sync=True)
    provider = traitlets.Unicode("ionq").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    #: The server's masked answer for the last credential saved.
    saved = traitlets.Dict().tag(sync=True)
    #: Each provider's field names and labels (which are secret, which are required).
    providers = traitlets.Dict(read_only=True).tag(sync=True)
    #: This owner's stored credentials: alias, provider and hint of each.
    stored = traitlets.List().tag(sync=True)

    def __init__(
        self, *, client: Any = None, alias: str = "", provider: str = "ionq", **kwargs: Any
    ) -> None:
        from ..vault.store import PROVIDERS, check_alias, provider_spec

        field_names = {f for spec in PROVIDERS.values() for f in spec.fields}
        refused = sorted(k for k in kwargs if k.lower() in field_names | _SECRET_WORDS)
        if refused:
            raise InvalidRequest(
                f"CredentialForm takes no secret ({', '.join(refused)}): type it in the form, "
                "which sends it from the browser to the server, never through the kernel"
            )
        provider = provider_spec(provider).name
        alias = check_alias(alias) if alias else ""
        self._client = client
        super().__init__(alias=alias, provider=provider, **kwargs)
        self.set_trait("providers", _provider_fields())
        self.refresh_stored()

    def refresh_stored(self) -> None:
        """Read this owner's stored credentials again (masked)."""
        try:
            vault = _client_or_default(self._client).vault
            self.stored = [
                {"alias": c.alias, "provider": c.provider, "hint": c.hint} for c in vault.list()
            ]
        except Exception as exc:
            self.stored = []
            self.status = f"cannot list stored credentials: {_problem(exc)}"

    @traitlets.validate("provider")
    def _valid_provider(self, proposal: Any) -> str:
        from ..vault.store import PROVIDER_ALIASES, PROVIDERS

        value = str(proposal["value"]).strip().lower()
        value = PROVIDER_ALIASES.get(value, value)
        if value not in PROVIDERS:
            raise traitlets.TraitError(
                f"unknown provider {proposal['value']!r}; known: {', '.join(sorted(PROVIDERS))}"
            )
        return value

    @traitlets.validate("saved")
    def _masked_only(self, proposal: Any) -> dict[str, Any]:
        value = proposal["value"] or {}
        return {k: str(value[k]) for k in _MASKED_KEYS if value.get(k) is not None}

    @traitlets.validate("status")
    def _one_line_status(self, proposal: Any) -> str:
        text = one_line(proposal["value"] or "")
        return text if len(text) <= 300 else text[:299] + "…"

    @traitlets.observe("saved")
    def _saved_changed(self, change: Any) -> None:
        if change["new"]:
            self.refresh_stored()


# -- RunBrowser ----------------------------------------------------------------------------------

#: Metrics the tracking logs for every job: shown after the ones a notebook logs itself.
_KEY_METRICS = (
    "expectation_value",
    "p_max",
    "entropy_bits",
    "total_seconds",
    "run_seconds",
    "queue_seconds",
    "actual_cost_usd",
    "estimated_cost_usd",
)
_AUTOMATIC_SUFFIXES = (*_KEY_METRICS, "_seconds", "shots_total", "distinct_outcomes")


def _metric_name(key: str) -> str:
    """The metric's name without its ``job.`` / ``circuit_N.`` prefix."""
    return key.rsplit(".", 1)[-1]


def _automatic(key: str) -> bool:
    name = _metric_name(key)
    return name.startswith("p_") or any(name.endswith(s) for s in _AUTOMATIC_SUFFIXES)


def key_metrics(metrics: Mapping[str, float], count: int = 5) -> list[tuple[str, float]]:
    """The metrics worth a glance: a notebook's own first, then the job figures that matter
    most (expectation values, top outcome probability, entropy, time, cost)."""
    own = sorted((k, v) for k, v in metrics.items() if not _automatic(k))
    ranked = sorted(
        ((k, v) for k, v in metrics.items() if _metric_name(k) in _KEY_METRICS),
        key=lambda kv: (_KEY_METRICS.index(_metric_name(kv[0])), kv[0]),
    )
    return (own + ranked)[:count]


def _same_notebook(a: str | None, b: str) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def _kernel_notebook() -> str | None:
    from ..tracking.lineage import source

    return source()["notebook"]


class RunBrowser(widgets.VBox):
    """This notebook's MLflow runs, newest first, with their key metrics and a refresh button.

    ``notebook``: the notebook whose runs to show; None (the default) this kernel's notebook
    when it is known (``QMLOPS_NOTEBOOK_PATH``, the Jupyter session, the papermill command
    line), else every run; False every run. ``experiment``: one MLflow experiment only.

    DOM: ``.qmlops-run-browser``, ``.qmlops-runs-refresh`` (button), ``.qmlops-runs-table``
    (rows ``tr.qmlops-run[data-run-id]``), ``.qmlops-runs-status``.
    """

    def __init__(
        self,
        *,
        client: Any = None,
        notebook: str | bool | None = None,
        limit: int = 20,
        experiment: str | None = None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidRequest(f"limit must be a positive integer, not {limit!r}")
        self._client = _client_or_default(client)
        if notebook is None:
            notebook = _kernel_notebook()
        self.notebook: str | None = None if notebook is False else (notebook or None)
        self.limit = limit
        self.experiment = experiment
        self.runs: list[dict[str, Any]] = []
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", layout=widgets.Layout(width="96px")
        )
        self.refresh_button.add_class("qmlops-runs-refresh")
        self.refresh_button.on_click(lambda _button: self.refresh())
        where = Path(self.notebook).name if self.notebook else "all notebooks"
        title = widgets.HTML(
            f'<b style="font-family:{_FONT};color:{_TEXT}">MLflow runs · {escape(where)}</b>'
        )
        self.table = widgets.HTML()
        self.table.add_class("qmlops-runs-table")
        self.status = widgets.HTML()
        self.status.add_class("qmlops-runs-status")
        super().__init__(
            [
                widgets.HBox(
                    [title, self.refresh_button],
                    layout=widgets.Layout(align_items="center", grid_gap="12px"),
                ),
                self.table,
                self.status,
            ]
        )
        self.add_class("qmlops-run-browser")
        self.refresh()

    def refresh(self) -> None:
        """Read the runs again."""
        self.refresh_button.disabled = True
        try:
            self.runs = self._fetch()
            note = ""
            config = getattr(self._client.tracking, "config", None)
            if config is not None and not config.enabled:
                note = f"tracking is off ({config.reason}): new jobs are not logged"
            self._show_status(note, error=False)
        except Exception as exc:
            self.runs = []
            self._show_status(_problem(exc), error=True)
        finally:
            self.refresh_button.disabled = False
        self.table.value = self._table_html()

    def _fetch(self) -> list[dict[str, Any]]:
        # Runs of other notebooks are dropped after the search: ask for more than are shown.
        wanted = self.limit if self.notebook is None else max(self.limit * 5, 100)
        if _is_remote(self._client):
            params: dict[str, Any] = {"limit": wanted}
            if self.experiment:
                params["experiment"] = self.experiment
            runs = self._client._call("GET", "/runs", params=params)["runs"]
        else:
            from ..cli.tracking import list_runs

            runs = list_runs(self._client, self.experiment, wanted)
        if self.notebook is not None:
            runs = [r for r in runs if _same_notebook(r.get("notebook"), self.notebook)]
        return runs[: self.limit]

    def _show_status(self, text: str, *, error: bool) -> None:
        colour = _ERROR if error else _MUTED
        self.status.value = (
            f'<div style="color:{colour};font-family:{_FONT};font-size:11px">{escape(text)}</div>'
            if text
            else ""
        )

    def _table_html(self) -> str:
        style = f"font-family:{_FONT};font-size:{_SIZE};color:{_TEXT};border-collapse:collapse"
        if not self.runs:
            return (
                f'<div style="color:{_MUTED};font-family:{_FONT};font-size:{_SIZE}">'
                "No runs yet: tracked jobs are logged to MLflow as they complete.</div>"
            )
        cell = f"padding:3px 10px 3px 0;border-bottom:1px solid {_BORDER};vertical-align:top"
        head = "".join(
            f'<th style="{cell};text-align:left;color:{_MUTED}">{h}</th>'
            for h in ("run", "experiment", "status", "started", "jobs", "key metrics")
        )
        rows = []
        for run in self.runs:
            metrics = ", ".join(
                f"{escape(k)} = {v:.4g}" for k, v in key_metrics(run.get("metrics") or {})
            )
            name = escape(run.get("run_name") or "")
            run_id = escape(run.get("run_id") or "")
            started = escape((run.get("start_time") or "")[:19].replace("T", " "))
            rows.append(
                f'<tr class="qmlops-run" data-run-id="{run_id}">'
                f'<td style="{cell}">{name}<br><code style="color:{_MUTED};font-size:11px">'
                f"{run_id}</code></td>"
                f'<td style="{cell}">{escape(str(run.get("experiment") or ""))}</td>'
                f'<td style="{cell}">{escape(str(run.get("status") or ""))}</td>'
                f'<td style="{cell}">{started}</td>'
                f'<td style="{cell};text-align:right">{int(run.get("job_count") or 0)}</td>'
                f'<td style="{cell}" class="qmlops-run-metrics">{metrics or "—"}</td></tr>'
            )
        body = "".join(rows)
        return f'<table style="{style}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# -- ResultHistogram -----------------------------------------------------------------------------


class ResultHistogram(widgets.HTML):
    """Counts as bar charts, one per circuit of a batch: from a
    :class:`~qmlops_jupyter.models.JobResult`, a job (its result when it completed; it is not
    waited for), a counts dict or a list of them. :meth:`update` draws another.

    DOM: ``.qmlops-result-histograms`` holding one ``figure.qmlops-result-histogram
    [data-circuit=i]`` per circuit (each an ``svg.qmlops-histogram``).
    """

    def __init__(
        self, result_or_counts: Any, *, max_bars: int = 32, title: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.add_class("qmlops-result-histogram-widget")
        self.max_bars = max_bars
        self.title = title
        self.counts: list[dict[str, int]] = []
        self.update(result_or_counts)

    def update(self, result_or_counts: Any) -> None:
        from .histogram import histogram_svg

        counts, names, note, expvals = _counts_of(result_or_counts)
        self.counts = counts
        if not counts:
            self.value = (
                f'<div class="qmlops-result-histograms" style="color:{_MUTED};'
                f'font-family:{_FONT};font-size:{_SIZE}">{escape(note or "no counts")}</div>'
            )
            return
        figures = []
        batch = len(counts) > 1
        for i, circuit_counts in enumerate(counts):
            name = names[i]
            if batch:
                title = f"circuit {i} · {name}" if name else f"circuit {i}"
            else:
                title = self.title or name
            shots = sum(circuit_counts.values())
            caption = f"{shots:,} shots"
            if expvals is not None and i < len(expvals):
                caption += f" · ⟨O⟩ = {expvals[i]:.4f}"
            svg = histogram_svg(circuit_counts, max_bars=self.max_bars, title=title)
            figures.append(
                f'<figure class="qmlops-result-histogram" data-circuit="{i}" style="margin:0">'
                f'{svg}<figcaption style="color:{_MUTED};font-family:{_FONT};font-size:11px">'
                f"{escape(caption)}</figcaption></figure>"
            )
        self.value = (
            '<div class="qmlops-result-histograms" style="display:flex;flex-wrap:wrap;gap:12px">'
            + "".join(figures)
            + "</div>"
        )


_AUTO_NAME = re.compile(r"circuit-\d+")


def _counts_of(
    item: Any,
) -> tuple[list[dict[str, int]], list[str | None], str | None, list[float] | None]:
    """Counts per circuit, their titles, a note when there are none, expectation values."""
    names: list[str | None] = []
    if isinstance(item, JobResult):
        counts, expvals = item.counts, item.expectation_values
    elif isinstance(item, Mapping):
        counts, expvals = [dict(item)], None
    elif isinstance(item, list | tuple) and all(isinstance(c, Mapping) for c in item):
        counts, expvals = [dict(c) for c in item], None
    elif isinstance(item, JobRecord) or isinstance(getattr(item, "record", None), JobRecord):
        record = item if isinstance(item, JobRecord) else item.refresh()
        if record.state is not JobState.COMPLETED or record.result is None:
            why = f": {record.error}" if record.error else ""
            return [], [], f"job {record.id} is {record.state.value}{why}; no counts yet", None
        counts, expvals = record.result.counts, record.result.expectation_values
        names = [c.name for c in record.circuits]
    else:
        raise TypeError(
            "ResultHistogram draws a JobResult, a job, a counts dict or a list of them, "
            f"not {type(item).__name__}"
        )
    # Qiskit names a circuit read from OpenQASM "circuit-<n>": no name worth showing.
    titled = [
        names[i] if i < len(names) and names[i] and not _AUTO_NAME.fullmatch(names[i]) else None
        for i in range(len(counts))
    ]
    return [{str(k): int(v) for k, v in c.items()} for c in counts], titled, None, expvals
