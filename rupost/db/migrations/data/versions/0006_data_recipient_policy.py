"""lookup_recipient_policy: the list-policy check answers every address that receives mail

Revision ID: 0006_data_recipient_policy
Revises: 0001_data
Depends on: 0005_data_lookup_recipient (lookup_recipient; lookup_list_policies comes before it)

smtpd's check_recipient_access asks for the full address, and when that finds nothing it
asks again for the domain, each parent domain and "localpart@": four round trips through
proxymap for every ordinary recipient (each also wakes postfix's master twice), three of
them for keys PostgreSQL is never even asked about. The list-policy table now answers
DUNNO for every address that receives mail ("pretend not found, do not try substrings":
postfix stops there) and the list's restriction for a list with a sender policy, so an
ordinary recipient costs one round trip. An address that does not receive mail still gets
the substring probes, so "list+tag@domain" still finds the policy of "list@domain".
"""
from alembic import op

revision = "0006_data_recipient_policy"
down_revision = "0001_data"
branch_labels = None
depends_on = "0005_data_lookup_recipient"


def upgrade() -> None:
    op.execute("""CREATE OR REPLACE FUNCTION lookup_recipient_policy(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT restriction FROM lookup_list_policies WHERE address = key;
         IF NOT FOUND THEN
           RETURN QUERY SELECT 'DUNNO'::text FROM lookup_recipient(key) LIMIT 1;
         END IF;
       END $$""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS lookup_recipient_policy(text)")
