"""SOGo's address books know each entry's mail domain (column ``domain``)

SOGo's SQL sources scope every search, listing and card lookup to the signed-in user's
domain when the source names a ``DomainFieldName`` (adapters/sogo.py): the user's domain is
read from the same column of the user's own row, and domains grouped by the template
parameter ``address_book_shared_domains`` (``SOGoDomainsVisibility``) see each other. Both
``sogo_users`` (the users and calendar resources, ``rupost_local``) and ``sogo_gal`` (the
global address list, ``rupost_gal``) gain the column; a new domain is scoped by its rows
alone, no configuration names it.

Revision ID: 0009_data_address_book_domains
"""
from alembic import op

revision = "0009_data_address_book_domains"
down_revision = "0001_data"
branch_labels = None
depends_on = ("0003_data_resources", "0002_data_directories")

# an address's domain is its mailbox's domain (local@domain, both lower case)
SOGO_USERS = """CREATE VIEW sogo_users AS
     SELECT m.address AS c_uid, m.address AS c_name, m.password AS c_password,
            COALESCE(NULLIF(m.display_name, ''), m.address) AS c_cn, m.address AS mail,
            r.kind AS kind, r.multiple_bookings AS multiple_bookings,
            split_part(m.address, '@', 2) AS domain
       FROM lookup_mailboxes m
       LEFT JOIN (SELECT mb.address, cr.kind, cr.multiple_bookings
                    FROM calendar_resources cr JOIN mailboxes mb ON mb.id = cr.mailbox_id) r
              ON r.address = m.address"""

# as 0003_data_resources left it
SOGO_USERS_OLD = """CREATE VIEW sogo_users AS
     SELECT m.address AS c_uid, m.address AS c_name, m.password AS c_password,
            COALESCE(NULLIF(m.display_name, ''), m.address) AS c_cn, m.address AS mail,
            r.kind AS kind, r.multiple_bookings AS multiple_bookings
       FROM lookup_mailboxes m
       LEFT JOIN (SELECT mb.address, cr.kind, cr.multiple_bookings
                    FROM calendar_resources cr JOIN mailboxes mb ON mb.id = cr.mailbox_id) r
              ON r.address = m.address"""


# as in 0002_data_directories (a migration keeps its own copy: that one must not change)
GAL_COLUMNS = [
    ("given_name", "givenname"), ("surname", "sn"), ("middle_name", "rupostmiddlename"),
    ("city", "l"), ("region", "st"), ("street", "street"), ("country", "c"),
    ("mobile", "mobile"), ("work_phone", "telephonenumber"), ("home_phone", "homephone"),
    ("fax", "facsimiletelephonenumber"), ("pager", "pager"), ("title", "title"),
    ("employee_number", "employeenumber"), ("role", "employeetype"), ("company", "o"),
    ("department", "ou"),
]


def sogo_gal(with_domain: bool) -> str:
    columns = ",\n                ".join(f"COALESCE(a.gal->>'{key}', '') AS {column}"
                                        for key, column in GAL_COLUMNS)
    return f"""CREATE VIEW sogo_gal AS
         SELECT 'gal-' || a.id AS c_uid, a.mail AS c_name, NULL::text AS c_password,
                COALESCE(NULLIF(a.gal->>'display_name', ''), NULLIF(mb.display_name, ''), a.mail) AS c_cn,
                a.mail AS mail, {columns}{", d.name AS domain" if with_domain else ""}
           FROM directory_accounts a JOIN mailboxes mb ON mb.id = a.mailbox_id
           JOIN domains d ON d.id = mb.domain_id
          WHERE a.state = 'active' AND mb.enabled AND d.enabled"""


def upgrade() -> None:
    op.execute("DROP VIEW sogo_users")
    op.execute(SOGO_USERS)
    op.execute("DROP VIEW sogo_gal")
    op.execute(sogo_gal(with_domain=True))


def downgrade() -> None:
    op.execute("DROP VIEW sogo_gal")
    op.execute(sogo_gal(with_domain=False))
    op.execute("DROP VIEW sogo_users")
    op.execute(SOGO_USERS_OLD)
