"""directories: LDAP domains, named LDAP filters, directory administrators

Revision ID: 0004_main_directories
Revises: 0003_main
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_main_directories"
down_revision = "0003_main"
branch_labels = None
depends_on = None

JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.create_table(
        "ldap_domains",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("uris", JSONB, nullable=False),
        sa.Column("security", sa.String(length=16), nullable=False),
        sa.Column("ca_pem", sa.Text(), nullable=False),
        sa.Column("bind_dn", sa.Text(), nullable=False),
        sa.Column("bind_password", sa.Text(), nullable=False),
        sa.Column("base_dn", sa.Text(), nullable=False),
        sa.Column("user_filter", sa.Text(), nullable=False),
        sa.Column("group_filter", sa.Text(), nullable=False),
        sa.Column("mail_domains", JSONB, nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sync", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "ldap_filters",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("ldap_domain_id", sa.Integer(), sa.ForeignKey("ldap_domains.id", ondelete="RESTRICT"),
                  nullable=False, index=True),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "ldap_admin_mappings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ldap_domain_id", sa.Integer(), sa.ForeignKey("ldap_domains.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("domains", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("ldap_domain_id", "kind", "value"),
    )


def downgrade() -> None:
    op.drop_table("ldap_admin_mappings")
    op.drop_table("ldap_filters")
    op.drop_table("ldap_domains")
