"""impersonation account uses

Revision ID: 0004_logs_impersonation
Revises: 0002_logs
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_logs_impersonation"
down_revision = "0002_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "impersonation_uses",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False, server_default="imap"),
        sa.Column("remote_ip", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("node", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("mechanism", sa.String(length=32), nullable=False, server_default=""),
    )
    op.create_index("ix_impersonation_uses_at", "impersonation_uses", ["at"])
    op.create_index("ix_impersonation_uses_account", "impersonation_uses", ["account"])
    op.create_index("ix_impersonation_uses_target", "impersonation_uses", ["target"])


def downgrade() -> None:
    op.drop_table("impersonation_uses")
