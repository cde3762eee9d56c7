"""The engine's decisions: submit, poll with backoff, recover, retry, cancel, time out, limits.

Remote providers are played by the fake backends of qmlops_testing (no cloud is reachable);
Aer is real.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from qmlops_testing import BELL_QASM2, FakeClock, FakeCloud, make_fake_backends, slow_circuits

from qmlops_jupyter.backends import BackendRegistry
from qmlops_jupyter.circuits import prepare
from qmlops_jupyter.client import Client
from qmlops_jupyter.config import BackendsFile, Settings
from qmlops_jupyter.engine import Engine, RetryPolicy
from qmlops_jupyter.ledger import Ledger
from qmlops_jupyter.states import JobState

S = JobState


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def setup(tmp_path: Path, cloud: FakeCloud, clock: FakeClock):
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}", clock=clock)
    registry = BackendRegistry(
        BackendsFile.model_validate(
            {
                "backends": {
                    "aer": {"max_concurrent_jobs": 2},
                    "fakeqpu": {"max_concurrent_jobs": 3, "max_shots": 1000},
                    "fakesim": {},
                }
            }
        )
    )
    qpu, sim = make_fake_backends(cloud)
    registry.register("fakeqpu", qpu)
    registry.register("fakesim", sim)
    yield ledger, registry
    ledger.close()


def new_job(ledger: Ledger, backend: str = "fakeqpu", key: str | None = None, **kw) -> str:
    job, _ = ledger.create_job(
        owner="u",
        backend=backend,
        shots=100,
        prepared=prepare(BELL_QASM2),
        request_hash=key or "x",
        actor="test",
        idempotency_key=key,
        **kw,
    )
    return job.id


def engine_for(ledger, registry, holder="e1", **kw) -> Engine:
    retry = RetryPolicy(max_attempts=3, base=1.0, cap=4.0, poll_base=1.0, poll_cap=4.0)
    return Engine(ledger, registry, holder=holder, lease_ttl=10, retry=retry, **kw)


def run_until_settled(engine: Engine, clock: FakeClock, steps: int = 40) -> None:
    for _ in range(steps):
        engine.step()
        clock.advance(5)


def transitions(ledger: Ledger, job_id: str) -> list[tuple[str | None, str | None]]:
    return [
        (e.from_state and e.from_state.value, e.to_state.value)
        for e in ledger.events(job_id)
        if e.kind == "transition"
    ]


def test_remote_job_is_queued_polled_and_completed(setup, clock) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    engine = engine_for(ledger, registry)
    engine.step()
    job = ledger.get_job(job_id)
    assert job.state is S.QUEUED and job.provider_job_id == "fake-1"
    assert job.polls == 1 and job.attempts == 0
    engine.step()  # not due yet: the next poll waits for its backoff
    assert ledger.get_job(job_id).polls == 1
    run_until_settled(engine, clock)
    job = ledger.get_job(job_id)
    assert job.state is S.COMPLETED and job.result.counts == [{"00": 100}]
    assert transitions(ledger, job_id) == [
        (None, "CREATED"),
        ("CREATED", "SUBMITTING"),
        ("SUBMITTING", "QUEUED"),
        ("QUEUED", "RUNNING"),
        ("RUNNING", "COMPLETED"),
    ]
    assert set(job.phases) >= {"queue", "run", "post_process"}


def test_queue_position_is_kept_while_queued_and_cleared_when_running(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    engine = engine_for(ledger, registry)
    engine.step()  # submitted: QUEUED, no status read yet
    cloud.jobs["fake-1"].polls_to_run = 3
    cloud.jobs["fake-1"].polls_to_finish = 4
    clock.advance(5)
    engine.step()  # the provider says: third in its queue
    job = ledger.get_job(job_id)
    assert job.state is S.QUEUED and job.queue_position == 3
    assert job.model_dump(mode="json")["queue_position"] == 3
    run_until_settled(engine, clock)
    job = ledger.get_job(job_id)
    assert job.state is S.COMPLETED and job.queue_position is None


def test_poll_backoff_grows(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    engine = engine_for(ledger, registry)
    engine.driver.retry.poll_cap = 1000
    engine.step()
    cloud.jobs["fake-1"].polls_to_run = 100  # keep it queued
    gaps = []
    for _ in range(5):
        from qmlops_jupyter.ledger.store import jobs as jobs_table

        with ledger.engine.connect() as conn:
            nxt, updated = conn.execute(
                sa.select(jobs_table.c.next_attempt_at, jobs_table.c.updated_at).where(
                    jobs_table.c.id == job_id
                )
            ).one()
        gaps.append((nxt - updated).total_seconds())
        clock.advance(2000)
        engine.step()
    # Doubling each time (with +-20% jitter): every gap is clearly larger than the last.
    assert all(b > a * 1.3 for a, b in itertools.pairwise(gaps)), gaps


def test_transient_submit_errors_retry_with_backoff_then_succeed(setup, clock, cloud) -> None:
    ledger, registry = setup
    cloud.submit_script.extend(["transient", "transient"])
    job_id = new_job(ledger)
    engine = engine_for(ledger, registry)
    engine.step()
    job = ledger.get_job(job_id)
    assert job.state is S.SUBMITTING and job.attempts == 1 and job.error_kind == "transient"
    engine.step()  # backoff not over: nothing happens
    assert cloud.submits == 1
    run_until_settled(engine, clock)
    job = ledger.get_job(job_id)
    assert job.state is S.COMPLETED and cloud.submits == 3
    assert sum(e.kind == "retry" for e in ledger.events(job_id)) == 2


def test_transient_errors_give_up_after_max_attempts(setup, clock, cloud) -> None:
    ledger, registry = setup
    cloud.submit_script.extend(["transient"] * 10)
    job_id = new_job(ledger)
    run_until_settled(engine_for(ledger, registry), clock)
    job = ledger.get_job(job_id)
    assert job.state is S.FAILED and "gave up after 3 attempts" in job.error


@pytest.mark.parametrize(
    ("kind", "backend", "state"),
    [
        ("permanent", "fakeqpu", S.FAILED),
        ("auth", "fakeqpu", S.FAILED),
        ("ambiguous", "fakeqpu", S.NEEDS_ATTENTION),
        ("ambiguous", "fakesim", S.COMPLETED),  # simulators are simply retried
    ],
)
def test_submit_error_classes(setup, clock, cloud, kind, backend, state) -> None:
    ledger, registry = setup
    cloud.submit_script.append(kind)
    job_id = new_job(ledger, backend=backend)
    run_until_settled(engine_for(ledger, registry), clock)
    job = ledger.get_job(job_id)
    assert job.state is state
    if state is not S.COMPLETED:
        assert f"fake {kind} error while submitting" in job.error
        assert job.error_kind == kind


def test_auth_error_while_polling_needs_attention(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    engine = engine_for(ledger, registry)
    engine.step()
    cloud.poll_script.append("auth")
    run_until_settled(engine, clock)
    job = ledger.get_job(job_id)
    assert job.state is S.NEEDS_ATTENTION and job.error_kind == "auth"


def test_restarted_engine_reattaches_remote_job(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    first = engine_for(ledger, registry, holder="first")
    first.step()
    assert ledger.get_job(job_id).state is S.QUEUED
    del first  # crashed: its handles are gone, its lease stays until it expires
    second = engine_for(ledger, registry, holder="second")
    second.step()
    assert ledger.lease_holder(job_id) == "first"  # not taken while the lease lives
    clock.advance(11)
    run_until_settled(second, clock)
    job = ledger.get_job(job_id)
    assert job.state is S.COMPLETED and cloud.submits == 1  # re-attached, not resubmitted
    messages = [e.message for e in ledger.events(job_id)]
    assert any("re-attached to provider job fake-1" in (m or "") for m in messages)


def test_qpu_submission_cut_off_is_never_resubmitted(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    ledger.claim("dead", 10, job_id=job_id)
    ledger.transition(job_id, S.CREATED, S.SUBMITTING, actor="dead", holder="dead")
    clock.advance(11)
    run_until_settled(engine_for(ledger, registry), clock)
    job = ledger.get_job(job_id)
    assert job.state is S.NEEDS_ATTENTION and cloud.submits == 0
    assert "never resubmitted automatically" in job.error


def test_cancel_reaches_the_provider(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger)
    engine = engine_for(ledger, registry)
    engine.step()
    assert ledger.request_cancel(job_id, actor="user").state is S.CANCELLING
    run_until_settled(engine, clock)
    assert ledger.get_job(job_id).state is S.CANCELLED
    assert cloud.jobs["fake-1"].cancelled


def test_job_timeout_fails_and_cancels(setup, clock, cloud) -> None:
    ledger, registry = setup
    job_id = new_job(ledger, timeout=30.0)
    engine = engine_for(ledger, registry)
    engine.step()
    cloud.jobs["fake-1"].polls_to_run = 10_000
    run_until_settled(engine, clock, steps=20)
    job = ledger.get_job(job_id)
    assert job.state is S.FAILED and job.error_kind == "timeout" and "timed out" in job.error
    assert cloud.jobs["fake-1"].cancelled


def test_max_concurrent_jobs_is_enforced(setup, clock) -> None:
    ledger, registry = setup
    ids = [new_job(ledger, key=f"k{i}") for i in range(5)]
    engine = engine_for(ledger, registry)
    engine.step()
    states = [ledger.get_job(i).state for i in ids]
    assert states.count(S.QUEUED) == 3 and states.count(S.CREATED) == 2
    run_until_settled(engine, clock)
    assert all(ledger.get_job(i).state is S.COMPLETED for i in ids)


def test_unknown_backend_fails_job_with_message(setup, clock) -> None:
    ledger, registry = setup
    job_id = new_job(ledger, backend="gone")
    run_until_settled(engine_for(ledger, registry), clock)
    job = ledger.get_job(job_id)
    assert job.state is S.FAILED and "unknown backend 'gone'" in job.error


# -- the asyncio host with real Aer --------------------------------------------------------------


def _client(home: Path, max_concurrent: int = 10) -> Client:
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        f"backends:\n  aer:\n    max_concurrent_jobs: {max_concurrent}\n"
    )
    return Client(Settings.from_env(home=home))


def test_async_engine_runs_queued_aer_jobs_and_wakes_on_submit(tmp_path: Path) -> None:
    client = _client(tmp_path / "home")

    async def scenario() -> tuple[float, list[JobState]]:
        engine = Engine(
            client.ledger,
            client.registry,
            tick=30.0,
            lease_ttl=10,
            wake_dir=client.settings.home / "run",
        )
        await engine.start()
        try:
            started = time.monotonic()
            jobs = [client.submit(BELL_QASM2, shots=64, seed=i) for i in range(3)]
            while not all(j.state.terminal for j in jobs):
                await asyncio.sleep(0.02)
                assert time.monotonic() - started < 20
            return time.monotonic() - started, [j.state for j in jobs]
        finally:
            await engine.stop()

    elapsed, states = asyncio.run(scenario())
    assert states == [S.COMPLETED] * 3
    # The tick is 30 s: finishing well before it shows the wake socket worked.
    assert elapsed < 10
    assert client.ledger.live_engines() == []  # a clean stop is recorded


def test_async_engine_cancels_a_running_aer_job(tmp_path: Path) -> None:
    client = _client(tmp_path / "home")

    async def scenario() -> JobState:
        engine = Engine(
            client.ledger,
            client.registry,
            tick=0.1,
            lease_ttl=3,
            wake_dir=client.settings.home / "run",
        )
        await engine.start()
        try:
            job = client.submit(slow_circuits(count=6), shots=10)
            while job.state is not S.RUNNING:
                await asyncio.sleep(0.05)
            job.cancel()
            deadline = time.monotonic() + 10
            while not job.state.terminal and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return job.state
        finally:
            await engine.stop()

    assert asyncio.run(scenario()) is S.CANCELLED


def test_in_process_wait_runs_aer_under_a_lease(tmp_path: Path) -> None:
    client = _client(tmp_path / "home")
    job = client.submit(BELL_QASM2, shots=200, wait=True, seed=5)
    record = job.record
    assert record.state is S.COMPLETED and record.result.counts[0].keys() <= {"00", "11"}
    assert sum(record.result.counts[0].values()) == 200
    assert record.phases.keys() >= {"validate", "transpile", "queue", "run", "post_process"}
    events = client.events(job.id)
    actors = {e.actor for e in events if e.kind == "transition" and e.from_state}
    assert len(actors) == 1 and next(iter(actors)).startswith("client:")
    assert client.ledger.lease_holder(job.id) is None  # released when terminal


def test_wait_timeout_leaves_the_job_for_an_engine(tmp_path: Path) -> None:
    from qmlops_jupyter.errors import WaitTimeout

    client = _client(tmp_path / "home")
    with pytest.raises(WaitTimeout, match="still RUNNING"):
        client.submit(slow_circuits(count=4), shots=10, wait=True, wait_timeout=0.5)
    job = client.jobs()[0]
    assert client.ledger.lease_holder(job.id) is None  # released for an engine to take


def test_engine_host_stays_responsive_during_a_long_simulation(tmp_path: Path) -> None:
    """Aer holds the GIL while it simulates; the host runs it in a worker process, so its event
    loop (heartbeats, lease renewals, and in a server every request) keeps going."""
    client = _client(tmp_path / "home")

    async def scenario() -> tuple[float, JobState]:
        engine = Engine(
            client.ledger,
            client.registry,
            tick=0.1,
            lease_ttl=3,
            wake_dir=client.settings.home / "run",
        )
        await engine.start()
        try:
            job = client.submit(slow_circuits(count=3), shots=10)
            worst, last = 0.0, time.monotonic()
            deadline = last + 60
            while not job.record.terminal and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                worst, last = max(worst, now - last), now
                job.refresh()
            return worst, job.record.state
        finally:
            await engine.stop()

    worst_gap, state = asyncio.run(scenario())
    assert state is S.COMPLETED
    # Run in the loop's process, the three circuits would hold the GIL for about 3 s at once;
    # the bound leaves room for a machine loaded by other test runs (gaps of 0.5-1 s seen).
    assert worst_gap < 1.5, f"event loop froze for {worst_gap:.2f} s"


def test_waiting_caller_runs_big_jobs_in_a_worker_and_small_ones_in_thread(
    tmp_path: Path,
) -> None:
    """A notebook waiting on a big simulation keeps its other threads (widgets, comms) alive;
    a small job runs in the caller's thread, as fast as Aer itself."""
    import gc
    import threading

    client = _client(tmp_path / "home")
    aer = client.registry.get("aer")
    client.submit(BELL_QASM2, shots=100, wait=True)
    assert not aer.workers.started  # small: no worker process was started

    gaps: list[float] = []
    done = threading.Event()

    def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            time.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    # What is measured is whether the simulation holds this process's GIL, not the garbage
    # collector: late in a full run the test process's heap is large, and one full collection
    # of it stalled every thread for 0.8 s on a quiet machine (nearly 3 s on a loaded one).
    gc.collect()
    gc.disable()
    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        job = client.submit(slow_circuits(count=2), shots=10, wait=True)
    finally:
        done.set()
        thread.join()
        gc.enable()
    assert job.record.state is S.COMPLETED
    assert aer.workers.started
    # The bound leaves room for a loaded machine (two CPUs busy with the worker's simulation and
    # a full suite's leftovers); that the job ran in a worker is asserted above.
    assert max(gaps) < 1.5, f"the caller's other threads froze for {max(gaps):.2f} s"
    aer.close()


