"""The persistent job ledger (SQLAlchemy + Alembic): SQLite by default, PostgreSQL for teams."""

from .store import HEAD_REVISION, Ledger

__all__ = ["HEAD_REVISION", "Ledger"]
