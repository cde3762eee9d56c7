"""Whole-ledger operations for operators: a portable backup, a restore into an empty ledger, and
schema upgrades (``qmlops admin backup | restore | migrate``).

A backup holds every row of every ledger table (the tables of :mod:`.orm`'s metadata, so a table
added later is included without a change here), read in one consistent snapshot, and the schema
revision they were written at instead of ``alembic_version``. Credentials stay as stored:
ciphertext, never decrypted; the vault key is not in a backup.

The archive (format version 1) is gzip'd JSON lines:

1. a header ``{"format": "qmlops-ledger-backup", "version": 1, "revision": "0010",
   "created_at": ..., "dialect": ..., "database": ..., "software": ..., "tables": [{"name":
   "jobs", "rows": 12, "columns": [{"name": "id", "type": "str"}, ...]}, ...]}``, tables in
   foreign-key order;
2. one line per row, ``["jobs", value, value, ...]``: the table's name, then the values in the
   header's column order. ``str``, ``int``, ``float``, ``bool`` are JSON's own; ``datetime`` is
   ISO 8601 with its UTC offset; ``bytes`` is base64; ``json`` is the column's JSON document as
   text (a string), so SQL NULL (``null``) and a JSON ``null`` (``"null"``) stay apart;
3. an end line ``{"format": "qmlops-ledger-backup", "end": true, "rows": N}``: a file without it
   was cut short.

A restore reads the whole file once to check it before it touches the target, then, in one
transaction: checks the target is empty, brings its schema to the backup's revision, inserts
every row, moves PostgreSQL's sequences past the restored keys, and upgrades the schema to the
newest revision. Any failure rolls all of it back.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    cast,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.types import TypeDecorator, TypeEngine

from .._version import __version__
from ..errors import ConfigError, InvalidRequest, QmlopsError, one_line
from .orm import Base, UTCDateTime, utcnow
from .store import HEAD_REVISION, Ledger, normalise_url

FORMAT = "qmlops-ledger-backup"
FORMAT_VERSION = 1
#: Rows fetched per round trip of a server-side cursor (backup) and per INSERT batch (restore).
BATCH = 1000
#: Tables a migration fills on a fresh ledger (0009 writes the notification cursor): their rows
#: alone do not make a ledger "in use", and a restore replaces them with the backup's.
SEEDED_BY_MIGRATIONS = frozenset({"notification_cursors"})
#: The schema's own bookkeeping: not backed up (the header names the revision instead).
ALEMBIC_TABLE = "alembic_version"


class BackupFileError(InvalidRequest):
    """A backup file that cannot be used: missing, unreadable, truncated, corrupt, or not a
    ledger backup at all. Nothing was written."""

    code = "backup_file_error"


class RestoreRefused(QmlopsError):
    """The target of a restore already holds a ledger's rows; nothing was written."""

    http_status = 409
    exit_code = 4
    code = "restore_refused"


class SchemaTooNew(ConfigError):
    """A ledger or a backup at a schema revision this version of qmlops_jupyter does not know:
    it was written by a newer one."""

    code = "schema_too_new"


class LedgerUnavailable(QmlopsError):
    """The ledger's database cannot be reached or used."""

    http_status = 503
    exit_code = 5
    code = "ledger_unavailable"


class BackupSummary(BaseModel):
    """What :func:`backup` wrote."""

    path: str
    #: The ledger's URL, without its password.
    database: str
    revision: str
    created_at: datetime
    #: Rows per table, in the archive's (foreign-key) order.
    tables: dict[str, int]
    rows: int
    bytes: int


class RestoreSummary(BaseModel):
    """What :func:`restore` put into the target ledger."""

    path: str
    database: str
    #: The revision the backup was written at, and the target's revision afterwards.
    revision: str
    schema_revision: str
    #: When the backup was made.
    created_at: datetime
    tables: dict[str, int]
    rows: int


class SchemaStatus(BaseModel):
    """Where a ledger's schema stands: ``current`` is None for a database without one."""

    database: str
    current: str | None
    head: str

    @property
    def pending(self) -> bool:
        return self.current != self.head


# -- schema revisions --------------------------------------------------------------------------


