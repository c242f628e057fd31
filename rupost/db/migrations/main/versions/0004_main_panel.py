"""control panel: administrators, login lockouts, background jobs

Revision ID: 0004_main_panel
Revises: 0003_main
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_main_panel"
down_revision = "0003_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "panel_admins",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("login", sa.String(length=128), nullable=False, unique=True),
        sa.Column("source", sa.String(length=16), nullable=False, server_default="local"),
        sa.Column("password_hash", sa.Text(), nullable=False, server_default=""),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("domains", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'[]'::jsonb")),
        sa.Column("language", sa.String(length=8), nullable=False, server_default="ru"),
        sa.Column("totp_secret", sa.String(length=64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sessions_after", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('superadmin', 'domain_admin', 'readonly')", name="panel_admins_role"),
        sa.CheckConstraint("source IN ('local', 'ldap')", name="panel_admins_source"),
    )
    op.create_table(
        "panel_lockouts",
        sa.Column("kind", sa.String(length=8), primary_key=True),
        sa.Column("key", sa.String(length=255), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "panel_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="queued"),
        sa.Column("progress", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.Column("requested_by", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("node", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_panel_jobs_created_at", "panel_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_panel_jobs_created_at", table_name="panel_jobs")
    op.drop_table("panel_jobs")
    op.drop_table("panel_lockouts")
    op.drop_table("panel_admins")
