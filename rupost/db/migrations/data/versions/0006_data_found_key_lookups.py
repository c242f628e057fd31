"""Lookups that answer found keys, so postfix stops probing substrings of the address

Revision ID: 0006_data_found_key_lookups
Revises: 0001_data
Depends on: 0005_data_lookup_recipient (lookup_virtual and lookup_list_policies come before it)

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

# Mailboxes are asked first: they are most recipients, and each statement a PL/pgSQL function
# runs costs ~25-40 us of PostgreSQL CPU (one client alone: an ordinary mailbox costs 50 us
# in lookup_expansion against 92 us asking aliases and lists first, 62 us in
# lookup_recipient_policy against 85 us through lookup_recipient, whose answer its last two
# statements repeat inline for that reason). The services keep an address in exactly one of
# mailboxes, aliases and lists, so the order decides nothing else.
FUNCTIONS = {
    "lookup_recipient_policy": """CREATE OR REPLACE FUNCTION lookup_recipient_policy(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT restriction FROM lookup_list_policies WHERE address = key;
         IF NOT FOUND THEN
           RETURN QUERY SELECT 'DUNNO'::text FROM lookup_mailboxes WHERE address = key;
         END IF;
         IF NOT FOUND THEN
           RETURN QUERY SELECT 'DUNNO'::text FROM lookup_virtual(key) AS expansion(destinations)
                         WHERE destinations <> '' LIMIT 1;
         END IF;
       END $$""",
    "lookup_expansion": """CREATE OR REPLACE FUNCTION lookup_expansion(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT address::text FROM lookup_mailboxes WHERE address = key;
         IF NOT FOUND THEN
           RETURN QUERY SELECT * FROM lookup_virtual(key);
         END IF;
       END $$""",
}


def upgrade() -> None:
    for statement in FUNCTIONS.values():
        op.execute(statement)


def downgrade() -> None:
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}(text)")
