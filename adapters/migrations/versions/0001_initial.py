"""Initial registry schema: adapters and their immutable versions.

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
    op.create_table(
        "adapters",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("shared_with", sa.JSON(), nullable=False),
        sa.Column("prod_history", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "name",
            sa.String(63),
            sa.ForeignKey("adapters.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, index=True),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("target_modules", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset_digest", sa.String(64), nullable=True),
        sa.Column("training_config", sa.JSON(), nullable=True),
        sa.Column("eval_report", sa.JSON(), nullable=True),
        sa.Column("exemplars", sa.JSON(), nullable=False),
        sa.UniqueConstraint("name", "version"),
    )


def downgrade() -> None:
    op.drop_table("adapter_versions")
    op.drop_table("adapters")
