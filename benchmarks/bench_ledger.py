"""Benchmark 3: one page of a 100,000-job ledger, on SQLite and on PostgreSQL.

Measures ``Ledger.list_jobs(owner, state="COMPLETED", limit=50)`` (page 1) and the page after
it through the returned cursor (page 2): median and p95 of ``reps`` warm calls each. An
informational row times a page deep in the listing (a cursor half-way through the owner's
completed jobs).

The ledger is opened with ``Ledger.open(url)`` (so the package's migrations build the schema)
and seeded with SQLAlchemy Core executemany, not through ``create_job`` (hours for 100k jobs):

- 100,000 jobs over one year, newest the most recent; 60% belong to the benchmark's owner,
  the rest to four others; 65% on ``aer``, 25% ``ibm:fake_manila``, 10% ``braket:sv1``;
- terminal states for all but the newest 0.3% (82% COMPLETED, 10% FAILED, 6% CANCELLED,
  2% NEEDS_ATTENTION), active states (CREATED/SUBMITTING/QUEUED/RUNNING) for those;
- circuits JSON as ``prepare()`` writes it (real ``CircuitInfo`` of Bell, GHZ-3 and a 4-qubit
  ansatz): 1 circuit in 75% of jobs, 2-8 in 17%, 9-64 in 7%, 65-256 in 0.9%, 1,000 in 0.1%;
- a payload row per job (a real QPY blob; OpenQASM 3 text for jobs of <= 64 circuits);
- a result row (real Aer counts per circuit, metadata) for every COMPLETED job;
- the event rows each job's history would have left (3-5 per job).

SQLite: the seeded file is kept in ``<tmp>/qmlops-bench/`` and reused while its marker row
matches (``--fresh`` re-seeds). PostgreSQL (``QMLOPS_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``): the benchmark never touches that database, it
creates its own (``qmlops_bench``) on the same server and reuses it the same way; it runs
ANALYZE after seeding, as autovacuum would.

Run alone: ``.venv/bin/python benchmarks/bench_ledger.py [--quick] [--db sqlite]``.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import (
    BenchResult,
    Row,
    log,
    median,
    percentile,
    profile_call,
    settle,
    summary,
    timed,
)

TARGET_MS = 20.0
#: Bump when the seeded data changes, so old cached ledgers are not reused.
SEED_VERSION = 1
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
OTHER_OWNERS = ["alice", "bob", "carol", "dave"]
BACKENDS = [("aer", 0.65), ("ibm:fake_manila", 0.25), ("braket:sv1", 0.10)]
TERMINAL = [("COMPLETED", 0.82), ("FAILED", 0.10), ("CANCELLED", 0.06), ("NEEDS_ATTENTION", 0.02)]
ACTIVE = [("CREATED", 0.3), ("SUBMITTING", 0.1), ("QUEUED", 0.3), ("RUNNING", 0.3)]
CIRCUITS_PER_JOB = [
    ((1, 1), 0.75),
    ((2, 8), 0.17),
    ((9, 64), 0.07),
    ((65, 256), 0.009),
    ((1000, 1000), 0.001),
]
CHUNK = 5000


# -- what a real job looks like ------------------------------------------------------------------


class Templates:
    """Real circuit metadata, QPY, OpenQASM 3 and Aer counts of a few small circuits."""

    def __init__(self) -> None:
        import numpy as np
        from qiskit.circuit.library import real_amplitudes
        from qiskit_aer import AerSimulator

        from qmlops_jupyter.circuits import prepare
        from qmlops_jupyter.cli.demo import demo_circuits

        bell, ghz = (circuit for _, circuit, _ in demo_circuits()[:2])
        ansatz = real_amplitudes(4, reps=2).decompose()
        ansatz.measure_all()
        rng = np.random.default_rng(7)
        bound = [
            ansatz.assign_parameters(rng.uniform(0, 6.28, ansatz.num_parameters)) for _ in range(4)
        ]
        simulator = AerSimulator()
        self.kinds = []
        for circuits in ([bell], [ghz], bound):
            prepared = prepare(circuits)
            counts = simulator.run(circuits, shots=1024, seed_simulator=3).result().get_counts()
            counts = [counts] if isinstance(counts, dict) else list(counts)
            self.kinds.append(
                {
                    "infos": [info.model_dump() for info in prepared.infos],
                    "qpy": prepared.qpy,
                    "qasm3": [q for q in prepared.qasm3 if q is not None] or ["OPENQASM 3.0;"],
                    "counts": counts,
                    "max_qubits": prepared.max_qubits,
                }
            )


def _pick(rng: random.Random, table: list[tuple[Any, float]]) -> Any:
    x = rng.random()
    for value, weight in table:
        x -= weight
        if x < 0:
            return value
    return table[-1][0]


_CHAINS = {
    # state -> the (from, to) transitions that led there (local backends skip QUEUED)
    "COMPLETED": ["SUBMITTING", "QUEUED", "RUNNING", "COMPLETED"],
    "FAILED": ["SUBMITTING", "FAILED"],
    "CANCELLED": ["CANCELLED"],
    "NEEDS_ATTENTION": ["SUBMITTING", "NEEDS_ATTENTION"],
    "CREATED": [],
    "SUBMITTING": ["SUBMITTING"],
    "QUEUED": ["SUBMITTING", "QUEUED"],
    "RUNNING": ["SUBMITTING", "QUEUED", "RUNNING"],
}


def generate(
    n: int, owner: str, templates: Templates, seed: int = 20261126
) -> Iterator[tuple[list[dict], list[dict], list[dict], list[dict]]]:
    """Rows for ``n`` jobs, CHUNK jobs at a time: (jobs, payloads, results, events)."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    span = timedelta(days=365).total_seconds()
    moment = now - timedelta(days=365)
    mean_gap = span / n
    n_active = max(1, n * 3 // 1000)
    jobs_rows: list[dict] = []
    payload_rows: list[dict] = []
    result_rows: list[dict] = []
    event_rows: list[dict] = []
    for i in range(n):
        moment += timedelta(seconds=rng.expovariate(1 / mean_gap))
        created = min(moment, now)
        job_owner = owner if rng.random() < 0.6 else rng.choice(OTHER_OWNERS)
        backend = _pick(rng, BACKENDS)
        local = backend == "aer"
        state = _pick(rng, ACTIVE if i >= n - n_active else TERMINAL)
        lo, hi = _pick(rng, CIRCUITS_PER_JOB)
        k = rng.randint(lo, hi)
        kind = templates.kinds[rng.randrange(len(templates.kinds))]
        infos = kind["infos"]
        circuits = [{**infos[j % len(infos)], "index": j} for j in range(k)]
        shots = rng.choice([100, 1000, 1024, 1024, 1024, 4096, 8192])
        job_id = f"{rng.getrandbits(64):016x}"
        chain = [s for s in _CHAINS[state] if not (local and s == "QUEUED")]
        steps = [
            created + timedelta(seconds=0.002 + 0.01 * j + rng.random() * (0.05 if local else 30.0))
            for j in range(1, len(chain) + 1)
        ]
        t = dict(zip(chain, steps, strict=True))
        finished = t.get(state) if state in ("COMPLETED", "FAILED", "CANCELLED") else None
        seed_opt = rng.random() < 0.5
        phases = {}
        if state == "COMPLETED":
            run_s = (finished - t["RUNNING"]).total_seconds() if "RUNNING" in t else 0.01
            phases = {
                "validate": 0.0004 * k,
                "transpile": 0.0001 * k,
                "queue": (t["RUNNING"] - t["QUEUED"]).total_seconds() if "QUEUED" in t else 0.0,
                "run": run_s,
                "post_process": 0.00005 * k,
            }
        error = {
            "FAILED": "Aer refused the job: circuit uses gates the device lacks",
            "NEEDS_ATTENTION": "submission was interrupted and its outcome is unknown; check "
            "the provider before resubmitting (never resubmitted "
            "automatically)",
        }.get(state)
        leased = state in ("SUBMITTING", "QUEUED", "RUNNING")
        jobs_rows.append(
            {
                "id": job_id,
                "owner": job_owner,
                "name": f"vqe-sweep-{i % 97}" if rng.random() < 0.4 else None,
                "backend": backend,
                "state": state,
                "shots": shots,
                "num_circuits": k,
                "max_qubits": kind["max_qubits"],
                "circuits": circuits,
                "options": {"seed": rng.randrange(1 << 31)} if seed_opt else {},
                "tags": {"experiment": f"exp-{i % 13}", "dataset": "iris"}
                if rng.random() < 0.3
                else {},
                "phases": phases,
                "idempotency_key": f"nb-{job_id}" if rng.random() < 0.1 else None,
                "request_hash": f"{rng.getrandbits(256):064x}",
                "provider_job_id": None
                if local or "SUBMITTING" not in t or state == "SUBMITTING"
                else f"prov-{job_id}",
                "error": error,
                "error_kind": {"FAILED": "permanent", "NEEDS_ATTENTION": "ambiguous"}.get(state),
                "attempts": 0,
                "polls": 0 if local else rng.randint(1, 12),
                "timeout": None,
                "next_attempt_at": created + timedelta(seconds=5) if state == "QUEUED" else None,
                "lease_holder": f"engine:host:{1000 + i % 7}:abc123" if leased else None,
                "lease_expires_at": now + timedelta(seconds=30) if leased else None,
                "version": 2 + len(chain),
                "created_at": created,
                "updated_at": steps[-1] if steps else created,
                "submitted_at": t.get("SUBMITTING"),
                "started_at": t.get("RUNNING"),
                "finished_at": finished,
            }
        )
        payload_rows.append(
            {
                "job_id": job_id,
                "owner": job_owner,
                "qpy": kind["qpy"],
                "qasm3": [kind["qasm3"][j % len(kind["qasm3"])] for j in range(k)]
                if k <= 64
                else [None] * k,
            }
        )
        if state == "COMPLETED":
            counts = kind["counts"]
            result_rows.append(
                {
                    "job_id": job_id,
                    "owner": job_owner,
                    "counts": [counts[j % len(counts)] for j in range(k)],
                    "metadata": {
                        "seed_simulator": rng.randrange(1 << 31),
                        "method": "stabilizer" if kind["max_qubits"] < 4 else "statevector",
                        "time_taken": 0.001 * k,
                    },
                    "created_at": finished,
                }
            )
        event_rows.append(
            {
                "job_id": job_id,
                "owner": job_owner,
                "at": created,
                "kind": "transition",
                "from_state": None,
                "to_state": "CREATED",
                "actor": f"user:{job_owner}",
                "message": f"{k} circuit(s), {shots} shots on {backend}",
            }
        )
        previous = "CREATED"
        for to_state, at in t.items():
            event_rows.append(
                {
                    "job_id": job_id,
                    "owner": job_owner,
                    "at": at,
                    "kind": "transition",
                    "from_state": previous,
                    "to_state": to_state,
                    "actor": f"client:host:{2000 + i % 11}:def456",
                    "message": error if to_state == state else None,
                }
            )
            previous = to_state
        if len(jobs_rows) >= CHUNK:
            yield jobs_rows, payload_rows, result_rows, event_rows
            jobs_rows, payload_rows, result_rows, event_rows = [], [], [], []
    if jobs_rows:
        yield jobs_rows, payload_rows, result_rows, event_rows


# -- seeding and reuse -----------------------------------------------------------------------


def _marker_table() -> Any:
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table

    return Table(
        "bench_seed",
        MetaData(),
        Column("version", Integer),
        Column("n_jobs", Integer),
        Column("owner", String(128)),
        Column("seeded_at", String(40)),
        Column("seconds", Float),
    )


def _is_seeded(ledger: Any, n: int, owner: str) -> bool:
    from sqlalchemy import func, inspect, select

    from qmlops_jupyter.ledger.store import jobs

    marker = _marker_table()
    with ledger.engine.connect() as conn:
        inspector = inspect(conn)
        if not inspector.has_table("bench_seed"):
            return False
        row = conn.execute(select(marker)).first()
        if row is None or (row.version, row.n_jobs, row.owner) != (SEED_VERSION, n, owner):
            return False
        # The schema the package would create today (a migration edited in place, say, leaves
        # an old seeded ledger at the same revision without the new index): re-seed if not.
        for table in (jobs, *(t for t in jobs.metadata.sorted_tables if t is not jobs)):
            have_columns = {c["name"] for c in inspector.get_columns(table.name)}
            have_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            if {c.name for c in table.columns} - have_columns or {
                i.name for i in table.indexes
            } - have_indexes:
                log(f"[ledger] the cached ledger's {table.name} table is out of date; re-seeding")
                return False
        return conn.execute(select(func.count()).select_from(jobs)).scalar() == n


def seed(ledger: Any, n: int, owner: str, label: str) -> float:
    """Bulk-insert ``n`` jobs; returns the seconds it took."""
    from sqlalchemy import insert

    from qmlops_jupyter.ledger.store import events, jobs, payloads, results

    started = time.perf_counter()
    templates = Templates()
    done = 0
    for job_rows, payload_rows, result_rows, event_rows in generate(n, owner, templates):
        with ledger.engine.begin() as conn:
            conn.execute(insert(jobs), job_rows)
            conn.execute(insert(payloads), payload_rows)
            if result_rows:
                conn.execute(insert(results), result_rows)
            conn.execute(insert(events), event_rows)
        done += len(job_rows)
        log(
            f"[ledger-{label}]   seeded {done:,}/{n:,} jobs ({time.perf_counter() - started:.0f} s)"
        )
    seconds = time.perf_counter() - started
    marker = _marker_table()
    marker.create(ledger.engine, checkfirst=True)
    with ledger.engine.begin() as conn:
        conn.execute(marker.delete())
        conn.execute(
            insert(marker),
            {
                "version": SEED_VERSION,
                "n_jobs": n,
                "owner": owner,
                "seeded_at": datetime.now(UTC).isoformat(),
                "seconds": seconds,
            },
        )
    return seconds


def sqlite_ledger(n: int, owner: str, fresh: bool) -> tuple[Any, dict[str, Any]]:
    from qmlops_jupyter.ledger import Ledger

    folder = Path(tempfile.gettempdir()) / "qmlops-bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ledger-v{SEED_VERSION}-{n}.sqlite"
    url = f"sqlite:///{path}"
    info: dict[str, Any] = {"path": str(path)}
    if path.exists() and not fresh:
        ledger = Ledger.open(url)
        if _is_seeded(ledger, n, owner):
            info["reused"] = True
            return ledger, info
        ledger.close()
    for suffix in ("", "-wal", "-shm", ".migrate.lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    ledger = Ledger.open(url)
    log(f"[ledger-sqlite] seeding {n:,} jobs into {path}")
    info["reused"] = False
    info["seed_seconds"] = round(seed(ledger, n, owner, "sqlite"), 1)
    return ledger, info


def postgres_ledger(base_url: str, n: int, owner: str, fresh: bool) -> tuple[Any, dict[str, Any]]:
    from sqlalchemy import create_engine, make_url, text

    from qmlops_jupyter.ledger import Ledger
    from qmlops_jupyter.ledger.store import normalise_url

    base = make_url(normalise_url(base_url))
    name = "qmlops_bench" if n == 100_000 else f"qmlops_bench_{n}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    url = base.set(database=name).render_as_string(hide_password=False)
    info: dict[str, Any] = {"database": name, "server": base.set(database=name).render_as_string()}
    try:
        with admin.connect() as conn:
            info["server_version"] = conn.execute(text("SHOW server_version")).scalar()
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if exists and not fresh:
                ledger = Ledger.open(url)
                if _is_seeded(ledger, n, owner):
                    info["reused"] = True
                    return ledger, info
                ledger.close()
            if exists:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    ledger = Ledger.open(url)
    log(f"[ledger-postgres] seeding {n:,} jobs into database {name}")
    info["reused"] = False
    info["seed_seconds"] = round(seed(ledger, n, owner, "postgres"), 1)
    with ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return ledger, info


# -- the measurement ---------------------------------------------------------------------------


def _deep_cursor(ledger: Any, owner: str, depth: int) -> str | None:
    """A cursor as ``list_jobs`` would hand out after ``depth`` completed jobs of ``owner``."""
    from sqlalchemy import select

    from qmlops_jupyter.ledger import store

    encode = getattr(store, "_encode_cursor", None)
    if encode is None:
        return None
    jobs = store.jobs
    with ledger.engine.connect() as conn:
        row = conn.execute(
            select(jobs.c.created_at, jobs.c.id)
            .where(jobs.c.owner == owner, jobs.c.state == "COMPLETED")
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .offset(depth - 1)
            .limit(1)
        ).first()
    return None if row is None else encode(row.created_at, row.id)


def measure(
    ledger: Any, owner: str, reps: int, label: str, profile: bool
) -> tuple[list[Row], dict[str, Any]]:
    from sqlalchemy import func, select

    from qmlops_jupyter.ledger.store import jobs

    def page1() -> Any:
        return ledger.list_jobs(owner, state="COMPLETED", limit=50)

    first_call, p1 = timed(page1)
    cursor = p1.next

    def page2() -> Any:
        return ledger.list_jobs(owner, state="COMPLETED", limit=50, cursor=cursor)

    p2 = page2()
    _check_pages(p1, p2, owner)
    for _ in range(3):
        page1()
        page2()
    settle()
    t1: list[float] = []
    t2: list[float] = []
    for _ in range(reps):
        t1.append(timed(page1)[0])
        t2.append(timed(page2)[0])

    with ledger.engine.connect() as conn:
        completed = conn.execute(
            select(func.count())
            .select_from(jobs)
            .where(jobs.c.owner == owner, jobs.c.state == "COMPLETED")
        ).scalar()
    depth = max(100, completed // 2)
    deep = _deep_cursor(ledger, owner, depth)
    t_deep: list[float] = []
    deep_circuits = None
    if deep is not None:
        deep_page = ledger.list_jobs(owner, state="COMPLETED", limit=50, cursor=deep)
        deep_circuits = sum(len(j.circuits) for j in deep_page.jobs)
        for _ in range(max(3, reps // 3)):
            t_deep.append(
                timed(lambda: ledger.list_jobs(owner, state="COMPLETED", limit=50, cursor=deep))[0]
            )
    if profile:
        profile_call(f"ledger-{label}", lambda: (page1(), page2()), calls=20)

    tag = f"3 ledger {label}"
    rows = [
        Row(tag, "page 1: 50 COMPLETED (median)", median(t1) * 1e3, "ms", TARGET_MS),
        Row(tag, "page 2 via cursor (median)", median(t2) * 1e3, "ms", TARGET_MS),
        Row(tag, "page 1 / page 2 p95", max(percentile(t1, 95), percentile(t2, 95)) * 1e3, "ms"),
    ]
    if t_deep:
        rows.append(
            Row(
                tag,
                f"page after {depth:,} jobs (median)",
                median(t_deep) * 1e3,
                "ms",
                note=f"{deep_circuits} circuits on it",
            )
        )
    details = {
        "reps": reps,
        "owner_completed_jobs": completed,
        "first_call_ms": round(first_call * 1e3, 3),
        "page1_ms": summary(t1, 1e3),
        "page2_ms": summary(t2, 1e3),
        "deep_page": {"depth": depth, "circuits_on_page": deep_circuits, **summary(t_deep, 1e3)}
        if t_deep
        else None,
        "circuits_on_page1": sum(len(j.circuits) for j in p1.jobs),
        "circuits_on_page2": sum(len(j.circuits) for j in p2.jobs),
    }
    return rows, details


def _check_pages(p1: Any, p2: Any, owner: str) -> None:
    for page in (p1, p2):
        if len(page.jobs) != 50:
            raise AssertionError(f"expected a page of 50 jobs, got {len(page.jobs)}")
        for job in page.jobs:
            if job.owner != owner or job.state.value != "COMPLETED" or job.result is None:
                raise AssertionError(f"unexpected job on the page: {job.id} {job.state}")
    if not p1.next or p2.jobs[0].created_at > p1.jobs[-1].created_at:
        raise AssertionError("page 2 does not continue page 1")
    if {j.id for j in p1.jobs} & {j.id for j in p2.jobs}:
        raise AssertionError("pages 1 and 2 overlap")


def run(args: Any, db: str) -> BenchResult:
    n = 5_000 if args.quick else args.ledger_jobs
    reps = 10 if args.quick else args.ledger_reps
    owner = args.owner
    started = time.perf_counter()
    if db == "sqlite":
        ledger, info = sqlite_ledger(n, owner, args.fresh)
    else:
        try:
            ledger, info = postgres_ledger(args.postgres_url, n, owner, args.fresh)
        except Exception as exc:
            from qmlops_jupyter.errors import one_line

            if not _unreachable(exc):
                raise
            why = f"PostgreSQL unreachable at {args.postgres_url}: {one_line(exc)[:160]}"
            log(f"[ledger-postgres] SKIP: {why}")
            return BenchResult(
                "ledger-postgres",
                [Row("3 ledger postgres", "page 1 / page 2", None, "ms", TARGET_MS, note=why)],
                {"skipped": why},
            )
    info["prepare_seconds"] = round(time.perf_counter() - started, 1)
    info["jobs"] = n
    info["dialect"] = ledger.dialect
    log(
        f"[ledger-{db}] {n:,} jobs ({'reused' if info['reused'] else 'seeded'}); "
        f"timing {reps} x page 1 + page 2"
    )
    try:
        rows, details = measure(ledger, owner, reps, db, args.profile)
    finally:
        ledger.close()
    rows[0].note = f"{n:,} jobs, {details['circuits_on_page1']} circuits on the page"
    rows[1].note = f"{details['circuits_on_page2']} circuits on the page"
    return BenchResult(f"ledger-{db}", rows, {**info, **details})


def _unreachable(exc: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError | ImportError | ModuleNotFoundError)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "ledger", *sys.argv[1:]]))
