"""A client's tracking: the lineage each submission records, and sending the outbox.

In a notebook or script, a background thread sends what this owner queued (about every half
second, batching jobs that complete close together); ``flush()`` sends now. An engine host sends
everyone's (see ``Engine``). Neither ever blocks a job on MLflow.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import active
from .config import TrackingConfig, resolve, safe_uri

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger("qmlops_jupyter.tracking")

#: A background sender with nothing to do for this long stops (a new job starts it again).
IDLE_STOP_SECONDS = 30.0


class Tracking:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._config: TrackingConfig | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._atexit = False

    @property
    def config(self) -> TrackingConfig:
        if self._config is None:
            self._config = resolve(self._client.settings)
        return self._config

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def holder(self) -> str:
        return self._client.driver.holder

    def uris(self) -> dict[str, str]:
        """Stored (password-free) URI -> the full one this process was configured with."""
        cfg = self.config
        return {safe_uri(cfg.uri): cfg.uri}

    def lineage(self) -> dict[str, Any] | None:
        """What a job submitted now records about its origin and its run (None: tracking is
        off)."""
        cfg = self.config
        if not cfg.enabled:
            return None
        from .lineage import capture

        run = active.current_run()
        data = capture(self._client.owner)
        data.update(
            uri=cfg.safe_uri,
            artifact_root=cfg.artifact_root,
            experiment=run.experiment if run is not None else cfg.experiment,
            run_key=run.key if run is not None else None,
            step=run._next_step() if run is not None else 0,
        )
        return data

    # -- sending -----------------------------------------------------------------------------

    def flush(
        self,
        *,
        run_keys: Sequence[str] | None = None,
        job_ids: Sequence[str] | None = None,
        timeout: float = 10.0,
    ) -> bool:
        """Send this owner's queued tracking now (or just the given runs' or jobs'); True when
        all of it reached MLflow."""
        from .outbox import wait_until_sent

        return wait_until_sent(
            self._client.ledger,
            self.holder,
            run_keys=run_keys,
            job_ids=job_ids,
            owner=self._client.owner if run_keys is None and job_ids is None else None,
            uris=self.uris(),
            timeout=timeout,
        )

    def kick(self) -> None:
        """Something was queued: make sure the background sender will send it soon."""
        if not self.enabled:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="qmlops-tracking", daemon=True
                )
                self._thread.start()
                if not self._atexit:
                    atexit.register(self._at_exit)
                    self._atexit = True
        self._wake.set()

    def _run(self) -> None:
        from .outbox import drain, has_due

        ledger, owner = self._client.ledger, self._client.owner
        idle_since = time.monotonic()
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            # Let jobs completing close together go in one batch.
            time.sleep(0.05)
            try:
                if has_due(ledger, owner):
                    drain(ledger, self.holder, owner=owner, uris=self.uris())
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_STOP_SECONDS:
                    with self._lock:
                        if not self._wake.is_set():
                            self._thread = None
                            return
            except Exception:
                log.warning("sending tracking records failed; will retry", exc_info=True)
                time.sleep(1.0)

    def _at_exit(self) -> None:
        """Before the interpreter goes: send what is due, briefly (the rest stays queued for
        the next process or an engine host)."""
        try:
            from .outbox import drain, has_due

            if self._client._ledger is not None and has_due(
                self._client.ledger, self._client.owner
            ):
                drain(self._client.ledger, self.holder, owner=self._client.owner, uris=self.uris())
        except Exception:
            log.debug("tracking flush at exit failed", exc_info=True)
