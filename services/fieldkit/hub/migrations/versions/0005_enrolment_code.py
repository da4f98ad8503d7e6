"""One-time enrolment codes (hashes only) for tablets that make their own keys.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolment_code",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("lookup", sa.String(4), nullable=False),
        sa.Column("secret_hash", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("site", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("serial", sa.String(40), nullable=True),
    )
    for column in ("lookup", "device_id"):
        op.create_index(f"ix_enrolment_code_{column}", "enrolment_code", [column])


def downgrade() -> None:
    op.drop_table("enrolment_code")
