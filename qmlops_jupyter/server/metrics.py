"""Prometheus metrics on the server's own ``/metrics`` (placeholder interface; see below)."""

from __future__ import annotations

from typing import Any


class Metrics:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def observe_event(self, row: dict[str, Any]) -> None:
        return None
