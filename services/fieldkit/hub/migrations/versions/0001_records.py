"""Records ledger, sealed packets, statistics, erasure, audit, health, refusals.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ref() -> sa.Column[str]:
    return sa.Column(
        "record_id", sa.String(32), sa.ForeignKey("record.record_id"), primary_key=True
    )


def upgrade() -> None:
    op.create_table(
        "record",
        sa.Column("record_id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(100), nullable=False),
    )
    op.create_index("ix_record_device_id", "record", ["device_id"])
    op.create_table(
        "sealed_packet",
        _ref(),
        sa.Column("municipality", sa.String(6), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("suite", sa.String(64), nullable=False),
        sa.Column("receiver_key", sa.String(16), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.String(100), nullable=False),
    )
    op.create_index("ix_sealed_packet_municipality", "sealed_packet", ["municipality"])
    op.create_table(
        "statistics",
        _ref(),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("site", sa.String(200), nullable=False),
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("municipality", sa.String(6), nullable=False),
        sa.Column("sex", sa.String(8), nullable=False),
        sa.Column("age_band", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_statistics_site", "statistics", ["site"])
    op.create_index("ix_statistics_date", "statistics", ["date"])
    op.create_index("ix_statistics_municipality", "statistics", ["municipality"])
    op.create_table(
        "erasure_record",
        _ref(),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
    )
    op.create_index("ix_erasure_record_device_id", "erasure_record", ["device_id"])
    op.create_table(
        "audit_event",
        _ref(),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(100), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_event_device_id", "audit_event", ["device_id"])
    op.create_table(
        "device_health",
        _ref(),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    op.create_index("ix_device_health_device_id", "device_health", ["device_id"])
    op.create_table(
        "refusal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("record_id", sa.String(32), nullable=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
    )
    op.create_index("ix_refusal_device_id", "refusal", ["device_id"])


def downgrade() -> None:
    for table in (
        "refusal",
        "device_health",
        "audit_event",
        "erasure_record",
        "statistics",
        "sealed_packet",
        "record",
    ):
        op.drop_table(table)
