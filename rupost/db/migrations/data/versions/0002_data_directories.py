"""directories: materialised directory accounts (GAL), distribution lists

Revision ID: 0002_data_directories
Revises: 0001_data
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_data_directories"
down_revision = "0001_data"
branch_labels = None
depends_on = None

JSONB = postgresql.JSONB(astext_type=sa.Text())

# GAL field (directory_accounts.gal key) -> SOGo contact attribute (LDIF-style name
# SOGo turns into vCard properties)
GAL_COLUMNS = [
    ("given_name", "givenname"), ("surname", "sn"), ("middle_name", "rupostmiddlename"),
    ("city", "l"), ("region", "st"), ("street", "street"), ("country", "c"),
    ("mobile", "mobile"), ("work_phone", "telephonenumber"), ("home_phone", "homephone"),
    ("fax", "facsimiletelephonenumber"), ("pager", "pager"), ("title", "title"),
    ("employee_number", "employeenumber"), ("role", "employeetype"), ("company", "o"),
    ("department", "ou"),
]

VIEWS = [
    # postfix virtual_alias_maps: a list address expands to its current members
    """CREATE VIEW lookup_lists AS
         SELECT l.address, string_agg(DISTINCT m.address, ',') AS members
           FROM distribution_lists l
           JOIN domains d ON d.id = l.domain_id
           JOIN distribution_list_members m ON m.list_id = l.id
          WHERE l.enabled AND d.enabled
          GROUP BY l.address""",
    # postfix check_recipient_access: lists with a sender restriction -> the restrictions
    # ("internal": authenticated senders only; port 25 never authenticates)
    """CREATE VIEW lookup_list_policies AS
         SELECT l.address,
                CASE l.sender_policy WHEN 'internal' THEN 'permit_sasl_authenticated, reject' ELSE 'DUNNO' END
                  AS restriction
           FROM distribution_lists l JOIN domains d ON d.id = l.domain_id
          WHERE l.enabled AND d.enabled AND l.sender_policy <> 'anyone'""",
    # SOGo SQL contact source: the global address list (active directory accounts)
    """CREATE VIEW sogo_gal AS
         SELECT 'gal-' || a.id AS c_uid, a.mail AS c_name, NULL::text AS c_password,
                COALESCE(NULLIF(a.gal->>'display_name', ''), NULLIF(mb.display_name, ''), a.mail) AS c_cn,
                a.mail AS mail, """ + ",\n                ".join(
        f"COALESCE(a.gal->>'{key}', '') AS {column}" for key, column in GAL_COLUMNS) + """
           FROM directory_accounts a JOIN mailboxes mb ON mb.id = a.mailbox_id
           JOIN domains d ON d.id = mb.domain_id
          WHERE a.state = 'active' AND mb.enabled AND d.enabled""",
]


def upgrade() -> None:
    op.create_table(
        "directory_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("directory", sa.String(length=64), nullable=False, index=True),
        sa.Column("stable_id", sa.String(length=128), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id", ondelete="SET NULL"), nullable=True,
                  index=True),
        sa.Column("dn", sa.Text(), nullable=False),
        sa.Column("login", sa.String(length=256), nullable=False),
        sa.Column("mail", sa.String(length=320), nullable=False, index=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("aliases", JSONB, nullable=False),
        sa.Column("groups", JSONB, nullable=False),
        sa.Column("gal", JSONB, nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("directory", "stable_id"),
    )
    op.create_table(
        "distribution_lists",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("domain_id", sa.Integer(), sa.ForeignKey("domains.id", ondelete="RESTRICT"), nullable=False,
                  index=True),
        sa.Column("address", sa.String(length=320), nullable=False, unique=True),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("filter_name", sa.String(length=64), nullable=True),
        sa.Column("sender_policy", sa.String(length=16), nullable=False),
        sa.Column("max_drop_share", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_update_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_update_status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "distribution_list_members",
        sa.Column("list_id", sa.Integer(), sa.ForeignKey("distribution_lists.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("address", sa.String(length=320), primary_key=True),
        sa.Column("source", sa.String(length=8), primary_key=True),
    )
    op.create_index("ix_distribution_list_members_address", "distribution_list_members", ["address"])
    for statement in VIEWS:
        op.execute(statement)


def downgrade() -> None:
    for view in ("sogo_gal", "lookup_list_policies", "lookup_lists"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_table("distribution_list_members")
    op.drop_table("distribution_lists")
    op.drop_table("directory_accounts")
