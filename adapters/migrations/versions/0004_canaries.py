"""Canary rollouts: a version that takes a share of an adapter's traffic before it is prod.

Revision ID: 0004_canaries
Revises: 0003_forced_promotions
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_canaries"
down_revision = "0003_forced_promotions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_canaries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "name",
            sa.String(63),
            sa.ForeignKey("adapters.name", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("prod_version", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("adapter_canaries")
