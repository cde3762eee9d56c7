"""The engine: advances jobs from the ledger (:class:`Driver`), hosted by :class:`Engine`."""

from .driver import Driver, RetryPolicy
from .host import Engine, notify_engines

__all__ = ["Driver", "Engine", "RetryPolicy", "notify_engines"]
