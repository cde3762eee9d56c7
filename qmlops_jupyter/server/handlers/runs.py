"""``GET /qmlops/api/v1/runs``: this owner's MLflow runs that hold jobs, newest first, as
``qmlops runs --json`` lists them (404 for an unknown experiment, 503 when the tracking store
cannot be reached)."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, QmlopsHandler
from .jobs import given


class RunsHandler(QmlopsHandler):
    auth_resource = "qmlops:runs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        given(self, "limit")
        limit = self.int_query("limit", 20, 1, 10_000)
        from ...cli.tracking import list_runs

        runs = await self.run(list_runs, self.client, self.query("experiment"), limit)
        self.reply({"runs": runs})


ROUTES = [(rf"/{API}/runs", RunsHandler)]
