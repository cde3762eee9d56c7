"""provider_job_id becomes TEXT: a batch at some providers is several task ids.

Braket runs one quantum task per circuit; a job's provider id names every task's ARN, which
outgrows 256 characters at six circuits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("provider_job_id", type_=sa.Text(), existing_type=sa.String(256),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("provider_job_id", type_=sa.String(256), existing_type=sa.Text(),
                           existing_nullable=True)
