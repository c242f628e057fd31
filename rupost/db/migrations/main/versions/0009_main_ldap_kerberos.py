"""Kerberos single sign-on of an LDAP domain (rupost ldap-domains kerberos): its realm, the
service principals checked, and the keytab the AD administrator exported (base64)

Revision ID: 0009_main_ldap_kerberos
Revises: 0004_main_directories
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_main_ldap_kerberos"
down_revision = "0004_main_directories"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ldap_domains", sa.Column("kerberos", JSONB(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    op.drop_column("ldap_domains", "kerberos")
