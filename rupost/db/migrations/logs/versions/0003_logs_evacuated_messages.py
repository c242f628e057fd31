"""evacuation hand-over journal (exactly-once delivery of evacuated mail)

Revision ID: 0003_logs_evacuated_messages
Revises: 0002_logs
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_logs_evacuated_messages"
down_revision = "0002_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evacuated_messages",
        sa.Column("evacuation_id", sa.String(length=64), primary_key=True),
        sa.Column("failed_node", sa.String(length=128), nullable=False),
        sa.Column("queue_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("by_node", sa.String(length=128), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_evacuated_messages_failed_node", "evacuated_messages", ["failed_node"])


def downgrade() -> None:
    op.drop_index("ix_evacuated_messages_failed_node", table_name="evacuated_messages")
    op.drop_table("evacuated_messages")
