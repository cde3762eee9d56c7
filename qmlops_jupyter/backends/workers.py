"""Worker processes for local simulators (Aer, Braket's LocalSimulator, PennyLane devices).

A simulation holds Python's GIL (or at least the CPU) for its whole run and cannot be
interrupted from another thread. Run in a spawned worker instead, the calling process (an
engine host, a kernel with widgets) stays responsive, and a cancel or timeout really stops the
simulation: the worker is killed.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import PermanentProviderError, ProviderError, TransientProviderError, one_line
from .base import JobHandle, ProviderResult, ProviderState, ProviderStatus


class WorkerPool:
    """A pool of spawned worker processes, started on first use and killed as a whole."""

    def __init__(self, label: str, workers: int) -> None:
        #: Names the simulator in error messages ("Aer", "Braket LocalSimulator" ...).
        self.label = label
        self.workers = max(1, min(workers, multiprocessing.cpu_count()))
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._pool is not None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a worker; a pool that cannot take work is a transient error."""
        try:
            return self._executor().submit(fn, *args)
        except (BrokenProcessPool, RuntimeError) as exc:
            self.kill()
            raise TransientProviderError(f"{self.label} worker unavailable: {exc}") from None

    def warm_up(self, fn: Callable[[], Any] = lambda: None) -> None:
        """Start the workers now (``fn`` imports what they need), so the first job does not
        wait for them."""
        self.submit(fn).result()

    def kill(self) -> None:
        """Stop every worker at once; other jobs running there fail as transient and are
        run again by the engine."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: the workers must not inherit the host's threads and locks.
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=die_with_parent,
                )
            return self._pool


class WorkerHandle(JobHandle):
    """A local job running in a :class:`WorkerPool`; ``finish`` turns the worker's plain
    (picklable) answer into a :class:`ProviderResult`."""

    def __init__(
        self,
        pool: WorkerPool,
        future: Future[Any],
        finish: Callable[[Any], ProviderResult],
        phases: dict[str, float] | None = None,
    ) -> None:
        self._pool = pool
        self._future = future
        self._finish = finish
        self._cancelled = False
        self.provider_job_id = None  # nothing outside this machine to re-attach to
        self.phases = phases or {}

    def status(self) -> ProviderStatus:
        if self._cancelled or self._future.cancelled():
            return ProviderStatus(ProviderState.CANCELLED)
        if not self._future.done():
            return ProviderStatus(
                ProviderState.RUNNING if self._future.running() else ProviderState.QUEUED
            )
        error = self._future.exception()
        if error is not None:
            return ProviderStatus(ProviderState.FAILED, one_line(error))
        return ProviderStatus(ProviderState.DONE)

    def result(self, timeout: float | None = None) -> ProviderResult:
        if self._cancelled:
            raise PermanentProviderError(f"the {self._pool.label} job was cancelled")
        try:
            payload = self._future.result(timeout=timeout)
        except TimeoutError:
            raise
        except BrokenProcessPool:
            self._pool.kill()
            raise TransientProviderError(
                f"the {self._pool.label} worker process stopped (killed, or out of memory)"
            ) from None
        except ProviderError:
            raise
        except Exception as exc:
            raise PermanentProviderError(f"{self._pool.label} failed: {one_line(exc)}") from None
        return self._finish(payload)

    def cancel(self) -> None:
        if self._future.done():
            return
        self._cancelled = True
        if not self._future.cancel():
            self._pool.kill()


def die_with_parent() -> None:
    """A worker ends when its host dies (even by SIGKILL), so a crashed engine leaves no
    orphan simulation eating the CPU its successor needs.

    Two guards: Linux's parent-death signal, and a watchdog thread that sees the worker
    re-parented (the parent-death signal follows the thread that started the worker, and is
    lost when the host dies before it is set)."""
    import ctypes
    import os
    import signal
    import sys
    import threading
    import time

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if parent == 1:  # already orphaned before we looked
        os._exit(1)
    threading.Thread(target=watch, name="qmlops-die-with-parent", daemon=True).start()
