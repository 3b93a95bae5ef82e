"""Record on a version when an admin promoted it over a NO-GO evaluation (time and reason).

Revision ID: 0003_forced_promotions
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_forced_promotions"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapter_versions") as batch:
        batch.add_column(sa.Column("forced", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapter_versions") as batch:
        batch.drop_column("forced")
