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
#: The sender keeps out of the way of a loop of jobs: it sends once this process has made no
#: qmlops call for this long ...
QUIET_SECONDS = 0.3
#: ... or when the oldest record has waited this long, a chunk at a time.
MAX_DELAY_SECONDS = 5.0
CHUNK = 50
#: At interpreter exit, send for at most this long (the rest waits for an engine host or the
#: next process of this owner).
EXIT_SECONDS = 5.0


class Tracking:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._config: TrackingConfig | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._atexit = False
        #: Monotonic time of this process's last submit or wait.
        self.last_activity = 0.0
        self._queued_since: float | None = None
        self._closed = False

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

        self.last_activity = time.monotonic()
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
        if not self.enabled or self._closed:
            return
        with self._lock:
            if self._queued_since is None:
                self._queued_since = time.monotonic()
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
        while not self._closed:
            self._wake.wait(0.5)
            self._wake.clear()
            if self._closed:
                return
            now = time.monotonic()
            busy = now - self.last_activity < QUIET_SECONDS
            waited = self._queued_since is not None and now - self._queued_since > MAX_DELAY_SECONDS
            if busy and not waited:
                time.sleep(0.1)
                self._wake.set()  # look again soon
                continue
            try:
                if has_due(ledger, owner):
                    report = drain(ledger, self.holder, owner=owner, uris=self.uris(), limit=CHUNK)
                    idle_since = time.monotonic()
                    with self._lock:
                        self._queued_since = time.monotonic() if report.sent >= CHUNK else None
                    if report.sent >= CHUNK:
                        self._wake.set()  # more to send
                else:
                    with self._lock:
                        self._queued_since = None
                        idle = time.monotonic() - idle_since > IDLE_STOP_SECONDS
                        if idle and not self._wake.is_set():
                            self._thread = None
                            return
            except Exception:
                log.warning("sending tracking records failed; will retry", exc_info=True)
                time.sleep(1.0)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background sender (what it has not sent stays queued in the ledger)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _at_exit(self) -> None:
        """Before the interpreter goes: send what is due, for a few seconds at most (the rest
        stays queued for an engine host or the next process)."""
        try:
            from .outbox import drain, has_due

            if self._client._ledger is None or self._closed:
                return
            deadline = time.monotonic() + EXIT_SECONDS
            # The background sender finishes what it is sending first: a send cut off by the
            # exit would leave its rows leased to a dead process until the lease runs out.
            self.close(EXIT_SECONDS)
            while time.monotonic() < deadline and has_due(self._client.ledger, self._client.owner):
                report = drain(
                    self._client.ledger,
                    self.holder,
                    owner=self._client.owner,
                    uris=self.uris(),
                    limit=CHUNK,
                )
                if not report.sent:
                    break
        except Exception:
            log.debug("tracking flush at exit failed", exc_info=True)
