"""A replica never answers "no such mailbox": the lookups that would refuse or bounce raise
an error there instead (a temporary failure)

With a highly available database (docs/database-ha.md) a node's lookups read a replica while
its HAProxy has no primary up. Each node's HAProxy learns of a new primary by its own health
check, while the core writes to it directly: a mailbox created in that moment can be asked
for on another node through a replica that has not replayed it yet. Its "not found" was final:
port 25's access table answered ``550 5.1.1 User unknown`` (and the node's memcached kept the
answer), dovecot's userdb "unknown user" (LMTP bounced the delivery). Seen in the HA tests for
the address created right after a switch. A "found" from a replica is right (what exists on a
replica existed on the primary); only a miss is doubtful, so only a miss becomes an error:

- ``lookup_mailbox_key(key)``: the key (through ``lookup_key``), or on a replica that has no
  mailbox with it an error; dovecot's passdb and userdb queries use it in place of
  ``lookup_key``;
- ``lookup_recipient_access``: on a replica, an address of a hosted domain that nothing
  receives for raises instead of answering 550 5.1.1.

On the primary (and on a single node without HA) both answer as before, at the cost of one
``pg_is_in_recovery()`` call.

Revision ID: 0013_data_replica_misses
"""
from alembic import op

revision = "0013_data_replica_misses"
down_revision = "0001_data"
branch_labels = None
depends_on = ("0007_data_recipient_access", "0010_data_lookup_serial")

MAILBOX_KEY = """CREATE OR REPLACE FUNCTION lookup_mailbox_key(key text) RETURNS text
     LANGUAGE plpgsql STABLE AS $$
   BEGIN
     IF pg_is_in_recovery() AND NOT EXISTS (SELECT 1 FROM lookup_mailboxes WHERE address = key) THEN
       RAISE EXCEPTION 'no mailbox % on this replica: a replica does not answer "not found" (it may be '
                       'behind the primary)', key;
     END IF;
     RETURN lookup_key(key);
   END $$"""

# 0007's function with one change: the last answer, 550 for an address of a hosted domain,
# is an error on a replica
RECIPIENT_ACCESS = """CREATE OR REPLACE FUNCTION lookup_recipient_access(key text, delimiter text) RETURNS SETOF text
     LANGUAGE plpgsql STABLE AS $$
   DECLARE
     key_domain text := substring(key from '@([^@]*)$');
     key_local text := left(key, length(key) - length(coalesce(key_domain, '')) - 1);
     candidates text[] := ARRAY[key];
     candidate text;
   BEGIN
     IF key_domain IS NULL OR key_domain = '' OR key_local = '' THEN
       RETURN;
     END IF;
     IF coalesce(delimiter, '') <> '' AND strpos(key_local, delimiter) > 1 THEN
       -- an address that itself contains the delimiter is asked as it is first
       candidates := candidates || (split_part(key_local, delimiter, 1) || '@' || key_domain);
     END IF;
     FOREACH candidate IN ARRAY candidates LOOP
       RETURN QUERY SELECT 'DUNNO'::text FROM lookup_mailboxes WHERE address = candidate;
       IF NOT FOUND THEN
         RETURN QUERY SELECT restriction FROM lookup_list_policies WHERE address = candidate;
       END IF;
       IF NOT FOUND THEN
         RETURN QUERY SELECT 'DUNNO'::text FROM lookup_virtual(candidate) AS expansion(destinations)
                       WHERE destinations <> '' LIMIT 1;
       END IF;
       IF FOUND THEN
         RETURN;
       END IF;
     END LOOP;
     IF EXISTS (SELECT 1 FROM lookup_domains WHERE name = key_domain) THEN
       IF pg_is_in_recovery() THEN
         RAISE EXCEPTION 'no recipient % on this replica: a replica does not answer "not found" (it may be '
                         'behind the primary)', key;
       END IF;
       RETURN QUERY SELECT '550 5.1.1 User unknown in virtual mailbox table'::text;
     ELSE
       RETURN QUERY SELECT 'DUNNO'::text;
     END IF;
   END $$"""


def upgrade() -> None:
    op.execute(MAILBOX_KEY)
    op.execute(RECIPIENT_ACCESS)


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("rupost.db.migrations.data.versions.0007_data_recipient_access")
    op.execute(previous.FUNCTION)
    op.execute("DROP FUNCTION IF EXISTS lookup_mailbox_key(text)")
