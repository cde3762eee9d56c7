"""``/qmlops/api/v1/credentials``: the vault's credentials, write-only.

A secret goes in with ``PUT`` and never comes out: every answer is the masked
:class:`~qmlops_jupyter.vault.store.CredentialInfo` (alias, provider, dates, a hint of the last
characters), as ``qmlops creds list --json`` shows it. ``POST .../test`` asks the provider
whether it accepts the credential, as ``qmlops creds test`` does.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from pydantic import BaseModel, ConfigDict
from tornado import web

from ...errors import BackendUnavailable, CredentialNotFound, InvalidRequest, ProviderError
from .base import API, QmlopsHandler


class CredentialRequest(BaseModel):
    """The body of ``PUT /credentials/{alias}``; ``secret`` holds the provider's fields (ibm:
    token, channel, instance; aws: aws_access_key_id, aws_secret_access_key, aws_session_token,
    region; ionq: api_key), checked by the vault, which names any unknown or missing one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    provider: str
    secret: dict[str, str]


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


def _store(vault: Any, alias: str, request: CredentialRequest) -> tuple[Any, bool]:
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
    """``qmlops creds test``: True and what the provider said, or False and why it refused or
    could not be reached. An unknown alias is still CredentialNotFound (404)."""
    from ...cli.creds import _test_aws, _test_ibm, _test_ionq
    from ...vault.redaction import redact

    vault = client.vault
    provider = vault.info(alias).provider
    fields = vault.resolve(alias, provider)
    try:
        if provider == "ionq":
            message = _test_ionq(client, fields, backend or "ionq:simulator")
        elif provider == "ibm":
            message = _test_ibm(fields)
        else:
            message = _test_aws(fields)
    except (ProviderError, BackendUnavailable) as exc:
        return False, redact(str(exc))
    finally:
        fields.clear()
    return True, message


ROUTES = [
    (rf"/{API}/credentials", CredentialsHandler),
    (rf"/{API}/credentials/(?P<alias>[^/]+)", CredentialHandler),
    (rf"/{API}/credentials/(?P<alias>[^/]+)/test", CredentialTestHandler),
]
