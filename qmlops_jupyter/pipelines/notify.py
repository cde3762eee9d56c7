"""Notifications of pipeline runs' and jobs' ends: events and an optional webhook."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import Client
    from .models import PipelineRun


def pipeline_run_ended(client: Client, run: PipelineRun) -> None:
    """Called by the runner once a run has ended and been recorded."""


def send_due(host: object) -> None:
    """One pass of the engine host's notification duty."""
