"""postfix lookups through PL/pgSQL functions: plans cached per connection

Revision ID: 0004_data_lookup_functions
Revises: 0001_data
Depends on: 0002_data_directories (lookup_lists)

Postfix sends every lookup as a literal query (no prepared statements), so PostgreSQL
parses and plans the view's join on every call, and planning is most of the cost:
aliases + lists as two view queries took 0.49 ms per key, the same two lookups inside one
PL/pgSQL function 0.10 ms (its statements are planned once per proxymap connection and
reused); a mailbox lookup 0.21 ms as a view query (benchmarks/lookups figures in
docs/benchmarks.md). The functions read the same views, so what a lookup returns is
unchanged; the views stay for SOGo, dovecot and administrators.
"""
from alembic import op

revision = "0004_data_lookup_functions"
down_revision = "0001_data"
branch_labels = None
depends_on = "0002_data_directories"

FUNCTIONS = [
    # virtual_alias_maps: an alias, else a distribution list (an address is never both:
    # the services refuse it), as one round trip instead of one per table
    """CREATE OR REPLACE FUNCTION lookup_virtual(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT destinations FROM lookup_aliases WHERE address = key;
         IF NOT FOUND THEN
           RETURN QUERY SELECT members FROM lookup_lists WHERE address = key;
         END IF;
       END $$""",
    """CREATE OR REPLACE FUNCTION lookup_mailbox(key text) RETURNS SETOF integer
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT 1 FROM lookup_mailboxes WHERE address = key;
       END $$""",
    # check_recipient_access for every recipient: the restriction of a list with a sender
    # policy (the view is redefined by later revisions; a function resolves it when it runs)
    """CREATE OR REPLACE FUNCTION lookup_list_policy(key text) RETURNS SETOF text
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT restriction FROM lookup_list_policies WHERE address = key;
       END $$""",
    """CREATE OR REPLACE FUNCTION lookup_domain(key text) RETURNS SETOF integer
         LANGUAGE plpgsql STABLE STRICT AS $$
       BEGIN
         RETURN QUERY SELECT 1 FROM lookup_domains WHERE name = key;
       END $$""",
]


def upgrade() -> None:
    for statement in FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    for name in ("lookup_domain", "lookup_list_policy", "lookup_mailbox", "lookup_virtual"):
        op.execute(f"DROP FUNCTION IF EXISTS {name}(text)")
