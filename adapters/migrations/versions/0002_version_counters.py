"""Remember the highest version number each adapter name has used, beyond its removal.

vLLM serves a version as `NAME-vN` and keeps it loaded by that name; were a number ever handed
out again, a replica still holding the old `NAME-vN` would serve the old weights under it.

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
    counters = op.create_table(
        "adapter_version_counters",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("last_version", sa.Integer(), nullable=False),
    )
    # Numbers in use now; those of versions removed before this revision are unknown.
    rows = op.get_bind().execute(
        sa.text("SELECT name, MAX(version) FROM adapter_versions GROUP BY name")
    )
    op.bulk_insert(counters, [{"name": n, "last_version": v} for n, v in rows])


def downgrade() -> None:
    op.drop_table("adapter_version_counters")
