"""`qmlops admin backup | restore | migrate` against real SQLite files and real PostgreSQL
databases (a new one per test): round trips in both directions compare every table row by row;
a refused or failed restore leaves the target as it was."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from qmlops_testing import BELL_QASM2, DEFAULT_POSTGRES, postgres_database
from sqlalchemy.engine import make_url

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.ledger import HEAD_REVISION, Ledger
from qmlops_jupyter.ledger import backup as backups
from qmlops_jupyter.ledger.migrate import upgrade
from qmlops_jupyter.ledger.orm import (
    Base,
    BudgetRefusalRow,
    EngineRow,
    JobEventRow,
    NotificationRow,
    PipelineRunRow,
    TrackingOutboxRow,
    TrackingRunRow,
)
from qmlops_jupyter.ledger.store import normalise_url
from qmlops_jupyter.pipelines.schedules import Pipelines
from qmlops_jupyter.testing.seed import seed_jobs

SECRET = "ionq-secret-0123456789abcdef"


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def new_pg_database() -> Iterator[Callable[[], str]]:
    """Makes a new, empty PostgreSQL database per call; all are dropped afterwards. Returns its
    URL (under CI a missing server fails the test)."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(postgres_database("qmlops_backup"))


@pytest.fixture
def crypt_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", key)
    return key


