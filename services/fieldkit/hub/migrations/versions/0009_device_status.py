"""Each tablet's latest status (issue 21): its version and outbox backlog, as sync reports it
with every roster request; one row per device, replaced by the next report.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_status",
        sa.Column("device_id", sa.String(63), primary_key=True),
        sa.Column("reported_at", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("outbox_pending", sa.Integer, nullable=False),
        sa.Column("outbox_refused", sa.Integer, nullable=False),
        sa.Column("outbox_oldest_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("device_status")
