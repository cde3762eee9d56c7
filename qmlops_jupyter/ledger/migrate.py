"""Apply the Alembic migrations on open, once, even with several processes opening at once."""

from __future__ import annotations

import fcntl
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .store import Ledger

MIGRATIONS = Path(__file__).with_name("migrations")
#: Alembic keeps its running context in module globals: one migration at a time per process
#: (ours, or MLflow's when it opens a new local store).
ALEMBIC_LOCK = threading.RLock()


def current_revision(ledger: Ledger) -> str | None:
    with ledger.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_if_needed(ledger: Ledger) -> None:
    from .store import HEAD_REVISION

    if current_revision(ledger) == HEAD_REVISION:
        return
    with ALEMBIC_LOCK, _migration_lock(ledger):
        if current_revision(ledger) == HEAD_REVISION:  # another process just did it
            return
        upgrade(ledger)


def alembic_config(ledger: Ledger, connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # configparser treats % as interpolation; the URL is only used when no connection is given.
    url = ledger.engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["connection"] = connection
    return config


def upgrade(ledger: Ledger, revision: str = "head") -> None:
    from alembic import command

    with ledger.engine.begin() as conn:
        command.upgrade(alembic_config(ledger, conn), revision)


@contextmanager
def _migration_lock(ledger: Ledger) -> Iterator[None]:
    if ledger.dialect == "sqlite":
        database = ledger.engine.url.database
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).with_suffix(".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    elif ledger.dialect == "postgresql":
        with ledger.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(7163020)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7163020)"))
                conn.commit()
    else:
        yield
