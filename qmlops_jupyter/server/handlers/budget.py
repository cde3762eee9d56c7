"""``/qmlops/api/v1/budget``: this owner's budgets (shots per day, USD per month, for all
backends or one), as ``qmlops budget show --json``; ``PUT`` sets one, like ``budget set``.
On a team's service, ``?owner=NAME`` reads another user's budgets when the role grants it, and
an admin sets them (audited)."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import Forbidden, InvalidRequest
from .base import API, QmlopsHandler


def _statuses(client: Any) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in client.budgets()]


class BudgetHandler(QmlopsHandler):
    auth_resource = "qmlops:budget"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.run(_statuses, self.client_of(self.owner_query())))

    @web.authenticated
    @authorized
    async def put(self) -> None:
        from .models import BudgetRequest

        request = self.body(BudgetRequest)
        if request.shots_per_day is None and request.usd_per_month is None:
            raise InvalidRequest("give shots_per_day, usd_per_month or both")
        owner = self.owner_query() or self.access.user
        if not self.access.can_change(owner):
            raise Forbidden(f"only an admin may set {owner}'s budget")
        client = self.client_of(owner)
        await self.run(
            client.set_budget,
            backend=request.backend,
            shots_per_day=request.shots_per_day,
            usd_per_month=request.usd_per_month,
        )
        if owner != self.access.user:
            await self.audit(
                "admin.budget",
                owner,
                request.backend,
                shots_per_day=request.shots_per_day,
                usd_per_month=request.usd_per_month,
            )
        self.reply(await self.run(_statuses, client))


ROUTES = [(rf"/{API}/budget", BudgetHandler)]
