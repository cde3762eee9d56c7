"""The vault's keys: Fernet keys from ``QMLOPS_CRYPT_KEY`` or a key file, as one MultiFernet.

``QMLOPS_CRYPT_KEY`` holds one Fernet key, or several separated by ``;`` (newest first): the first
encrypts, every one of them decrypts, so a key can be rotated by putting the new one in front.
Without the variable, the key lives in ``<QMLOPS_HOME>/vault.key``, created on first use with
mode 0600; a key file that others can read is refused. Anything wrong fails closed with a
:class:`~qmlops_jupyter.errors.VaultError` naming the problem, never the key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..errors import VaultError
from . import redaction

KEY_ENV = "QMLOPS_CRYPT_KEY"
KEY_FILE = "vault.key"


def key_file(home: Path) -> Path:
    return home / KEY_FILE


def parse_keys(text: str, source: str) -> list[Fernet]:
    """Fernet keys from ``text`` (separated by ``;``, ``,`` or new lines), newest first."""
    parts = [p.strip() for p in text.replace(",", ";").replace("\n", ";").split(";")]
    parts = [p for p in parts if p]
    if not parts:
        raise VaultError(f"{source} holds no key")
    redaction.register(*parts)
    keys = []
    for number, part in enumerate(parts, 1):
        try:
            keys.append(Fernet(part.encode()))
        except (ValueError, TypeError):
            raise VaultError(
                f"{source}: key {number} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
    return keys


def _read_key_file(path: Path) -> list[Fernet]:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VaultError(
            f"the vault key file {path} can be read by others (mode {mode:o}); "
            f"make it private with: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultError(f"cannot read the vault key file {path}: {exc}") from None
    return parse_keys(text, str(path))


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    redaction.register(key.decode())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_keys(home: Path, *, create: bool = False) -> MultiFernet:
    """The vault's keys: ``QMLOPS_CRYPT_KEY`` if set, else the key file in ``home``. With
    ``create``, a missing key file is generated (mode 0600); without, it is an error."""
    env = os.environ.get(KEY_ENV)
    if env is not None and env.strip():
        return MultiFernet(parse_keys(env, KEY_ENV))
    path = key_file(home)
    if not path.exists():
        if not create:
            raise VaultError(
                f"no vault key: {KEY_ENV} is not set and {path} does not exist (it is made when "
                "the first credential is stored)"
            )
        _create_key_file(path)
    return MultiFernet(_read_key_file(path))


def key_source(home: Path) -> str:
    """Where the key comes from, for messages (never the key itself)."""
    return KEY_ENV if os.environ.get(KEY_ENV, "").strip() else str(key_file(home))


def encrypt(keys: MultiFernet, plaintext: bytes) -> bytes:
    return keys.encrypt(plaintext)


def decrypt(keys: MultiFernet, token: bytes, *, what: str, source: str) -> bytes:
    try:
        return keys.decrypt(token)
    except InvalidToken:
        raise VaultError(
            f"cannot decrypt {what}: the vault key ({source}) is not the one it was stored "
            f"with; set {KEY_ENV} to that key (or 'new;old' while rotating)"
        ) from None