def known_revisions() -> list[str]:
    """The migrations this version ships, oldest first."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from .migrate import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return [
        s.revision for s in reversed(list(ScriptDirectory.from_config(config).walk_revisions()))
    ]


def _check_known(revision: str, what: str) -> None:
    if revision not in known_revisions():
        raise SchemaTooNew(
            f"{what} is at schema revision {revision}, which this qmlops_jupyter "
            f"({__version__}, newest revision {HEAD_REVISION}) does not know; use the version "
            "that wrote it or a newer one"
        )


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(ALEMBIC_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {ALEMBIC_TABLE}")).scalar()


def schema_status(database_url: str) -> SchemaStatus:
    """The ledger's schema revision and the newest one; writes nothing (a SQLite file that does
    not exist is not created)."""
    url = _checked_url(database_url)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.exists():
        return SchemaStatus(database=_display(url), current=None, head=HEAD_REVISION)
    ledger = Ledger.open(url, migrate=False)
    try:
        with _database_errors(ledger.url), ledger.engine.connect() as conn:
            current = _revision(conn)
    finally:
        ledger.close()
    if current is not None:
        _check_known(current, f"the ledger at {ledger.url}")
    return SchemaStatus(database=ledger.url, current=current, head=HEAD_REVISION)


def upgrade_schema(database_url: str) -> tuple[str | None, str]:
    """Apply every pending migration (creating the schema in an empty database); returns the
    revision before and after."""
    from .migrate import current_revision

    url = _checked_url(database_url)
    _make_sqlite_folder(url)
    ledger = Ledger.open(url, migrate=False)
    try:
        with _database_errors(ledger.url):
            before = current_revision(ledger)
            if before is not None:
                _check_known(before, f"the ledger at {ledger.url}")
            ledger.migrate()
            return before, current_revision(ledger) or HEAD_REVISION
    finally:
        ledger.close()


# -- backup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One table as the source database has it, with how each column is written."""

    table: Table
    kinds: list[str]
    order_by: list[Any]

    @property
    def name(self) -> str:
        return self.table.name

    def statement(self) -> Any:
        columns = [
            cast(c, Text).label(c.name) if kind == "json" else c
            for c, kind in zip(self.table.columns, self.kinds, strict=True)
        ]
        stmt = select(*columns).order_by(*self.order_by)
        return stmt.execution_options(stream_results=True, yield_per=BATCH)


def backup(database_url: str, path: str | os.PathLike[str]) -> BackupSummary:
    """Write every row of the ledger at ``database_url`` to the archive ``path`` (replaced
    atomically; mode 0600), read in one snapshot. Returns rows per table and the revision."""
    target = Path(path)
    if target.is_dir():
        raise BackupFileError(f"{target}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise BackupFileError(f"{target}: folder {target.parent} does not exist")
    url = _checked_url(database_url)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        raise ConfigError(f"no ledger at {_display(url)}: {sqlite_file} does not exist")
    ledger = Ledger.open(url, migrate=False)
    try:
        with _database_errors(ledger.url), _snapshot(ledger) as conn:
            revision = _revision(conn)
            if revision is None:
                raise ConfigError(f"no ledger at {ledger.url}: the database has no ledger schema")
            _check_known(revision, f"the ledger at {ledger.url}")
            sources = _source_tables(conn)
            counts = {
                s.name: int(conn.execute(select(func.count()).select_from(s.table)).scalar_one())
                for s in sources
            }
            created_at = utcnow()
            header = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "revision": revision,
                "created_at": created_at.isoformat(),
                "dialect": ledger.dialect,
                "database": ledger.url,
                "software": f"qmlops_jupyter {__version__}",
                "tables": [
                    {
                        "name": s.name,
                        "rows": counts[s.name],
                        "columns": [
                            {"name": c.name, "type": kind}
                            for c, kind in zip(s.table.columns, s.kinds, strict=True)
                        ],
                    }
                    for s in sources
                ],
            }
            size = _write_atomically(target, lambda out: _dump(conn, header, sources, counts, out))
    finally:
        ledger.close()
    return BackupSummary(
        path=str(target),
        database=ledger.url,
        revision=revision,
        created_at=created_at,
        tables=counts,
        rows=sum(counts.values()),
        bytes=size,
    )


