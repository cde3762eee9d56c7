"""The vault: provider credentials per owner and alias, encrypted in the ledger's database.

Only ciphertext (a Fernet token of the secret fields as JSON), the provider, a masked hint and
timestamps are stored. Plaintext exists only in memory, when an adapter is about to talk to its
provider (:meth:`Vault.resolve`) or when a credential is being stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import CredentialNotFound, InvalidRequest
from ..ledger.orm import CredentialRow, utcnow
from . import crypto, redaction

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from ..ledger import Ledger

credentials = CredentialRow.__table__

ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ProviderSpec:
    """The fields of one provider's credential."""

    name: str
    #: Secret fields, read from a hidden prompt or stdin only; the first ones are required.
    secrets: tuple[str, ...]
    required: tuple[str, ...]
    #: Plain settings stored with the secret (also encrypted), given as ``--set NAME=VALUE``.
    settings: tuple[str, ...] = ()
    #: The field whose last characters make the hint.
    hint_field: str = ""
    #: ``Backend.provider`` values this credential serves.
    backends: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fields(self) -> tuple[str, ...]:
        return self.secrets + self.settings


PROVIDERS: dict[str, ProviderSpec] = {
    "ibm": ProviderSpec(
        "ibm",
        secrets=("token",),
        required=("token",),
        settings=("channel", "instance"),
        hint_field="token",
        backends=("ibm",),
    ),
    "aws": ProviderSpec(
        "aws",
        secrets=("aws_access_key_id", "aws_secret_access_key", "aws_session_token"),
        required=("aws_access_key_id", "aws_secret_access_key"),
        settings=("region",),
        hint_field="aws_access_key_id",
        backends=("amazon-braket",),
    ),
    "ionq": ProviderSpec(
        "ionq",
        secrets=("api_key",),
        required=("api_key",),
        hint_field="api_key",
        backends=("ionq",),
    ),
}
#: Other names people use for a provider.
PROVIDER_ALIASES = {"braket": "aws", "amazon-braket": "aws", "ibm-quantum": "ibm"}


def provider_spec(name: str) -> ProviderSpec:
    key = PROVIDER_ALIASES.get(name.strip().lower(), name.strip().lower())
    spec = PROVIDERS.get(key)
    if spec is None:
        raise InvalidRequest(
            f"unknown provider {name!r}; known providers: {', '.join(sorted(PROVIDERS))}"
        )
    return spec


def provider_for_backend(backend_provider: str) -> str | None:
    """The vault provider whose credentials a backend (by its ``provider``) uses, if any."""
    for spec in PROVIDERS.values():
        if backend_provider in spec.backends:
            return spec.name
    return None


def hint_of(value: str) -> str:
    """A masked tail of a secret (``…a9f2``), enough to tell two keys apart."""
    return "…" + value[-4:] if len(value) >= 12 else "…"


class CredentialInfo(BaseModel):
    """What may be shown about a stored credential: never the secret."""

    alias: str
    provider: str
    owner: str
    hint: str = Field(description="the last characters of the main secret, e.g. '…a9f2'")
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None


@dataclass(frozen=True, repr=False)
class Credential:
    """A decrypted credential. Its repr and str show the alias and provider, not the fields."""

    alias: str
    provider: str
    fields: Mapping[str, str]

    def __repr__(self) -> str:
        return f"<Credential {self.alias} ({self.provider}), fields {sorted(self.fields)}: ***>"

    __str__ = __repr__


