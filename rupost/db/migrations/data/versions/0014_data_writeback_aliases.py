"""write-back of aliases (guide §7.5): the addresses RuPost itself wrote to a directory account

``directory_accounts.written_aliases`` lists the aliases the write-back added to the account's
``proxyAddresses`` (AD) or ``mail`` values (FreeIPA / ALD Pro). They tell RuPost's own values
apart from those an administrator set in the directory: the sync leaves them to RuPost (neither
adopted nor removed), and only they are removed from the directory when their alias goes.

Revision ID: 0014_data_writeback_aliases
Revises: 0002_data_directories
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014_data_writeback_aliases"
down_revision = "0002_data_directories"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("directory_accounts", sa.Column("written_aliases", JSONB(), nullable=False,
                                                  server_default=sa.text("'[]'")))


def downgrade() -> None:
    op.drop_column("directory_accounts", "written_aliases")
