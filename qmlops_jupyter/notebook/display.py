"""Rich display of jobs, results, backends and the environment: HTML and plain text.

What ``_repr_mimebundle_`` of :class:`~qmlops_jupyter.client.Job`,
:class:`~qmlops_jupyter.models.JobResult` and :class:`~qmlops_jupyter.models.BackendInfo`
return, and :class:`JobList` and :class:`EnvTable` for tables of jobs and of versions. The HTML
is static (no script, no DOM injection): it renders in JupyterLab, Notebook 7, Voila and saved
notebooks alike, and follows JupyterLab's light and dark themes through its CSS variables, with
fallbacks elsewhere. Every string that comes from a user or a provider (a job's name, tags, an
error message) is escaped.

Only the standard library is imported here: a repr imports this module when it is first
displayed, never ``import qmlops_jupyter``.
"""

from __future__ import annotations

import os
import platform
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from .histogram import counts_table_html, counts_text, histogram_svg

if TYPE_CHECKING:
    from ..models import BackendInfo, JobRecord, JobResult

#: Colour of each job state (a CSS colour: a JupyterLab variable with a fallback), for the
#: state chips of jobs, job lists and the job monitor.
STATE_COLOURS: dict[str, str] = {
    "CREATED": "var(--jp-ui-font-color2, #616161)",
    "SUBMITTING": "var(--jp-info-color1, #0097a7)",
    "QUEUED": "var(--jp-warn-color1, #f57c00)",
    "RUNNING": "var(--jp-brand-color1, #1976d2)",
    "COMPLETED": "var(--jp-success-color1, #388e3c)",
    "FAILED": "var(--jp-error-color1, #d32f2f)",
    "CANCELLING": "var(--jp-warn-color0, #e65100)",
    "CANCELLED": "var(--jp-ui-font-color2, #616161)",
    "NEEDS_ATTENTION": "var(--jp-error-color0, #b71c1c)",
}
#: Circuits of a batch shown as histograms at most (the rest are counted).
MAX_CIRCUITS = 16
#: Distributions whose versions :func:`env_rows` lists, as (label, distribution names tried).
PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("qmlops_jupyter", ("qmlops-jupyter",)),
    ("qiskit", ("qiskit",)),
    ("qiskit-aer", ("qiskit-aer", "qiskit-aer-gpu")),
    ("qiskit-ibm-runtime", ("qiskit-ibm-runtime",)),
    ("amazon-braket-sdk", ("amazon-braket-sdk",)),
    ("pennylane", ("pennylane",)),
    ("mlflow", ("mlflow", "mlflow-skinny")),
)

_FONT = "var(--jp-ui-font-family, system-ui, -apple-system, 'Segoe UI', sans-serif)"
_CODE = "var(--jp-code-font-family, ui-monospace, SFMono-Regular, Menlo, monospace)"
_TEXT = "var(--jp-ui-font-color1, #212121)"
_MUTED = "var(--jp-ui-font-color2, #616161)"
_BORDER = "var(--jp-border-color2, #e0e0e0)"
_ERROR = "var(--jp-error-color1, #d32f2f)"
_BOX = f"font-family:{_FONT};font-size:var(--jp-ui-font-size1, 13px);color:{_TEXT};"
_TABLE = "border-collapse:collapse;margin:4px 0;font-size:inherit;color:inherit;"
_CELL = (
    f"padding:2px 10px 2px 0;border-bottom:1px solid {_BORDER};text-align:left;white-space:nowrap;"
)
_HEAD = _CELL + f"color:{_MUTED};font-weight:600;"
_KEY = (
    f"padding:1px 12px 1px 0;color:{_MUTED};font-weight:600;text-align:left;"
    "vertical-align:top;white-space:nowrap;"
)
_VALUE = "padding:1px 0;text-align:left;"
#: Names Qiskit gives circuits that were not named (``circuit-12``).
_AUTO_NAME = re.compile(r"^circuit-\d+$")
_ID = f"font-family:{_CODE};font-size:var(--jp-code-font-size, 12px);"


