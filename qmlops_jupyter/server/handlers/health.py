"""``GET /qmlops/api/v1/health``: is everything this server needs alive?

200 when the ledger answers, the engine loop (if hosted) ticked recently and the event pump
polled recently; 503 otherwise, and while the extension is still starting (``"starting": true``)
or could not start (the ledger's ``error`` says why). The body always says, per part: the
ledger, the engine (alive, last tick), the event pump, the tracking store (configured URI,
records waiting), and each backend's availability.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import API, QmlopsHandler


class HealthHandler(QmlopsHandler):
    auth_resource = "qmlops:backends"
    needs_client = False  # answers at once while the extension starts (503, "starting")

    @web.authenticated
    @authorized
    async def get(self) -> None:
        app = self.app
        if app.client is None:
            self.reply(_not_started(app), 503)
            return
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
        poll_age = None if pump.last_poll is None else max(0.0, time.time() - pump.last_poll)
        # Events (and the metrics and waits that follow them) stop when the pump does.
        pumping = poll_age is not None and poll_age < max(10.0, 20 * app.events_interval)
        ok = ok and pumping
        report["events"] = {
            "ok": pumping,
            "last_seq": pump.last_seq,
            "last_poll": pump.last_poll,
            "last_poll_age_seconds": poll_age,
        }
        report["tracking"] = await self.run(_tracking, app.client)
        report["backends"] = await self.run(_backends, app.client)
        report["ok"] = ok
        self.reply(report, 200 if ok else 503)


def _not_started(app: Any) -> dict[str, Any]:
    """The report while the start hook has not built the client (or failed to)."""
    error = app._start_error
    why = {"ok": False, "error": error} if error else {"ok": False, "starting": True}
    return {
        "ok": False,
        "starting": error is None,
        "ledger": why,
        "engine": {"hosted": bool(app.run_engine), "ok": False},
        "events": {"ok": False, "last_seq": None, "last_poll": None},
        "tracking": {"enabled": False},
        "backends": [],
    }


def _tracking(client: Any) -> dict[str, Any]:
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
