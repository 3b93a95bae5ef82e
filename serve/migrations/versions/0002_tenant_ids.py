"""Tenants get an id that is never reused; adapters and documents belong to it, not the name.

Existing tenants keep their name as id: that is what their adapters' `owner` and their
documents' collection are keyed by, so nothing has to move.

Revision ID: 0002_tenant_ids
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_tenant_ids"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("id", sa.String(64), nullable=True))
    tenants = sa.table("tenants", sa.column("name", sa.String), sa.column("id", sa.String))
    op.get_bind().execute(tenants.update().values(id=tenants.c.name))
    with op.batch_alter_table("tenants") as batch:
        batch.alter_column("id", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_tenants_id", ["id"])


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint("uq_tenants_id", type_="unique")
        batch.drop_column("id")
