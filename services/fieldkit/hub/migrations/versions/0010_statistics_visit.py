"""A statistics record names the visit staff chose on the tablet for the day (issue 23 item 2);
empty for records from before, which the reports give to the visit planned for that tablet
and day, as they did.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("statistics") as batch:
        batch.add_column(sa.Column("visit_id", sa.Integer, nullable=True))
        batch.create_index("ix_statistics_visit_id", ["visit_id"])


def downgrade() -> None:
    with op.batch_alter_table("statistics") as batch:
        batch.drop_index("ix_statistics_visit_id")
        batch.drop_column("visit_id")
