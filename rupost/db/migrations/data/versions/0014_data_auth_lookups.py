"""dovecot's passdb and userdb read a mailbox through two functions (issue 25)

dovecot sends its SQL lookups as literal queries: each one was parsed and planned again, and
planning the join of ``lookup_mailboxes`` (and ``lookup_acl_groups`` for the userdb) cost more
than running it. Measured with pgbench on 2,000 mailboxes in 20 domains (literal queries, as
dovecot sends them): the userdb query 0.48 to 0.53 ms, the same through ``lookup_user()``
0.18 to 0.20 ms. A PL/pgSQL function's plan is cached per connection (as for postfix's lookups,
0004_data_lookup_functions); the template's queries keep the fields dovecot reads (their names
and the quota rule's shape stay in the template) and select them from the function's row:

- ``lookup_login(key)``: address and password hash of an enabled mailbox (passdb);
- ``lookup_user(key)``: address, quota in bytes and the user's ACL groups (userdb).

Both keep what ``lookup_mailbox_key`` (0013) gave the queries they replace: an empty key is an
error (``lookup_key``, 0010) and a replica that has no such mailbox raises instead of
answering "no such user" (it may be behind the primary).

Revision ID: 0014_data_auth_lookups
"""
from alembic import op

revision = "0014_data_auth_lookups"
down_revision = "0013_data_replica_misses"
branch_labels = None
depends_on = ("0012_data_shared_mailbox_groups",)

REPLICA_MISS = """
     IF NOT FOUND AND pg_is_in_recovery() THEN
       RAISE EXCEPTION 'no mailbox % on this replica: a replica does not answer "not found" (it may be '
                       'behind the primary)', key;
     END IF;"""

LOGIN = f"""CREATE OR REPLACE FUNCTION lookup_login(key text) RETURNS TABLE (address text, password text)
     LANGUAGE plpgsql STABLE AS $$
   BEGIN
     RETURN QUERY SELECT m.address::text, m.password::text FROM lookup_mailboxes m WHERE m.address = lookup_key(key);
{REPLICA_MISS}
   END $$"""

USER = f"""CREATE OR REPLACE FUNCTION lookup_user(key text)
     RETURNS TABLE (address text, quota_bytes bigint, acl_groups text)
     LANGUAGE plpgsql STABLE AS $$
   BEGIN
     RETURN QUERY SELECT m.address::text, m.quota_bytes::bigint,
                         (SELECT g.groups FROM lookup_acl_groups g WHERE g.login = m.address)::text
                    FROM lookup_mailboxes m WHERE m.address = lookup_key(key);
{REPLICA_MISS}
   END $$"""


def upgrade() -> None:
    op.execute(LOGIN)
    op.execute(USER)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS lookup_user(text)")
    op.execute("DROP FUNCTION IF EXISTS lookup_login(text)")
