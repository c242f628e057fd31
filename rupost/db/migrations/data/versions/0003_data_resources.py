"""calendar resources, impersonation accounts, sender policy "members" of distribution lists

Revision ID: 0003_data_resources
Revises: 0001_data
Depends on: 0002_data_directories (lookup_list_policies is recreated here)

- ``calendar_resources``: a room or a piece of equipment is a mailbox (SOGo logs it in
  internally and files invitations in its calendar) plus SOGo's resource fields, served
  by ``sogo_users`` (KindFieldName ``kind``, MultipleBookingsFieldName ``multiple_bookings``).
- ``impersonation_accounts`` and ``lookup_master_users``: dovecot's master passdb.
- ``lookup_list_policies``: lists with sender policy "members" answer the restriction
  class ``smtpd_rupost_list_members`` (postfix asks the RuPost policy server).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_data_resources"
down_revision = "0001_data"
branch_labels = None
depends_on = "0002_data_directories"

JSONB = postgresql.JSONB(astext_type=sa.Text())

SOGO_USERS = """CREATE VIEW sogo_users AS
     SELECT m.address AS c_uid, m.address AS c_name, m.password AS c_password,
            COALESCE(NULLIF(m.display_name, ''), m.address) AS c_cn, m.address AS mail,
            r.kind AS kind, r.multiple_bookings AS multiple_bookings
       FROM lookup_mailboxes m
       LEFT JOIN (SELECT mb.address, cr.kind, cr.multiple_bookings
                    FROM calendar_resources cr JOIN mailboxes mb ON mb.id = cr.mailbox_id) r
              ON r.address = m.address"""

SOGO_USERS_OLD = """CREATE VIEW sogo_users AS
     SELECT address AS c_uid, address AS c_name, password AS c_password,
            COALESCE(NULLIF(display_name, ''), address) AS c_cn, address AS mail
       FROM lookup_mailboxes"""

MASTER_USERS = """CREATE VIEW lookup_master_users AS
     SELECT a.name, a.password_hash AS password,
            ARRAY(SELECT lower(jsonb_array_elements_text(a.domains))) AS domains
       FROM impersonation_accounts a
      WHERE a.enabled"""

LIST_POLICIES = """CREATE VIEW lookup_list_policies AS
     SELECT l.address,
            CASE l.sender_policy WHEN 'internal' THEN 'permit_sasl_authenticated, reject'
                                 WHEN 'members' THEN 'smtpd_rupost_list_members'
                                 ELSE 'DUNNO' END AS restriction
       FROM distribution_lists l JOIN domains d ON d.id = l.domain_id
      WHERE l.enabled AND d.enabled AND l.sender_policy <> 'anyone'"""

LIST_POLICIES_OLD = """CREATE VIEW lookup_list_policies AS
     SELECT l.address,
            CASE l.sender_policy WHEN 'internal' THEN 'permit_sasl_authenticated, reject' ELSE 'DUNNO' END
              AS restriction
       FROM distribution_lists l JOIN domains d ON d.id = l.domain_id
      WHERE l.enabled AND d.enabled AND l.sender_policy <> 'anyone'"""


def upgrade() -> None:
    op.create_table(
        "calendar_resources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mailbox_id", sa.Integer(), sa.ForeignKey("mailboxes.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("multiple_bookings", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("owner", sa.String(length=320), nullable=False, server_default=""),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('location', 'thing')", name="ck_calendar_resources_kind"),
        sa.CheckConstraint("multiple_bookings >= 0", name="ck_calendar_resources_multiple_bookings"),
    )
    op.create_table(
        "impersonation_accounts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("domains", JSONB, nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.execute("DROP VIEW sogo_users")
    op.execute(SOGO_USERS)
    op.execute(MASTER_USERS)
    op.execute("DROP VIEW lookup_list_policies")
    op.execute(LIST_POLICIES)


def downgrade() -> None:
    op.execute("DROP VIEW lookup_list_policies")
    op.execute(LIST_POLICIES_OLD)
    op.execute("DROP VIEW lookup_master_users")
    op.execute("DROP VIEW sogo_users")
    op.execute(SOGO_USERS_OLD)
    op.drop_table("impersonation_accounts")
    op.drop_table("calendar_resources")
