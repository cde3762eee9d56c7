"""The credential vault: provider credentials stored encrypted, referred to by alias.

>>> client.vault.set("ionq", "ionq", {"api_key": key})      # or: qmlops creds set ionq ...
>>> q.submit(circuit, backend="ionq:simulator", credential="ionq")

Adapters call :func:`credential_fields` at the moment they talk to their provider, with the
job owner's vault that the engine's driver puts in their options; the plaintext is never
written to job options, the ledger, events or logs (:mod:`.redaction` masks it where it could
leak).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .redaction import RedactingFilter, redact, register
from .redaction import install as _install_filter
from .store import (
    PROVIDERS,
    Credential,
    CredentialInfo,
    Vault,
    provider_for_backend,
    provider_spec,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "PROVIDERS",
    "Credential",
    "CredentialInfo",
    "RedactingFilter",
    "Vault",
    "current_vault",
    "provider_for_backend",
    "provider_spec",
    "redact",
    "register",
    "resolve",
]

# Records logged straight to the package logger are masked even without configure_logging.
_install_filter()


def current_vault() -> Vault:
    """The process-wide client's vault: for an adapter called outside an engine's driver
    (which passes the job owner's vault in the options)."""
    from .. import client as client_module

    return client_module.get_client().vault


def resolve(alias: str, owner: str | None = None, provider: str | None = None) -> dict[str, str]:
    """The plaintext fields of ``owner``'s credential ``alias`` (checked to be for
    ``provider``), for an adapter about to call its provider."""
    vault = current_vault()
    if owner:
        vault = vault.for_owner(owner)
    return vault.resolve(alias, provider)


def owner_has(provider: str, owner: str | None = None, vault: Vault | None = None) -> bool:
    """Whether ``owner`` (default: ``vault``'s, else the process-wide client's) stored a
    credential for ``provider``. Never opens a ledger of its own for a listing; False when
    there is no vault or it cannot be read. Decrypts nothing."""
    from .. import client as client_module

    try:
        if vault is None:
            if client_module._default is None:
                return False
            vault = client_module._default.vault
        if owner:
            vault = vault.for_owner(owner)
        return vault.has_provider(provider_spec(provider).name)
    except Exception:  # a listing must not fail because the ledger cannot be opened
        return False


def credential_fields(options: Mapping[str, object] | None, provider: str) -> dict[str, str]:
    """For adapters: the fields of the credential a job names in ``options["credential"]``,
    or ``{}`` when it names none. A credential that cannot be used (deleted, for another
    provider, a missing or wrong vault key) is an :class:`AuthProviderError`: the engine fails
    the submission, or sets a job already at the provider to NEEDS_ATTENTION — never retries."""
    from ..errors import AuthProviderError, QmlopsError

    alias = (options or {}).get("credential")
    if not alias:
        return {}
    owner = (options or {}).get("owner")
    vault = (options or {}).get("vault")
    try:
        if isinstance(vault, Vault):  # the job owner's, from the engine's driver
            return vault.resolve(str(alias), provider)
        return resolve(str(alias), str(owner) if owner else None, provider)
    except QmlopsError as exc:
        raise AuthProviderError(f"credential {alias!r} cannot be used: {exc}") from None
