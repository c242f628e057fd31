"""lookup_kerberos_logins: which mailbox a Kerberos principal opens (GSSAPI logins)

A principal of an LDAP domain's realm is ``LOGIN@REALM``, LOGIN the account's
sAMAccountName (AD) or uid: the login the sync stored in directory_accounts. Dovecot's
GSSAPI passdb (rendered per LDAP domain with Kerberos, adapters/dovecot.py) asks this view
for the active account's enabled mailbox; a disabled, deleted or conflicting account, or a
disabled mailbox or domain, has no row, so its ticket opens nothing.

Revision ID: 0012_data_kerberos_logins
"""
from alembic import op

revision = "0012_data_kerberos_logins"
down_revision = "0001_data"
branch_labels = None
depends_on = "0002_data_directories"

# login as the directory spells it (the principal dovecot compares, k5principals), key the
# lower-case login the passdb looks it up by
VIEW = """CREATE VIEW lookup_kerberos_logins AS
     SELECT a.directory, lower(a.login) AS key, a.login, m.address
       FROM directory_accounts a JOIN lookup_mailboxes m ON m.address = a.mail
      WHERE a.state = 'active' AND a.login <> ''"""


def upgrade() -> None:
    op.execute("CREATE INDEX ix_directory_accounts_login_key ON directory_accounts (directory, lower(login))")
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS lookup_kerberos_logins")
    op.execute("DROP INDEX IF EXISTS ix_directory_accounts_login_key")
