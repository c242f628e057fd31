"""write-back of mail/proxyAddresses into an LDAP domain (guide §7.5): its settings per domain

Revision ID: 0008_main_ldap_writeback
Revises: 0004_main_directories
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_main_ldap_writeback"
down_revision = "0004_main_directories"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ldap_domains", sa.Column("writeback", JSONB(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    op.drop_column("ldap_domains", "writeback")