# -- text helpers ----------------------------------------------------------------------------------


def _clean(value: Any) -> str:
    """``value`` as one line of printable text: control and formatting characters (line
    breaks, terminal escapes, bidirectional overrides) shown as ``?``."""
    text = str(value)
    return "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)


def _h(value: Any) -> str:
    """``value`` escaped for HTML text and attribute values."""
    return escape(_clean(value), quote=True)


def duration_text(seconds: float) -> str:
    """Seconds as people read them: ``3.21 s``, ``4 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def aware(moment: datetime) -> datetime:
    """``moment`` with a time zone (the ledger's naive times are UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def elapsed(record: JobRecord, now: datetime | None = None) -> float:
    """Seconds from the job's creation to its end (or to ``now``, while it is not finished)."""
    end = record.finished_at or now or datetime.now(UTC)
    return (aware(end) - aware(record.created_at)).total_seconds()


def money_text(usd: float) -> str:
    """USD as shown with jobs: ``free``, ``$1.23``, ``$0.0012``."""
    if usd == 0:
        return "free"
    return f"${usd:,.2f}" if usd >= 0.01 else f"${usd:.4f}"


def cost_text(record: JobRecord) -> str:
    """What the job costs: the provider's figure when it gave one, else the estimate."""
    if record.actual_cost_usd is not None:
        return money_text(record.actual_cost_usd)
    if record.estimated_cost_usd is not None:
        money = money_text(record.estimated_cost_usd)
        return money if money == "free" else f"~{money} (estimate)"
    return "-"


def _state(record: JobRecord) -> str:
    return getattr(record.state, "value", str(record.state))


def state_chip(state: str, title: str | None = None) -> str:
    """A job state as a small coloured label (outlined, so it reads on light and dark);
    ``title`` (an error, say) shows on hover."""
    colour = STATE_COLOURS.get(state, _MUTED)
    hover = f' title="{_h(title)}"' if title else ""
    return (
        f'<span class="qmlops-state qmlops-state-{_h(state.lower())}" data-state="{_h(state)}"'
        f"{hover} "
        f'style="display:inline-block;padding:0 6px;border:1px solid {colour};'
        f"border-radius:9px;color:{colour};font-size:0.85em;font-weight:600;"
        f'line-height:1.5;white-space:nowrap">{_h(state)}</span>'
    )


def _text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], width: int = 40) -> str:
    """Columns aligned with spaces; cells cut at ``width`` characters."""

    def cell(value: Any) -> str:
        text = _clean(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[str]], css_class: str) -> str:
    """A table whose cells are HTML already (escaped by the caller)."""
    head = "".join(f'<th style="{_HEAD}">{_h(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{v}</td>' for v in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="{css_class}" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _pairs_html(pairs: Iterable[tuple[str, str]]) -> str:
    """Label/value rows (values are HTML already)."""
    rows = "".join(
        f'<tr><th style="{_KEY}">{_h(k)}</th><td style="{_VALUE}">{v}</td></tr>' for k, v in pairs
    )
    return f'<table class="qmlops-fields" style="{_TABLE}"><tbody>{rows}</tbody></table>'


# -- jobs ------------------------------------------------------------------------------------------


def _titles(record: JobRecord) -> list[str]:
    """A title per circuit: its index, and its name unless Qiskit made it up."""
    return [
        f"circuit {c.index}" + (f": {c.name}" if c.name and not _AUTO_NAME.match(c.name) else "")
        for c in sorted(record.circuits, key=lambda c: c.index)
    ]


def _job_fields(record: JobRecord) -> list[tuple[str, str]]:
    """(label, plain text) of what a job shows, in order; only what is known."""
    fields = [("shots", str(record.shots))]
    if record.circuits:
        widths = sorted({c.num_qubits for c in record.circuits})
        qubits = "/".join(str(w) for w in widths)
        fields.append(("circuits", f"{len(record.circuits)} ({qubits} qubits)"))
    fields.append(("created", _when(record.created_at)))
    if record.finished_at is not None:
        fields.append(("finished", _when(record.finished_at)))
    fields.append(("elapsed", duration_text(elapsed(record))))
    if record.queue_position is not None:
        fields.append(("queue position", str(record.queue_position)))
    fields.append(("cost", cost_text(record)))
    if record.provider_job_id:
        fields.append(("provider job", record.provider_job_id))
    if record.mlflow_run_id:
        fields.append(("MLflow run", record.mlflow_run_id))
    if record.tags:
        fields.append(("tags", ", ".join(f"{k}={v}" for k, v in sorted(record.tags.items()))))
    return fields


def job_html(record: JobRecord) -> str:
    """A job as HTML: who and where, its state as a coloured chip, times, cost, its error if
    it failed, and its result (histogram and counts) once it completed."""
    state = _state(record)
    name = f' <span class="qmlops-job-name">{_h(record.name)}</span>' if record.name else ""
    header = (
        f'<div style="margin-bottom:2px"><strong>Job</strong> '
        f'<code style="{_ID}">{_h(record.id)}</code>{name} on '
        f'<code style="{_ID}">{_h(record.backend)}</code> {state_chip(state)}</div>'
    )
    pairs = [(k, _h(v)) for k, v in _job_fields(record)]
    if record.error:
        kind = f" ({_h(record.error_kind)})" if record.error_kind else ""
        pairs.append(
            (
                "error",
                f'<span class="qmlops-error" style="color:{_ERROR}">{_h(record.error)}</span>'
                f"{kind}",
            )
        )
    body = _pairs_html(pairs)
    result = ""
    if state == "COMPLETED" and record.result is not None:
        result = result_html(record.result, titles=_titles(record))
    return f'<div class="qmlops-job" style="{_BOX}">{header}{body}{result}</div>'


def job_text(record: JobRecord) -> str:
    """A job as plain text: the same facts as :func:`job_html`, counts included."""
    state = _state(record)
    name = f" {_clean(record.name)!r}" if record.name else ""
    lines = [f"Job {_clean(record.id)}{name} on {_clean(record.backend)}: {state}"]
    lines += [f"  {k}: {_clean(v)}" for k, v in _job_fields(record)]
    if record.error:
        kind = f" ({_clean(record.error_kind)})" if record.error_kind else ""
        lines.append(f"  error: {_clean(record.error)}{kind}")
    if state == "COMPLETED" and record.result is not None:
        lines.append(_indent(result_text(record.result, titles=_titles(record)), "  "))
    return "\n".join(lines)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _record_of(item: Any) -> JobRecord:
    """A job handle's record as last read (no new read), or the record itself."""
    record = getattr(item, "record", item)
    if not hasattr(record, "state") or not hasattr(record, "created_at"):
        raise TypeError(f"not a job or job record: {type(item).__name__}")
    return record


class JobList(list):  # type: ignore[type-arg]
    """A list of jobs (:class:`~qmlops_jupyter.client.Job` handles or
    :class:`~qmlops_jupyter.models.JobRecord`) that displays as a table: id, name, backend,
    state, queue position, elapsed time and cost. Each job shows as it was last read; build the
    list again (``JobList(q.jobs())``) to see newer states."""

    HEADERS = ("id", "name", "backend", "state", "queue", "elapsed", "cost")

    def records(self) -> list[JobRecord]:
        return [_record_of(item) for item in self]

    def _rows(self) -> list[tuple[JobRecord, list[str]]]:
        now = datetime.now(UTC)
        rows = []
        for record in self.records():
            rows.append(
                (
                    record,
                    [
                        record.id,
                        record.name or "",
                        record.backend,
                        _state(record),
                        "" if record.queue_position is None else str(record.queue_position),
                        duration_text(elapsed(record, now)),
                        cost_text(record),
                    ],
                )
            )
        return rows

    def _repr_html_(self) -> str:
        rows = self._rows()
        if not rows:
            return f'<div class="qmlops-jobs" style="{_BOX}color:{_MUTED}">no jobs</div>'
        cells = [
            [
                f'<code style="{_ID}">{_h(values[0])}</code>',
                _h(values[1]),
                f'<code style="{_ID}">{_h(values[2])}</code>',
                state_chip(values[3]),
                _h(values[4]),
                _h(values[5]),
                _h(values[6]),
            ]
            for _, values in rows
        ]
        noun = "job" if len(rows) == 1 else "jobs"
        return (
            f'<div class="qmlops-jobs" style="{_BOX}">'
            + _html_table(self.HEADERS, cells, "qmlops-job-list")
            + f'<div style="color:{_MUTED}">{len(rows)} {noun}</div></div>'
        )

    def text(self) -> str:
        rows = self._rows()
        if not rows:
            return "no jobs"
        return _text_table(self.HEADERS, [values for _, values in rows])

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("JobList(...)" if cycle else self.text())


# -- results ---------------------------------------------------------------------------------------


def _circuit_title(i: int, titles: Sequence[str] | None) -> str:
    return titles[i] if titles and i < len(titles) else f"circuit {i}"


def result_html(
    result: JobResult, *, titles: Sequence[str] | None = None, max_circuits: int = MAX_CIRCUITS
) -> str:
    """Counts of each circuit as a histogram with its table of counts (folded), and the
    expectation value when the job asked for one; a batch shows one per circuit."""
    counts = list(result.counts)
    values = result.expectation_values
    several = len(counts) > 1
    noun = "circuit" if len(counts) == 1 else "circuits"
    parts = [
        f'<div class="qmlops-result" style="{_BOX}">'
        f'<div style="color:{_MUTED}">{result.shots} shots, {len(counts)} {noun}</div>'
    ]
    parts.append('<div style="display:flex;flex-wrap:wrap;gap:4px 16px">')
    for i, dist in enumerate(counts[:max_circuits]):
        title = _circuit_title(i, titles) if several else None
        parts.append('<div class="qmlops-circuit-result" style="margin:4px 0">')
        parts.append(histogram_svg(dist, title=title))
        if values is not None and i < len(values):
            parts.append(f"<div>expectation value: <strong>{values[i]:.6g}</strong></div>")
        outcomes = len(dist)
        parts.append(
            f'<details><summary style="cursor:pointer;color:{_MUTED}">counts '
            f"({outcomes} outcome{'' if outcomes == 1 else 's'})</summary>"
            f"{counts_table_html(dist)}</details></div>"
        )
    parts.append("</div>")
    if len(counts) > max_circuits:
        parts.append(
            f'<div style="color:{_MUTED}">… {len(counts) - max_circuits} more circuits '
            "(job.result().counts has them all)</div>"
        )
    parts.append("</div>")
    return "".join(parts)


def result_text(
    result: JobResult, *, titles: Sequence[str] | None = None, max_circuits: int = MAX_CIRCUITS
) -> str:
    """Counts of each circuit as text, most frequent first."""
    counts = list(result.counts)
    values = result.expectation_values
    noun = "circuit" if len(counts) == 1 else "circuits"
    lines = [f"{result.shots} shots, {len(counts)} {noun}"]
    for i, dist in enumerate(counts[:max_circuits]):
        if len(counts) > 1:
            lines.append(f"{_clean(_circuit_title(i, titles))}:")
        if values is not None and i < len(values):
            lines.append(f"  expectation value: {values[i]:.6g}")
        lines.append(_indent(counts_text(dist), "  "))
    if len(counts) > max_circuits:
        lines.append(f"... {len(counts) - max_circuits} more circuits")
    return "\n".join(lines)


# -- backends --------------------------------------------------------------------------------------

_BACKEND_HEADERS = ("name", "kind", "provider", "max qubits", "max shots", "jobs", "credentials")


def _backend_row(info: BackendInfo) -> list[str]:
    kind = info.kind + (" (local)" if info.local else "")
    return [
        info.name,
        kind,
        info.provider,
        "-" if info.max_qubits is None else str(info.max_qubits),
        str(info.max_shots),
        str(info.max_concurrent_jobs),
        info.credentials,
    ]


def _backend_status(info: BackendInfo) -> tuple[str, bool]:
    if not info.enabled:
        return "disabled", False
    if not info.available:
        return f"unavailable: {info.status}", False
    return "available", True


def backends_html(infos: Sequence[BackendInfo]) -> str:
    """Backends as a table: kind, provider, limits, credential status and availability (the
    reason when a backend cannot be used)."""
    if not infos:
        return f'<div class="qmlops-backends" style="{_BOX}color:{_MUTED}">no backends</div>'
    rows = []
    for info in infos:
        cells = [
            f'<code style="{_ID}">{_h(v)}</code>' if i == 0 else _h(v)
            for i, v in enumerate(_backend_row(info))
        ]
        status, ok = _backend_status(info)
        colour = "var(--jp-success-color1, #388e3c)" if ok else _ERROR
        cells.append(f'<span style="color:{colour}">{_h(status)}</span>')
        rows.append(cells)
    table = _html_table((*_BACKEND_HEADERS, "status"), rows, "qmlops-backend-list")
    return f'<div class="qmlops-backends" style="{_BOX}">{table}</div>'


def backends_text(infos: Sequence[BackendInfo]) -> str:
    """Backends as a text table (as :func:`backends_html`)."""
    if not infos:
        return "no backends"
    rows = [[*_backend_row(i), _backend_status(i)[0]] for i in infos]
    return _text_table((*_BACKEND_HEADERS, "status"), rows, width=60)


# -- the environment -------------------------------------------------------------------------------


def _installed(names: Sequence[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            found = version(name)
        except PackageNotFoundError:
            continue
        return found if name == names[0] else f"{found} ({name})"
    return "not installed"


def _memory() -> str:
    total = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return "unknown"
    return f"{total / 2**30:.1f} GiB"


def _cpus() -> str:
    count = os.cpu_count()
    if count is None:
        return "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return str(count)
    return str(count) if usable == count else f"{count} ({usable} usable)"


def env_rows() -> list[tuple[str, str]]:
    """(name, version or value) for Python, qmlops_jupyter, each quantum SDK and MLflow (read
    from the installed distributions' metadata, never by importing them), the OS, CPUs and
    memory."""
    rows = [("Python", f"{platform.python_version()} ({platform.python_implementation()})")]
    rows += [(label, _installed(names)) for label, names in PACKAGES]
    system = f"{platform.system()} {platform.release()} ({platform.machine()})"
    rows += [("OS", system.strip()), ("CPUs", _cpus()), ("memory", _memory())]
    return rows


class EnvTable:
    """Versions and machine facts (:func:`env_rows`), displayed as a table: what to paste
    into a bug report or keep beside a result."""

    def __init__(self) -> None:
        self.rows = env_rows()
        self.when = datetime.now(UTC)

    def _repr_html_(self) -> str:
        rows = [[_h(name), f'<span style="{_ID}">{_h(value)}</span>'] for name, value in self.rows]
        table = _html_table(("software / machine", "version"), rows, "qmlops-env")
        return (
            f'<div class="qmlops-env" style="{_BOX}">{table}'
            f'<div style="color:{_MUTED}">{_h(_when(self.when))}</div></div>'
        )

    def text(self) -> str:
        return _text_table(("software / machine", "version"), self.rows, width=60)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())


def bundle(html: str, text: str, include: Any = None, exclude: Any = None) -> dict[str, str]:
    """A ``_repr_mimebundle_`` answer, honouring IPython's include/exclude."""
    data = {"text/plain": text, "text/html": html}
    if include:
        data = {k: v for k, v in data.items() if k in include}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    return data
