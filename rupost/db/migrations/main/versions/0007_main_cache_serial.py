"""Count the cache flushes requested (announcement_serials), so an agent that lost its
connection knows on its return whether it missed any

Every node's agent empties its dovecot auth cache and memcached when another node announces
an account change (NOTIFY rupost_caches, rupost/services/cache.py). Announcements sent while
it was not listening are lost, so it used to flush at every reconnect: after a database
restart that emptied dovecot's cache just when its SQL connections were failing (issue 32:
IMAP logins refused with "Temporary authentication failure"). The announcement now counts
itself in the same transaction, and the agent flushes on its return only if the count moved.

Revision ID: 0007_main_cache_serial
"""
from alembic import op

revision = "0007_main_cache_serial"
down_revision = "0001_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE announcement_serials (channel text PRIMARY KEY, serial bigint NOT NULL DEFAULT 0)")
    op.execute("INSERT INTO announcement_serials (channel) VALUES ('rupost_caches')")


def downgrade() -> None:
    op.execute("DROP TABLE announcement_serials")