def test_cancelling_one_aer_job_does_not_lose_its_neighbour(tmp_path: Path) -> None:
    """Cancelling a running simulation kills the worker processes; a job that shared them is
    re-run, not failed."""
    client = _client(tmp_path / "home")

    async def scenario() -> tuple[JobState, JobState, list[str]]:
        engine = Engine(
            client.ledger,
            client.registry,
            tick=0.1,
            lease_ttl=5,
            wake_dir=client.settings.home / "run",
            retry=RetryPolicy(base=0.1, cap=0.5),
        )
        await engine.start()
        try:
            victim = client.submit(slow_circuits(count=4), shots=10, name="victim")
            neighbour = client.submit(slow_circuits(count=2), shots=10, name="neighbour")
            deadline = time.monotonic() + 60
            while not (victim.state is S.RUNNING and neighbour.state is S.RUNNING):
                await asyncio.sleep(0.05)
                assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
            victim.cancel()
            while not (victim.state.terminal and neighbour.state.terminal):
                await asyncio.sleep(0.05)
                assert time.monotonic() < deadline
            kinds = [e.kind for e in neighbour.events()]
            return victim.state, neighbour.state, kinds
        finally:
            await engine.stop()

    victim, neighbour, kinds = asyncio.run(scenario())
    assert victim is S.CANCELLED
    assert neighbour is S.COMPLETED
    # Both ran side by side in the worker pool, so the kill reached the neighbour too: it was
    # retried and re-run, then completed.
    assert "retry" in kinds and "recovered" in kinds, kinds


