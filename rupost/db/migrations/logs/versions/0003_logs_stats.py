"""mail statistics: hourly counters and log parser positions

Revision ID: 0003_logs_stats
Revises: 0002_logs
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_logs_stats"
down_revision = "0002_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats_hourly",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sent", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("delivered", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("deferred", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bounced", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"),
        sa.UniqueConstraint("hour", "node", "domain", name="uq_stats_hourly_hour_node_domain"),
    )
    op.create_index("ix_stats_hourly_hour", "stats_hourly", ["hour"])
    op.create_index("ix_stats_hourly_domain", "stats_hourly", ["domain"])
    op.create_table(
        "stats_log_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("offset", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("first_line_hash", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("memory", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("lines", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("node", "source", name="uq_stats_log_state_node_source"),
    )


def downgrade() -> None:
    op.drop_table("stats_log_state")
    op.drop_index("ix_stats_hourly_domain", table_name="stats_hourly")
    op.drop_index("ix_stats_hourly_hour", table_name="stats_hourly")
    op.drop_table("stats_hourly")
