"""notifications: the ends of pipeline runs and jobs, recorded once and delivered to a webhook
from an outbox; a cursor into the job event log, started at its end (an upgraded ledger does
not announce the jobs that ended before it).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_holder", sa.String(255), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("kind", "subject_id", name="uq_notifications_kind_subject_id"),
    )
    op.create_index("ix_notifications_next_attempt_at", "notifications", ["next_attempt_at"])
    op.create_index(
        "ix_notifications_owner_created", "notifications", ["owner", "created_at", "id"]
    )
    cursors = op.create_table(
        "notification_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_notification_cursors"),
    )
    last_seq = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM job_events"))
    op.bulk_insert(
        cursors,
        [
            {
                "name": "job_events",
                "seq": int(last_seq.scalar_one()),
                "updated_at": datetime.now(UTC).replace(tzinfo=None),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("notification_cursors")
    op.drop_index("ix_notifications_owner_created", table_name="notifications")
    op.drop_index("ix_notifications_next_attempt_at", table_name="notifications")
    op.drop_table("notifications")