def admin_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``qmlops admin ...`` as a real process, with this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "qmlops_jupyter.cli", "admin", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qmlops: error: ")
    return lines[0]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, comparable across SQLite and PostgreSQL: values as the
    ORM reads them, plus, per JSON column, whether it is SQL NULL (not a JSON null)."""
    engine = sa.create_engine(normalise_url(url))
    found: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            for table in Base.metadata.sorted_tables:
                if table.name not in present:
                    continue
                json_nulls = [c.is_(None) for c in table.columns if isinstance(c.type, sa.JSON)]
                rows = conn.execute(sa.select(*table.columns, *json_nulls)).all()
                width = len(table.columns)
                found[table.name] = sorted(
                    (tuple(r[:width]) + tuple(bool(x) for x in r[width:]) for r in rows),
                    key=repr,
                )
    finally:
        engine.dispose()
    return found


def revision_of(url: str) -> str | None:
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def fill_ledger(home: Path, url: str, tmp_path: Path) -> Client:
    """A ledger with something in every table: real Aer jobs (payloads, results, events),
    seeded jobs, a credential, a budget, a pipeline with its schedule and rows for the tables
    no quick public call fills (pipeline runs, notifications, tracking, engines, refusals)."""
    client = Client(Settings.from_env(home=home, database_url=url))
    for seed in (1, 2):
        assert client.submit(BELL_QASM2, shots=200, seed=seed, wait=True).state == "COMPLETED"
    seed_jobs(client.ledger, 12, owners=(client.owner, "bo"))
    client.vault.set("ionq", "ionq", {"api_key": SECRET})
    client.set_budget(shots_per_day=100_000, usd_per_month=25.5)
    notebook = tmp_path / "daily.ipynb"
    pipeline = Pipelines(client.ledger).create(
        owner=client.owner, notebook=str(notebook), cron="0 3 * * *", parameters={"shots": 100}
    )
    now = datetime.now(UTC)
    job_id = client.jobs(limit=1)[0].id
    run = {
        "owner": client.owner,
        "notebook": str(notebook),
        "parameters": {"shots": 100, "backend": "aer"},
        "state": "COMPLETED",
        "created_at": now - timedelta(hours=2),
        "pipeline_id": pipeline.id,
        "scheduled_for": now - timedelta(hours=2),
        "finished_at": now - timedelta(hours=1),
    }
    with client.ledger._write() as conn:
        # A JSON null and an SQL NULL in the same column must come back as they were.
        conn.execute(
            sa.insert(PipelineRunRow.__table__).values(id="run-json-null", **run, parked_jobs=None)
        )
        conn.execute(
            sa.insert(PipelineRunRow.__table__).values(
                id="run-sql-null", **{**run, "scheduled_for": now}, parked_jobs=sa.null()
            )
        )
        conn.execute(
            sa.insert(NotificationRow.__table__).values(
                kind="job",
                subject_id=job_id,
                owner=client.owner,
                event="job.completed",
                state="sent",
                payload={"job": job_id, "counts": [{"00": 97, "11": 103}]},
                created_at=now,
                sent_at=now,
            )
        )
        conn.execute(
            sa.insert(TrackingRunRow.__table__).values(
                key="a1b2c3",
                owner=client.owner,
                tracking_uri="file:///tmp/mlruns",
                experiment="backups",
                tags={},
                params={"lr": 0.1},
                job_ids=[job_id],
                status="RUNNING",
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(TrackingOutboxRow.__table__).values(
                owner=client.owner,
                kind="job",
                run_key="a1b2c3",
                job_id=job_id,
                payload={"metric": 0.25, "nan_free": True},
                created_at=now,
                failed=False,
            )
        )
        conn.execute(
            sa.insert(EngineRow.__table__).values(
                id="host-a:123:abcdef",
                owner=client.owner,
                hostname="host-a",
                pid=123,
                started_at=now,
                heartbeat_at=now,
            )
        )
        conn.execute(
            sa.insert(BudgetRefusalRow.__table__).values(
                owner=client.owner,
                backend="aer",
                at=now,
                shots=10**9,
                estimated_cost_usd=None,
                actor=f"user:{client.owner}",
                message="over the shots-per-day budget",
            )
        )
        sql_nulls = conn.execute(
            sa.select(PipelineRunRow.id).where(PipelineRunRow.parked_jobs.is_(None))
        ).scalars()
        assert list(sql_nulls) == ["run-sql-null"]
    return client


def check_restored(client: Client, before: dict[str, list[tuple[Any, ...]]]) -> None:
    """The restored ledger works: the credential decrypts with the same key, and new rows get
    keys past the restored ones (PostgreSQL's sequences were moved)."""
    assert client.vault.get("ionq").fields["api_key"] == SECRET
    last_seq = max(row[0] for row in before["job_events"])
    job = client.submit(BELL_QASM2, shots=100, seed=3, wait=True)
    assert job.state == "COMPLETED"
    new_seqs = [e.seq for e in job.events()]
    assert new_seqs and min(new_seqs) > last_seq
    last_credential = max(row[0] for row in before["credentials"])
    client.vault.set("ionq-2", "ionq", {"api_key": SECRET[::-1]})
    ids = {r[2]: r[0] for r in table_rows(client.settings.database_url)["credentials"]}
    assert ids["ionq-2"] > last_credential and ids["ionq"] == last_credential


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("direction", ["sqlite-to-postgres", "postgres-to-sqlite"])
def test_round_trip_keeps_every_row(
    direction: str,
    home: Path,
    tmp_path: Path,
    crypt_key: str,
    new_pg_database: Callable[[], str],
) -> None:
    if direction == "sqlite-to-postgres":
        source, target = None, new_pg_database()  # source: the default ledger in QMLOPS_HOME
        source_url = sqlite_url(home / "ledger.sqlite")
    else:
        source_url, target = new_pg_database(), sqlite_url(tmp_path / "restored" / "l.sqlite")
        source = source_url
    filled = fill_ledger(home, source_url, tmp_path)
    before = table_rows(source_url)
    filled.close()
    assert all(before.values()), [t for t, rows in before.items() if not rows]

    archive = tmp_path / "backups" / "ledger.jsonl.gz"
    archive.parent.mkdir()
    where = [] if source is None else ["--database-url", source]
    made = admin_cli("backup", str(archive), "--json", *where)
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["revision"] == HEAD_REVISION
    assert summary["tables"] == {t: len(rows) for t, rows in before.items()}
    assert "alembic_version" not in summary["tables"]
    assert archive.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in archive.parent.iterdir()] == ["ledger.jsonl.gz"]  # no temp file
    raw = archive.read_bytes()
    assert SECRET.encode() not in raw and SECRET.encode() not in gzip.decompress(raw)
    header = json.loads(gzip.decompress(raw).splitlines()[0])
    assert header["format"] == "qmlops-ledger-backup" and header["version"] == 1

    loaded = admin_cli("restore", str(archive), "--database-url", target, "--json")
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["tables"] == summary["tables"]
    assert table_rows(target) == before
    assert revision_of(target) == HEAD_REVISION

    restored = Client(Settings.from_env(home=tmp_path / "other-home", database_url=target))
    try:
        check_restored(restored, before)
    finally:
        restored.close()


