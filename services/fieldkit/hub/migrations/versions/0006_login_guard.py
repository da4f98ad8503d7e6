"""Login guard: throttling by account and address and globally, session generations, TOTP.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The per-account lockout's counters go: throttling counts attempts in login_attempt.
    with op.batch_alter_table("web_account") as batch:
        batch.drop_column("failures")
        batch.drop_column("locked_until")
        batch.add_column(
            sa.Column("session_generation", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("totp_secret", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("totp_enabled", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("totp_last_counter", sa.Integer, nullable=True))
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
    )
    op.create_index("ix_login_attempt_at", "login_attempt", ["at"])
    op.create_index("ix_login_attempt_address", "login_attempt", ["address"])
    op.create_table(
        "login_block",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=False),
    )
    op.create_index("ix_login_block_until", "login_block", ["until"])


def downgrade() -> None:
    op.drop_table("login_block")
    op.drop_table("login_attempt")
    with op.batch_alter_table("web_account") as batch:
        batch.drop_column("totp_last_counter")
        batch.drop_column("totp_enabled")
        batch.drop_column("totp_secret")
        batch.drop_column("session_generation")
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("locked_until", sa.Float, nullable=False, server_default="0"))
