"""Keep secrets out of log lines, error messages and stored job errors.

Every secret value this process handles — read from the vault, stored into it, or taken from a
provider's environment variable — is registered here; :func:`redact` replaces each of them (as
is, and in the encodings an error message might echo: ``repr`` escapes, base64, URL-encoding)
with ``***``. :class:`RedactingFilter` does the same to log records.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import urllib.parse

MASK = "***"
#: Values shorter than this are not treated as secrets (masking them would mangle messages).
MIN_SECRET_LENGTH = 6
#: Environment variables that hold provider secrets when the vault is not used.
SECRET_ENV_VARS = (
    "IONQ_API_KEY",
    "QISKIT_IBM_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "QMLOPS_CRYPT_KEY",
)

_lock = threading.Lock()
_secrets: set[str] = set()
_forms: list[str] = []


def _encodings(value: str) -> set[str]:
    raw = value.encode()
    forms = {
        value,
        repr(value)[1:-1],
        repr(raw)[2:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def register(*values: str | None) -> None:
    """Remember secret values so that :func:`redact` removes them from now on."""
    global _forms
    new = [v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH]
    if not new:
        return
    with _lock:
        if all(v in _secrets for v in new):
            return
        for value in new:
            _secrets.add(value)
        forms = set()
        for value in _secrets:
            forms |= _encodings(value)
        # Longest first, so a secret's encoding is not half-masked by a shorter match.
        _forms = sorted(forms, key=len, reverse=True)


def register_environment() -> None:
    """Register the provider secrets found in this process's environment."""
    register(*(os.environ.get(name) for name in SECRET_ENV_VARS))
    keys = os.environ.get("QMLOPS_CRYPT_KEY") or ""
    register(*(k.strip() for k in keys.replace(",", ";").split(";")))


def redact(text: object) -> str:
    """``text`` as a string with every known secret replaced by ``***``."""
    message = text if isinstance(text, str) else str(text)
    for form in _forms:
        if form in message:
            message = message.replace(form, MASK)
    return message


def known_count() -> int:
    return len(_secrets)


class RedactingFilter(logging.Filter):
    """A logging filter that masks every known secret in a record's message, arguments,
    exception text and structured fields. It never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _forms:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            # The formatter would format exc_info again (JSON) or reuse exc_text (text).
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in ("msg", "exc_text", "stack_info"):
                cleaned = redact(value)
                if cleaned != value:
                    setattr(record, key, cleaned)
        return True


_filter = RedactingFilter()


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add the filter to ``logger`` (default ``qmlops_jupyter``) and to each of its handlers
    (a logger's own filters do not see records from its child loggers; handlers' do)."""
    target = logger or logging.getLogger("qmlops_jupyter")
    register_environment()
    if _filter not in target.filters:
        target.addFilter(_filter)
    for handler in target.handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
    return _filter
