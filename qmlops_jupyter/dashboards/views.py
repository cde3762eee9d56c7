"""The three dashboards as ipywidgets pages: what each dashboard notebook shows.

- :func:`jobs_dashboard`: headline counts, jobs by state and by backend, the job table (filter
  by state, backend and name or id; 50 jobs a page), queue and run time distributions, and the
  jobs that need attention. It follows the ledger: when a job moves, the page is read again.
- :func:`experiments_dashboard`: the MLflow runs of an experiment side by side (params and
  last metrics), a metric's curve over steps for each run, and the jobs and circuits behind the
  run picked.
- :func:`cost_dashboard`: jobs, shots and money per day, backend and user; the budgets against
  their limits; what the jobs still queued are estimated to cost.

Each works the same in Voila, JupyterLab and a plain notebook, on an empty ledger (saying so)
and on a large one: every figure is one SQL statement of :mod:`.data`, and the table reads one
page at a time. Each figure carries ``data-figure`` (and its marks ``data-label`` /
``data-value``) so a page's figures can be read back and checked against the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from html import escape
from typing import Any

import ipywidgets as widgets

from ..notebook.widgets import _BORDER, _ERROR, _FONT, _MUTED, _TEXT, _client_or_default, _problem
from ..states import ACTIVE_STATES, JobState
from . import charts, data

__all__ = [
    "CostDashboard",
    "ExperimentsDashboard",
    "JobsDashboard",
    "cost_dashboard",
    "experiments_dashboard",
    "jobs_dashboard",
]


_STATE_ORDER = [s.value for s in JobState]
_ACTIVE = {s.value for s in ACTIVE_STATES}


def tile(name: str, label: str, value: int | float, text: str | None = None) -> str:
    """A headline figure."""
    return (
        f'<div class="qmlops-tile" data-figure="{escape(name)}" data-value="{value}" '
        f'style="display:inline-block;min-width:110px;margin:0 10px 6px 0;padding:6px 10px;'
        f'border:1px solid {_BORDER};border-radius:4px;font-family:{_FONT}">'
        f'<div style="font-size:11px;color:{_MUTED}">{escape(label)}</div>'
        f'<div style="font-size:20px;font-weight:600;color:{_TEXT}">'
        f"{escape(text if text is not None else f'{value:,}')}</div></div>"
    )


def _note(text: str, *, error: bool = False, name: str = "note") -> str:
    colour = _ERROR if error else _MUTED
    return (
        f'<div class="qmlops-dashboard-{name}" data-error="{str(error).lower()}" '
        f'style="color:{colour};font-family:{_FONT};'
        f'font-size:13px;margin:6px 0">{escape(text)}</div>'
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def _quietly(page: _Page) -> Iterator[None]:
    """Change controls without their observers reading the ledger again."""
    page._quiet += 1
    try:
        yield
    finally:
        page._quiet -= 1


def _set_choices(dropdown: widgets.Dropdown, options: list[Any], value: Any) -> None:
    """New choices for ``dropdown``, keeping ``value`` when it is one of them, else the
    first."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    if list(dropdown.options) != options:
        dropdown.options = options
    if values:
        dropdown.value = value if value in values else values[0]


def _html(css: str = "") -> widgets.HTML:
    return widgets.HTML(
        layout=widgets.Layout(margin="0 12px 8px 0"), _dom_classes=[css] if css else []
    )


class _Page(widgets.VBox):
    """What the dashboards share: a client, an owner scope, a status line and refresh."""

    def __init__(self, client: Any, everyone: bool) -> None:
        super().__init__()
        self.add_class("qmlops-dashboard")
        #: Above 0 while controls are set by the page itself (their observers stay quiet).
        self._quiet = 0
        self._client = _client_or_default(client)
        #: Whose jobs: this user's, or every owner's in the ledger (``everyone=True``).
        self.owner: str | None = None if everyone else self._client.owner
        self.status = widgets.HTML(_dom_classes=["qmlops-dashboard-status"])
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", layout=widgets.Layout(width="96px")
        )
        self.refresh_button.on_click(lambda _b: self.refresh())

    @property
    def ledger(self) -> Any:
        return self._client.ledger

    def refresh(self) -> None:
        raise NotImplementedError

    def _when_user(self, action: Callable[[], None]) -> Callable[[Any], None]:
        """An observer that runs ``action`` when a user changed the control, not the page."""

        def observer(_change: Any) -> None:
            if not self._quiet:
                action()

        return observer

    def _say(self, text: str, *, error: bool = False) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
        self.status.value = _note(
            f"{text} · read {stamp}" if text else f"read {stamp}", error=error, name="status"
        )


