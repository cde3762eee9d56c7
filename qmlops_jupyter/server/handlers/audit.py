"""``GET /qmlops/api/v1/audit``: the audit log, newest first (who used, stored, deleted or
rotated a credential; what an admin did to another user's jobs or budgets). An admin reads
every user's entries (``?owner=`` narrows); anyone else reads the entries about their own
credentials and work. ``?action=`` (``credential.`` for a family), ``?limit=``, ``?before=ID``
to page back."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import Forbidden, InvalidRequest
from .base import API, QmlopsHandler
from .jobs import given


class AuditHandler(QmlopsHandler):
    auth_resource = "qmlops:audit"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        from ... import audit

        given(self, "limit", "before")
        access = self.access
        owner = self.owner_query()
        if not access.admin:
            if owner is not None and owner != access.user:
                raise Forbidden("only an admin reads other users' audit entries")
            owner = access.user
        action = self.query("action")
        if action is not None and len(action) > 64:
            raise InvalidRequest("action must be at most 64 characters")
        found = await self.run(
            audit.entries,
            self.extensionapp.client.ledger,
            owner=owner,
            action=action,
            before=self.int_query("before", 0, 1, 2**63 - 1) if self.query("before") else None,
            limit=self.int_query("limit", 100, 1, audit.MAX_ENTRIES),
        )
        self.reply({"entries": [e.model_dump(mode="json") for e in found]})


ROUTES = [(rf"/{API}/audit", AuditHandler)]
