"""Contract-end sanitization certificates brought to the hub, with the hub's checks.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sanitization_certificate",
        sa.Column("certificate_id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("sanitized_at", sa.Float, nullable=False),
        sa.Column("result", sa.String(8), nullable=False),
        sa.Column("signed", sa.Boolean, nullable=False),
        sa.Column("chain_ok", sa.Boolean, nullable=False),
        sa.Column("chain_note", sa.Text, nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("uploaded_at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    for column in ("device_id", "sanitized_at"):
        op.create_index(
            f"ix_sanitization_certificate_{column}", "sanitization_certificate", [column]
        )


def downgrade() -> None:
    op.drop_table("sanitization_certificate")
