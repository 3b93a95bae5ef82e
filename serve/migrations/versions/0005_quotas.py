"""Per-tenant quotas: usage counters per fixed window, and leases of open streams.

Revision ID: 0005_quotas
Revises: 0004_feedback_drift
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_quotas"
down_revision = "0004_feedback_drift"
branch_labels = None
depends_on = None


def _tenant_id(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "tenant_id",
        sa.String(64),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "quota_usage",
        _tenant_id(primary_key=True),
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("window_start", sa.BigInteger(), primary_key=True),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_quota_usage_window_end", "quota_usage", ["window_end"])
    op.create_table(
        "quota_streams",
        sa.Column("id", sa.String(32), primary_key=True),
        _tenant_id(),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_quota_streams_tenant", "quota_streams", ["tenant_id", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_quota_streams_tenant", table_name="quota_streams")
    op.drop_table("quota_streams")
    op.drop_index("ix_quota_usage_window_end", table_name="quota_usage")
    op.drop_table("quota_usage")
