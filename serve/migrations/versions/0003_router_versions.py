"""Calibrated router versions per tenant, and which one each tenant uses.

Revision ID: 0003_router_versions
Revises: 0002_tenant_ids
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_router_versions"
down_revision = "0002_tenant_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_versions",
        sa.Column(
            "tenant",
            sa.String(64),
            sa.ForeignKey("tenants.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "router_active",
        sa.Column(
            "tenant",
            sa.String(64),
            sa.ForeignKey("tenants.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("router_active")
    op.drop_table("router_versions")