def test_the_engine_runs_small_local_jobs_in_its_thread_and_big_ones_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Bell pair costs less than the trip to a worker process: the engine runs it in its own
    thread. A big simulation still goes to a worker, so the host keeps answering."""
    client = _client(tmp_path / "home")
    engine = Engine(client.ledger, client.registry, lease_ttl=10)
    aer = client.registry.get("aer")
    sent: list[Any] = []
    real_submit = aer.workers.submit

    def counting(fn: Any, *args: Any) -> Any:
        sent.append(fn)
        return real_submit(fn, *args)

    monkeypatch.setattr(aer.workers, "submit", counting)
    small = client.submit(BELL_QASM2, shots=100, seed=3)
    big = client.submit(slow_circuits(count=1, depth=6), shots=10)
    deadline = time.monotonic() + 60
    while not (small.state.terminal and big.state.terminal):
        engine.step()
        assert time.monotonic() < deadline
    assert small.state is S.COMPLETED and big.state is S.COMPLETED
    assert (
        small.result().counts[0]
        == Client(client.settings)
        .submit(BELL_QASM2, shots=100, seed=3, wait=True)
        .result()
        .counts[0]
    )
    assert len(sent) == 1  # the big one only
    aer.close()


def test_job_events_are_read_past_a_position_and_wait_for_the_next(tmp_path: Path) -> None:
    """``Client.job_events``: the job_status changes of this owner after a sequence number,
    in order; a wait ends as soon as a job moves; other owners' jobs never appear."""
    import threading

    client = _client(tmp_path / "home")
    nothing, start = client.job_events()
    assert nothing == []
    job = client.submit(BELL_QASM2, shots=10, wait=True)
    changes, after = client.job_events(start)
    assert [(c["old_state"], c["new_state"]) for c in changes] == [
        (None, "CREATED"),
        ("CREATED", "SUBMITTING"),
        ("SUBMITTING", "RUNNING"),
        ("RUNNING", "COMPLETED"),
    ]
    assert {c["job_id"] for c in changes} == {job.id}
    assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
    assert changes[-1]["backend"] == "aer" and changes[-1]["time"].startswith("20")
    assert client.job_events(after) == ([], after)

    other = Client(Settings.from_env(home=tmp_path / "home", owner="someone-else"))
    other.submit(BELL_QASM2, shots=10, wait=True)
    assert client.job_events(after)[0] == []  # not ours; the position may move past it

    later = threading.Timer(0.5, lambda: client.submit(BELL_QASM2, shots=10, wait=True))
    later.start()
    began = time.monotonic()
    changes, _ = client.job_events(after, wait=20)
    later.join()
    assert changes and time.monotonic() - began < 10
    mine, _ = client.job_events(start, job_ids=[job.id])
    assert len(mine) == 4 and {c["job_id"] for c in mine} == {job.id}
