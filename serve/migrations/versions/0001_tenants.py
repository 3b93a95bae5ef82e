"""Tenants and their API keys, adopting the tables an earlier release made without alembic.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "tenants" not in existing:
        op.create_table(
            "tenants",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("policy", sa.JSON(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "api_keys" not in existing:
        op.create_table(
            "api_keys",
            sa.Column("digest", sa.String(64), primary_key=True),
            sa.Column("prefix", sa.String(16), nullable=False),
            sa.Column(
                "tenant_name",
                sa.String(64),
                sa.ForeignKey("tenants.name", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    # Policies stored before `collections` was dropped from TenantPolicy still hold the key.
    tenants = sa.table("tenants", sa.column("name", sa.String), sa.column("policy", sa.JSON))
    bind = op.get_bind()
    for name, policy in bind.execute(sa.select(tenants.c.name, tenants.c.policy)).all():
        if isinstance(policy, dict) and "collections" in policy:
            kept = {k: v for k, v in policy.items() if k != "collections"}
            bind.execute(tenants.update().where(tenants.c.name == name).values(policy=kept))


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("tenants")
