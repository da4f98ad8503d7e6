"""Hub web app: accounts, audit chain, handler registry, facilities, visits, pick-ups, incidents.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_account",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("municipalities", sa.JSON, nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "web_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "operator",
        sa.Column("operator_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("duty", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "facility",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("municipality", sa.String(6), nullable=False),
        sa.Column("address", sa.String(300), nullable=False),
    )
    op.create_table(
        "visit_request",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("facility_id", sa.Integer, sa.ForeignKey("facility.id"), nullable=False),
        sa.Column("received_on", sa.String(10), nullable=False),
        sa.Column("wanted_date", sa.String(10), nullable=False),
        sa.Column("expected_people", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_table(
        "visit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("facility_id", sa.Integer, sa.ForeignKey("facility.id"), nullable=False),
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("lead", sa.String(32), nullable=False),
        sa.Column("staff", sa.JSON, nullable=False),
        sa.Column("start_time", sa.String(5), nullable=False),
        sa.Column("end_time", sa.String(5), nullable=False),
        sa.Column("incidents", sa.Text, nullable=False),
    )
    op.create_table(
        "packet_pickup",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("municipalities", sa.JSON, nullable=False),
        sa.Column("record_ids", sa.JSON, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("downloaded_at", sa.Float, nullable=False),
        sa.Column("confirmed_at", sa.Float, nullable=True),
    )
    op.create_table(
        "packet_erasure",
        sa.Column("record_id", sa.String(32), sa.ForeignKey("record.record_id"), primary_key=True),
        sa.Column("municipality", sa.String(6), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("pickup_id", sa.Integer, sa.ForeignKey("packet_pickup.id"), nullable=False),
        sa.Column("ciphertext_sha256", sa.String(64), nullable=False),
        sa.Column("erased_at", sa.Float, nullable=False),
        sa.Column("erased_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "incident",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("reported_at", sa.Float, nullable=False),
        sa.Column("reported_by", sa.String(64), nullable=False),
        sa.Column("occurred_on", sa.String(10), nullable=False),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("how_much", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("how", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "incident",
        "packet_erasure",
        "packet_pickup",
        "visit",
        "visit_request",
        "facility",
        "operator",
        "web_audit",
        "web_account",
    ):
        op.drop_table(table)
