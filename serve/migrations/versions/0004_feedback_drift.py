"""The production loop: request records (with captures where a tenant opts in), feedback, and
drift statistics; all belong to the tenant's id and go with it.

Revision ID: 0004_feedback_drift
Revises: 0003_router_versions
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_feedback_drift"
down_revision = "0003_router_versions"
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
        "completions",
        sa.Column("id", sa.String(128), primary_key=True),
        _tenant_id(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("route", sa.String(16), nullable=True),
        sa.Column("adapter", sa.String(80), nullable=True),
        sa.Column("router_version", sa.String(32), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("source_ids", sa.JSON(), nullable=False),
        sa.Column("grounded", sa.Float(), nullable=True),
        sa.Column("retrieval_top", sa.Float(), nullable=True),
        sa.Column("capture", sa.String(8), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
    )
    op.create_index("ix_completions_tenant_created", "completions", ["tenant_id", "created_at"])
    op.create_index("ix_completions_adapter_created", "completions", ["adapter", "created_at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(128), primary_key=True),
        _tenant_id(),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("negative", sa.Boolean(), nullable=False),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("messages", sa.JSON(), nullable=True),
        sa.Column("route", sa.String(16), nullable=True),
        sa.Column("adapter", sa.String(80), nullable=True),
        sa.Column("router_version", sa.String(32), nullable=True),
        sa.Column("source_ids", sa.JSON(), nullable=False),
        sa.Column("completion_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_tenant_created", "feedback", ["tenant_id", "created_at"])
    op.create_table(
        "drift_buckets",
        _tenant_id(primary_key=True),
        sa.Column("adapter", sa.String(63), primary_key=True),
        sa.Column("start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("vec_n", sa.Integer(), nullable=False),
        sa.Column("vec_sum", sa.LargeBinary(), nullable=True),
        sa.Column("sim_n", sa.Integer(), nullable=False),
        sa.Column("sim_sum", sa.Float(), nullable=False),
        sa.Column("sim_hist", sa.JSON(), nullable=False),
        sa.Column("rag_n", sa.Integer(), nullable=False),
        sa.Column("weak_n", sa.Integer(), nullable=False),
        sa.Column("grounded_n", sa.Integer(), nullable=False),
        sa.Column("grounded_sum", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_buckets")
    op.drop_table("feedback")
    op.drop_table("completions")
