"""A transaction that changed a lookup row says so to its writer (rupost.lookups_changed)

A process that commits a change to rows postfix's cached lookups read empties its node's
memcached at once, so its own next request never reads an answer it just made stale (the
agents of all the nodes empty theirs when the announcement of 0008 arrives). It used to do so
after every write to the data database: a quota, a password, a display name or a calendar
change threw the whole lookup cache away, and every hosted domain, sender and recipient went
to PostgreSQL again. The announcing trigger now also sets the transaction-local setting
``rupost.lookups_changed``; the writer reads it before committing (one SELECT in the
transaction, rupost/db/engine.py) and empties memcached only when it is set.

Revision ID: 0015_data_lookup_change_mark
"""
from alembic import op

revision = "0015_data_lookup_change_mark"
down_revision = "0014_data_auth_lookups"
branch_labels = None
depends_on = ("0010_data_lookup_serial",)

CHANNEL = "rupost_lookups"
MARK = "rupost.lookups_changed"


def _function(mark: bool) -> str:
    set_mark = f"\n     PERFORM set_config('{MARK}', 'on', true);" if mark else ""
    return f"""CREATE OR REPLACE FUNCTION announce_lookup_change() RETURNS trigger
     LANGUAGE plpgsql AS $$
   BEGIN
     UPDATE announcement_serials SET serial = serial + 1 WHERE channel = '{CHANNEL}';{set_mark}
     PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
     RETURN NULL;
   END $$"""


def upgrade() -> None:
    op.execute(_function(mark=True))


def downgrade() -> None:
    op.execute(_function(mark=False))
