"""measured mail storage use per mailbox (dashboard: quota use, largest mailboxes)

Revision ID: 0003_data_quota_usage
Revises: 0001_data
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_data_quota_usage"
down_revision = "0001_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_usage",
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("messages", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mailbox_usage_used", "mailbox_usage", ["used_bytes"])
    op.create_index("ix_mailbox_usage_domain_used", "mailbox_usage", ["domain_id", "used_bytes"])


def downgrade() -> None:
    op.drop_index("ix_mailbox_usage_domain_used", table_name="mailbox_usage")
    op.drop_index("ix_mailbox_usage_used", table_name="mailbox_usage")
    op.drop_table("mailbox_usage")
