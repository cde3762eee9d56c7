"""``GET /qmlops/api/v1/dashboards``: the Jobs, Experiments and Cost dashboards, each with its
Voila page in this server when Voila serves here and the notebook is under the server's root
(null otherwise, and ``hint`` says why and what to do); see
:mod:`qmlops_jupyter.server.dashboard_links`."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, QmlopsHandler


class DashboardsHandler(QmlopsHandler):
    auth_resource = "qmlops:dashboards"
    needs_client = False  # reads the server's own state, never the ledger

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ..dashboard_links import dashboard_links

        links = dashboard_links(self.serverapp, self.base_url)
        self.reply(links.model_dump(mode="json"))


ROUTES = [(rf"/{API}/dashboards", DashboardsHandler)]