# -- Jobs -------------------------------------------------------------------------------------


class JobsDashboard(_Page):
    """Jobs: live counts, the job table with filters and pages, times, attention.

    CSS classes: ``qmlops-jobs-dashboard``, ``qmlops-tile`` (headline figures, with
    ``data-figure`` total / active / completed / failed / needs_attention), ``qmlops-chart``
    (``data-figure`` by_state, by_backend, queue_time, run_time), ``qmlops-job-table`` (with
    ``data-total``, ``data-page``, ``data-pages``; rows ``data-job``), ``qmlops-attention``.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        everyone: bool = False,
        page_size: int = 50,
        live: bool = True,
        interval: float = 2.0,
    ) -> None:
        super().__init__(client, everyone)
        self.page_size = page_size
        #: Seconds between looks at the ledger's event log for a change (``live``).
        self.interval = interval
        self.page = 1
        self.add_class("qmlops-jobs-dashboard")
        self.headline = _html()
        self.by_state = _html()
        self.by_backend = _html()
        self.matrix = _html()
        self.queue_times = _html()
        self.run_times = _html()
        self.attention = _html()
        self.table = widgets.HTML(_dom_classes=["qmlops-job-table-box"])
        self.empty = widgets.HTML()
        self.state_filter = widgets.Dropdown(
            description="State",
            options=[("all", "")] + [(s, s) for s in _STATE_ORDER],
            layout=widgets.Layout(width="220px"),
        )
        self.backend_filter = widgets.Dropdown(
            description="Backend", options=[("all", "")], layout=widgets.Layout(width="260px")
        )
        self.text_filter = widgets.Text(
            description="Find", placeholder="name or job id", layout=widgets.Layout(width="260px")
        )
        self.text_filter.continuous_update = False
        for control in (self.state_filter, self.backend_filter, self.text_filter):
            control.observe(self._when_user(self._filter_changed), names="value")
        self.first_button = widgets.Button(icon="angle-double-left", tooltip="first page")
        self.prev_button = widgets.Button(icon="angle-left", tooltip="previous page")
        self.next_button = widgets.Button(icon="angle-right", tooltip="next page")
        self.last_button = widgets.Button(icon="angle-double-right", tooltip="last page")
        moves: list[tuple[widgets.Button, Callable[[], int]]] = [
            (self.first_button, lambda: 1),
            (self.prev_button, lambda: self.page - 1),
            (self.next_button, lambda: self.page + 1),
            (self.last_button, lambda: 10**9),
        ]
        for button, target in moves:
            button.layout = widgets.Layout(width="40px")
            button.on_click(lambda _b, t=target: self.go_to(t()))
        self.page_label = widgets.HTML(_dom_classes=["qmlops-page-label"])
        self._seen: int | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.children = [
            widgets.HTML(STYLE),
            widgets.HBox([self.refresh_button, self.status]),
            self.headline,
            self.empty,
            widgets.HBox([self.by_state, self.by_backend]),
            self.matrix,
            widgets.HTML("<h3>Jobs</h3>"),
            widgets.HBox([self.state_filter, self.backend_filter, self.text_filter]),
            self.table,
            widgets.HBox(
                [
                    self.first_button,
                    self.prev_button,
                    self.page_label,
                    self.next_button,
                    self.last_button,
                ]
            ),
            widgets.HBox([self.queue_times, self.run_times]),
            widgets.HTML("<h3>Needing attention</h3>"),
            self.attention,
        ]
        self.refresh()
        if live:
            self.start()

    # -- what it shows ---------------------------------------------------------------------

    @property
    def filter(self) -> data.JobFilter:
        return data.JobFilter(
            self.owner,
            states=(self.state_filter.value,) if self.state_filter.value else (),
            backends=(self.backend_filter.value,) if self.backend_filter.value else (),
            text=self.text_filter.value,
        )

    def refresh(self) -> None:
        """Read everything again (keeping the filters and the page)."""
        with self._lock:
            try:
                self._seen = self.ledger.last_event_seq()
                self._show_counts()
                self._show_table()
                self._show_times()
                self._show_attention()
                self._say("")
            except Exception as exc:
                self._say(_problem(exc), error=True)

    def _show_counts(self) -> None:
        counts = data.job_counts(self.ledger, data.JobFilter(self.owner))
        by_state = counts.by_state
        needing = by_state.get("NEEDS_ATTENTION", 0)
        self.headline.value = "".join(
            [
                tile("total", "Jobs", counts.total),
                tile("active", "Active", sum(by_state.get(s, 0) for s in _ACTIVE)),
                tile("completed", "Completed", by_state.get("COMPLETED", 0)),
                tile("failed", "Failed", by_state.get("FAILED", 0)),
                tile("needs_attention", "Needs attention", needing),
            ]
        )
        if counts.total == 0:
            self.empty.value = _note(
                "No jobs in the ledger yet. Submit one (qmlops_jupyter.submit(circuit), "
                "%qmlops submit, or qmlops submit FILE.qasm) and it appears here.",
                name="empty",
            )
        else:
            self.empty.value = ""
        self.by_state.value = charts.bar_chart(
            "by_state",
            "Jobs by state",
            [(s, by_state[s]) for s in _STATE_ORDER if by_state.get(s)],
            colours=charts.STATE_COLOURS,
            empty="no jobs yet",
        )
        self.by_backend.value = charts.bar_chart(
            "by_backend",
            "Jobs by backend",
            sorted(counts.by_backend.items(), key=lambda kv: (-kv[1], kv[0])),
            empty="no jobs yet",
        )
        self.matrix.value = backend_state_html(counts)
        backends = sorted(counts.by_backend)
        options = [("all", "")] + [(b, b) for b in backends]
        if self.backend_filter.value and self.backend_filter.value not in backends:
            options.append((self.backend_filter.value, self.backend_filter.value))
        with _quietly(self):
            _set_choices(self.backend_filter, options, self.backend_filter.value)

    def _show_table(self) -> None:
        page = data.job_page(self.ledger, self.filter, self.page, self.page_size)
        self.page = page.page
        self.table.value = job_table_html(page)
        self.page_label.value = (
            f'<span class="qmlops-page" data-page="{page.page}" data-pages="{page.pages}" '
            f'style="padding:0 8px;line-height:28px">page {page.page:,} of {page.pages:,} '
            f"· jobs {page.first:,}-{page.last:,} of {page.total:,}</span>"
        )
        self.first_button.disabled = self.prev_button.disabled = page.page <= 1
        self.next_button.disabled = self.last_button.disabled = page.page >= page.pages

    def _show_times(self) -> None:
        times = data.durations(self.ledger, self.filter)
        self.queue_times.value = charts.duration_histogram(
            "queue_time", f"Queue time ({len(times.queue_seconds):,} jobs)", times.queue_seconds
        )
        self.run_times.value = charts.duration_histogram(
            "run_time", f"Run time ({len(times.run_seconds):,} jobs)", times.run_seconds
        )

    def _show_attention(self) -> None:
        items = data.attention(self.ledger, self.owner)
        if not items:
            self.attention.value = (
                '<div class="qmlops-attention" data-count="0">'
                + _note("Nothing needs attention.", name="attention-empty")
                + "</div>"
            )
            return
        rows = "".join(
            f'<tr data-job="{escape(a.job.id)}"><td><code>{escape(a.job.id)}</code></td>'
            f"<td>{escape(a.job.name or '')}</td><td>{escape(a.job.backend)}</td>"
            f"<td>{_chip(a.job.state.value)}</td><td>{escape(a.reason)}</td></tr>"
            for a in items
        )
        self.attention.value = (
            f'<table class="qmlops-attention" data-count="{len(items)}" style="{_TABLE_STYLE}">'
            "<thead><tr><th>job</th><th>name</th><th>backend</th><th>state</th><th>why</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )

    # -- moving around -------------------------------------------------------------------------

    def go_to(self, page: int) -> None:
        with self._lock:
            self.page = max(1, page)
            try:
                self._show_table()
            except Exception as exc:
                self._say(_problem(exc), error=True)

    def _filter_changed(self) -> None:
        with self._lock:
            self.page = 1
            try:
                self._show_table()
                self._show_times()
            except Exception as exc:
                self._say(_problem(exc), error=True)

    # -- following the ledger ------------------------------------------------------------------

    def start(self) -> None:
        """Follow the ledger: read the page again whenever a job has moved."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._follow, name="qmlops-jobs-dashboard", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self.stop()
        super().close()

    def _follow(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                seq = self.ledger.last_event_seq()
            except Exception as exc:
                self._say(_problem(exc), error=True)
                continue
            if seq != self._seen:
                self.refresh()


_TABLE_STYLE = f"border-collapse:collapse;font-family:{_FONT};font-size:12px;color:{_TEXT}"
#: Cell spacing of the dashboards' tables (inline styles cannot reach a table's cells).
STYLE = (
    "<style>.qmlops-dashboard table td, .qmlops-dashboard table th "
    "{padding:3px 12px 3px 0;vertical-align:top;text-align:left}"
    ".qmlops-dashboard table .num {text-align:right}"
    ".qmlops-dashboard details.qmlops-more summary {cursor:pointer;color:"
    f"{_MUTED};font-family:{_FONT};font-size:12px;margin:4px 0" + "}</style>"
)


def _chip(state: str) -> str:
    from ..notebook.display import state_chip

    return state_chip(state)


def backend_state_html(counts: data.JobCounts) -> str:
    """Jobs per backend (rows) and state (columns), the states that occur only."""
    if not counts.total:
        return ""
    states = [s for s in _STATE_ORDER if counts.by_state.get(s)]
    head = "".join(
        f'<th class="num" style="color:{charts.STATE_COLOURS.get(s, _MUTED)}">'
        f"{escape(s.replace('_', ' ').lower())}</th>"
        for s in states
    )
    rows = []
    for backend in sorted(counts.by_backend, key=lambda b: (-counts.by_backend[b], b)):
        cells = counts.by_backend_state.get(backend, {})
        tds = "".join(
            f'<td class="num" data-state="{s}" data-value="{cells.get(s, 0)}">'
            f"{cells.get(s, 0):,}</td>"
            for s in states
        )
        rows.append(
            f'<tr data-backend="{escape(backend)}"><th title="{escape(backend)}" '
            f'style="white-space:nowrap">'
            f"{escape(charts.short_backend(backend))}</th>{tds}</tr>"
        )
    return (
        f'<table class="qmlops-backend-states" style="{_TABLE_STYLE}"><thead><tr>'
        f"<th>backend</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def job_table_html(page: data.JobTablePage) -> str:
    """One page of jobs as a table: id, name, backend, state, shots, created, queue, run,
    cost."""
    from ..notebook.display import cost_text, duration_text

    if not page.jobs:
        message = "No jobs match." if page.total == 0 else "This page is empty."
        return (
            f'<div class="qmlops-job-table" data-total="{page.total}" data-page="{page.page}" '
            f'data-pages="{page.pages}">{_note(message, name="table-empty")}</div>'
        )
    rows = []
    for job in page.jobs:
        queue = run = "-"
        if job.started_at and job.submitted_at:
            queue = duration_text((job.started_at - job.submitted_at).total_seconds())
        if job.started_at and job.finished_at:
            run = duration_text((job.finished_at - job.started_at).total_seconds())
        title = job.error or ""
        rows.append(
            f'<tr data-job="{escape(job.id)}" style="border-top:1px solid {_BORDER}">'
            f"<td><code>{escape(job.id)}</code></td><td>{escape(job.name or '')}</td>"
            f"<td title='{escape(job.backend)}'>{escape(charts.short_backend(job.backend))}</td>"
            f"<td title='{escape(title)}'>"
            f"{_chip(job.state.value)}</td><td class='num'>{job.shots:,}</td>"
            f"<td>{_when(job.created_at)}</td><td>{queue}</td><td>{run}</td>"
            f"<td>{escape(cost_text(job))}</td></tr>"
        )
    return (
        f'<table class="qmlops-job-table" data-total="{page.total}" data-page="{page.page}" '
        f'data-pages="{page.pages}" style="{_TABLE_STYLE}"><thead><tr style="text-align:left">'
        "<th>job</th><th>name</th><th>backend</th><th>state</th><th>shots</th>"
        "<th>created (UTC)</th><th>queue</th><th>run</th><th>cost</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def jobs_dashboard(client: Any = None, **options: Any) -> JobsDashboard:
    """The Jobs dashboard (see :class:`JobsDashboard`): ``everyone=True`` shows every owner's
    jobs, ``page_size``, ``live=False`` not to follow the ledger."""
    return JobsDashboard(client, **options)


# -- Cost -------------------------------------------------------------------------------------


class CostDashboard(_Page):
    """Cost and budget: spend per day, backend and user; budgets; the estimate of queued jobs.

    ``data-figure`` of its parts: tiles usd_period / shots_period / jobs_period / queued_usd /
    queued_jobs; charts usd_by_day, shots_by_day, usd_by_backend, shots_by_backend,
    usd_by_user, queued_by_backend; budget meters ``budget`` (``data-label`` names the limit).
    """

    def __init__(self, client: Any = None, *, everyone: bool = False, days: int = 30) -> None:
        super().__init__(client, everyone)
        self.add_class("qmlops-cost-dashboard")
        self.period = widgets.Dropdown(
            description="Period",
            options=[
                ("last 7 days", 7),
                ("last 30 days", 30),
                ("last 90 days", 90),
                ("last 365 days", 365),
            ],
            value=days if days in (7, 30, 90, 365) else 30,
            layout=widgets.Layout(width="240px"),
        )
        if days not in (7, 30, 90, 365):
            self.period.options = [*self.period.options, (f"last {days} days", days)]
            self.period.value = days
        self.headline = _html()
        self.empty = widgets.HTML()
        self.by_day = _html()
        self.shots_by_day = _html()
        self.by_backend = _html()
        self.shots_by_backend = _html()
        self.by_user = _html()
        self.budget_box = _html()
        self.queued = _html()
        self.children = [
            widgets.HTML(STYLE),
            widgets.HBox([self.refresh_button, self.period, self.status]),
            self.headline,
            self.empty,
            widgets.HBox([self.by_day, self.shots_by_day]),
            widgets.HBox([self.by_backend, self.shots_by_backend, self.by_user]),
            widgets.HTML("<h3>Budgets</h3>"),
            self.budget_box,
            widgets.HTML("<h3>Queued jobs</h3>"),
            self.queued,
        ]
        self.period.observe(self._when_user(self.refresh), names="value")
        self.refresh()

    def refresh(self) -> None:
        from ..notebook.display import money_text

        try:
            days = int(self.period.value)
            rows = data.spend(self.ledger, self.owner, days)
            queued = data.queued_estimate(self.ledger, self.owner)
            usd = sum(r.usd for r in rows)
            shots = sum(r.shots for r in rows)
            n = sum(r.jobs for r in rows)
            self.headline.value = "".join(
                [
                    tile("usd_period", f"Spent, last {days} days", round(usd, 6), money_text(usd)),
                    tile("shots_period", f"Shots, last {days} days", shots),
                    tile("jobs_period", f"Jobs, last {days} days", n),
                    tile("queued_usd", "Queued, estimated", queued.usd, money_text(queued.usd)),
                    tile("queued_jobs", "Jobs not finished", queued.jobs),
                ]
            )
            self.empty.value = (
                ""
                if rows
                else _note(
                    f"No jobs in the last {days} days: nothing spent. Prices come from the "
                    "backends' public pricing; simulators are free.",
                    name="empty",
                )
            )
            per_day = _sum_by(rows, lambda r: r.day.isoformat())
            self.by_day.value = charts.column_chart(
                "usd_by_day", "Money by day (USD)", [(k, v[2]) for k, v in per_day],
                fmt=money_text, width=480, empty="nothing spent",
            )  # fmt: skip
            self.shots_by_day.value = charts.column_chart(
                "shots_by_day", "Shots by day", [(k, v[1]) for k, v in per_day], width=480,
                empty="no shots",
            )  # fmt: skip
            per_backend = sorted(
                _sum_by(rows, lambda r: r.backend), key=lambda kv: (-kv[1][2], -kv[1][1], kv[0])
            )
            self.by_backend.value = charts.bar_chart(
                "usd_by_backend",
                "Money by backend (USD)",
                [(k, v[2]) for k, v in per_backend],
                fmt=money_text,
                empty="nothing spent",
            )
            self.shots_by_backend.value = charts.bar_chart(
                "shots_by_backend", "Shots by backend", [(k, v[1]) for k, v in per_backend]
            )
            per_user = sorted(_sum_by(rows, lambda r: r.owner), key=lambda kv: -kv[1][2])
            self.by_user.value = charts.bar_chart(
                "usd_by_user",
                "Money by user (USD)",
                [(k, v[2]) for k, v in per_user],
                fmt=money_text,
                empty="nothing spent",
            )
            self._show_budgets()
            self._show_queued(queued)
            self._say("")
        except Exception as exc:
            self._say(_problem(exc), error=True)

    def _show_budgets(self) -> None:
        from ..notebook.display import money_text

        owner = self.owner or self._client.owner
        statuses = data.budgets(self.ledger, owner)
        meters = []
        for status in statuses:
            scope = "all backends" if status.backend == "*" else status.backend
            if status.shots_per_day is not None:
                b = status.shots_per_day
                meters.append(
                    charts.meter(
                        "budget",
                        f"shots today, {scope}",
                        b.used,
                        b.limit,
                        f"{int(b.used):,} of {int(b.limit):,} shots ({int(b.remaining):,} left)",
                    )
                )
            if status.usd_per_month is not None:
                b = status.usd_per_month
                meters.append(
                    charts.meter(
                        "budget",
                        f"USD this month, {scope}",
                        b.used,
                        b.limit,
                        f"{money_text(b.used)} of {money_text(b.limit)} "
                        f"({money_text(b.remaining)} left)",
                    )
                )
        if not meters:
            self.budget_box.value = _note(
                "No budgets set. Set one with: qmlops budget set --usd-per-month 100 "
                "--shots-per-day 100000",
                name="no-budgets",
            )
        else:
            self.budget_box.value = "".join(meters)

    def _show_queued(self, queued: data.QueuedEstimate) -> None:
        from ..notebook.display import money_text

        if not queued.jobs:
            self.queued.value = _note("No jobs waiting or running.", name="queued-empty")
            return
        unpriced = f" ({queued.unpriced:,} without a price)" if queued.unpriced else ""
        self.queued.value = _note(
            f"{queued.jobs:,} job(s) not finished, {queued.shots:,} shots, estimated "
            f"{money_text(queued.usd)}{unpriced}.",
            name="queued-summary",
        ) + charts.bar_chart(
            "queued_by_backend",
            "Estimate of unfinished jobs by backend (USD)",
            sorted(queued.by_backend.items(), key=lambda kv: -kv[1]),
            fmt=money_text,
        )


def _sum_by(
    rows: Sequence[data.SpendRow], key: Callable[[data.SpendRow], str]
) -> list[tuple[str, list[float]]]:
    """``[(key, [jobs, shots, usd])]`` in key order."""
    out: dict[str, list[float]] = {}
    for r in rows:
        cell = out.setdefault(key(r), [0, 0, 0.0])
        cell[0] += r.jobs
        cell[1] += r.shots
        cell[2] += r.usd
    return sorted(out.items())


def cost_dashboard(client: Any = None, **options: Any) -> CostDashboard:
    """The Cost and budget dashboard (see :class:`CostDashboard`): ``days`` of the period,
    ``everyone=True`` for every owner's jobs."""
    return CostDashboard(client, **options)


# -- Experiments ------------------------------------------------------------------------------


class ExperimentsDashboard(_Page):
    """Experiments: an experiment's runs side by side, a metric over steps, the jobs and
    circuits behind a run.

    Parts: ``qmlops-runs`` (the table; ``data-runs``; rows ``data-run``), the chart
    ``data-figure="metric"`` (one ``qmlops-series`` per run), ``qmlops-run-jobs`` (the chosen
    run's jobs, rows ``data-job``) and ``qmlops-circuit`` (their OpenQASM 3).
    """

    def __init__(
        self, client: Any = None, *, experiment: str | None = None, limit: int = 20
    ) -> None:
        super().__init__(client, everyone=False)
        self.add_class("qmlops-experiments-dashboard")
        self.limit = limit
        self.runs: list[dict[str, Any]] = []
        self._ml: Any = None
        self.experiment = widgets.Dropdown(
            description="Experiment", layout=widgets.Layout(width="360px")
        )
        self.metric = widgets.Dropdown(description="Metric", layout=widgets.Layout(width="300px"))
        self.run = widgets.Dropdown(description="Run", layout=widgets.Layout(width="420px"))
        self.table = _html()
        self.empty = widgets.HTML()
        self.curve = _html()
        self.behind = _html()
        self._wanted = experiment or _query_value("experiment")
        self.experiment.observe(self._when_user(self._experiment_changed), names="value")
        self.metric.observe(self._when_user(self._show_curve), names="value")
        self.run.observe(self._when_user(self._show_behind), names="value")
        self.children = [
            widgets.HTML(STYLE),
            widgets.HBox([self.refresh_button, self.experiment, self.status]),
            self.empty,
            self.table,
            self.metric,
            self.curve,
            widgets.HTML("<h3>Behind a run</h3>"),
            self.run,
            self.behind,
        ]
        self.refresh()

    def _mlflow(self) -> Any:
        from ..tracking.mlflow_io import client_for

        if self._ml is None:
            self._ml = client_for(self._client.tracking.config.uri)
        return self._ml

    def refresh(self) -> None:
        config = self._client.tracking.config
        if not config.enabled:
            self.empty.value = _note(
                f"Tracking is off ({config.reason}): there are no runs to show.", name="empty"
            )
            self._say("")
            return
        try:
            from ..cli.tracking import _mlflow_call

            uri = config.uri
            found = _mlflow_call(uri, "reading experiments", self._mlflow().search_experiments)
            names = sorted(e.name for e in found if e.name != "Default") + [
                e.name for e in found if e.name == "Default"
            ]
            current = self.experiment.value or self._wanted
            with _quietly(self):
                _set_choices(self.experiment, names, current)
            self._experiment_changed()
        except Exception as exc:
            self._say(_problem(exc), error=True)

    def _experiment_changed(self) -> None:
        from ..cli.tracking import list_runs

        name = self.experiment.value
        try:
            self.runs = list_runs(self._client, name, self.limit) if name else []
        except Exception as exc:
            self.runs = []
            self._say(_problem(exc), error=True)
            return
        if not self.runs:
            self.empty.value = _note(
                "No tracked runs yet. Every completed job is logged to MLflow; group jobs into "
                'one run with `with qmlops_jupyter.track("experiment"):` in a notebook.',
                name="empty",
            )
        else:
            self.empty.value = ""
        self.table.value = runs_table_html(self.runs)
        metrics = sorted({k for r in self.runs for k in r["metrics"]})
        with _quietly(self):
            previous = self.metric.value
            _set_choices(
                self.metric, metrics, previous if previous in metrics else _preferred(metrics)
            )
            _set_choices(
                self.run, [(_run_label(r), r["run_id"]) for r in self.runs], self.run.value
            )
        self._show_curve()
        self._show_behind()
        self._say("")

    def _show_curve(self) -> None:
        key = self.metric.value
        if not key or not self.runs:
            self.curve.value = ""
            return
        try:
            series = {}
            for run in self.runs[:10]:
                if key not in run["metrics"]:
                    continue
                history = self._mlflow().get_metric_history(run["run_id"], key)
                series[_run_label(run)] = [(float(m.step), float(m.value)) for m in history]
            self.curve.value = charts.line_chart("metric", f"{key} over steps", series)
        except Exception as exc:
            self._say(_problem(exc), error=True)

    def _show_behind(self) -> None:
        run_id = self.run.value
        if not run_id:
            self.behind.value = ""
            return
        try:
            records = data.jobs_of_run(self.ledger, self.owner, run_id)
            run = next((r for r in self.runs if r["run_id"] == run_id), None)
            if not records and run is not None and run["job_ids"]:
                records = [j.record for j in (self._maybe_job(i) for i in run["job_ids"][:50]) if j]
            self.behind.value = self._behind_html(records)
        except Exception as exc:
            self._say(_problem(exc), error=True)

    def _maybe_job(self, job_id: str) -> Any:
        try:
            return self._client.get_job(job_id)
        except Exception:
            return None

    def _behind_html(self, records: Sequence[Any]) -> str:
        from ..notebook.display import cost_text

        if not records:
            return _note("No jobs of this run are in the ledger.", name="run-jobs-empty")
        rows = "".join(
            f'<tr data-job="{escape(r.id)}"><td><code>{escape(r.id)}</code></td>'
            f"<td>{escape(r.name or '')}</td><td>{escape(r.backend)}</td>"
            f"<td>{_chip(r.state.value)}</td><td class='num'>{r.shots:,}</td>"
            f"<td>{len(r.circuits)}</td><td>{escape(cost_text(r))}</td></tr>"
            for r in records
        )
        parts = [
            f'<table class="qmlops-run-jobs" data-count="{len(records)}" '
            f'style="{_TABLE_STYLE}"><thead><tr style="text-align:left"><th>job</th>'
            "<th>name</th><th>backend</th><th>state</th><th>shots</th><th>circuits</th>"
            f"<th>cost</th></tr></thead><tbody>{rows}</tbody></table>"
        ]
        for record in records[:5]:
            try:
                texts = self.ledger.circuit_qasm3(record.id)
            except Exception:
                continue
            for i, (qasm, info) in enumerate(zip(texts[:3], record.circuits, strict=False)):
                lines = qasm.splitlines()
                shown = "\n".join(lines[:40]) + (
                    f"\n// … {len(lines) - 40} more lines" if len(lines) > 40 else ""
                )
                parts.append(
                    f'<details class="qmlops-circuit" data-job="{escape(record.id)}" '
                    f'style="font-family:{_FONT};font-size:12px"><summary>job '
                    f"{escape(record.id)} circuit {i}: {info.num_qubits} qubits, depth "
                    f"{info.depth}</summary><pre>{escape(shown)}</pre></details>"
                )
        return "".join(parts)


def _query_value(name: str) -> str | None:
    """A value of the page's query string (Voila gives it to the kernel as QUERY_STRING)."""
    import os
    from urllib.parse import parse_qs

    values = parse_qs(os.environ.get("QUERY_STRING", "")).get(name)
    return values[0] if values else None


#: Metrics every tracked job logs (see qmlops_jupyter.tracking): not the first one shown.
AUTOMATIC_METRICS = (
    "job.", "circuit_", "cumulative_", "distinct_outcomes", "entropy_bits", "p_", "fidelity",
    "expectation_value", "qmlops",
)  # fmt: skip


def _preferred(metrics: Sequence[str]) -> str | None:
    """The metric first shown: one a user logged over steps, before the automatic ones."""
    for key in metrics:
        if not key.startswith(AUTOMATIC_METRICS):
            return key
    return metrics[0] if metrics else None


def _run_label(run: dict[str, Any]) -> str:
    return f"{run.get('run_name') or run['run_id'][:8]} ({run['run_id'][:8]})"


#: Params every tracked job logs (see qmlops_jupyter.tracking): listed under "more".
AUTOMATIC_PARAMS = (
    "backend", "circuit.", "circuit_", "gates.", "num_circuits", "seed", "shots", "observables",
    "qmlops",
)  # fmt: skip


def runs_table_html(runs: Sequence[dict[str, Any]]) -> str:
    """Runs side by side: one column per run; a row per param and per last metric value, the
    user's own first, those every tracked job logs folded under "more"."""
    if not runs:
        return '<div class="qmlops-runs" data-runs="0"></div>'
    shown = list(runs[:8])
    params = sorted({k for r in shown for k in r["params"]})
    metrics = sorted({k for r in shown for k in r["metrics"]})
    head = "".join(
        f'<th data-run="{escape(r["run_id"])}">{escape(_run_label(r))}</th>' for r in shown
    )

    def row(label: str, cells: list[str], kind: str) -> str:
        return (
            f'<tr data-row="{escape(label)}" data-kind="{kind}"><th>{escape(label)}</th>'
            f"{''.join(f'<td>{c}</td>' for c in cells)}</tr>"
        )

    def param_row(key: str) -> str:
        return row(key, [escape(str(r["params"].get(key, ""))) for r in shown], "param")

    def metric_row(key: str) -> str:
        values = [f"{r['metrics'][key]:.6g}" if key in r["metrics"] else "" for r in shown]
        return row(key, values, "metric")

    mine = [param_row(k) for k in params if not k.startswith(AUTOMATIC_PARAMS)]
    mine += [metric_row(k) for k in metrics if not k.startswith(AUTOMATIC_METRICS)]
    automatic = [param_row(k) for k in params if k.startswith(AUTOMATIC_PARAMS)]
    automatic += [metric_row(k) for k in metrics if k.startswith(AUTOMATIC_METRICS)]
    body = [
        row("status", [escape(r["status"] or "") for r in shown], "info"),
        row("started (UTC)", [escape((r["start_time"] or "")[:19]) for r in shown], "info"),
        row("jobs", [str(r["job_count"]) for r in shown], "info"),
        *mine,
    ]
    more = ""
    if automatic:
        more = (
            f'<details class="qmlops-more"><summary>{len(automatic)} more params and metrics '
            f'every tracked job logs</summary><table class="qmlops-runs-more" '
            f'style="{_TABLE_STYLE}"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{''.join(automatic)}</tbody></table></details>"
        )
    if len(runs) > len(shown):
        more += _note(f"{len(runs) - len(shown)} older run(s) not shown.", name="runs-more")
    return (
        f'<table class="qmlops-runs" data-runs="{len(shown)}" style="{_TABLE_STYLE}">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"
    )


def experiments_dashboard(client: Any = None, **options: Any) -> ExperimentsDashboard:
    """The Experiments dashboard (see :class:`ExperimentsDashboard`): ``experiment`` to open
    (else the page's ``?experiment=`` or the first), ``limit`` runs."""
    return ExperimentsDashboard(client, **options)
