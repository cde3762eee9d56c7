"""The pipeline run as the CLI's ``--json`` (and any later API) shows it. Its errors,
:class:`~qmlops_jupyter.errors.PipelineRunNotFound` and
:class:`~qmlops_jupyter.errors.PipelineRunFailed`, are mapped with the others."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class PipelineRunState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    #: The run went over its ``--timeout``: its kernel was killed (never retried).
    TIMED_OUT = "TIMED_OUT"
    #: Stopped by the user (Ctrl-C, SIGTERM) while it ran.
    CANCELLED = "CANCELLED"
    #: Waiting for provider jobs with its kernel freed (``qmlops_jupyter.pipeline.wait_for``);
    #: an engine host resumes it from the parked cell when they end.
    PARKED = "PARKED"

    @property
    def terminal(self) -> bool:
        return self not in (
            PipelineRunState.QUEUED,
            PipelineRunState.RUNNING,
            PipelineRunState.PARKED,
        )


class PipelineRun(BaseModel):
    id: str
    owner: str
    notebook: str
    #: What papermill injected, ``qmlops_pipeline_run_id`` included.
    parameters: dict[str, Any]
    state: PipelineRunState
    attempts: int
    max_retries: int
    timeout: float | None
    #: The executed notebook of the last attempt (each attempt's is kept beside it).
    output_path: str | None
    experiment: str | None
    mlflow_run_id: str | None
    error: str | None
    #: The failing cell's index in the input notebook (0-based).
    error_cell: int | None
    error_ename: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    #: The saved pipeline, schedule and due time that started this run (None when run by hand).
    pipeline_id: str | None = None
    schedule_id: str | None = None
    scheduled_for: datetime | None = None
    #: A sweep's run: the sweep and the grid point's index.
    sweep_id: str | None = None
    sweep_point: int | None = None
    mlflow_parent_run_id: str | None = None
    #: While PARKED (and after): the job ids waited for and the cell the run stopped in.
    parked_jobs: list[str] | None = None
    park_cell: int | None = None
    parked_at: datetime | None = None


class CatchUp(StrEnum):
    """What a schedule does about due times missed while no engine host ran."""

    #: Run once for the latest missed time, unless it is older than the stale window.
    ONCE = "once"
    #: Run none of them; wait for the next due time.
    SKIP = "skip"


class Schedule(BaseModel):
    id: str
    cron: str
    #: The IANA time zone the cron expression is read in.
    timezone: str
    paused: bool
    catch_up: CatchUp
    #: Seconds after which a missed due time is never run.
    stale_after: float
    #: The next due time (None while paused).
    next_due_at: datetime | None
    last_scheduled_for: datetime | None


class Pipeline(BaseModel):
    """A saved pipeline: a notebook, how to run it, and its schedule."""

    id: str
    owner: str
    name: str
    notebook: str
    #: The ``-p`` values, ``backend`` and ``credential`` (an alias) given when it was saved.
    parameters: dict[str, Any]
    experiment: str | None
    timeout: float | None
    retries: int
    created_at: datetime
    updated_at: datetime
    schedule: Schedule | None
    #: The newest run of this pipeline, if any.
    last_run: PipelineRun | None = None