@contextmanager
def _snapshot(ledger: Ledger) -> Iterator[Connection]:
    """A read-only transaction that sees one state of the whole ledger: REPEATABLE READ on
    PostgreSQL; on SQLite (WAL) a read transaction is a snapshot from its first read."""
    with ledger.engine.connect() as conn:
        if ledger.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if ledger.dialect == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            yield conn


def _source_tables(conn: Connection) -> list[_Source]:
    """The ledger's tables present in the source, in foreign-key order, with the columns the
    source has (an older revision has fewer); types from the ORM where it knows the column."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    sources = []
    for model in Base.metadata.sorted_tables:
        if model.name not in present or model.name == ALEMBIC_TABLE:
            continue
        known = {c.name: c for c in model.columns}
        columns = [
            Column(
                info["name"], known[info["name"]].type if info["name"] in known else info["type"]
            )
            for info in inspector.get_columns(model.name)
        ]
        table = Table(model.name, MetaData(), *columns)
        kinds = [_kind(c.type, f"{model.name}.{c.name}") for c in table.columns]
        order_by = [table.c[c.name] for c in model.primary_key.columns if c.name in table.c]
        sources.append(_Source(table, kinds, order_by))
    return sources


def _kind(type_: TypeEngine[Any], where: str) -> str:
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    for base, kind in (
        (DateTime, "datetime"),
        (LargeBinary, "bytes"),
        (JSON, "json"),
        (Boolean, "bool"),
        (Integer, "int"),
        (Float, "float"),
        (String, "str"),
    ):
        if isinstance(type_, base):
            return kind
    raise TypeError(f"column {where} has type {type_!r}, which a backup cannot write yet")


def _encode_datetime(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _encode_bytes(value: bytes) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


_ENCODERS: dict[str, Callable[[Any], Any] | None] = {
    "datetime": _encode_datetime,
    "bytes": _encode_bytes,
    "json": None,  # already text (cast in the SELECT)
    "bool": None,
    "int": None,
    "float": None,
    "str": None,
}


def _line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _dump(
    conn: Connection,
    header: dict[str, Any],
    sources: list[_Source],
    counts: dict[str, int],
    out: IO[bytes],
) -> None:
    out.write(_line(header))
    total = 0
    for source in sources:
        encoders = [(i, _ENCODERS[k]) for i, k in enumerate(source.kinds) if _ENCODERS[k]]
        lines: list[bytes] = []
        written = 0
        for row in conn.execute(source.statement()):
            values = [source.name, *row]
            for i, encode in encoders:
                if values[i + 1] is not None:
                    values[i + 1] = encode(values[i + 1])  # type: ignore[misc]
            lines.append(_line(values))
            if len(lines) >= BATCH:
                out.write(b"".join(lines))
                written += len(lines)
                lines.clear()
        out.write(b"".join(lines))
        written += len(lines)
        if written != counts[source.name]:  # the snapshot guarantees it; say so if not
            raise RuntimeError(
                f"table {source.name} gave {written} rows, not the {counts[source.name]} counted"
            )
        total += written
    out.write(_line({"format": FORMAT, "end": True, "rows": total}))


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> int:
    """Write a gzip'd file next to ``path``, fsync it, then rename it over ``path``: a reader
    sees the old file or the whole new one, never a part. Returns the size in bytes."""
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".partial", dir=path.parent
        )
    except OSError as exc:
        raise BackupFileError(f"{path}: cannot write there: {exc.strerror}") from None
    partial = Path(temporary)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6) as packed:
                write(packed)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path.stat().st_size


# -- reading an archive --------------------------------------------------------------------------

_KINDS = frozenset(_ENCODERS)


def _decode_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _decode_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError
    return value


def _decode_float(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError
    return float(value)


def _decode_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _decode_datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(_decode_str(value))
    if parsed.tzinfo is None:
        raise ValueError
    return parsed.astimezone(UTC)


def _decode_bytes(value: Any) -> bytes:
    return base64.b64decode(_decode_str(value), validate=True)


def _decode_json(value: Any) -> Any:
    document = json.loads(_decode_str(value))
    # A JSON null, kept apart from SQL NULL by the insert's JSON(none_as_null=True).
    return JSON.NULL if document is None else document


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "str": _decode_str,
    "int": _decode_int,
    "float": _decode_float,
    "bool": _decode_bool,
    "datetime": _decode_datetime,
    "bytes": _decode_bytes,
    "json": _decode_json,
}

#: How restore binds each kind of value.
_INSERT_TYPES: dict[str, Callable[[], TypeEngine[Any]]] = {
    "str": Text,
    "int": BigInteger,
    "float": Float,
    "bool": Boolean,
    "datetime": UTCDateTime,
    "bytes": LargeBinary,
    "json": lambda: JSON(none_as_null=True),
}


@dataclass(frozen=True)
class _ArchiveTable:
    name: str
    rows: int
    columns: list[str]
    kinds: list[str]

    def insert_table(self) -> Table:
        return Table(
            self.name,
            MetaData(),
            *(
                Column(name, _INSERT_TYPES[kind]())
                for name, kind in zip(self.columns, self.kinds, strict=True)
            ),
        )


@dataclass(frozen=True)
class _Header:
    revision: str
    created_at: datetime
    tables: dict[str, _ArchiveTable]


def _open_archive(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise BackupFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BackupFileError(f"{path}: is a folder, not a backup file") from None
    except OSError as exc:
        raise BackupFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of the archive; every way the file can be damaged becomes
    one :class:`BackupFileError` naming the file."""
    with _open_archive(path) as raw:
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                for number, line in enumerate(unpacked, 1):
                    try:
                        value = json.loads(line)
                    except ValueError:
                        raise BackupFileError(
                            f"{path}: the file is corrupt (line {number} is not JSON)"
                        ) from None
                    yield number, value
        except gzip.BadGzipFile as exc:
            if "Not a gzipped file" in str(exc):
                raise BackupFileError(
                    f"{path}: not a qmlops ledger backup (not a gzip file)"
                ) from None
            raise BackupFileError(f"{path}: the file is corrupt ({exc})") from None
        except EOFError:
            raise BackupFileError(
                f"{path}: the file is truncated (it ends in the middle of its data)"
            ) from None
        except zlib.error as exc:
            raise BackupFileError(f"{path}: the file is corrupt ({exc})") from None
        except OSError as exc:
            raise BackupFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse_header(path: Path, value: Any) -> _Header:
    foreign = BackupFileError(f"{path}: not a qmlops ledger backup (no backup header)")
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise foreign
    version = value.get("version")
    if not isinstance(version, int):
        raise foreign
    if version > FORMAT_VERSION:
        raise BackupFileError(
            f"{path}: written in backup format {version} by a newer qmlops_jupyter; this one "
            f"({__version__}) reads format {FORMAT_VERSION}"
        )
    try:
        revision = value["revision"]
        created_at = _decode_datetime(value["created_at"])
        tables: dict[str, _ArchiveTable] = {}
        for entry in value["tables"]:
            columns = [c["name"] for c in entry["columns"]]
            kinds = [c["type"] for c in entry["columns"]]
            rows = entry["rows"]
            if (
                not isinstance(revision, str)
                or not isinstance(entry["name"], str)
                or not all(isinstance(c, str) for c in columns)
                or not all(k in _KINDS for k in kinds)
                or not isinstance(rows, int)
                or entry["name"] in tables
            ):
                raise ValueError
            tables[entry["name"]] = _ArchiveTable(entry["name"], rows, columns, kinds)
    except (KeyError, TypeError, ValueError):
        raise BackupFileError(f"{path}: the file is corrupt (its header is damaged)") from None
    return _Header(revision, created_at, tables)


