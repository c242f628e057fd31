"""Announce every change postfix's cached lookups depend on (NOTIFY rupost_lookups)

The builtin template puts the node's memcached in front of postfix's hottest PostgreSQL
lookups (recipient access, alias expansion, hosted domains; docs/benchmarks.md). A cached
answer must not outlive the rows it came from: a statement-level trigger on every table
those lookups read announces the change when its transaction commits, whoever wrote it
(a service, the directory updater, a hand-written SQL statement), and every node's agent
empties its memcached when the announcement arrives (rupost/services/cache.py).

Columns the lookups never read (a mailbox's password, quota, display name) change often
and announce nothing.

Revision ID: 0008_data_lookup_changes
"""
from alembic import op

revision = "0008_data_lookup_changes"
down_revision = "0001_data"
branch_labels = None
depends_on = "0007_data_recipient_access"

CHANNEL = "rupost_lookups"

FUNCTION = f"""CREATE OR REPLACE FUNCTION announce_lookup_change() RETURNS trigger
     LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
     RETURN NULL;
   END $$"""

# table -> the events that change what a lookup answers
EVENTS = {
    "domains": "INSERT OR DELETE OR UPDATE OF name, enabled",
    "mailboxes": "INSERT OR DELETE OR UPDATE OF address, domain_id, enabled",
    "aliases": "INSERT OR DELETE OR UPDATE",
    "distribution_lists": "INSERT OR DELETE OR UPDATE",
    "distribution_list_members": "INSERT OR DELETE OR UPDATE",
}


def upgrade() -> None:
    op.execute(FUNCTION)
    for table, events in EVENTS.items():
        for suffix, event in (("rows", events), ("truncate", "TRUNCATE")):
            op.execute(f"CREATE TRIGGER announce_lookup_change_{suffix} AFTER {event} ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION announce_lookup_change()")


def downgrade() -> None:
    for table in EVENTS:
        for suffix in ("rows", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS announce_lookup_change_{suffix} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS announce_lookup_change()")