class Vault:
    """One owner's credentials. Thread-safe; the key is read on each use, so a change of
    ``QMLOPS_CRYPT_KEY`` (rotation) takes effect without a restart."""

    def __init__(
        self,
        ledger: Ledger,
        home: Path,
        owner: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        actor: str | None = None,
    ) -> None:
        self.ledger = ledger
        self.home = Path(home)
        self.owner = owner
        self.clock = clock
        #: Who the audit log names for what is done through this vault.
        self.actor = actor or f"user:{owner}"

    def for_owner(self, owner: str) -> Vault:
        """The vault of another owner, on the same database and key (for engine hosts: the
        audit log names the engine as the one using that owner's credentials)."""
        if owner == self.owner:
            return self
        return Vault(self.ledger, self.home, owner, clock=self.clock, actor="engine")

    def _audit(self, conn: Any, action: str, alias: str | None, **detail: Any) -> None:
        from .. import audit

        audit.write(
            conn, actor=self.actor, action=action, owner=self.owner, target=alias, detail=detail
        )

    # -- keys ----------------------------------------------------------------------------------

    def _keys(self, *, create: bool = False) -> MultiFernet:
        return crypto.load_keys(self.home, create=create)

    def _source(self) -> str:
        return crypto.key_source(self.home)

    def _seal(self, keys: MultiFernet, data: Mapping[str, str]) -> bytes:
        return crypto.encrypt(keys, json.dumps(dict(data), sort_keys=True).encode())

    def _open(self, keys: MultiFernet, alias: str, token: bytes) -> dict[str, str]:
        plain = crypto.decrypt(
            keys, bytes(token), what=f"credential {alias!r}", source=self._source()
        )
        data = json.loads(plain)
        spec = PROVIDERS.get(data.get("__provider__", ""))
        data.pop("__provider__", None)
        if spec is not None:
            redaction.register(*(data.get(name) for name in spec.secrets))
        return data

    # -- writing -------------------------------------------------------------------------------

    def set(self, alias: str, provider: str, values: Mapping[str, str | None]) -> CredentialInfo:
        """Store (or replace) the credential ``alias``; return what may be shown of it."""
        alias = check_alias(alias)
        spec = provider_spec(provider)
        clean = {k: str(v).strip() for k, v in values.items() if v is not None and str(v).strip()}
        unknown = set(clean) - set(spec.fields)
        if unknown:
            raise InvalidRequest(
                f"provider {spec.name} has no field(s) {', '.join(sorted(unknown))}; its fields "
                f"are {', '.join(spec.fields)}"
            )
        missing = [name for name in spec.required if name not in clean]
        if missing:
            raise InvalidRequest(f"provider {spec.name} needs {', '.join(missing)}")
        redaction.register(*(clean.get(name) for name in spec.secrets))
        keys = self._keys(create=True)
        token = self._seal(keys, {**clean, "__provider__": spec.name})
        hint = hint_of(clean.get(spec.hint_field, ""))
        now = self.clock()
        with self.ledger._write() as conn:
            changed = conn.execute(
                update(credentials)
                .where(credentials.c.owner == self.owner, credentials.c.alias == alias)
                .values(provider=spec.name, ciphertext=token, hint=hint, updated_at=now)
            ).rowcount
            if not changed:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(credentials).values(
                                owner=self.owner,
                                alias=alias,
                                provider=spec.name,
                                ciphertext=token,
                                hint=hint,
                                created_at=now,
                                updated_at=now,
                                last_used_at=None,
                            )
                        )
                except IntegrityError:  # stored by someone else a moment ago: replace it
                    conn.execute(
                        update(credentials)
                        .where(credentials.c.owner == self.owner, credentials.c.alias == alias)
                        .values(provider=spec.name, ciphertext=token, hint=hint, updated_at=now)
                    )
            self._audit(conn, "credential.stored", alias, provider=spec.name)
        return self.info(alias)

    def delete(self, alias: str) -> None:
        with self.ledger._write() as conn:
            gone = conn.execute(
                delete(credentials).where(
                    credentials.c.owner == self.owner, credentials.c.alias == alias
                )
            ).rowcount
            if gone:
                self._audit(conn, "credential.deleted", alias)
        if not gone:
            raise self._not_found(alias)

    def touch(self, alias: str, provider: str | None = None) -> None:
        """Record that the credential was just used (its last use, and the audit log)."""
        with self.ledger._write() as conn:
            conn.execute(
                update(credentials)
                .where(credentials.c.owner == self.owner, credentials.c.alias == alias)
                .values(last_used_at=self.clock())
            )
            self._audit(
                conn, "credential.used", alias, **({"provider": provider} if provider else {})
            )

    def rotate(self) -> int:
        """Re-encrypt every credential of this owner with the newest key; return how many.
        Run it after putting a new key in front of ``QMLOPS_CRYPT_KEY`` ("new;old"); then the
        old key can be dropped."""
        keys = self._keys(create=True)
        count = 0
        with self.ledger._write() as conn:
            rows = conn.execute(
                select(credentials.c.id, credentials.c.alias, credentials.c.ciphertext).where(
                    credentials.c.owner == self.owner
                )
            ).all()
            for row in rows:
                self._open(keys, row.alias, row.ciphertext)  # a clear error on a wrong key
                token = keys.rotate(bytes(row.ciphertext))
                conn.execute(
                    update(credentials).where(credentials.c.id == row.id).values(ciphertext=token)
                )
                count += 1
            if count:
                self._audit(conn, "credential.rotated", None, count=count)
        return count

    # -- reading -------------------------------------------------------------------------------

    def info(self, alias: str) -> CredentialInfo:
        with self.ledger._read() as conn:
            row = conn.execute(
                select(credentials).where(
                    credentials.c.owner == self.owner, credentials.c.alias == alias
                )
            ).first()
        if row is None:
            raise self._not_found(alias)
        return _info(row)

    def list(self) -> list[CredentialInfo]:
        """This owner's credentials, by alias; no key needed, nothing decrypted."""
        with self.ledger._read() as conn:
            rows = conn.execute(
                select(credentials)
                .where(credentials.c.owner == self.owner)
                .order_by(credentials.c.alias)
            ).all()
        return [_info(r) for r in rows]

    def has_provider(self, provider: str) -> bool:
        with self.ledger._read() as conn:
            found = conn.execute(
                select(credentials.c.id)
                .where(credentials.c.owner == self.owner, credentials.c.provider == provider)
                .limit(1)
            ).first()
        return found is not None

    def get(self, alias: str) -> Credential:
        """The decrypted credential (fails closed on a missing or wrong key)."""
        with self.ledger._read() as conn:
            row = conn.execute(
                select(credentials.c.provider, credentials.c.ciphertext).where(
                    credentials.c.owner == self.owner, credentials.c.alias == alias
                )
            ).first()
        if row is None:
            raise self._not_found(alias)
        return Credential(alias, row.provider, self._open(self._keys(), alias, row.ciphertext))

    def resolve(self, alias: str, provider: str | None = None) -> dict[str, str]:
        """The plaintext fields of ``alias`` for an adapter about to call its provider; checks
        the provider and records the use. Keep the result in local variables only."""
        credential = self.get(alias)
        wanted = provider_spec(provider).name if provider is not None else None
        if wanted is not None and credential.provider != wanted:
            raise InvalidRequest(f"credential {alias!r} is for {credential.provider}, not {wanted}")
        self.touch(alias, credential.provider)
        return dict(credential.fields)

    def _not_found(self, alias: str) -> CredentialNotFound:
        known = [c.alias for c in self.list()]
        hint = f"; yours: {', '.join(known)}" if known else "; store one with 'qmlops creds set'"
        return CredentialNotFound(f"no credential named {alias!r}{hint}")


def check_alias(alias: str) -> str:
    alias = (alias or "").strip()
    if not ALIAS.match(alias):
        raise InvalidRequest(
            f"bad credential alias {alias!r}: use letters, digits, '.', '_' or '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return alias


def _info(row: Any) -> CredentialInfo:
    return CredentialInfo(
        alias=row.alias,
        provider=row.provider,
        owner=row.owner,
        hint=row.hint,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_used_at=row.last_used_at,
    )
