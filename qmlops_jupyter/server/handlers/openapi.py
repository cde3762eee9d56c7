"""``GET /qmlops/api/v1/openapi.json``: the REST contract, kept in the repository next to this
package (``qmlops_jupyter/server/openapi.json``) and checked against real answers by the tests."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, QmlopsHandler

SPEC = Path(__file__).resolve().parent.parent / "openapi.json"


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document (read once; it ships with the package)."""
    return json.loads(SPEC.read_text(encoding="utf-8"))


class OpenAPIHandler(QmlopsHandler):
    auth_resource = "qmlops:backends"
    needs_client = False

    @web.authenticated
    @authorized
    async def get(self) -> None:
        # The document's server is this API under this server's base URL (often not "/").
        self.reply({**spec(), "servers": [{"url": f"{self.base_url}{API}"}]})


ROUTES = [(rf"/{API}/openapi.json", OpenAPIHandler)]
