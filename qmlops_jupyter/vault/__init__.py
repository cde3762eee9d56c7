"""The credential vault: provider credentials stored encrypted, referred to by alias.

>>> client.vault.set("ionq", "ionq", {"api_key": key})      # or: qmlops creds set ionq ...
>>> q.submit(circuit, backend="ionq:simulator", credential="ionq")

Adapters call :func:`resolve` at the moment they talk to their provider; the plaintext is never
written to job options, the ledger, events or logs (:mod:`.redact` masks it where it could leak).
"""

from __future__ import annotations

import threading
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
    "activate",
    "current_vault",
    "provider_for_backend",
    "provider_spec",
    "redact",
    "register",
    "resolve",
]

# Records logged straight to the package logger are masked even without configure_logging.
_install_filter()

_active: Vault | None = None
_lock = threading.Lock()


def activate(vault: Vault) -> None:
    """Make ``vault`` the one adapters use in this process (``Client.vault`` does this)."""
    global _active
    with _lock:
        _active = vault


def current_vault() -> Vault:
    """The vault adapters use: the process-wide client's (:func:`get_client`) when there is
    one, else the last one a :class:`~qmlops_jupyter.client.Client` activated, else a new
    process-wide client's."""
    from .. import client as client_module

    if client_module._default is None and _active is not None:
        return _active
    return client_module.get_client().vault


def resolve(alias: str, owner: str | None = None, provider: str | None = None) -> dict[str, str]:
    """The plaintext fields of ``owner``'s credential ``alias`` (checked to be for
    ``provider``), for an adapter about to call its provider."""
    vault = current_vault()
    if owner:
        vault = vault.for_owner(owner)
    return vault.resolve(alias, provider)


def owner_has(provider: str, owner: str | None = None) -> bool:
    """Whether ``owner`` (default: the active vault's) stored a credential for ``provider``.
    Asks only a vault this process already uses (never opens a ledger of its own for a
    listing); False when there is none or it cannot be read. Decrypts nothing."""
    from .. import client as client_module

    try:
        if client_module._default is not None:
            vault = client_module._default.vault
        elif _active is not None:
            vault = _active
        else:
            return False
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
    try:
        return resolve(str(alias), str(owner) if owner else None, provider)
    except QmlopsError as exc:
        raise AuthProviderError(f"credential {alias!r} cannot be used: {exc}") from None