def _read_archive(path: Path) -> Iterator[_Header | tuple[_ArchiveTable, dict[str, Any]]]:
    """The header, then every row as (table, {column: value}), checked on the way: each row
    fits its table, each table has the rows the header counts, and the end line is there."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise BackupFileError(f"{path}: the file is empty")
    header = _parse_header(path, first[1])
    yield header
    decoders = {t.name: [_DECODERS[k] for k in t.kinds] for t in header.tables.values()}
    seen = dict.fromkeys(header.tables, 0)
    total = 0
    for number, value in lines:
        if isinstance(value, dict) and value.get("end") is True:
            if value.get("rows") != total or seen != {t: h.rows for t, h in header.tables.items()}:
                expected = sum(t.rows for t in header.tables.values())
                raise BackupFileError(
                    f"{path}: the file is corrupt (it holds {total} rows; its header counts "
                    f"{expected})"
                )
            if next(lines, None) is not None:
                raise BackupFileError(f"{path}: the file is corrupt (data after its end line)")
            return
        table = header.tables.get(value[0]) if isinstance(value, list) and value else None
        if table is None or len(value) != len(table.columns) + 1:
            raise BackupFileError(
                f"{path}: the file is corrupt (line {number} is not a row of the backup)"
            )
        row = {}
        for name, decode, item in zip(table.columns, decoders[table.name], value[1:], strict=True):
            try:
                row[name] = None if item is None else decode(item)
            except (TypeError, ValueError):
                raise BackupFileError(
                    f"{path}: the file is corrupt (line {number}: the value of {table.name}.{name})"
                ) from None
        seen[table.name] += 1
        total += 1
        yield table, row
    raise BackupFileError(f"{path}: the file is truncated (no end line after {total} rows)")


def _header_of(path: Path) -> _Header:
    with contextlib.closing(_read_archive(path)) as items:
        header = next(items)
    assert isinstance(header, _Header)
    return header


def verify(path: str | os.PathLike[str]) -> dict[str, int]:
    """Read the whole archive and check every line of it; returns rows per table."""
    header = None
    for item in _read_archive(Path(path)):
        if isinstance(item, _Header):
            header = item
    assert header is not None
    return {name: table.rows for name, table in header.tables.items()}


# -- restore -------------------------------------------------------------------------------------


def restore(path: str | os.PathLike[str], database_url: str) -> RestoreSummary:
    """Load the archive at ``path`` into the empty ledger at ``database_url`` (a new database,
    or one with the schema and no rows) and upgrade it to the newest schema: all of it, or,
    on any error, nothing."""
    source = Path(path)
    header = _header_of(source)
    _check_known(header.revision, f"the backup {source}")
    verify(source)  # the whole file, before the target is touched
    url = _checked_url(database_url)
    sqlite_file = _sqlite_file(url)
    new_file = sqlite_file is not None and not sqlite_file.exists()
    _make_sqlite_folder(url)
    ledger = Ledger.open(url, migrate=False)
    try:
        with _database_errors(ledger.url):
            counts, schema = _restore_into(ledger, source, header)
    except BaseException:
        ledger.close()
        if new_file and sqlite_file is not None:  # leave no empty database behind
            for leftover in ("", "-wal", "-shm", "-journal"):
                Path(f"{sqlite_file}{leftover}").unlink(missing_ok=True)
        raise
    ledger.close()
    return RestoreSummary(
        path=str(source),
        database=ledger.url,
        revision=header.revision,
        schema_revision=schema,
        created_at=header.created_at,
        tables=counts,
        rows=sum(counts.values()),
    )


def _restore_into(ledger: Ledger, source: Path, header: _Header) -> tuple[dict[str, int], str]:
    from .migrate import ALEMBIC_LOCK, _migration_lock

    with ALEMBIC_LOCK, _migration_lock(ledger), ledger._write() as conn:
        current = _revision(conn)
        if current is not None:
            _check_known(current, f"the ledger at {ledger.url}")
        _refuse_unless_empty(conn, ledger.url)
        _migrate(conn, ledger, current, header.revision)
        for name in SEEDED_BY_MIGRATIONS & set(inspect(conn).get_table_names()):
            conn.execute(Table(name, MetaData()).delete())
        _check_schema(conn, source, header)
        try:
            counts = _load(conn, source, header)
        except DBAPIError as exc:
            raise BackupFileError(
                f"{source}: its rows do not fit the ledger's schema: {_reason(exc)}"
            ) from None
        if ledger.dialect == "postgresql":
            _reset_sequences(conn, list(header.tables))
        _migrate(conn, ledger, header.revision, "head")
        return counts, _revision(conn) or HEAD_REVISION


def _refuse_unless_empty(conn: Connection, where: str) -> None:
    present = set(inspect(conn).get_table_names())
    used = [
        model.name
        for model in Base.metadata.sorted_tables
        if model.name in present
        and model.name not in SEEDED_BY_MIGRATIONS
        and conn.execute(select(literal(1)).select_from(model).limit(1)).first() is not None
    ]
    if used:
        tables = f"table {used[0]} has" if len(used) == 1 else f"tables {', '.join(used)} have"
        raise RestoreRefused(
            f"the ledger at {where} is not empty ({tables} rows); restore only into an empty "
            "ledger: a new database, or one just created by 'qmlops admin migrate'"
        )


def _migrate(conn: Connection, ledger: Ledger, current: str | None, wanted: str) -> None:
    """Move the schema from ``current`` to ``wanted`` (a revision or ``head``) on ``conn``,
    inside its transaction. Down only happens to an empty ledger (a restore of an older
    backup into a schema made by a newer version)."""
    from alembic import command

    from .migrate import alembic_config

    config = alembic_config(ledger, conn)
    order = known_revisions()
    if current is not None and wanted != "head" and order.index(current) > order.index(wanted):
        command.downgrade(config, wanted)
    elif current != wanted:
        command.upgrade(config, wanted)


def _check_schema(conn: Connection, source: Path, header: _Header) -> None:
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    for table in header.tables.values():
        if table.name not in present or table.name == ALEMBIC_TABLE:
            raise BackupFileError(
                f"{source}: table {table.name} is not in the ledger's schema at revision "
                f"{header.revision} (not a backup of a qmlops ledger)"
            )
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c not in columns]
        if missing:
            raise BackupFileError(
                f"{source}: table {table.name} has no column {missing[0]} at schema revision "
                f"{header.revision} (not a backup of a qmlops ledger)"
            )


def _load(conn: Connection, source: Path, header: _Header) -> dict[str, int]:
    counts = dict.fromkeys(header.tables, 0)
    statements: dict[str, Any] = {}
    batch: list[dict[str, Any]] = []
    batch_table: str | None = None

    def flush() -> None:
        if batch:
            conn.execute(statements[batch_table], batch)  # type: ignore[index]
            batch.clear()

    for item in _read_archive(source):
        if not isinstance(item, tuple):
            continue
        table, row = item
        if table.name != batch_table or len(batch) >= BATCH:
            flush()
            batch_table = table.name
            if table.name not in statements:
                statements[table.name] = insert(table.insert_table())
        batch.append(row)
        counts[table.name] += 1
    flush()
    return counts


def _reset_sequences(conn: Connection, tables: list[str]) -> None:
    """Move each sequence behind a restored key (serial or identity: ``job_events.seq``, the
    ids of credentials, budgets, notifications ...) past the largest restored value, so the
    next row gets a new key."""
    quote = conn.dialect.identifier_preparer.quote
    inspector = inspect(conn)
    for table in tables:
        for column in inspector.get_pk_constraint(table)["constrained_columns"]:
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": quote(table), "column": column},
            ).scalar()
            if sequence is None:
                continue
            conn.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE((SELECT MAX({quote(column)}) "
                    f"FROM {quote(table)}), 0) + 1, false)"
                ),
                {"sequence": sequence},
            )


# -- database URLs and errors ------------------------------------------------------------------


def _checked_url(database_url: str) -> str:
    url = normalise_url(database_url)
    try:
        make_url(url)
    except ArgumentError:
        raise ConfigError(
            "not a database URL (expected sqlite:////PATH or postgresql://USER@HOST/DATABASE)"
        ) from None
    return url


def _display(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


def _make_sqlite_folder(url: str) -> None:
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)


def _reason(exc: DBAPIError) -> str:
    reason = one_line(exc.orig if exc.orig is not None else exc)
    return reason if len(reason) <= 300 else reason[:297] + "..."


@contextmanager
def _database_errors(where: str) -> Iterator[None]:
    """A database that cannot be reached or used: one line naming it (never its password)."""
    try:
        yield
    except DBAPIError as exc:
        raise LedgerUnavailable(f"cannot use the ledger at {where}: {_reason(exc)}") from None
