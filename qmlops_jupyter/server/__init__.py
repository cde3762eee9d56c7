"""The jupyter-server extension: the REST API under ``/qmlops/api/v1/``, live job events, Prometheus
metrics, and the engine host, in the server's own event loop.

Only this package imports tornado and jupyter_server; the core does not.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import QmlopsApp

    return [{"module": "qmlops_jupyter.server", "app": QmlopsApp}]
