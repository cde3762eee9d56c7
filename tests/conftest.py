"""Fixtures: an isolated QMLOPS_HOME per test, ledgers on SQLite and on real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmlops_jupyter.client import Client, reset_client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.ledger import Ledger

#: jupyter_server fixtures (jp_serverapp, jp_fetch ...) for the server extension's tests.
pytest_plugins = ["pytest_jupyter.jupyter_server"]

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh QMLOPS_HOME, also set in the environment for subprocesses and get_client()."""
    path = tmp_path / "home"
    monkeypatch.setenv("QMLOPS_HOME", str(path))
    for var in (
        "QMLOPS_DATABASE_URL",
        "QMLOPS_BACKENDS_FILE",
        "QMLOPS_OWNER",
        "QMLOPS_LOG_FORMAT",
        "QMLOPS_CONFIG_FILE",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "QMLOPS_EXPERIMENT",
        "QMLOPS_SERVER_URL",
        "QMLOPS_SERVER_TOKEN_FILE",
        "QMLOPS_REMOTE",
    ):
        monkeypatch.delenv(var, raising=False)
    # Tracking is on by default; tests of other parts run without it (the tracking tests turn
    # it back on with the ``tracking`` fixture), so they do not each start an MLflow store.
    monkeypatch.setenv("QMLOPS_TRACKING", "off")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    reset_client()
    yield path
    reset_client()


@pytest.fixture
def tracking(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tracking on, as it is by default: the embedded MLflow store under ``home``."""
    monkeypatch.delenv("QMLOPS_TRACKING", raising=False)
    return home


@pytest.fixture
def client(home: Path) -> Iterator[Client]:
    c = Client(Settings.from_env(home=home))
    yield c
    c.close()


def postgres_base_url() -> str:
    return os.environ.get("QMLOPS_TEST_POSTGRES_URL", DEFAULT_PG)


def _postgres_or_fail() -> str:
    """The server URL; fail under CI (the server must be there), skip on a laptop without it."""
    import sqlalchemy as sa

    from qmlops_jupyter.ledger.store import normalise_url

    url = postgres_base_url()
    try:
        engine = sa.create_engine(normalise_url(url))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL at {url} is not reachable: {exc.__class__.__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema of their own (dropped afterwards)."""
    import sqlalchemy as sa

    from qmlops_jupyter.ledger.store import normalise_url

    base = normalise_url(_postgres_or_fail())
    schema = f"qmlops_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    led = Ledger.open(ledger_url)
    yield led
    led.close()
