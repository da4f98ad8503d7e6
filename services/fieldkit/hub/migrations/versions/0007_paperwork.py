"""The contract's paperwork (issue 23): contract details, generated documents kept with their
hashes, each visit's cards handed over and the lead's remarks, incident drafts raised from
device alarms (status, source), expenses with their receipts, and paper destruction records.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visit") as batch:
        batch.add_column(sa.Column("cards_issued", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("remarks", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("incident") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="reported")
        )
        batch.add_column(sa.Column("source", sa.String(200), nullable=True))
        batch.create_unique_constraint("uq_incident_source", ["source"])
    op.create_table(
        "contract",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("work_name", sa.String(200), nullable=False),
        sa.Column("client", sa.String(200), nullable=False),
        sa.Column("signed_on", sa.String(10), nullable=False),
        sa.Column("started_on", sa.String(10), nullable=False),
        sa.Column("period_start", sa.String(10), nullable=False),
        sa.Column("period_end", sa.String(10), nullable=False),
        sa.Column("completed_on", sa.String(10), nullable=False),
        sa.Column("amount_yen", sa.Integer, nullable=False),
        sa.Column("contractor_address", sa.String(300), nullable=False),
        sa.Column("contractor_name", sa.String(200), nullable=False),
        sa.Column("representative", sa.String(100), nullable=False),
        sa.Column("agent_name", sa.String(100), nullable=False),
        sa.Column("agent_title", sa.String(100), nullable=False),
        sa.Column("work_summary", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "paper_document",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(100), nullable=False),
        sa.Column("mimetype", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("kind", "version", name="uq_paper_document_version"),
    )
    op.create_index("ix_paper_document_kind", "paper_document", ["kind"])
    op.create_table(
        "receipt",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("mimetype", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("uploaded_at", sa.Float, nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "expense",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("spent_on", sa.String(10), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("payee", sa.String(200), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("amount_yen", sa.Integer, nullable=False),
        sa.Column("receipt_id", sa.Integer, sa.ForeignKey("receipt.id"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_expense_spent_on", "expense", ["spent_on"])
    op.create_table(
        "paper_destruction",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("destroyed_on", sa.String(10), nullable=False),
        sa.Column("what", sa.String(300), nullable=False),
        sa.Column("quantity", sa.String(100), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("staff", sa.String(32), nullable=False),
        sa.Column("witness", sa.String(100), nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.Float, nullable=False),
    )
    op.create_index("ix_paper_destruction_destroyed_on", "paper_destruction", ["destroyed_on"])


def downgrade() -> None:
    op.drop_table("paper_destruction")
    op.drop_table("expense")
    op.drop_table("receipt")
    op.drop_table("paper_document")
    op.drop_table("contract")
    with op.batch_alter_table("incident") as batch:
        batch.drop_constraint("uq_incident_source", type_="unique")
        batch.drop_column("source")
        batch.drop_column("status")
    with op.batch_alter_table("visit") as batch:
        batch.drop_column("remarks")
        batch.drop_column("cards_issued")
