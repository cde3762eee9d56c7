"""``/qmlops/api/v1/backends``: the backends this server can use, as ``qmlops backends --json``
lists them (kind, limits, availability, whether credentials are configured)."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import QmlopsError, UnknownBackend
from .base import API, QmlopsHandler


class BackendsHandler(QmlopsHandler):
    auth_resource = "qmlops:backends"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        infos = await self.run(self.client.backends)
        self.reply([i.model_dump(mode="json") for i in infos])


class BackendHandler(QmlopsHandler):
    auth_resource = "qmlops:backends"

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        self.reply(await self.run(_backend_info, self.client, name))


def _backend_info(client: Any, name: str) -> dict[str, Any]:
    """One backend, by any name the registry can build; one that cannot load (its SDK is
    missing, say) as ``GET /backends`` lists it. UnknownBackend (404) for any other name."""
    try:
        info = client.registry.get(name).info()
    except UnknownBackend:
        raise
    except QmlopsError:
        listed = [i for i in client.backends() if i.name == name]
        if not listed:
            raise
        info = listed[0]
    return info.model_dump(mode="json")


ROUTES = [
    (rf"/{API}/backends", BackendsHandler),
    (rf"/{API}/backends/(?P<name>[^/]+)", BackendHandler),
]
