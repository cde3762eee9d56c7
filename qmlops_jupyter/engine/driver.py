"""Advancing one job one step: submit, poll, finish, cancel, recover, retry.

The :class:`Driver` is used by every engine host (``qmlops engine``, the server extension) and by
a caller that waits on a job in-process. It only acts on jobs leased to its ``holder``; every
change it makes is a compare-and-set fenced by that lease, so two drivers never advance one job.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..backends.base import (
    Backend,
    JobHandle,
    ProviderResult,
    ProviderState,
    expectation_from_counts,
)
from ..errors import ProviderError, QmlopsError
from ..models import JobResult
from ..states import JobState, is_legal
from ..vault.redaction import redact

if TYPE_CHECKING:
    from ..backends import BackendRegistry
    from ..ledger import Ledger
    from ..models import JobRecord

log = logging.getLogger("qmlops_jupyter.engine")

S = JobState


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, for transient provider errors and for polling."""

    max_attempts: int = 5
    base: float = 1.0
    cap: float = 60.0
    poll_base: float = 0.5
    poll_cap: float = 30.0

    def retry_delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap, self.base * 2**attempt)) + self.base / 2

    def poll_delay(self, polls: int, rng: random.Random) -> float:
        delay = min(self.poll_cap, self.poll_base * 2 ** min(polls, 16))
        return delay * rng.uniform(0.8, 1.2)


