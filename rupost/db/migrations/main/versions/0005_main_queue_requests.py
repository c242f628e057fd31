"""mail queue requests relayed to the node that owns the queue

Revision ID: 0005_main_queue_requests
Revises: 0003_main
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_main_queue_requests"
down_revision = "0003_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_requests",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("node_name", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("arguments", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="requested"),
        sa.Column("requested_by", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("requested_from", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("source", sa.String(length=16), nullable=False, server_default="cli"),
        sa.Column("address", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_queue_requests_node_status", "queue_requests", ["node_name", "status"])


def downgrade() -> None:
    op.drop_index("ix_queue_requests_node_status", table_name="queue_requests")
    op.drop_table("queue_requests")
