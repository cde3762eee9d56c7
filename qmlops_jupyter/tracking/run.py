"""``qmlops_jupyter.track()``: one MLflow run for a training loop, a sweep, a notebook's work.

    with qmlops_jupyter.track("vqe-h2", run_name="lr=0.1") as run:
        for step in range(100):
            job = qmlops_jupyter.submit(ansatz(theta), shots=2000, wait=True)
            loss = energy(job.result())
            run.log_step(step, loss=loss)

Jobs submitted inside attach to the run (their figures become metrics at their step, their
circuits and counts artifacts under ``jobs/<id>/``); ``log_step`` adds the cumulative shots and
cost so far. A ``track()`` inside another makes a nested run (a sweep's points under the sweep).
Everything goes through the tracking outbox: if the tracking server is down, the run and its
records reach it when it is back, exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any

from . import active

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger("qmlops_jupyter.tracking")

#: Seconds ``track()`` waits for MLflow when a run starts and ends.
FLUSH_TIMEOUT = 10.0


class TrackedRun:
    """A tracked run; use :func:`track` to make one."""

    def __init__(
        self,
        client: Client,
        experiment: str | None,
        run_name: str | None,
        *,
        nested: bool = True,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self.key = f"run-{uuid.uuid4().hex}"
        self._experiment = experiment
        self.run_name = run_name
        self.nested = nested
        self._params = dict(params or {})
        self._tags = dict(tags or {})
        self.parent: TrackedRun | None = None
        self.job_ids: list[str] = []
        self.cumulative_shots = 0
        self.cumulative_cost_usd = 0.0
        self._steps = 0
        self._lock = threading.Lock()
        self._open = False
        self.enabled = False

    @property
    def experiment(self) -> str:
        if self._experiment:
            return self._experiment
        if self.parent is not None:
            return self.parent.experiment
        return self._client.tracking.config.experiment

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> TrackedRun:
        from ..errors import InvalidRequest
        from .lineage import capture
        from .mlflow_io import source_tags
        from .outbox import create_run_row

        tracking = self._client.tracking
        cfg = tracking.config
        if not cfg.enabled:
            warnings.warn(
                f"qmlops tracking is off ({cfg.reason}); nothing will be logged", stacklevel=2
            )
            active.push_run(self)
            self._open = True
            return self
        if self._experiment is not None and not str(self._experiment).strip():
            raise InvalidRequest("experiment name must not be empty")
        self.parent = active.current_run() if self.nested else None
        tags = source_tags(capture(self._client.owner))
        tags.update({str(k): str(v) for k, v in self._tags.items()})
        create_run_row(
            self._client.ledger,
            key=self.key,
            owner=self._client.owner,
            tracking_uri=cfg.safe_uri,
            experiment=self.experiment,
            run_name=self.run_name,
            parent_key=self.parent.key if self.parent is not None and self.parent.enabled else None,
            tags=tags,
            artifact_root=cfg.artifact_root,
            params={str(k): _param(v) for k, v in self._params.items()},
        )
        self.enabled = True
        self._open = True
        active.push_run(self)
        self._started = time.time()
        if not tracking.flush(run_keys=[self.key], timeout=FLUSH_TIMEOUT):
            self._warn_unsent("start")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.end(
            "FINISHED"
            if exc_type is None
            else "KILLED"
            if exc_type is KeyboardInterrupt
            else "FAILED"
        )

    def end(self, status: str = "FINISHED") -> None:
        """End the run (``track()`` does this on leaving the ``with`` block)."""
        if not self._open:
            return
        self._open = False
        active.pop_run(self)
        if not self.enabled:
            return
        from .outbox import enqueue

        enqueue(
            self._client.ledger,
            self._client.owner,
            "end",
            self.key,
            {"status": status, "end_time": int(time.time() * 1000)},
        )
        if not self._client.tracking.flush(run_keys=[self.key], timeout=FLUSH_TIMEOUT):
            self._warn_unsent("end")

    def _warn_unsent(self, when: str) -> None:
        from .outbox import pending

        info = pending(self._client.ledger, self._client.owner)
        warnings.warn(
            f"qmlops: the tracking store did not take run {self.run_name or self.key} at its "
            f"{when} ({info['last_error'] or 'busy'}); it stays queued and is sent when the "
            "store is back (see 'qmlops runs')",
            stacklevel=3,
        )

    # -- what the run knows ----------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None until the tracking store has taken the run)."""
        if not self.enabled:
            return None
        from .outbox import run_row

        row = run_row(self._client.ledger, self.key)
        return row["mlflow_run_id"] if row else None

    def _next_step(self) -> int:
        with self._lock:
            step = self._steps
            self._steps += 1
            return step

    def _note_job(self, job: Any) -> None:
        record = job.record
        with self._lock:
            self.job_ids.append(record.id)
            self.cumulative_shots += record.shots * max(1, len(record.circuits))
            cost = (
                record.actual_cost_usd
                if record.actual_cost_usd is not None
                else record.estimated_cost_usd
            )
            self.cumulative_cost_usd += float(cost or 0.0)

    # -- logging helpers -----------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics (at ``step``, default 0). Queued, sent in the background."""
        if not self.enabled:
            return
        from ..errors import InvalidRequest
        from .outbox import enqueue

        now = int(time.time() * 1000)
        rows = []
        for key, value in metrics.items():
            try:
                rows.append([str(key), float(value), int(step or 0), now])
            except (TypeError, ValueError):
                raise InvalidRequest(f"metric {key!r} must be a number, not {value!r}") from None
        enqueue(self._client.ledger, self._client.owner, "metrics", self.key, {"metrics": rows})
        self._client.tracking.kick()

    def log_step(self, step: int, **metrics: float) -> None:
        """Per-step metrics of a training loop (``loss=..., accuracy=...``), plus the shots and
        cost of every job submitted in this run so far (``cumulative_shots``,
        ``cumulative_cost_usd``)."""
        with self._lock:
            extra = {
                "cumulative_shots": float(self.cumulative_shots),
                "cumulative_cost_usd": self.cumulative_cost_usd,
            }
        self.log_metrics({**metrics, **extra}, step=step)

    def log_params(self, **params: Any) -> None:
        if not self.enabled:
            return
        from .outbox import enqueue

        enqueue(
            self._client.ledger,
            self._client.owner,
            "params",
            self.key,
            {"params": {str(k): _param(v) for k, v in params.items()}},
        )
        self._client.tracking.kick()

    def set_tags(self, **tags: str) -> None:
        if not self.enabled:
            return
        from ..vault.redaction import redact
        from .outbox import enqueue

        enqueue(
            self._client.ledger,
            self._client.owner,
            "tags",
            self.key,
            {"tags": {str(k): redact(str(v)) for k, v in tags.items()}},
        )
        self._client.tracking.kick()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Send this run's queued records now; True when all reached MLflow."""
        if not self.enabled:
            return True
        return self._client.tracking.flush(run_keys=[self.key], timeout=timeout)

    def __repr__(self) -> str:
        name = self.run_name or self.key
        return f"<TrackedRun {name} in {self.experiment!r}, {len(self.job_ids)} jobs>"


def _param(value: Any) -> str:
    from .mlflow_io import _param as fmt

    return fmt(value)


def track(
    experiment: str | None = None,
    run_name: str | None = None,
    *,
    nested: bool = True,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    client: Client | None = None,
) -> TrackedRun:
    """A context manager: jobs submitted inside attach to one MLflow run (see module doc).

    ``experiment`` defaults to the configured one (``qmlops``); inside another ``track()`` the
    new run is nested under it (``nested=False`` makes it top-level). ``params`` are logged as
    the run's params.
    """
    if client is None:
        from ..client import get_client

        client = get_client()
    return TrackedRun(client, experiment, run_name, nested=nested, params=params, tags=tags)
