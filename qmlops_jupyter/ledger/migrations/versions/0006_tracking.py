"""tracking: each job's lineage and MLflow run id, tracked runs, and the tracking outbox.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lineage", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("mlflow_run_id", sa.String(64), nullable=True))
    op.create_table(
        "tracking_runs",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("tracking_uri", sa.Text(), nullable=False),
        sa.Column("experiment", sa.String(256), nullable=False),
        sa.Column("run_name", sa.String(256), nullable=True),
        sa.Column("parent_key", sa.String(64), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("job_ids", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_tracking_runs"),
    )
    op.create_index(
        "ix_tracking_runs_owner_created", "tracking_runs", ["owner", "created_at"], unique=False
    )
    op.create_table(
        "tracking_outbox",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_key", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_holder", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_outbox"),
        sa.UniqueConstraint("kind", "job_id", name="uq_tracking_outbox_kind_job_id"),
    )
    op.create_index(
        "ix_tracking_outbox_pending", "tracking_outbox", ["done_at", "next_attempt_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_tracking_outbox_pending", table_name="tracking_outbox")
    op.drop_table("tracking_outbox")
    op.drop_index("ix_tracking_runs_owner_created", table_name="tracking_runs")
    op.drop_table("tracking_runs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("mlflow_run_id")
        batch.drop_column("lineage")
