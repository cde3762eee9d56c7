"""Pydantic models shared by the Python API, the CLI's ``--json`` and (later) the REST API.

The ORM tables live in :mod:`qmlops_jupyter.ledger.orm`; these are the public shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .states import JobState


class CircuitInfo(BaseModel):
    """What is known of one circuit of a job, without loading it."""

    index: int
    name: str | None = None
    num_qubits: int
    num_clbits: int
    depth: int
    size: int
    gate_counts: dict[str, int]
    source_format: str = Field(description="qasm2, qasm3 or qiskit: how the circuit came in")


class JobResult(BaseModel):
    """Counts per circuit, keys in Qiskit's bit order (classical bit 0 is rightmost)."""

    counts: list[dict[str, int]]
    shots: int
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def expectation_values(self) -> list[float] | None:
        """One value per circuit for a job submitted with ``observables``."""
        values = self.metadata.get("expectation_values")
        return None if values is None else [float(v) for v in values]

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, str]:
        """A histogram and the counts of each circuit (HTML), and the counts as text."""
        from .notebook.display import bundle, result_html, result_text

        return bundle(result_html(self), result_text(self), include, exclude)


class JobRecord(BaseModel):
    """A job as the ledger holds it; the JSON of ``qmlops show --json``."""

    model_config = ConfigDict(use_enum_values=False)

    id: str
    owner: str
    name: str | None = None
    backend: str
    state: JobState
    shots: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    provider_job_id: str | None = None
    error: str | None = None
    error_kind: str | None = None
    idempotency_key: str | None = None
    attempts: int = 0
    polls: int = 0
    queue_position: int | None = Field(
        default=None, description="place in the provider's queue, as last reported"
    )
    timeout: float | None = None
    estimated_cost_usd: float | None = Field(
        default=None, description="price estimated before submission, USD (None: unknown)"
    )
    actual_cost_usd: float | None = Field(
        default=None, description="price the provider reported, USD (when it does)"
    )
    phases: dict[str, float] = Field(
        default_factory=dict,
        description="seconds spent in validate, transpile, queue, run, post_process",
    )
    mlflow_run_id: str | None = Field(
        default=None, description="the MLflow run the job was logged to (once logged)"
    )
    lineage: dict[str, Any] | None = Field(
        default=None,
        description="where the job came from: notebook, git commit, pipeline parameters, "
        "tracked run (None: tracking was off)",
    )
    tags: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    circuits: list[CircuitInfo] = Field(default_factory=list)
    result: JobResult | None = None

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class JobEvent(BaseModel):
    """One line of a job's append-only event log."""

    seq: int
    job_id: str
    at: datetime
    kind: str = Field(description="transition, recovered, retry, lease or note")
    from_state: JobState | None = None
    to_state: JobState | None = None
    actor: str
    message: str | None = None


class JobPage(BaseModel):
    jobs: list[JobRecord]
    next: str | None = None


class BackendInfo(BaseModel):
    """A backend as users see it: its kind and limits (capabilities are data)."""

    name: str
    provider: str
    description: str = ""
    kind: str = Field(default="simulator", description="simulator or qpu")
    simulator: bool
    local: bool = Field(description="runs in this machine's processes, no provider queue")
    enabled: bool = True
    available: bool = True
    status: str = "ok"
    max_qubits: int | None
    max_shots: int
    max_concurrent_jobs: int
    native_gates: list[str] = Field(default_factory=list)
    supports_reattach: bool = False
    supports_cancel: bool = True
    credentials: str = Field(default="not needed", description="not needed, configured or missing")

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, str]:
        """The backend as a one-row table: kind, limits, credential status, availability."""
        from .notebook.display import backends_html, backends_text, bundle

        return bundle(backends_html([self]), backends_text([self]), include, exclude)


class DashboardLink(BaseModel):
    """A dashboard as the sidebar links it: ``path`` and ``url`` are set when this server's Voila
    can render its notebook, null otherwise."""

    name: str
    title: str
    description: str
    path: str | None = Field(
        default=None, description="the notebook, relative to the server's contents root"
    )
    url: str | None = Field(default=None, description="its Voila page, under the server's base URL")


class DashboardLinks(BaseModel):
    """The answer of ``GET /dashboards``."""

    dashboards: list[DashboardLink]
    voila: bool = Field(description="whether Voila's server extension serves in this server")
    hint: str | None = Field(
        default=None, description="why a dashboard has no link, and what to do (one line)"
    )


#: The schema of job status changes, on the server's event bus and wherever else they are read.
JOB_STATUS_SCHEMA = "https://events.qmlops-jupyter.dev/job_status/v1"


def job_status(row: Any) -> dict[str, Any]:
    """A transition row of the event log (``Ledger.status_events``) as a ``job_status`` v1
    event: job_id, name, backend, old_state, new_state, time (ISO 8601), seq, message."""
    return {
        "job_id": row["job_id"],
        "name": row["name"],
        "backend": row["backend"],
        "old_state": row["from_state"],
        "new_state": row["to_state"],
        "time": row["at"].isoformat(),
        "seq": int(row["seq"]),
        "message": row["message"],
    }


class AuditEntry(BaseModel):
    """One line of the audit log: who (``actor``) did what (``action``) to whose (``owner``)
    credential, job or budget (``target``), and when. Never a secret."""

    id: int
    at: datetime
    actor: str
    action: str
    owner: str
    target: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
