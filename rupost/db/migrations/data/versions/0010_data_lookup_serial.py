"""Count the lookup changes announced (announcement_serials), so a listener that lost its
connection knows on its return whether it missed anything; lookup_key() refuses an empty key

The lookup cache guard (rupost/services/cache.py) empties a node's memcached when the data
database announces a change postfix's cached lookups depend on (migration 0008). Announcements
sent while it was not listening are lost, so it used to empty memcached at every reconnect,
which after a database restart threw away the answers postfix was living on while its own
PostgreSQL connections were still failing (issue 32: 62 s of 451 to known recipients). The
trigger now also counts each announcing statement in one row, in the writer's transaction:
the count is visible exactly when the announcement is sent (at commit), so a guard that
compares it with the count it last flushed for knows whether a change committed meanwhile.
The row is locked until the writer commits: writers of lookup rows commit one after the
other, which the directory updater and the panel already did in practice.

``lookup_key(key)`` returns its argument, or raises on an empty one: dovecot's SQL lookups
wrap their key in it. While dovecot's PostgreSQL client is reconnecting (after a database
outage) it cannot escape the key ("Could not escape string: Not connected to database") and
sends the query with an empty one once connected: the mailbox is then not found, and mail
accepted during the outage was bounced with "550 5.1.1 User doesn't exist" and the answer
cached as negative (measured, issue 32). An error instead makes dovecot answer "temporary
failure": postfix defers the message, the login may be retried.

Revision ID: 0010_data_lookup_serial
"""
from alembic import op

revision = "0010_data_lookup_serial"
down_revision = "0001_data"
branch_labels = None
depends_on = "0008_data_lookup_changes"

CHANNEL = "rupost_lookups"

FUNCTION = f"""CREATE OR REPLACE FUNCTION announce_lookup_change() RETURNS trigger
     LANGUAGE plpgsql AS $$
   BEGIN
     UPDATE announcement_serials SET serial = serial + 1 WHERE channel = '{CHANNEL}';
     PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
     RETURN NULL;
   END $$"""

PREVIOUS = f"""CREATE OR REPLACE FUNCTION announce_lookup_change() RETURNS trigger
     LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
     RETURN NULL;
   END $$"""


LOOKUP_KEY = """CREATE OR REPLACE FUNCTION lookup_key(key text) RETURNS text
     LANGUAGE plpgsql IMMUTABLE AS $$
   BEGIN
     IF key IS NULL OR key = '' THEN
       RAISE EXCEPTION 'empty lookup key (the client could not escape it)';
     END IF;
     RETURN key;
   END $$"""


def upgrade() -> None:
    op.execute(LOOKUP_KEY)
    op.execute("CREATE TABLE announcement_serials (channel text PRIMARY KEY, serial bigint NOT NULL DEFAULT 0)")
    op.execute(f"INSERT INTO announcement_serials (channel) VALUES ('{CHANNEL}')")
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(PREVIOUS)
    op.execute("DROP TABLE announcement_serials")
    op.execute("DROP FUNCTION IF EXISTS lookup_key(text)")
