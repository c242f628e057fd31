"""abuse protection (auth failures, shared block list, sender counters) and DKIM keys

Revision ID: 0004_main_security
Revises: 0003_main
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_main_security"
down_revision = "0003_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("protocol", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_auth_failures_ip_at", "auth_failures", ["ip", "at"])
    op.create_index("ix_auth_failures_account_at", "auth_failures", ["account", "at"])
    op.create_table(
        "auth_blocks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "value"),
    )
    op.create_index("ix_auth_blocks_expires_at", "auth_blocks", ["expires_at"])
    op.create_table(
        "sender_messages",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_sender_messages_sender_at", "sender_messages", ["sender", "at"])
    op.create_table(
        "dkim_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("domain", "selector"),
    )
    op.create_index("ix_dkim_keys_domain", "dkim_keys", ["domain"])


def downgrade() -> None:
    op.drop_table("dkim_keys")
    op.drop_table("sender_messages")
    op.drop_table("auth_blocks")
    op.drop_table("auth_failures")
