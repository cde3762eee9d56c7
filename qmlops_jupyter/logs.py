"""Logging setup: plain text, or one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

#: Structured fields that log calls pass through ``extra=``.
FIELDS = ("job_id", "backend", "old_state", "new_state", "actor", "event")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and redacted) by the vault's filter
            data["exc"] = record.exc_text
        return json.dumps(data)


def configure_logging(fmt: str | None = None, level: str = "WARNING") -> None:
    """Send qmlops_jupyter's logs to stderr as ``text`` or ``json``, with every known secret
    masked (the vault's redacting filter sits on the logger and on its handler)."""
    from .vault.redaction import install

    fmt = fmt or os.environ.get("QMLOPS_LOG_FORMAT") or "text"
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("qmlops_jupyter")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    install(logger)
