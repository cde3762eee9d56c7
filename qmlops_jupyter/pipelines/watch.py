"""Pipelines: watch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host import PipelineHost


def end_dead_runs(host: PipelineHost) -> None:
    """One pass of this duty."""
