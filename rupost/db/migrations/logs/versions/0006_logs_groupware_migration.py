"""calendars-and-contacts migration state

Revision ID: 0006_logs_groupware_migration
Revises: 0003_logs_migration
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_logs_groupware_migration"
down_revision = "0003_logs_migration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "groupware_migrations",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("source_login", sa.String(length=1000), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("runs", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("refused", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'[]'::jsonb")),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint("source", "source_login", "target"),
    )
    op.create_index("ix_groupware_migrations_target", "groupware_migrations", ["target"])


def downgrade() -> None:
    op.drop_index("ix_groupware_migrations_target", table_name="groupware_migrations")
    op.drop_table("groupware_migrations")
