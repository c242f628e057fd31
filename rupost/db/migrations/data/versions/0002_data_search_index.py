"""trigram indexes for substring search of mailboxes (panel and CLI lists)

Revision ID: 0002_data_search_index
Revises: 0001_data

A substring search (`LIKE '%term%'`) reads the whole table without them: 60-130 ms at
100,000 mailboxes, 0.2 ms with them (measured for the panel's mailbox list).
pg_trgm is a trusted extension (PostgreSQL >= 13): the database owner may create it.
"""
from alembic import op

revision = "0002_data_search_index"
down_revision = "0001_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE INDEX IF NOT EXISTS ix_mailboxes_address_trgm ON mailboxes USING gin (address gin_trgm_ops)")
    # on the column itself: the search is ILIKE, which trigram indexes serve directly
    op.execute("CREATE INDEX IF NOT EXISTS ix_mailboxes_display_name_trgm ON mailboxes "
               "USING gin (display_name gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_mailboxes_display_name_trgm")
    op.execute("DROP INDEX IF EXISTS ix_mailboxes_address_trgm")
