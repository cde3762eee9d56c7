"""The Python API for notebooks, pipelines and the CLI: a thin layer over the core.

>>> import qmlops_jupyter as q
>>> job = q.submit(bell, backend="aer", shots=1024, wait=True)
>>> job.result().counts
[{'00': 517, '11': 507}]
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import BackendUnavailable, JobFailed, WaitTimeout
from .models import BackendInfo, JobEvent, JobRecord, JobResult
from .states import JobState
from .tracking import active

if TYPE_CHECKING:
    from .remote import RemoteClient


class Client:
    """Everything one process needs: settings, the ledger, the backends, an in-process driver.

    Build one with :func:`get_client` (from the environment) or directly with settings.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        ledger: Any = None,
        registry: Any = None,
        lease_ttl: float = 30.0,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._ledger = ledger
        self._registry = registry
        self._driver: Any = None
        self._vault: Any = None
        self._tracking: Any = None
        self.lease_ttl = lease_ttl
        self._lock = threading.Lock()

    # -- the parts, built on first use ---------------------------------------------------------

    @property
    def ledger(self) -> Any:
        if self._ledger is None:
            with self._lock:
                if self._ledger is None:
                    from .ledger import Ledger

                    if self.settings.database_url.startswith("sqlite"):
                        self.settings.ensure_home()
                    self._ledger = Ledger.open(self.settings.database_url)
        return self._ledger

    @property
    def registry(self) -> Any:
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    from .backends import BackendRegistry

                    self._registry = BackendRegistry(
                        self.settings.backends(), vault=lambda: self.vault
                    )
        return self._registry

    @property
    def driver(self) -> Any:
        if self._driver is None:
            from .engine import Driver
            from .ledger.store import default_holder

            self._driver = Driver(
                self.ledger,
                self.registry,
                f"client:{default_holder()}",
                lease_ttl=self.lease_ttl,
                vault=self.vault,
            )
        return self._driver

    @property
    def vault(self) -> Any:
        """This owner's credential vault (:class:`qmlops_jupyter.vault.Vault`), on the ledger's
        database; adapters in this process resolve credential aliases through it."""
        if self._vault is None:
            from . import vault as vault_module

            ledger = self.ledger  # outside the lock: opening the ledger takes it too
            with self._lock:
                if self._vault is None:
                    self._vault = vault_module.Vault(
                        ledger, self.settings.home, self.settings.owner
                    )
        return self._vault

    @property
    def tracking(self) -> Any:
        """This client's tracking (:class:`qmlops_jupyter.tracking.service.Tracking`): the
        lineage jobs record, and sending the tracking outbox to MLflow."""
        if self._tracking is None:
            from .tracking.service import Tracking

            with self._lock:
                if self._tracking is None:
                    self._tracking = Tracking(self)
        return self._tracking

    @property
    def owner(self) -> str:
        return self.settings.owner

    def close(self) -> None:
        """Stop this client's background tracking sender and close its ledger connections
        (queued tracking records stay in the ledger for the next sender)."""
        if self._tracking is not None:
            self._tracking.close()
        if self._ledger is not None:
            self._ledger.close()

    # -- jobs ----------------------------------------------------------------------------------

    def submit(
        self,
        circuits: Any,
        backend: str = "aer",
        shots: int = 1024,
        name: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
        *,
        seed: int | None = None,
        tags: dict[str, str] | None = None,
        job_timeout: float | None = None,
        wait_timeout: float | None = None,
        labels: Sequence[str] | None = None,
        observables: Sequence[str] | None = None,
        credential: str | None = None,
        lineage: Any = ...,
    ) -> Job:
        """Validate, record and (with ``wait=True``) run a job; return its :class:`Job`.

        ``observables`` (one Pauli string per circuit, e.g. ``"ZZ"``) asks for expectation
        values too (``job.result().expectation_values``). ``credential`` names a credential of
        the vault (an alias such as ``"ibm-main"``, never a secret) for the provider to be called
        with; it must exist and be for the backend's provider. ``lineage`` replaces what this
        process would record about the job's origin (a server submitting for a kernel passes
        the kernel's own; None records none). Nothing is written unless every check
        passes. Without ``wait``, an engine host picks the
        job up; with it, a local simulator runs the job in this process at once, and any backend
        is advanced here when no engine host is alive.
        """
        from .circuits import prepare

        started = time.perf_counter()
        be = self.registry.get(backend)
        if not be.config.enabled:
            raise BackendUnavailable(f"backend {backend!r} is disabled in backends.yaml")
        prepared = prepare(circuits, labels=labels)
        options: dict[str, Any] = {}
        if seed is not None:
            options["seed"] = int(seed)
        if observables is not None:
            options["observables"] = [
                o.upper() if isinstance(o, str) else o
                for o in (observables if not isinstance(observables, str) else [observables])
            ]
        if credential is not None:
            options["credential"] = self._check_credential(credential, be)
        be.validate(prepared.infos, shots, options)
        estimate = be.estimate(prepared.infos, shots)
        request_hash = _request_hash(backend, shots, name, options, tags, prepared.fingerprint)
        timeout = job_timeout if job_timeout is not None else be.config.job_timeout
        if lineage is ...:
            lineage = self.tracking.lineage()
        phases = {"validate": time.perf_counter() - started}
        # A caller that waits on a local simulator runs the job itself: lease it at once.
        run_here = wait and be.capabilities.local
        record, created = self.ledger.create_job(
            owner=self.owner,
            backend=backend,
            shots=shots,
            prepared=prepared,
            request_hash=request_hash,
            actor=f"user:{self.owner}",
            name=name,
            idempotency_key=idempotency_key,
            options=options,
            tags=tags,
            timeout=timeout,
            phases=phases,
            lease_holder=self.driver.holder if run_here else None,
            lease_ttl=self.lease_ttl,
            max_concurrent=be.config.max_concurrent_jobs,
            start=run_here,
            estimated_cost_usd=estimate.usd,
            lineage=lineage,
        )
        job = Job(self, record, created=created)
        if not created:
            if wait:
                job.wait(wait_timeout)
            return job
        if active.anything_open():
            active.note_submitted(job, time.perf_counter() - started)
            started = time.perf_counter()
        if wait:
            try:
                job._record = self._wait(
                    record, wait_timeout, circuits=prepared.circuits, leased=run_here
                )
            except WaitTimeout as exc:
                exc.job = job
                raise
            if active.anything_open():
                active.note_waited(time.perf_counter() - started)
            if lineage is not None and job._record.state is JobState.COMPLETED:
                self.tracking.last_activity = time.monotonic()
                self.tracking.kick()
        else:
            self._notify_engines()
        return job

    def estimate(self, circuits: Any, backend: str = "aer", shots: int = 1024) -> Any:
        """What a job would cost, before it is sent (a :class:`qmlops_jupyter.cost.Estimate`:
        ``usd``, ``basis``, ``breakdown``). The job's checks run too; nothing is written."""
        from .circuits import prepare

        be = self.registry.get(backend)
        prepared = prepare(circuits)
        be.validate(prepared.infos, shots, {})
        return be.estimate(prepared.infos, shots)

    def budgets(self) -> list[Any]:
        """This owner's budgets with their limit, usage and what remains
        (:class:`qmlops_jupyter.cost.budgets.BudgetStatus`)."""
        from .cost.budgets import budget_status

        return budget_status(self.ledger, self.owner)

    def set_budget(
        self,
        *,
        backend: str | None = None,
        shots_per_day: int | None = None,
        usd_per_month: float | None = None,
    ) -> Any:
        """Set this owner's shots-per-day and/or USD-per-month limit, for all backends or for
        ``backend``; checked atomically at every submit (``BudgetExceeded``)."""
        from .cost.budgets import set_budget

        if backend is not None:
            self.registry.get(backend)  # UnknownBackend for a name that is no backend
        return set_budget(
            self.ledger,
            self.owner,
            backend=backend,
            shots_per_day=shots_per_day,
            usd_per_month=usd_per_month,
        )

    def _check_credential(self, alias: str, backend: Any) -> str:
        from .errors import InvalidRequest
        from .vault import provider_for_backend

        info = self.vault.info(str(alias).strip())  # CredentialNotFound when it is not there
        wanted = provider_for_backend(backend.provider)
        if wanted is None:
            raise InvalidRequest(f"backend {backend.name} takes no credential")
        if info.provider != wanted:
            raise InvalidRequest(
                f"credential {info.alias!r} is for {info.provider}; backend {backend.name} needs "
                f"a {wanted} credential"
            )
        return info.alias

    def get_job(self, job_id: str) -> Job:
        return Job(self, self.ledger.get_job(job_id, self.owner))

    def jobs(
        self,
        state: str | None = None,
        backend: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> list[Job]:
        page = self.ledger.list_jobs(
            self.owner, state=state, backend=backend, limit=limit, cursor=cursor
        )
        return [Job(self, r) for r in page.jobs]

    def cancel(self, job_id: str) -> JobRecord:
        record = self.ledger.request_cancel(job_id, actor=f"user:{self.owner}", owner=self.owner)
        if record.state is JobState.CANCELLING:
            self._notify_engines()
        return record

    def events(self, job_id: str) -> list[JobEvent]:
        return self.ledger.events(self.ledger.get_job(job_id, self.owner).id)

    def job_events(
        self,
        after: int | None = None,
        wait: float = 0.0,
        job_ids: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """This owner's job status changes (``job_status`` v1 dicts, oldest first) past event
        sequence number ``after``, and the number to pass as ``after`` next time. ``after``
        None returns no events, only the current position. ``wait`` seconds: how long to wait
        for the first change (the ledger is looked at every 0.2 s; through a server, the
        server answers as soon as it sees one). ``job_ids``: those jobs only."""
        from .models import job_status

        ledger = self.ledger
        if after is None:
            return [], ledger.last_event_seq()
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            rows = ledger.status_events(self.owner, after, job_ids=job_ids, limit=500)
            if rows:
                changes = [job_status(r) for r in rows if r["kind"] == "transition"]
                return changes, int(rows[-1]["seq"])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return [], after
            time.sleep(min(0.2, remaining))

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Wait until the job is finished (or needs attention); advance it here when no engine
        host is alive, or when it is a local simulator job nobody has started."""
        return self._timed_wait(self.ledger.get_job(job_id, self.owner), timeout)

    def _timed_wait(self, record: JobRecord, timeout: float | None) -> JobRecord:
        """A caller's wait: counted by open profiles; a tracked job that completed here is
        sent to MLflow soon after."""
        started = time.perf_counter()
        try:
            record = self._wait(record, timeout)
        finally:
            if active.anything_open():
                active.note_waited(time.perf_counter() - started)
            if self._tracking is not None:
                self._tracking.last_activity = time.monotonic()
        if record.lineage and record.state is JobState.COMPLETED and not record.mlflow_run_id:
            self.tracking.kick()
        return record

    def _wait(
        self,
        record: JobRecord,
        timeout: float | None,
        circuits: Sequence[Any] | None = None,
        leased: bool = False,
    ) -> JobRecord:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        backend = self.registry.get(record.backend)
        local = backend.capabilities.local
        while True:
            if record.state.terminal or record.state is JobState.NEEDS_ATTENTION:
                return record
            if local or not self.engine_alive():
                fresh, leased = leased, False
                claimed = [record] if fresh else self._claim_here(record, backend)
                if claimed:
                    job = claimed[0]
                    # Aer holds the GIL while it simulates: a big job runs in a worker
                    # process so this one stays responsive (keeps its lease, can stop at the
                    # deadline); small jobs (a fraction of a second at most) run right here,
                    # as fast as Aer itself.
                    isolate = backend.prefers_isolation(job.circuits)
                    delay = self.driver.advance(
                        job, circuits=circuits, deadline=deadline, isolate=isolate, fresh=fresh
                    )
                    circuits = None
                    if delay is not None and deadline is not None and time.monotonic() >= deadline:
                        # Let an engine host (or a later wait) carry on from here, now.
                        self.driver.let_go(job.id)
                        self.ledger.release(self.driver.holder, [job.id])
                        self._notify_engines()
                    # The driver keeps its copy of a job it completed whole; else read it.
                    record = (
                        job if job.state is JobState.COMPLETED else self.ledger.get_job(record.id)
                    )
                    if delay is None or record.state.terminal:
                        continue
                    pause = min(max(delay, 0.01), 5.0)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"job {record.id} is still {record.state.value} after {timeout:g} s; "
                    "it goes on, wait again later"
                )
            sleep_for = pause if deadline is None else min(pause, deadline - time.monotonic())
            time.sleep(max(0.0, sleep_for))
            pause = min(pause * 2, 1.0)
            record = self.ledger.get_job(record.id)

    def _claim_here(self, record: JobRecord, backend: Any) -> list[JobRecord]:
        """Lease the job to this process, taking it from a dead local holder if need be."""
        limits = {record.backend: backend.config.max_concurrent_jobs}
        claimed = self.ledger.claim(
            self.driver.holder, self.lease_ttl, job_id=record.id, max_concurrent=limits
        )
        if not claimed and self.ledger.reap_dead_local_leases(self.driver.holder):
            claimed = self.ledger.claim(
                self.driver.holder, self.lease_ttl, job_id=record.id, max_concurrent=limits
            )
        return claimed

    def engine_alive(self) -> bool:
        return bool(self.ledger.live_engines())

    def _notify_engines(self) -> None:
        from .engine.host import notify_engines

        notify_engines(self.settings.home / "run")

    # -- backends ------------------------------------------------------------------------------

    def backends(self) -> list[BackendInfo]:
        """Every known backend, with its limits; ones that cannot load say why."""
        from .errors import QmlopsError

        infos = []
        for name in self.registry.configured_names():
            try:
                infos.append(self.registry.get(name).info())
            except QmlopsError as exc:
                config = self.settings.backends().backends.get(name)
                infos.append(
                    BackendInfo(
                        name=name,
                        provider="?",
                        kind="unknown",
                        simulator=False,
                        local=False,
                        credentials="-",
                        enabled=bool(config and config.enabled),
                        available=False,
                        status=str(exc),
                        max_qubits=config.max_qubits if config else None,
                        max_shots=config.max_shots if config else 0,
                        max_concurrent_jobs=config.max_concurrent_jobs if config else 0,
                    )
                )
        return infos


class Job:
    """A handle on one job in the ledger. Cheap to create; every property reads fresh state
    except :attr:`record`'s cached copy."""

    def __init__(self, client: Client, record: JobRecord, *, created: bool = True) -> None:
        self._client = client
        self._record = record
        #: False when ``submit`` returned a job made earlier with the same idempotency key.
        self.created = created

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str | None:
        return self._record.name

    @property
    def backend(self) -> str:
        return self._record.backend

    @property
    def state(self) -> JobState:
        return self.refresh().state

    @property
    def record(self) -> JobRecord:
        """The job as last read from the ledger (call :meth:`refresh` to read it again)."""
        return self._record

    def refresh(self) -> JobRecord:
        if not self._record.terminal:
            self._record = self._client.ledger.get_job(self.id)
        return self._record

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job ends; raise WaitTimeout when ``timeout`` seconds pass first."""
        try:
            self._record = self._client._timed_wait(self.refresh(), timeout)
        except WaitTimeout as exc:
            exc.job = self
            raise
        return self

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run this job was logged to. A completed tracked job not sent yet is sent
        now (waiting up to 10 s for the tracking store); None when tracking was off, the job did
        not complete, or the store is unreachable (it is sent when the store is back)."""
        record = self.refresh()
        if record.terminal and record.lineage and not record.mlflow_run_id:
            record = self._record = self._client.ledger.get_job(self.id)  # sent meanwhile?
        if record.mlflow_run_id or not record.lineage or record.state is not JobState.COMPLETED:
            return record.mlflow_run_id
        self._client.tracking.flush(job_ids=[self.id], timeout=10.0)
        self._record = self._client.ledger.get_job(self.id)
        return self._record.mlflow_run_id

    def result(self, timeout: float | None = None) -> JobResult:
        """Wait for the job and return its counts; raise JobFailed if it did not complete."""
        record = self.wait(timeout).record
        if record.state is not JobState.COMPLETED or record.result is None:
            why = f": {record.error}" if record.error else ""
            raise JobFailed(f"job {record.id} ended {record.state.value}{why}")
        return record.result

    def cancel(self) -> Job:
        self._record = self._client.cancel(self.id)
        return self

    def events(self) -> list[JobEvent]:
        return self._client.events(self.id)

    def to_dict(self) -> dict[str, Any]:
        return self.refresh().model_dump(mode="json")

    def __repr__(self) -> str:
        r = self._record
        return f"<Job {r.id} {r.state.value} on {r.backend}, {r.shots} shots>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """A job pickles as its id and is read again through the process-wide client when
        unpickled (a parked pipeline run's kernel gets its job handles back)."""
        return (get_job, (self.id,))

    def _display_record(self) -> JobRecord:
        """The job as it is now, for a rich display (read again unless it has finished); what
        was known before when that read fails: a display never raises."""
        try:
            return self.refresh()
        except Exception:
            return self._record

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, str]:
        """HTML (state chip, times, cost, error, the result's histogram) and plain text of the
        job's live state: evaluating ``job`` in a cell shows where it is now."""
        record = self._display_record()
        try:
            from .notebook.display import bundle, job_html, job_text

            return bundle(job_html(record), job_text(record), include, exclude)
        except Exception:
            return {"text/plain": repr(self)}


def _request_hash(
    backend: str,
    shots: int,
    name: str | None,
    options: dict[str, Any],
    tags: dict[str, str] | None,
    fingerprint: str,
) -> str:
    blob = json.dumps([backend, shots, name, options, tags or {}, fingerprint], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


_default: Client | RemoteClient | None = None
_default_lock = threading.Lock()


def get_client() -> Client | RemoteClient:
    """The process-wide client, chosen once per process.

    In a kernel started by a jupyter server running the qmlops extension (it sets
    ``QMLOPS_SERVER_URL`` and ``QMLOPS_SERVER_TOKEN_FILE``) and answering now, a
    :class:`~qmlops_jupyter.remote.RemoteClient`: jobs go through the server, whose engine runs
    them. Otherwise (no such server, it does not answer, or ``QMLOPS_REMOTE=off``) an in-process
    :class:`Client` built from the environment (``QMLOPS_HOME`` ...).
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                remote = None
                if os.environ.get("QMLOPS_SERVER_URL"):
                    from .remote import connect_from_env  # imports httpx: only when needed

                    remote = connect_from_env()
                _default = remote or Client()
    return _default


def reset_client() -> None:
    """Forget the process-wide client (after changing ``QMLOPS_*`` variables, or restarting
    the server): the next call chooses again."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None


def submit(
    circuits: Any,
    backend: str = "aer",
    shots: int = 1024,
    name: str | None = None,
    idempotency_key: str | None = None,
    wait: bool = False,
    **kwargs: Any,
) -> Job:
    """Submit one circuit or a list as one job (see :meth:`Client.submit`)."""
    return get_client().submit(circuits, backend, shots, name, idempotency_key, wait, **kwargs)


def get_job(job_id: str) -> Job:
    return get_client().get_job(job_id)


def jobs(state: str | None = None, backend: str | None = None, limit: int = 50) -> list[Job]:
    """Your jobs, newest first."""
    return get_client().jobs(state=state, backend=backend, limit=limit)
