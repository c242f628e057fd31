"""lookup_recipient: one query answers whether an address can receive mail

Revision ID: 0005_data_lookup_recipient
Revises: 0001_data
Depends on: 0004_data_lookup_functions (lookup_virtual)

smtpd's check for unknown recipients asked virtual_alias_maps and then, for every ordinary
mailbox, virtual_mailbox_maps: two round trips per recipient through proxymap to PostgreSQL.
The template points smtpd (only smtpd: cleanup still expands aliases with lookup_virtual) at
this function instead: a mailbox, else an alias or list, in one call (5.6 -> 4.6 queries
per message, docs/benchmarks.md).
"""
from alembic import op

revision = "0005_data_lookup_recipient"
down_revision = "0001_data"
branch_labels = None
depends_on = "0004_data_lookup_functions"


def upgrade() -> None:
    # the alias branch goes through lookup_virtual so that an address counts as an alias or a
    # list exactly when cleanup will expand it (postfix ignores empty and NULL results)
    op.execute("""CREATE OR REPLACE FUNCTION lookup_recipient(key text) RETURNS SETOF integer
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT 1 FROM lookup_mailboxes WHERE address = key;
         IF NOT FOUND THEN
           RETURN QUERY SELECT 1 FROM lookup_virtual(key) AS expansion(destinations)
                         WHERE destinations <> '' LIMIT 1;
         END IF;
       END $$""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS lookup_recipient(text)")
