"""Lookups that answer found keys, so postfix stops probing substrings of the address

Revision ID: 0006_data_found_key_lookups
Revises: 0001_data
Depends on: 0005_data_lookup_recipient (lookup_recipient; lookup_virtual and lookup_list_policies come before it)

When a table has no answer for the full address, postfix tries substrings of it, each one
more round trip through proxymap (which also wakes postfix's master twice) even when the
query is suppressed and PostgreSQL never hears of it:

- smtpd's check_recipient_access (the list-policy check, every recipient) tried the domain,
  each parent domain and "localpart@": 4 round trips per ordinary recipient.
  ``lookup_recipient_policy`` answers a list's restriction for a list with a sender policy
  and DUNNO ("found, no action") for every other address that receives mail: 1 round trip.
- cleanup's virtual alias expansion (every recipient, every list member) tried "@domain":
  2 round trips per mailbox. ``lookup_expansion`` answers an alias's destinations, a list's
  members, and a mailbox with its own address: postfix's documented way to keep a mailbox
  as it is ("expand into itself once"), 1 round trip.

An address that does not receive mail still gets the probes, so "list+tag@domain" still
finds the policy of "list@domain" and "user+tag@domain" still expands like "user@domain".
"""
from alembic import op

revision = "0006_data_found_key_lookups"
down_revision = "0001_data"
branch_labels = None
depends_on = "0005_data_lookup_recipient"

FUNCTIONS = {
    "lookup_recipient_policy": """CREATE OR REPLACE FUNCTION lookup_recipient_policy(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT restriction FROM lookup_list_policies WHERE address = key;
         IF NOT FOUND THEN
           RETURN QUERY SELECT 'DUNNO'::text FROM lookup_recipient(key) LIMIT 1;
         END IF;
       END $$""",
    # an alias or a list first, exactly as before (the services keep an address in one of the
    # three tables; should two ever hold it, the alias still wins as it did)
    "lookup_expansion": """CREATE OR REPLACE FUNCTION lookup_expansion(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT * FROM lookup_virtual(key);
         IF NOT FOUND THEN
           RETURN QUERY SELECT address::text FROM lookup_mailboxes WHERE address = key;
         END IF;
       END $$""",
}


def upgrade() -> None:
    for statement in FUNCTIONS.values():
        op.execute(statement)


def downgrade() -> None:
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}(text)")
