"""Pipelines: schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host import PipelineHost


def run_due(host: PipelineHost) -> None:
    """One pass of this duty."""