class Driver:
    """Moves jobs leased to ``holder`` forward, one step per :meth:`advance` call."""

    def __init__(
        self,
        ledger: Ledger,
        registry: BackendRegistry,
        holder: str,
        *,
        lease_ttl: float = 30.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        isolate_local: bool = False,
        vault: Any = None,
    ) -> None:
        self.ledger = ledger
        #: Where a job's ``credential`` alias is looked up (for the job's owner), if anywhere.
        self.vault = vault
        #: Run local backends (Aer) in worker processes, so this process stays responsive.
        self.isolate_local = isolate_local
        self.registry = registry
        self.holder = holder
        self.lease_ttl = lease_ttl
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.monotonic = monotonic
        #: Provider handles of jobs this driver submitted or re-attached, by job id.
        self.handles: dict[str, JobHandle] = {}
        self._isolated: dict[str, bool] = {}

    # -- the one entry point -------------------------------------------------------------------

    def advance(
        self,
        job: JobRecord,
        *,
        circuits: Sequence[Any] | None = None,
        deadline: float | None = None,
        isolate: bool | None = None,
        fresh: bool = False,
    ) -> float | None:
        """Take the job one step. Returns the seconds until it needs another look, or None when
        this driver is done with it (finished, needs a person, or no longer ours).

        ``circuits`` spares a reload when the caller still holds them; ``deadline`` (monotonic)
        bounds how long a local run may block this call; ``isolate`` overrides
        :attr:`isolate_local` for this call; ``fresh`` says a SUBMITTING job was just created
        that way by this caller (see ``Ledger.create_job(start=True)``), not cut off.
        """
        # Per job, not per driver: one driver may advance several jobs from several threads.
        self._isolated[job.id] = self.isolate_local if isolate is None else isolate
        more = self._step(job, circuits, deadline, fresh)
        if more is None:
            self._isolated.pop(job.id, None)
        return more

    def _step(
        self, job: JobRecord, circuits: Sequence[Any] | None, deadline: float | None, fresh: bool
    ) -> float | None:
        try:
            backend = self.registry.get(job.backend)
        except QmlopsError as exc:
            self._end(job, S.FAILED, str(exc), "config")
            return None
        if self._timed_out(job):
            return self._time_out(job)
        state = job.state
        if state is S.CREATED:
            return self._submit(job, backend, circuits, deadline)
        if state is S.SUBMITTING:
            if fresh:
                return self._submit(job, backend, circuits, deadline, from_state=S.SUBMITTING)
            return self._resume_submitting(job, backend, circuits, deadline)
        if state in (S.QUEUED, S.RUNNING):
            handle = self.handles.get(job.id) or self._reattach(job, backend)
            if handle is None:
                return self._recover_lost(job, backend, circuits, deadline)
            if backend.capabilities.local:
                return self._finish_local(job, handle, deadline)
            return self._poll(job, backend, handle)
        if state is S.CANCELLING:
            return self._cancel(job, backend)
        self.handles.pop(job.id, None)
        return None

    # -- submission ----------------------------------------------------------------------------

    def _submit(
        self,
        job: JobRecord,
        backend: Backend,
        circuits: Sequence[Any] | None,
        deadline: float | None,
        *,
        from_state: JobState = S.CREATED,
    ) -> float | None:
        if from_state is not S.SUBMITTING and not self._move(job, from_state, S.SUBMITTING, None):
            return None
        if circuits is None:
            circuits = self.ledger.load_circuits(job.id)
        options = self._options(job)
        if backend.capabilities.local and self._isolated.get(job.id, self.isolate_local):
            options["isolate"] = True
        try:
            handle = backend.submit(circuits, job.shots, options)
        except ProviderError as exc:
            return self._provider_error(job, backend, exc, during="submit")
        except QmlopsError as exc:
            self._end(job, S.FAILED, str(exc), "permanent")
            return None
        self.handles[job.id] = handle
        phases = {**job.phases, **getattr(handle, "phases", {})}
        after = S.RUNNING if backend.capabilities.local else S.QUEUED
        fields: dict[str, Any] = {
            "phases": phases,
            "error": None,
            "error_kind": None,
            "attempts": 0,
        }
        if handle.provider_job_id is not None:
            fields["provider_job_id"] = handle.provider_job_id
        if not self._move(job, S.SUBMITTING, after, None, **fields):
            self._abandon(job.id, handle)
            return None
        if backend.capabilities.local:
            return self._finish_local(job, handle, deadline)
        return self._next_poll(job, 0)

    def _resume_submitting(
        self,
        job: JobRecord,
        backend: Backend,
        circuits: Sequence[Any] | None,
        deadline: float | None,
    ) -> float | None:
        """A job found in SUBMITTING was cut off mid-submission (or its last try was refused
        with a transient error)."""
        if job.error_kind == "transient" or backend.capabilities.simulator:
            if job.error_kind != "transient":
                self.ledger.note(
                    job.id,
                    "recovered",
                    self.holder,
                    "re-submitting simulator job cut off during submission",
                )
            return self._submit(job, backend, circuits, deadline, from_state=S.SUBMITTING)
        self._end(
            job,
            S.NEEDS_ATTENTION,
            "submission was interrupted and its outcome is unknown; check the provider "
            "before resubmitting (never resubmitted automatically)",
            "ambiguous",
        )
        return None

    def _reattach(self, job: JobRecord, backend: Backend) -> JobHandle | None:
        if not (backend.capabilities.supports_reattach and job.provider_job_id):
            return None
        try:
            handle = backend.attach(job.provider_job_id, self._options(job))
        except ProviderError as exc:
            self._provider_error(job, backend, exc, during="attach")
            return None
        self.handles[job.id] = handle
        self.ledger.note(
            job.id, "recovered", self.holder, f"re-attached to provider job {job.provider_job_id}"
        )
        return handle

    def _recover_lost(
        self,
        job: JobRecord,
        backend: Backend,
        circuits: Sequence[Any] | None,
        deadline: float | None,
    ) -> float | None:
        """A QUEUED/RUNNING job whose handle is gone (its engine stopped or crashed)."""
        if backend.capabilities.simulator:
            if not self._move(
                job,
                job.state,
                S.SUBMITTING,
                "recovered: re-running simulator job cut off by an engine stop or crash",
            ):
                return None
            self.ledger.note(
                job.id, "recovered", self.holder, "simulator job re-run after its engine stopped"
            )
            return self._submit(job, backend, circuits, deadline, from_state=S.SUBMITTING)
        self._end(
            job,
            S.NEEDS_ATTENTION,
            "lost track of the provider job and the backend cannot re-attach",
            "ambiguous",
        )
        return None

    # -- polling and finishing -----------------------------------------------------------------

    def _poll(self, job: JobRecord, backend: Backend, handle: JobHandle) -> float | None:
        try:
            status = handle.status()
        except ProviderError as exc:
            return self._provider_error(job, backend, exc, during="poll")
        if status.state is ProviderState.QUEUED:
            return self._next_poll(job, job.polls, queue_position=status.queue_position)
        if status.state is ProviderState.RUNNING:
            if job.state is S.QUEUED:
                queued = self._since(job.submitted_at)
                if not self._move(
                    job,
                    S.QUEUED,
                    S.RUNNING,
                    None,
                    queue_position=None,
                    phases={**job.phases, "queue": queued},
                ):
                    return None
            return self._next_poll(job, job.polls)
        if status.state is ProviderState.DONE:
            return self._finish(job, handle)
        if status.state is ProviderState.CANCELLED:
            self._end(job, S.CANCELLED, status.message or "cancelled at the provider", None)
            return None
        self._end(
            job, S.FAILED, status.message or "the provider reported the job failed", "permanent"
        )
        return None

    def _finish_local(
        self, job: JobRecord, handle: JobHandle, deadline: float | None
    ) -> float | None:
        """Wait for a job running on this machine, renewing the lease and watching for cancel
        requests, the job's timeout and the caller's deadline while it runs."""
        isolated = self._isolated.get(job.id, self.isolate_local)
        # An in-thread run holds the GIL and cannot be interrupted: wake only to keep the
        # lease. A worker-process run can be stopped: look at the ledger every second.
        renew_every = max(
            0.05, self.lease_ttl / 3 if not isolated else min(1.0, self.lease_ttl / 3)
        )
        while True:
            waits = [renew_every, self._remaining(job)]
            if deadline is not None:
                waits.append(deadline - self.monotonic())
            wait_for = max(0.0, min(w for w in waits if w is not None))
            try:
                result = handle.result(timeout=wait_for)
            except TimeoutError:
                pass
            except ProviderError as exc:
                return self._provider_error(
                    job, self.registry.get(job.backend), exc, during="result"
                )
            else:
                return self._finish(job, handle, result)
            if self._timed_out(job):
                return self._time_out(job)
            state = self.ledger.renew_lease(self.holder, self.lease_ttl, job.id)
            if state is None:  # no longer ours (taken over, or finished by someone else)
                self._abandon(job.id, handle)
                return None
            if state is S.CANCELLING:
                job.state = state
                return self._cancel(job, self.registry.get(job.backend))
            if deadline is not None and self.monotonic() >= deadline:
                return 0.0  # the caller's wait ran out; the lease is still ours

    def _finish(
        self, job: JobRecord, handle: JobHandle, result: ProviderResult | None = None
    ) -> float | None:
        if result is None:
            try:
                result = handle.result()
            except ProviderError as exc:
                return self._provider_error(
                    job, self.registry.get(job.backend), exc, during="result"
                )
        post = time.perf_counter()
        counts = [dict(c) for c in result.counts]
        observables = job.options.get("observables")
        if observables and "expectation_values" not in result.metadata:
            result.metadata["expectation_values"] = [
                expectation_from_counts(c, p) for c, p in zip(counts, observables, strict=False)
            ]
        run_seconds = self._since(job.started_at or job.submitted_at)
        measured = result.metadata.get("run_seconds")
        phases = {**job.phases, "run": run_seconds, "post_process": time.perf_counter() - post}
        if isinstance(measured, int | float) and 0 <= measured <= self._since(job.submitted_at):
            # The provider timed the run itself: the rest of the wait was queue (and polling).
            phases["run"] = float(measured)
            phases["queue"] = max(
                0.0, self._since(job.submitted_at) - measured - phases.get("transpile", 0.0)
            )
        elif "queue" not in phases and job.submitted_at and job.started_at:
            # From submission to start, less the transpilation done on the way.
            waited = (job.started_at - job.submitted_at).total_seconds()
            phases["queue"] = max(0.0, waited - phases.get("transpile", 0.0))
        # What the provider charged, when it says (IonQ's cost_usd): the job's actual cost.
        cost = result.metadata.get("cost_usd")
        try:
            billed = {"actual_cost_usd": float(cost)} if cost is not None else {}
        except (TypeError, ValueError):
            billed = {}
        for old in (job.state, S.CANCELLING):
            at = self.ledger.complete(
                job.id,
                old,
                counts=counts,
                metadata=result.metadata,
                actor=self.holder,
                holder=self.holder,
                phases=phases,
                **billed,
                message=None if old is job.state else "finished before the cancel took effect",
            )
            if at is not None:
                # Keep the caller's copy whole, so it need not read the job back.
                job.state, job.phases = S.COMPLETED, phases
                job.updated_at = job.finished_at = at
                job.actual_cost_usd = billed.get("actual_cost_usd", job.actual_cost_usd)
                job.result = JobResult.model_construct(
                    counts=counts, shots=job.shots, metadata=dict(result.metadata)
                )
                self.handles.pop(job.id, None)
                return None
            if old is S.CANCELLING:
                break
            fresh = self._refresh(job)
            if fresh is None or fresh.state is not S.CANCELLING:
                break
        self.handles.pop(job.id, None)
        return None

    # -- cancelling and timeouts ---------------------------------------------------------------

    def _cancel(self, job: JobRecord, backend: Backend) -> float | None:
        handle = self.handles.pop(job.id, None) or self._reattach(job, backend)
        if handle is not None:
            try:
                handle.cancel()
            except ProviderError as exc:
                self.ledger.note(
                    job.id, "note", self.holder, redact(f"provider cancel failed: {exc}")
                )
        self._move(job, S.CANCELLING, S.CANCELLED, "cancelled")
        return None

    def _timed_out(self, job: JobRecord) -> bool:
        remaining = self._remaining(job)
        return remaining is not None and remaining <= 0

    def _remaining(self, job: JobRecord) -> float | None:
        if job.timeout is None or job.submitted_at is None:
            return None
        return job.timeout - self._since(job.submitted_at)

    def _time_out(self, job: JobRecord) -> None:
        handle = self.handles.pop(job.id, None)
        if handle is not None:
            with contextlib.suppress(ProviderError):
                handle.cancel()
        self._end(job, S.FAILED, f"timed out after {job.timeout:g} s", "timeout")
        return None

    # -- provider errors -----------------------------------------------------------------------

    def _provider_error(
        self, job: JobRecord, backend: Backend, exc: ProviderError, *, during: str
    ) -> float | None:
        kind = exc.kind
        if kind == "ambiguous" and backend.capabilities.simulator:
            kind = "transient"  # re-running a simulator costs nothing and hurts no one
        if kind == "transient":
            attempts = job.attempts + 1
            if attempts >= self.retry.max_attempts:
                self._end(job, S.FAILED, f"gave up after {attempts} attempts: {exc}", "transient")
                return None
            delay = self.retry.retry_delay(attempts, self.rng)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                # The provider said when to come back (HTTP 429 Retry-After): never sooner.
                delay = max(delay, min(float(retry_after), self.retry.cap))
            self.ledger.note(
                job.id,
                "retry",
                self.holder,
                redact(
                    f"transient error during {during} (attempt {attempts}), retrying "
                    f"in {delay:.1f} s: {exc}"
                ),
            )
            self.ledger.update_held(
                job.id,
                self.holder,
                attempts=attempts,
                error=redact(str(exc)),
                error_kind="transient",
                next_attempt_at=_after(self.ledger.clock(), delay),
            )
            if during in ("submit", "result"):
                # Nothing to wait on any more (a refused submit, a dead local worker): the next
                # step submits again, or re-runs the simulator job.
                self.handles.pop(job.id, None)
            return delay
        if kind == "auth" and during != "submit":
            self._end(
                job,
                S.NEEDS_ATTENTION,
                f"the credential stopped working while the job was at the provider: {exc}",
                "auth",
            )
            return None
        if kind == "ambiguous":
            self._end(
                job,
                S.NEEDS_ATTENTION,
                f"outcome unknown during {during} (never resubmitted blindly): {exc}",
                "ambiguous",
            )
            return None
        # Adapters say what was wrong (a missing key, a refused one); this says what kind.
        prefix = "credential problem: " if kind == "auth" else ""
        self._end(job, S.FAILED, f"{prefix}{exc}", kind)
        return None

    # -- small helpers -------------------------------------------------------------------------

    def _options(self, job: JobRecord) -> dict[str, Any]:
        """What an adapter gets besides the circuits: the job's options, its id, tags, owner and
        that owner's vault (where a ``credential`` alias is looked up)."""
        options = {**job.options, "job_id": job.id, "tags": dict(job.tags), "owner": job.owner}
        if self.vault is not None:
            options["vault"] = self.vault.for_owner(job.owner)
        return options

    def _move(
        self, job: JobRecord, old: JobState, new: JobState, message: str | None, **fields: Any
    ) -> bool:
        """CAS under our lease; on success, keep the in-memory record in step."""
        at = self.ledger.transition(
            job.id, old, new, actor=self.holder, holder=self.holder, message=message, **fields
        )
        if at is not None:
            # The times the ledger recorded, so phase durations match the event log.
            job.state = new
            if new is S.SUBMITTING and job.submitted_at is None:
                job.submitted_at = at
            if new is S.RUNNING and job.started_at is None:
                job.started_at = at
            for key in (
                "phases",
                "provider_job_id",
                "attempts",
                "error",
                "error_kind",
                "queue_position",
            ):
                if key in fields:
                    setattr(job, key, fields[key])
        return at is not None

    def _end(self, job: JobRecord, new: JobState, error: str | None, kind: str | None) -> None:
        """Move the job to a final (or NEEDS_ATTENTION) state from whatever state it is in."""
        self.handles.pop(job.id, None)
        error = None if error is None else redact(error)
        current = job.state
        for _ in range(3):
            if current.terminal or current is new:
                return
            if not is_legal(current, new):
                # e.g. CANCELLING -> NEEDS_ATTENTION: a cancel was asked for, honour it.
                new = S.CANCELLED if current is S.CANCELLING else S.FAILED
            if self.ledger.transition(
                job.id,
                current,
                new,
                actor=self.holder,
                holder=self.holder,
                message=error,
                error=error,
                error_kind=kind,
            ):
                job.state = new
                return
            fresh = self._refresh(job)
            if fresh is None or self.ledger.lease_holder(job.id) != self.holder:
                return
            current = fresh.state

    def let_go(self, job_id: str) -> None:
        """Stop local work on a job and forget its handle (the caller gave up waiting; an
        engine host will take the job over)."""
        handle = self.handles.pop(job_id, None)
        if handle is not None:
            self._abandon(job_id, handle)

    def _abandon(self, job_id: str, handle: JobHandle) -> None:
        self.handles.pop(job_id, None)
        try:
            handle.cancel()
        except Exception:  # best effort; the job is no longer ours
            log.debug("cancel of abandoned handle for %s failed", job_id, exc_info=True)

    def _refresh(self, job: JobRecord) -> JobRecord | None:
        try:
            return self.ledger.get_job(job.id)
        except QmlopsError:
            return None

    def _next_poll(self, job: JobRecord, polls: int, **fields: Any) -> float:
        delay = self.retry.poll_delay(polls, self.rng)
        if "queue_position" in fields and fields["queue_position"] == job.queue_position:
            del fields["queue_position"]  # unchanged: nothing to write
        self.ledger.update_held(
            job.id,
            self.holder,
            polls=polls + 1,
            next_attempt_at=_after(self.ledger.clock(), delay),
            **fields,
        )
        job.polls = polls + 1
        if "queue_position" in fields:
            job.queue_position = fields["queue_position"]
        return delay

    def _since(self, moment: datetime | None) -> float:
        if moment is None:
            return 0.0
        return max(0.0, (self.ledger.clock() - moment).total_seconds())


def _after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
