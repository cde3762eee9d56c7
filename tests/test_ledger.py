"""The ledger on SQLite and on a real PostgreSQL (QMLOPS_TEST_POSTGRES_URL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from qmlops_testing import BELL_QASM2, FakeClock

from qmlops_jupyter.circuits import prepare
from qmlops_jupyter.errors import (
    IdempotencyConflict,
    IllegalTransition,
    InvalidRequest,
    JobNotFound,
)
from qmlops_jupyter.ledger import HEAD_REVISION, Ledger
from qmlops_jupyter.ledger.migrate import current_revision
from qmlops_jupyter.states import TRANSITIONS, JobState

S = JobState


def make_job(
    ledger: Ledger,
    owner: str = "alice",
    key: str | None = None,
    backend: str = "aer",
    shots: int = 100,
    request_hash: str = "h1",
    **kw,
):
    return ledger.create_job(
        owner=owner,
        backend=backend,
        shots=shots,
        prepared=prepare(BELL_QASM2),
        request_hash=request_hash,
        actor="test",
        idempotency_key=key,
        **kw,
    )


def test_migrations_apply_on_open_and_match_the_orm(ledger: Ledger) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from qmlops_jupyter.ledger.orm import Base

    assert current_revision(ledger) == HEAD_REVISION
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"ORM and migrations differ: {diff}"
    # Opening again finds the head revision and migrates nothing.
    again = Ledger.open(ledger.engine.url.render_as_string(hide_password=False))
    assert current_revision(again) == HEAD_REVISION
    again.close()


def test_head_revision_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from qmlops_jupyter.ledger.migrate import MIGRATIONS, alembic_config

    class _L:
        engine = sa.create_engine("sqlite://")

    script = ScriptDirectory.from_config(alembic_config(_L()))  # type: ignore[arg-type]
    assert script.get_current_head() == HEAD_REVISION
    assert MIGRATIONS.is_dir()


def test_sqlite_is_wal_with_full_sync(tmp_path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}")
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    ledger.close()


def test_create_get_and_event(ledger: Ledger) -> None:
    job, created = make_job(ledger, name="bell")
    assert created and job.state is S.CREATED and job.owner == "alice"
    again = ledger.get_job(job.id)
    assert again.id == job.id and again.name == "bell" and again.circuits[0].num_qubits == 2
    assert again.circuits[0].gate_counts == {"h": 1, "cx": 1, "measure": 2}
    assert ledger.get_job(job.id[:6]).id == job.id  # unique prefix
    events = ledger.events(job.id)
    assert [(e.from_state, e.to_state) for e in events] == [(None, S.CREATED)]
    with pytest.raises(JobNotFound):
        ledger.get_job("nope-not-there")
    with pytest.raises(JobNotFound):
        ledger.get_job(job.id, owner="mallory")  # other owners' jobs are invisible


def test_every_row_has_an_owner(ledger: Ledger) -> None:
    job, _ = make_job(ledger, owner="bob")
    ledger.claim("h", 30, job_id=job.id)
    assert ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="t", holder="h")
    assert ledger.transition(job.id, S.SUBMITTING, S.RUNNING, actor="t", holder="h")
    assert ledger.complete(
        job.id, S.RUNNING, counts=[{"00": 100}], metadata={}, actor="t", holder="h"
    )
    ledger.note(job.id, "note", "t", "hello")
    with ledger.engine.connect() as conn:
        for table in ("jobs", "job_events", "job_payloads", "job_results"):
            owners = conn.execute(sa.text(f"SELECT DISTINCT owner FROM {table}")).scalars().all()
            assert owners == ["bob"], table


def test_compare_and_set_transitions(ledger: Ledger) -> None:
    job, _ = make_job(ledger)
    assert ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="a")
    # The same CAS again finds the job no longer CREATED.
    assert not ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="b")
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, S.SUBMITTING, S.CREATED, actor="a")
    assert ledger.transition(job.id, S.SUBMITTING, S.FAILED, actor="a", error="boom")
    for new in S:
        if new is not S.FAILED:
            with pytest.raises(IllegalTransition):
                ledger.transition(job.id, S.FAILED, new, actor="a")
    record = ledger.get_job(job.id)
    assert record.state is S.FAILED and record.error == "boom" and record.finished_at
    kinds = [(e.from_state, e.to_state) for e in ledger.events(job.id)]
    assert kinds == [(None, S.CREATED), (S.CREATED, S.SUBMITTING), (S.SUBMITTING, S.FAILED)]


def test_terminal_states_have_no_way_out() -> None:
    for state in (S.COMPLETED, S.FAILED, S.CANCELLED):
        assert TRANSITIONS[state] == frozenset()


def test_lease_fences_transitions(ledger: Ledger) -> None:
    job, _ = make_job(ledger)
    assert ledger.claim("engine-a", 30, job_id=job.id)
    assert not ledger.claim("engine-b", 30, job_id=job.id)  # held
    assert not ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="b", holder="engine-b")
    assert ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="a", holder="engine-a")


def test_expired_lease_is_taken_over(ledger_url: str) -> None:
    clock = FakeClock()
    ledger = Ledger.open(ledger_url, clock=clock)
    job, _ = make_job(ledger)
    assert ledger.claim("engine-a", 10, job_id=job.id)
    clock.advance(11)
    taken = ledger.claim("engine-b", 10, job_id=job.id)
    assert [j.id for j in taken] == [job.id]
    assert ledger.lease_holder(job.id) == "engine-b"
    assert not ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="a", holder="engine-a")
    assert any(e.kind == "lease" and "engine-a" in (e.message or "") for e in ledger.events(job.id))
    ledger.close()


def test_claim_respects_max_concurrent(ledger: Ledger) -> None:
    ids = [make_job(ledger, request_hash=f"h{i}")[0].id for i in range(5)]
    first = ledger.claim("e1", 30, limit=10, max_concurrent={"aer": 2})
    assert len(first) == 2
    # Another engine sees the slots taken by the first one's leased CREATED jobs.
    assert ledger.claim("e2", 30, limit=10, max_concurrent={"aer": 2}) == []
    ledger.transition(first[0].id, S.CREATED, S.SUBMITTING, actor="e1", holder="e1")
    ledger.transition(first[0].id, S.SUBMITTING, S.FAILED, actor="e1", holder="e1")
    more = ledger.claim("e2", 30, limit=10, max_concurrent={"aer": 2})
    assert len(more) == 1 and more[0].id in ids


def test_provider_job_id_is_set_at_most_once(ledger: Ledger) -> None:
    job, _ = make_job(ledger)
    assert ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="a")
    assert ledger.transition(job.id, S.SUBMITTING, S.QUEUED, actor="a", provider_job_id="p-1")
    assert ledger.transition(job.id, S.QUEUED, S.SUBMITTING, actor="a")
    assert not ledger.transition(job.id, S.SUBMITTING, S.QUEUED, actor="a", provider_job_id="p-2")
    assert ledger.get_job(job.id).provider_job_id == "p-1"


def test_result_written_with_completion_only_once(ledger: Ledger) -> None:
    job, _ = make_job(ledger)
    ledger.transition(job.id, S.CREATED, S.SUBMITTING, actor="a")
    ledger.transition(job.id, S.SUBMITTING, S.RUNNING, actor="a")
    assert ledger.complete(
        job.id, S.RUNNING, counts=[{"11": 100}], metadata={"m": 1}, actor="a", holder=None
    )
    assert not ledger.complete(
        job.id, S.RUNNING, counts=[{"00": 100}], metadata={}, actor="b", holder=None
    )
    record = ledger.get_job(job.id)
    assert record.result is not None and record.result.counts == [{"11": 100}]
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job_results")).scalar() == 1


def test_idempotency_key(ledger: Ledger) -> None:
    first, created = make_job(ledger, key="k1", request_hash="same")
    again, created_again = make_job(ledger, key="k1", request_hash="same")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict, match="k1"):
        make_job(ledger, key="k1", request_hash="different")
    # Keys are per owner.
    other, created_other = make_job(ledger, owner="bob", key="k1", request_hash="different")
    assert created_other and other.id != first.id
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 2


def test_cancel_requests(ledger: Ledger) -> None:
    fresh, _ = make_job(ledger, request_hash="a")
    assert ledger.request_cancel(fresh.id, actor="u").state is S.CANCELLED
    running, _ = make_job(ledger, request_hash="b")
    ledger.transition(running.id, S.CREATED, S.SUBMITTING, actor="e")
    ledger.transition(running.id, S.SUBMITTING, S.RUNNING, actor="e")
    assert ledger.request_cancel(running.id, actor="u").state is S.CANCELLING
    assert ledger.request_cancel(running.id, actor="u").state is S.CANCELLING
    with pytest.raises(IllegalTransition, match="already CANCELLED"):
        ledger.request_cancel(fresh.id, actor="u")


def test_listing_is_paginated_newest_first_and_filtered(ledger_url: str) -> None:
    clock = FakeClock()
    ledger = Ledger.open(ledger_url, clock=clock)
    ids = []
    for i in range(7):
        clock.advance(1)
        job, _ = make_job(ledger, request_hash=f"h{i}", backend="aer" if i % 2 else "other")
        ids.append(job.id)
    ledger.transition(ids[3], S.CREATED, S.CANCELLED, actor="u")
    page1 = ledger.list_jobs("alice", limit=3)
    assert [j.id for j in page1.jobs] == ids[::-1][:3] and page1.next
    page2 = ledger.list_jobs("alice", limit=3, cursor=page1.next)
    page3 = ledger.list_jobs("alice", limit=3, cursor=page2.next)
    assert [j.id for j in page2.jobs + page3.jobs] == ids[::-1][3:]
    assert page3.next is None
    assert [j.id for j in ledger.list_jobs("alice", state="cancelled").jobs] == [ids[3]]
    assert {j.backend for j in ledger.list_jobs("alice", backend="other").jobs} == {"other"}
    assert ledger.list_jobs("bob").jobs == []
    with pytest.raises(InvalidRequest):
        ledger.list_jobs("alice", state="DONE")
    with pytest.raises(InvalidRequest):
        ledger.list_jobs("alice", cursor="%%%garbage")
    with pytest.raises(InvalidRequest):
        ledger.list_jobs("alice", limit=0)
    ledger.close()


def test_listing_uses_an_index(ledger: Ledger) -> None:
    query = (
        "SELECT id FROM jobs WHERE owner = 'a' AND state = 'COMPLETED' "
        "ORDER BY created_at DESC, id DESC LIMIT 50"
    )
    with ledger.engine.connect() as conn:
        if ledger.dialect == "sqlite":
            plan = " ".join(str(r) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + query))
            assert "ix_jobs_owner_state_created" in plan
            assert "TEMP B-TREE" not in plan  # no sort: the index gives the order
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(str(r) for r in conn.exec_driver_sql("EXPLAIN " + query))
            assert "ix_jobs_owner_state_created" in plan


def test_engine_heartbeats(ledger_url: str) -> None:
    clock = FakeClock()
    ledger = Ledger.open(ledger_url, clock=clock)
    ledger.engine_heartbeat("e1", "alice")
    assert [e["id"] for e in ledger.live_engines(15)] == ["e1"]
    clock.advance(20)
    assert ledger.live_engines(15) == []
    ledger.engine_heartbeat("e1", "alice")
    ledger.engine_stopped("e1")
    assert ledger.live_engines(15) == []
    ledger.close()


def test_lease_expiry_uses_ledger_clock(ledger_url: str) -> None:
    clock = FakeClock()
    ledger = Ledger.open(ledger_url, clock=clock)
    job, _ = make_job(ledger)
    ledger.claim("a", 5, job_id=job.id)
    clock.advance(3)
    assert ledger.renew_leases("a", 5, [job.id]) == {job.id}
    clock.advance(4)  # 7 s after claim, 4 after renewal: still held
    assert not ledger.claim("b", 5, job_id=job.id)
    clock.now += timedelta(seconds=2)
    assert ledger.claim("b", 5, job_id=job.id)
    assert ledger.renew_leases("a", 5, [job.id]) == set()
    ledger.close()
