"""push delivery failures and IMAP migration state

Revision ID: 0003_logs_migration
Revises: 0002_logs
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_logs_migration"
down_revision = "0002_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_deliveries",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=320), nullable=False, server_default=""),
        sa.Column("mailbox", sa.Text(), nullable=False, server_default=""),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index("ix_push_deliveries_at", "push_deliveries", ["at"])
    op.create_index("ix_push_deliveries_endpoint", "push_deliveries", ["endpoint"])
    op.create_table(
        "migration_mailboxes",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("source_login", sa.String(length=320), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("folders", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("source_messages", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("target_messages", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("copied", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("missing", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint("source", "source_login", "target"),
    )
    op.create_index("ix_migration_mailboxes_target", "migration_mailboxes", ["target"])


def downgrade() -> None:
    op.drop_index("ix_migration_mailboxes_target", table_name="migration_mailboxes")
    op.drop_table("migration_mailboxes")
    op.drop_index("ix_push_deliveries_endpoint", table_name="push_deliveries")
    op.drop_index("ix_push_deliveries_at", table_name="push_deliveries")
    op.drop_table("push_deliveries")
