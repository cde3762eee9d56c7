"""``GET /qmlops/api/v1/runs``: this owner's MLflow runs that hold jobs, newest first, as
``qmlops runs --json`` lists them (404 for an unknown experiment, 503 when the tracking store
cannot be reached). On a team's service, ``?owner=NAME`` reads another user's runs when the
caller's role grants it (an admin; a viewer granted that user), 403 otherwise."""

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

        client = self.client_of(self.owner_query())
        runs = await self.run(list_runs, client, self.query("experiment"), limit)
        self.reply({"runs": runs})


ROUTES = [(rf"/{API}/runs", RunsHandler)]
