"""cost and budgets: jobs' estimated and actual cost, budgets per owner, budget refusals.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimated_cost_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("actual_cost_usd", sa.Float(), nullable=True))
    op.create_table(
        "budgets",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(256), nullable=False),
        sa.Column("shots_per_day", sa.BigInteger(), nullable=True),
        sa.Column("usd_per_month", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        sa.UniqueConstraint("owner", "backend", name="uq_budgets_owner_backend"),
    )
    op.create_table(
        "budget_refusals",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("shots", sa.BigInteger(), nullable=False),
        sa.Column("estimated_cost_usd", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budget_refusals"),
    )
    op.create_index("ix_budget_refusals_owner_at", "budget_refusals", ["owner", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_budget_refusals_owner_at", table_name="budget_refusals")
    op.drop_table("budget_refusals")
    op.drop_table("budgets")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("actual_cost_usd")
        batch.drop_column("estimated_cost_usd")
