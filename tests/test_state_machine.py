"""Rule-based test of the job state machine as the engine drives it.

Hypothesis interleaves submits, engine steps, provider errors of every class, provider-side
failures, cancels, engine crashes (handles lost, leases left behind), restarts and clock jumps.
After every step the ledger must show: only legal transitions in each job's event log, a chain
with no gaps, terminal states that never change, a provider job id set at most once, and a
result exactly when the job COMPLETED. Remote providers are the fakes of qmlops_testing; Aer
is real.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from qmlops_testing import BELL_QASM2, FakeClock, FakeCloud, make_fake_backends

from qmlops_jupyter.backends import BackendRegistry
from qmlops_jupyter.circuits import prepare
from qmlops_jupyter.config import BackendsFile
from qmlops_jupyter.engine import Engine, RetryPolicy
from qmlops_jupyter.ledger import Ledger
from qmlops_jupyter.states import TERMINAL_STATES, JobState, is_legal

S = JobState
_TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="qmlops-sm-"))
_TEMPLATE = _TEMPLATE_DIR / "template.sqlite"
_PREPARED = None


def _template() -> Path:
    """A migrated empty ledger, copied for each example (migrating each time is slow)."""
    if not _TEMPLATE.exists():
        Ledger.open(f"sqlite:///{_TEMPLATE}").close()
    return _TEMPLATE


class JobLifecycle(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        global _PREPARED
        self.dir = Path(tempfile.mkdtemp(dir=_TEMPLATE_DIR))
        shutil.copy(_template(), self.dir / "l.sqlite")
        self.clock = FakeClock()
        self.ledger = Ledger.open(f"sqlite:///{self.dir / 'l.sqlite'}", clock=self.clock)
        self.cloud = FakeCloud()
        self.registry = BackendRegistry(
            BackendsFile.model_validate(
                {
                    "backends": {
                        "fakeqpu": {"max_concurrent_jobs": 2},
                        "fakesim": {},
                        "aer": {"max_concurrent_jobs": 2},
                    }
                }
            )
        )
        qpu, sim = make_fake_backends(self.cloud)
        self.registry.register("fakeqpu", qpu)
        self.registry.register("fakesim", sim)
        self.generation = 0
        self.engine = self._new_engine()
        self.job_ids: list[str] = []
        self.provider_ids: dict[str, str] = {}
        if _PREPARED is None:
            _PREPARED = prepare(BELL_QASM2)
        self.prepared = _PREPARED

    def _new_engine(self) -> Engine:
        self.generation += 1
        return Engine(
            self.ledger,
            self.registry,
            holder=f"engine-{self.generation}",
            lease_ttl=10,
            retry=RetryPolicy(max_attempts=3, base=1, cap=4, poll_base=1, poll_cap=4),
        )

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.ledger.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules ---------------------------------------------------------------------------------

    @rule(
        backend=st.sampled_from(["fakeqpu", "fakeqpu", "fakesim", "aer"]),
        timeout=st.sampled_from([None, None, 20.0]),
    )
    def submit(self, backend: str, timeout: float | None) -> None:
        job, created = self.ledger.create_job(
            owner="u",
            backend=backend,
            shots=16,
            prepared=self.prepared,
            request_hash=f"h{len(self.job_ids)}",
            actor="user",
            timeout=timeout,
        )
        assert created
        self.job_ids.append(job.id)

    @rule()
    def step(self) -> None:
        self.engine.step()

    @rule(seconds=st.sampled_from([0.5, 2, 5, 15]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(kind=st.sampled_from(["transient", "permanent", "auth", "ambiguous"]))
    def next_submit_fails(self, kind: str) -> None:
        self.cloud.submit_script.append(kind)

    @rule(kind=st.sampled_from(["transient", "permanent", "auth", "ambiguous"]))
    def next_poll_fails(self, kind: str) -> None:
        self.cloud.poll_script.append(kind)

    @rule(data=st.data())
    def provider_fails_a_job(self, data: st.DataObject) -> None:
        if self.cloud.jobs:
            pid = data.draw(st.sampled_from(sorted(self.cloud.jobs)))
            self.cloud.jobs[pid].fail_with = "calibration error at the fake provider"

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.job_ids:
            return
        job_id = data.draw(st.sampled_from(self.job_ids))
        try:
            self.ledger.request_cancel(job_id, actor="user")
        except Exception as exc:  # cancelling a finished job is refused, by design
            assert "already" in str(exc)

    @rule()
    def crash(self) -> None:
        """The engine dies: its in-memory handles are lost, its leases stay until expiry."""
        self.engine = self._new_engine()

    @rule()
    def clean_restart(self) -> None:
        self.ledger.release(self.engine.holder)
        self.engine = self._new_engine()

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def event_log_is_a_legal_chain(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for job_id in self.job_ids:
            job = self.ledger.get_job(job_id)
            moves = [e for e in self.ledger.events(job_id) if e.kind == "transition"]
            assert moves[0].from_state is None and moves[0].to_state is S.CREATED
            for before, after in itertools.pairwise(moves):
                assert after.from_state is before.to_state, (job_id, before, after)
                assert is_legal(after.from_state, after.to_state), after
                assert before.to_state not in TERMINAL_STATES, "a terminal state changed"
            assert moves[-1].to_state is job.state
            if job.state in TERMINAL_STATES:
                assert job.finished_at is not None
            assert (job.result is not None) == (job.state is S.COMPLETED)

    @invariant()
    def provider_job_id_set_at_most_once(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for job_id in self.job_ids:
            pid = self.ledger.get_job(job_id).provider_job_id
            if job_id in self.provider_ids:
                assert pid == self.provider_ids[job_id]
            elif pid is not None:
                self.provider_ids[job_id] = pid

    @invariant()
    def one_result_per_job(self) -> None:
        if not hasattr(self, "ledger"):
            return
        with self.ledger.engine.connect() as conn:
            dupes = conn.execute(
                sa.text("SELECT job_id FROM job_results GROUP BY job_id HAVING count(*) > 1")
            ).all()
        assert dupes == []


JobLifecycle.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobLifecycle = JobLifecycle.TestCase


def test_every_job_can_finish_after_chaos() -> None:
    """After any history, with errors stopped and time passing, no job is stuck in an active
    state: the engine finishes everything (or hands it to a person)."""
    machine = JobLifecycle()
    machine.setup()
    try:
        for backend in ["fakeqpu", "fakesim", "aer", "fakeqpu"]:
            machine.submit(backend, None)
        machine.next_submit_fails("transient")
        machine.step()
        machine.crash()
        machine.next_poll_fails("ambiguous")
        for _ in range(30):
            machine.time_passes(15)
            machine.step()
        states = [machine.ledger.get_job(j).state for j in machine.job_ids]
        assert all(s in TERMINAL_STATES | {S.NEEDS_ATTENTION} for s in states), states
        machine.event_log_is_a_legal_chain()
    finally:
        machine.teardown()
