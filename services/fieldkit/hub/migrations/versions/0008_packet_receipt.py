"""Sealed packets v2 carry the hash of a receipt token sealed inside; an erasure records
whether the municipality's receipt returned that token (it decrypted the packet).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sealed_packet") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(
            sa.Column("receipt_commitment", sa.String(64), nullable=False, server_default="")
        )
    with op.batch_alter_table("packet_erasure") as batch:
        batch.add_column(
            sa.Column("decrypted", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("packet_erasure") as batch:
        batch.drop_column("decrypted")
    with op.batch_alter_table("sealed_packet") as batch:
        batch.drop_column("receipt_commitment")
        batch.drop_column("version")