def test_many_rows_go_in_batches(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are streamed out and inserted a batch at a time; several batches per table."""
    monkeypatch.setattr(backups, "BATCH", 64)
    source = sqlite_url(tmp_path / "big.sqlite")
    ledger = Ledger.open(source)
    seed_jobs(ledger, 500, owners=("ana", "bo", "cy"))
    ledger.close()
    made = backups.backup(source, tmp_path / "big.gz")
    assert made.tables["jobs"] == 500 and made.revision == HEAD_REVISION
    target = sqlite_url(tmp_path / "copy.sqlite")
    done = backups.restore(tmp_path / "big.gz", target)
    assert done.tables == made.tables and done.rows == made.rows
    assert table_rows(target) == table_rows(source)


@pytest.mark.postgres
@pytest.mark.parametrize("target_kind", ["sqlite", "postgres"])
def test_older_backup_is_restored_then_upgraded(
    target_kind: str, home: Path, tmp_path: Path, new_pg_database: Callable[[], str]
) -> None:
    """A backup made at revision 0008 goes into a ledger whose schema a newer version made
    (brought down to 0008 while empty), then the later migrations run over its rows."""
    source = sqlite_url(tmp_path / "old.sqlite")
    old = Ledger.open(source, migrate=False)
    upgrade(old, "0008")
    seed_jobs(old, 5)
    with old._write() as conn:
        job_id = conn.execute(sa.text("SELECT id FROM jobs ORDER BY id LIMIT 1")).scalar()
        conn.execute(
            sa.insert(JobEventRow.__table__).values(
                job_id=job_id,
                owner="alice",
                at=datetime.now(UTC),
                kind="transition",
                to_state="CREATED",
                actor="user:alice",
            )
        )
    old.close()
    made = backups.backup(source, tmp_path / "old.gz")
    assert made.revision == "0008" and "notification_cursors" not in made.tables

    target = sqlite_url(tmp_path / "new.sqlite") if target_kind == "sqlite" else new_pg_database()
    migrated = admin_cli("migrate", "--database-url", target)
    assert migrated.returncode == 0, migrated.stderr
    done = backups.restore(tmp_path / "old.gz", target)
    assert done.revision == "0008" and done.schema_revision == HEAD_REVISION
    assert revision_of(target) == HEAD_REVISION
    rows = table_rows(target)
    assert rows["jobs"] == table_rows(source)["jobs"]
    # 0009's cursor was written over the restored events, not left at the empty ledger's 0.
    assert [r[1] for r in rows["notification_cursors"]] == [rows["job_events"][0][0]]


# -- refusals and damaged files --------------------------------------------------------------------


@pytest.fixture
def small_backup(home: Path, tmp_path: Path) -> Path:
    source = sqlite_url(tmp_path / "small.sqlite")
    ledger = Ledger.open(source)
    seed_jobs(ledger, 4)
    with ledger._write() as conn:
        for job_id in conn.execute(sa.text("SELECT id FROM jobs")).scalars().all():
            conn.execute(
                sa.insert(JobEventRow.__table__).values(
                    job_id=job_id,
                    owner="alice",
                    at=datetime.now(UTC),
                    kind="transition",
                    to_state="CREATED",
                    actor="user:alice",
                )
            )
    ledger.close()
    path = tmp_path / "small.gz"
    backups.backup(source, path)
    return path


@pytest.mark.postgres
@pytest.mark.parametrize("target_kind", ["sqlite", "postgres"])
def test_restore_into_a_ledger_with_rows_is_refused(
    target_kind: str,
    small_backup: Path,
    tmp_path: Path,
    new_pg_database: Callable[[], str],
) -> None:
    target = sqlite_url(tmp_path / "used.sqlite") if target_kind == "sqlite" else new_pg_database()
    ledger = Ledger.open(target)
    seed_jobs(ledger, 2, owners=("zed",), seed=7)
    ledger.close()
    before = table_rows(target)

    refused = admin_cli("restore", str(small_backup), "--database-url", target)
    assert refused.returncode == 4
    line = one_error_line(refused)
    assert "is not empty (table jobs has rows)" in line
    assert table_rows(target) == before


def _rewrite(path: Path, change: Callable[[list[bytes]], list[bytes]], to: Path) -> Path:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    to.write_bytes(gzip.compress(b"".join(change(lines))))
    return to


def _newer_revision(lines: list[bytes]) -> list[bytes]:
    header = json.loads(lines[0])
    header["revision"] = "9999"
    return [json.dumps(header).encode() + b"\n", *lines[1:]]


def _orphan_event(lines: list[bytes]) -> list[bytes]:
    """A well-formed file whose event points at a job that is not in it: found only by the
    database, after the schema was made and other rows went in."""
    out = []
    for line in lines:
        row = json.loads(line)
        if isinstance(row, list) and row[0] == "job_events":
            row[2] = "no-such-job"
            line = json.dumps(row).encode() + b"\n"
        out.append(line)
    return out


#: Each case: the exit code, and what the error line says besides the file's name.
DAMAGED: dict[str, tuple[int, str]] = {
    "missing": (2, "no such file"),
    "truncated": (2, "the file is truncated"),
    "corrupt": (2, "the file is corrupt"),
    "not gzip": (2, "not a qmlops ledger backup"),
    "foreign json": (2, "not a qmlops ledger backup"),
    "no end line": (2, "the file is truncated (no end line"),
    "newer revision": (6, "schema revision 9999, which this qmlops_jupyter"),
    "rows that do not fit": (2, "rows do not fit the ledger's schema"),
}


def damaged(case: str, good: Path, tmp: Path) -> Path:
    data = good.read_bytes()
    path = tmp / f"{case.replace(' ', '-')}.gz"
    if case == "missing":
        return path
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "corrupt":
        path.write_bytes(data[:40] + bytes(b ^ 0x5A for b in data[40:80]) + data[80:])
    elif case == "not gzip":
        path.write_text("hello\n")
    elif case == "foreign json":
        path.write_bytes(gzip.compress(b'{"a": 1}\n'))
    elif case == "no end line":
        _rewrite(good, lambda lines: lines[:-1], path)
    elif case == "newer revision":
        _rewrite(good, _newer_revision, path)
    else:
        _rewrite(good, _orphan_event, path)
    return path


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_file_is_one_line_and_writes_nothing(
    case: str, small_backup: Path, tmp_path: Path
) -> None:
    exit_code, message = DAMAGED[case]
    bad = damaged(case, small_backup, tmp_path)
    target = tmp_path / "target" / "ledger.sqlite"
    result = admin_cli("restore", str(bad), "--database-url", sqlite_url(target))
    assert result.returncode == exit_code, result.stderr
    line = one_error_line(result)
    assert str(bad) in line and message in line
    assert not target.exists()  # not even an empty database file


@pytest.mark.postgres
def test_a_failed_restore_into_postgres_leaves_no_schema(
    small_backup: Path, tmp_path: Path, new_pg_database: Callable[[], str]
) -> None:
    """The schema, the rows and the upgrade are one transaction: a row the database refuses
    undoes the tables made before it."""
    target = new_pg_database()
    bad = _rewrite(small_backup, _orphan_event, tmp_path / "orphan.gz")
    result = admin_cli("restore", str(bad), "--database-url", target)
    assert result.returncode == 2 and "rows do not fit" in one_error_line(result)
    assert table_names(target) == set()


@pytest.mark.postgres
def test_a_database_password_is_never_printed(small_backup: Path, tmp_path: Path) -> None:
    password = "pw-Sekrit-4711"
    server = normalise_url(os.environ.get("QMLOPS_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    missing = make_url(server).set(
        database=f"qmlops_missing_{uuid.uuid4().hex[:8]}", password=password
    )
    url = missing.render_as_string(hide_password=False)
    for args in (
        ["restore", str(small_backup), "--database-url", url],
        ["backup", str(tmp_path / "x.gz"), "--database-url", url],
        ["migrate", "--check", "--database-url", url],
    ):
        result = admin_cli(*args)
        assert result.returncode == 5, result.stderr
        line = one_error_line(result)
        assert password not in result.stdout + result.stderr
        assert "***" in line and "does not exist" in line
    assert not (tmp_path / "x.gz").exists()


# -- backups on disk -------------------------------------------------------------------------------


def test_backup_replaces_the_file_atomically_with_mode_0600(home: Path, tmp_path: Path) -> None:
    source = sqlite_url(tmp_path / "ledger.sqlite")
    ledger = Ledger.open(source)
    seed_jobs(ledger, 3)
    ledger.close()
    archive = tmp_path / "out" / "ledger.gz"
    archive.parent.mkdir()
    archive.write_text("an older backup")
    archive.chmod(0o644)
    result = admin_cli("backup", str(archive), "--database-url", source)
    assert result.returncode == 0, result.stderr
    assert f"to        {archive}" in result.stdout and "jobs" in result.stdout
    assert "total                 " in result.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    assert backups.verify(archive)["jobs"] == 3
    assert sorted(p.name for p in archive.parent.iterdir()) == ["ledger.gz"]

    # No ledger there: an error, and neither a backup nor a database file is made.
    missing = tmp_path / "missing.sqlite"
    result = admin_cli(
        "backup", str(tmp_path / "out" / "none.gz"), "--database-url", sqlite_url(missing)
    )
    assert result.returncode == 6 and "no ledger at" in one_error_line(result)
    assert not missing.exists() and not (tmp_path / "out" / "none.gz").exists()


# -- migrate ---------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migrate_check_and_upgrade(
    kind: str, home: Path, tmp_path: Path, new_pg_database: Callable[[], str]
) -> None:
    url = sqlite_url(tmp_path / "ledger.sqlite") if kind == "sqlite" else new_pg_database()
    fresh = admin_cli("migrate", "--check", "--database-url", url)
    assert fresh.returncode == 1, fresh.stderr
    assert "current   none" in fresh.stdout and f"head      {HEAD_REVISION}" in fresh.stdout
    if kind == "sqlite":
        assert not (tmp_path / "ledger.sqlite").exists()  # a check writes nothing

    older = Ledger.open(url, migrate=False)
    upgrade(older, "0009")
    older.close()
    pending = admin_cli("migrate", "--check", "--database-url", url)
    assert pending.returncode == 1 and "current   0009" in pending.stdout

    done = admin_cli("migrate", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert f"upgraded the ledger from schema 0009 to {HEAD_REVISION}" in done.stdout
    current = admin_cli("migrate", "--check", "--database-url", url)
    assert current.returncode == 0 and "the ledger is up to date" in current.stdout
    again = admin_cli("migrate", "--database-url", url)
    assert again.returncode == 0 and "up to date" in again.stdout
