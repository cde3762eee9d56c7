"""``GET /qmlops/api/v1/health``: is everything this server needs alive?

200 when the ledger answers and the engine loop (if hosted) ticked recently; 503 otherwise. The
body always says, per part: the ledger, the engine (alive, last tick), the event pump, the
tracking store (configured URI, records waiting), and each backend's availability.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, QmlopsHandler


class HealthHandler(QmlopsHandler):
    auth_resource = "qmlops:backends"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        app = self.app
        report: dict[str, Any] = {}
        ok = True
        try:
            await self.run(app.client.ledger.live_engines)
            report["ledger"] = {"ok": True, "url": app.client.ledger.url}
        except Exception as exc:
            ok = False
            report["ledger"] = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:300]}
        engine = app.engine
        if engine is None:
            report["engine"] = {"hosted": False, "ok": True}
        else:
            last = engine.last_tick
            age = None if last is None else max(0.0, time.time() - last)
            alive = engine.running and age is not None and age < max(10.0, 5 * engine.tick)
            ok = ok and alive
            report["engine"] = {
                "hosted": True,
                "ok": alive,
                "running": engine.running,
                "last_tick": last,
                "last_tick_age_seconds": age,
                "holder": engine.holder,
            }
        pump = app.events
        report["events"] = {"last_seq": pump.last_seq, "last_poll": pump.last_poll}
        report["tracking"] = await self.run(_tracking, app.client)
        report["backends"] = await self.run(_backends, app.client)
        report["ok"] = ok
        self.reply(report, 200 if ok else 503)


def _tracking(client: Any) -> dict[str, Any]:
    from ..._version import __version__  # noqa: F401  (cheap import check)
    from ...tracking.outbox import pending

    cfg = client.tracking.config
    info: dict[str, Any] = {"enabled": cfg.enabled, "uri": cfg.safe_uri, "reason": cfg.reason}
    if client._ledger is not None:
        info["pending"] = pending(client.ledger, None)
    return info


def _backends(client: Any) -> list[dict[str, Any]]:
    return [
        {"name": b.name, "available": b.available, "enabled": b.enabled, "status": b.status}
        for b in client.backends()
    ]


ROUTES = [(rf"/{API}/health", HealthHandler)]
