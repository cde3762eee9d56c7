"""The REST API's routes, one module per resource; all under ``/qmlops/api/v1/``."""

from __future__ import annotations

from typing import Any


def routes() -> list[tuple[str, Any]]:
    from . import (
        audit,
        backends,
        budget,
        credentials,
        dashboards,
        estimate,
        events,
        health,
        jobs,
        openapi,
        pipelines,
        runs,
    )

    table: list[tuple[str, Any]] = []
    for module in (
        jobs,
        events,
        backends,
        credentials,
        budget,
        estimate,
        runs,
        pipelines,
        dashboards,
        audit,
        health,
        openapi,
    ):
        table.extend(module.ROUTES)
    return table
