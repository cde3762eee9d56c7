"""pipelines: saved pipelines and their cron schedules; runs gain their schedule's due time
(unique per pipeline), sweep points, parking, a runner heartbeat and an engine lease.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RUN_COLUMNS = [
    ("pipeline_id", sa.String(32)),
    ("schedule_id", sa.String(32)),
    ("scheduled_for", sa.DateTime()),
    ("sweep_id", sa.String(32)),
    ("sweep_point", sa.Integer()),
    ("mlflow_parent_run_id", sa.String(64)),
    ("parked_jobs", sa.JSON()),
    ("park_cell", sa.Integer()),
    ("parked_at", sa.DateTime()),
    ("runner_host", sa.String(255)),
    ("runner_pid", sa.Integer()),
    ("heartbeat_at", sa.DateTime()),
    ("lease_holder", sa.String(255)),
    ("lease_until", sa.DateTime()),
]


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("notebook", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("experiment", sa.String(256), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
        sa.UniqueConstraint("owner", "name", name="uq_pipelines_owner_name"),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pipeline_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("stale_after", sa.Float(), nullable=False),
        sa.Column("next_due_at", sa.DateTime(), nullable=True),
        sa.Column("last_scheduled_for", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name="fk_schedules_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_next_due_at", "schedules", ["paused", "next_due_at"])
    with op.batch_alter_table("pipeline_runs") as batch:
        for name, kind in RUN_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
        batch.create_unique_constraint(
            "uq_pipeline_runs_pipeline_id_scheduled_for", ["pipeline_id", "scheduled_for"]
        )
    op.create_index("ix_pipeline_runs_state", "pipeline_runs", ["state"])
    op.create_index("ix_pipeline_runs_sweep_id", "pipeline_runs", ["sweep_id", "sweep_point"])


def downgrade() -> None:
    op.drop_index("ix_pipeline_runs_sweep_id", table_name="pipeline_runs")
    op.drop_index("ix_pipeline_runs_state", table_name="pipeline_runs")
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_constraint("uq_pipeline_runs_pipeline_id_scheduled_for", type_="unique")
        for name, _ in reversed(RUN_COLUMNS):
            batch.drop_column(name)
    op.drop_index("ix_schedules_next_due_at", table_name="schedules")
    op.drop_table("schedules")
    op.drop_table("pipelines")
