"""rspamd's verdicts in the hourly statistics: messages scanned, rejected and greylisted by
the filter, per node, domain and hour (rupost/services/stats_rspamd.py)

Revision ID: 0007_logs_filter_stats
Revises: 0003_logs_stats
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_logs_filter_stats"
down_revision = "0003_logs_stats"
branch_labels = None
depends_on = None

COLUMNS = ("filter_scanned", "filter_rejected", "filter_greylisted")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("stats_hourly", sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for name in COLUMNS:
        op.drop_column("stats_hourly", name)
