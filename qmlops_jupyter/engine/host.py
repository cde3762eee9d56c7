"""The long-lived engine host: claims due jobs from the ledger and drives them.

Embeddable in any asyncio loop (``await engine.start()`` / ``await engine.stop()``): ``qmlops
engine`` runs it in the foreground; the jupyter-server extension hosts it in the server's loop.
It keeps a heartbeat in the ledger, renews the leases of the jobs it holds, recovers jobs left by
crashed engines, and wakes at once when a client announces new work on its wake socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ledger.store import default_holder
from .driver import Driver, RetryPolicy

if TYPE_CHECKING:
    from ..backends import BackendRegistry
    from ..ledger import Ledger
    from ..models import JobRecord

log = logging.getLogger("qmlops_jupyter.engine")


class Engine:
    """Claims and advances jobs until stopped."""

    def __init__(
        self,
        ledger: Ledger,
        registry: BackendRegistry,
        *,
        owner: str = "engine",
        holder: str | None = None,
        tick: float = 1.0,
        lease_ttl: float = 30.0,
        wake_dir: Path | None = None,
        retry: RetryPolicy | None = None,
        workers: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        isolate_local: bool = True,
        vault: Any = None,
        tracking: Any = None,
        tracking_every: float = 1.0,
        on_step: Callable[[], None] | None = None,
        warm_up_delay: float = 0.0,
        pipelines: Any = None,
        pipelines_every: float = 1.0,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.owner = owner
        self.holder = holder or default_holder()
        self.tick = tick
        self.lease_ttl = lease_ttl
        self.wake_dir = wake_dir
        # Local simulators run in worker processes: a long Aer run holds the GIL, and would
        # otherwise stop this host's heartbeat, lease renewals and (in a server) everything.
        # Small jobs (the backend's prefers_isolation says no) run in the engine's thread: the
        # trip to a worker process would cost more than the run.
        self.driver = Driver(
            ledger,
            registry,
            self.holder,
            lease_ttl=lease_ttl,
            retry=retry,
            monotonic=monotonic,
            isolate_local=isolate_local,
            vault=vault,
        )
        #: Sends everyone's tracking outbox to MLflow (a Tracking, for its configured URIs);
        #: None: this host leaves that to the clients.
        self.tracking = tracking
        self.tracking_every = tracking_every
        #: Called (in a worker thread) after each step the engine takes on a job: a host that
        #: reports changes (the server's event pump) looks at once instead of at its next poll.
        self.on_step = on_step
        #: Seconds to wait before warming up the local backends (starting their worker
        #: processes, which import the simulator): a host that has just started (a Jupyter
        #: server answering its first requests) keeps its CPUs meanwhile.
        self.warm_up_delay = warm_up_delay
        #: Starts due schedules' runs, resumes parked runs, ends runs whose runner died, sends
        #: notifications (a :class:`~qmlops_jupyter.pipelines.host.PipelineHost`); None: not
        #: this host's work.
        self.pipelines = pipelines
        self.pipelines_every = pipelines_every
        self._pipelines_task: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self._warm_started = False
        self._tracking_task: asyncio.Task[None] | None = None
        self.workers = workers or max(4, sum(self._limits().values()))
        self.last_tick: float | None = None
        self._held: set[str] = set()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._sock: socket.socket | None = None

    # -- synchronous use (tests, tools) --------------------------------------------------------

    def step(self) -> int:
        """One pass in the calling thread: claim due jobs and advance each once."""
        self._heartbeat()
        claimed = self._claim(self.workers)
        for job in claimed:
            self._advance(job)
        return len(claimed)

    # -- asyncio hosting -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="qmlops-engine")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._recover_dead_engines)
        # Load the local backends' SDKs now, in one thread: Qiskit's package does not survive
        # being imported for the first time by several worker threads at once.
        local = await loop.run_in_executor(self._executor, self._local_backends)
        if self.driver.isolate_local and local:
            self._warm_started = False
            self._warming = asyncio.create_task(self._warm_up_later(local), name="qmlops-warm-up")
        self._open_wake_socket(loop)
        self._task = asyncio.create_task(self._main(), name="qmlops-engine")
        if self.tracking is not None:
            self._tracking_task = asyncio.create_task(self._send_tracking(), name="qmlops-tracking")
        if self.pipelines is not None:
            self._pipelines_task = asyncio.create_task(
                self._pipeline_duties(), name="qmlops-pipelines"
            )
        log.info(
            "engine %s started (ledger %s)",
            self.holder,
            self.ledger.url,
            extra={"event": "engine_start", "actor": self.holder},
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, give running steps ``grace`` seconds, then let go of every lease so
        another engine can take over at once."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        if self._tracking_task is not None:
            self._tracking_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tracking_task
            self._tracking_task = None
        if self._pipelines_task is not None:
            self._pipelines_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pipelines_task
            self._pipelines_task = None
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=grace)
        warming = self._warming
        if warming is not None and not warming.done():
            if not self._warm_started:
                warming.cancel()  # still waiting for its delay: nothing to interrupt
            # Let a warm-up under way finish: its SDK imports cannot be interrupted, and an
            # executor shut down under them logs tracebacks.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(warming), timeout=2)
        self._warming = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._release_all)
        if self.driver.isolate_local:
            # Every local backend this engine loaded (their worker pools), configured or not.
            for backend in list(self.registry._instances.values()):
                if backend.capabilities.local:
                    backend.close()
        self._close_wake_socket(loop)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._task = None
        log.info(
            "engine %s stopped", self.holder, extra={"event": "engine_stop", "actor": self.holder}
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Look for work now instead of at the next tick."""
        self._wake.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        heartbeat_every = max(0.2, min(5.0, self.lease_ttl / 3))
        last_heartbeat = 0.0
        while not self._stopping:
            now = time.monotonic()
            try:
                if now - last_heartbeat >= heartbeat_every:
                    await loop.run_in_executor(self._executor, self._heartbeat)
                    last_heartbeat = now
                free = self.workers - len(self._inflight)
                claimed = []
                if free > 0:
                    claimed = await loop.run_in_executor(self._executor, self._claim, free)
                for job in claimed:
                    self._inflight[job.id] = asyncio.create_task(self._drive(job))
                self.last_tick = time.time()
            except Exception:  # the ledger may be briefly unreachable; keep the host alive
                log.exception("engine tick failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick)

    async def _warm_up_later(self, local: list[Any]) -> None:
        if self.warm_up_delay > 0:
            await asyncio.sleep(self.warm_up_delay)
        if self._stopping:
            return
        self._warm_started = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._warm_up, local)

    async def _send_tracking(self) -> None:
        """Send the tracking outbox (every owner's) on its own schedule, apart from the job
        loop, so a slow or absent tracking store never delays a job."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await loop.run_in_executor(self._executor, self._drain_tracking)
            except Exception:
                log.warning("sending tracking records failed; will retry", exc_info=True)
            await asyncio.sleep(self.tracking_every)

    async def _pipeline_duties(self) -> None:
        """The pipeline duties on their own schedule, apart from the job loop."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await loop.run_in_executor(self._executor, self.pipelines.tick)
            except Exception:
                log.warning("pipeline duties failed; will retry", exc_info=True)
            await asyncio.sleep(self.pipelines_every)

    def _drain_tracking(self) -> None:
        from ..tracking.outbox import drain, has_due

        if has_due(self.ledger):
            drain(self.ledger, self.holder, uris=self.tracking.uris())

    async def _drive(self, job: JobRecord) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._advance, job)
        finally:
            self._inflight.pop(job.id, None)
            if not self._stopping:
                self._wake.set()

    # -- work done in worker threads -----------------------------------------------------------

    def _limits(self) -> dict[str, int]:
        """Concurrency limits: the backends with an entry in backends.yaml (others have none).
        Read from the file's model, not from the registry's listing, which scans every
        installed package's entry points: this runs on every claim."""
        return {
            name: config.max_concurrent_jobs
            for name, config in self.registry.backends_file.backends.items()
        }

    def _claim(self, limit: int) -> list[JobRecord]:
        limits = self._limits()
        return self.ledger.claim(
            self.holder,
            self.lease_ttl,
            limit=limit,
            max_concurrent=limits,
            exclude=list(self._inflight),
        )

    def _advance(self, job: JobRecord) -> None:
        self._held.add(job.id)
        try:
            more = self.driver.advance(job, isolate=self._isolate(job))
        except Exception as exc:  # a bug or an unexpected SDK error must not kill the host
            log.exception(
                "advancing job %s failed", job.id, extra={"job_id": job.id, "backend": job.backend}
            )
            from ..errors import ProviderError

            more = self.driver._provider_error(
                job,
                self.registry.get(job.backend),
                ProviderError(f"internal error: {exc}"),
                during="advance",
            )
        if more is None:
            self._held.discard(job.id)
        if self.on_step is not None:
            try:
                self.on_step()
            except Exception:
                log.debug("on_step callback failed", exc_info=True)

    def _isolate(self, job: JobRecord) -> bool | None:
        """False for a small job on a local simulator (run it in this thread); None leaves the
        driver's default (a worker process for local runs, when the engine isolates them)."""
        if not self.driver.isolate_local:
            return None
        try:
            backend = self.registry.get(job.backend)
        except Exception:  # the driver reports an unknown or broken backend on the job
            return None
        if backend.capabilities.local and not backend.prefers_isolation(job.circuits):
            return False
        return None

    def _heartbeat(self) -> None:
        self.ledger.engine_heartbeat(self.holder, self.owner)
        self.ledger.reap_dead_local_leases(self.holder)
        if self._held:
            self._held &= self.ledger.renew_leases(self.holder, self.lease_ttl, sorted(self._held))

    def _recover_dead_engines(self) -> None:
        """Engines on this host that died (kill -9, OOM): mark them stopped, so clients stop
        counting on them, and take their jobs' leases back now rather than when they expire."""
        for dead in self.ledger.dead_local_holders():
            if dead != self.holder:
                self.ledger.engine_stopped(dead)
                log.warning(
                    "engine %s is gone", dead, extra={"event": "recovery", "actor": self.holder}
                )
        self._heartbeat()  # frees dead local holders' leases (reap_dead_local_leases)

    def _local_backends(self) -> list[Any]:
        """Local simulators configured in backends.yaml (the ones worth warming up: the others
        start their worker pool on first use)."""
        found = []
        configured = self.registry.backends_file.backends
        for name in self.registry.configured_names():
            if name not in configured:
                continue
            try:
                backend = self.registry.get(name)
            except Exception:  # an SDK that is not installed: nothing to warm
                continue
            if backend.config.enabled and backend.capabilities.local:
                found.append(backend)
        return found

    def _warm_up(self, backends: list[Any]) -> None:
        for backend in backends:
            try:
                backend.warm_up()
            except Exception:
                log.warning("warming up backend %s failed", backend.name, exc_info=True)

    def _release_all(self) -> None:
        self.ledger.release(self.holder)
        self.ledger.engine_stopped(self.holder)

    # -- wake socket ---------------------------------------------------------------------------

    def _open_wake_socket(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.wake_dir is None:
            return
        try:
            self.wake_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.wake_dir / f"engine-{os.getpid()}-{id(self):x}.sock"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(path))
        except OSError as exc:  # too long a path, read-only home: timers still work
            log.warning("no wake socket (%s); polling every %.1f s", exc, self.tick)
            return
        self._sock = sock
        self._sock_path = path

        def _readable() -> None:
            with contextlib.suppress(OSError):
                while sock.recv(64):
                    pass
            self._wake.set()

        loop.add_reader(sock.fileno(), _readable)

    def _close_wake_socket(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sock is None:
            return
        loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(OSError):
            self._sock_path.unlink()
        self._sock = None


def notify_engines(wake_dir: Path) -> int:
    """Tell every engine host on this machine that there is new work; returns how many heard."""
    told = 0
    try:
        paths = list(wake_dir.glob("engine-*.sock"))
    except OSError:
        return 0
    if not paths:
        return 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in paths:
            try:
                sock.sendto(b"w", str(path))
                told += 1
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    path.unlink()  # its engine is gone
            except OSError:
                pass
    return told
