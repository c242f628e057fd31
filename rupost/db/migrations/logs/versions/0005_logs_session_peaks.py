"""peak concurrent sessions per hour, node and public listener

Revision ID: 0005_logs_session_peaks
Revises: 0003_logs_stats
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_logs_session_peaks"
down_revision = "0003_logs_stats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_peaks_hourly",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("listener", sa.String(length=32), nullable=False),
        sa.Column("peak", sa.Integer(), nullable=False, server_default="0"),
        sa.UniqueConstraint("hour", "node", "listener", name="uq_session_peaks_hourly_hour_node_listener"),
    )
    op.create_index("ix_session_peaks_hourly_hour", "session_peaks_hourly", ["hour"])


def downgrade() -> None:
    op.drop_index("ix_session_peaks_hourly_hour", table_name="session_peaks_hourly")
    op.drop_table("session_peaks_hourly")
