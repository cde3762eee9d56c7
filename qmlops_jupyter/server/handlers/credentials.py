"""``/qmlops/api/v1/credentials``: the vault's credentials, write-only.

A secret goes in with ``PUT`` and never comes out: every answer is the masked
:class:`~qmlops_jupyter.vault.store.CredentialInfo` (alias, provider, dates, a hint of the last
characters), as ``qmlops creds list --json`` shows it. ``POST .../test`` asks the provider
whether it accepts the credential, as ``qmlops creds test`` does.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import BackendUnavailable, CredentialNotFound, InvalidRequest, ProviderError
from .base import API, QmlopsHandler


class CredentialsHandler(QmlopsHandler):
    auth_resource = "qmlops:credentials"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        infos = await self.run(self.client.vault.list)
        self.reply([i.model_dump(mode="json") for i in infos])


class CredentialHandler(QmlopsHandler):
    auth_resource = "qmlops:credentials"

    @web.authenticated
    @authorized
    async def put(self, alias: str) -> None:
        from .models import CredentialRequest

        request = self.body(CredentialRequest)
        from ...vault import PROVIDERS  # the vault loads the ledger's tables: on first use

        if request.provider not in PROVIDERS:
            raise InvalidRequest(
                f"unknown provider {request.provider!r}; known providers: "
                f"{', '.join(sorted(PROVIDERS))}"
            )
        info, created = await self.run(_store, self.client.vault, alias, request)
        self.reply(info.model_dump(mode="json"), 201 if created else 200)

    @web.authenticated
    @authorized
    async def delete(self, alias: str) -> None:
        await self.run(self.client.vault.delete, alias)
        self.set_status(204)
        self.finish()


def _store(vault: Any, alias: str, request: Any) -> tuple[Any, bool]:
    try:
        vault.info(alias)
        created = False
    except CredentialNotFound:
        created = True
    return vault.set(alias, request.provider, request.secret), created


class CredentialTestHandler(QmlopsHandler):
    auth_resource = "qmlops:credentials"

    @web.authenticated
    @authorized
    async def post(self, alias: str) -> None:
        backend = self.query("backend")
        ok, message = await self.run(_test, self.client, alias, backend)
        self.reply({"alias": alias, "ok": ok, "message": message})


def _test(client: Any, alias: str, backend: str | None) -> tuple[bool, str]:
    """True and what the provider said, or False and why it refused or could not be reached.
    An unknown alias is still CredentialNotFound (404)."""
    from ...vault.check import check_credential

    try:
        return True, check_credential(client, alias, backend)
    except (ProviderError, BackendUnavailable) as exc:
        return False, str(exc)


ROUTES = [
    (rf"/{API}/credentials", CredentialsHandler),
    (rf"/{API}/credentials/(?P<alias>[^/]+)", CredentialHandler),
    (rf"/{API}/credentials/(?P<alias>[^/]+)/test", CredentialTestHandler),
]
