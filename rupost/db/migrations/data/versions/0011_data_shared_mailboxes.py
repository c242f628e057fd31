"""Shared mailboxes, their members' IMAP rights, and send-as / send-on-behalf rights

Revision ID: 0011_data_shared_mailboxes
Revises: 0001_data
Depends on: 0002_data_directories (distribution lists: groups that may be granted send rights)

- ``shared_mailboxes``: marks a mailbox as shared (a team's info@). It has no login of its
  own: its password is ``!shared``, which dovecot's password_query skips and SOGo cannot
  verify. It still receives mail and has a quota like any mailbox.
- ``shared_mailbox_members``: who may open it and with which IMAP ACL rights (letters of
  RFC 4314, e.g. ``lrws``). ``lookup_shared_boxes`` serves dovecot's acl_shared_dict (the
  SQL dict): which shared mailboxes each user sees under ``Shared/`` in LIST.
- ``sender_rights``: a mailbox (shared or personal) a user or a group (a distribution list,
  LDAP groups included) may send as, or on behalf of. ``lookup_senders`` (postfix's
  smtpd_sender_login_maps) now lists the grantees too, a list expanded to its members;
  ``lookup_sender_grants`` tells the policy server which logins get a ``Sender:`` header.
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_data_shared_mailboxes"
down_revision = "0001_data"
branch_labels = None
depends_on = "0002_data_directories"

SENDERS_OLD = """CREATE VIEW lookup_senders AS
     SELECT address AS sender, address AS login FROM lookup_mailboxes
     UNION ALL
     SELECT a.address, btrim(dest) FROM lookup_aliases a,
            unnest(string_to_array(a.destinations, ',')) AS dest"""

# every (mailbox, login) pair a right grants: the grantee itself, or each member of the
# distribution list it names (a dynamic list's members are materialised by the updater)
GRANTS = """CREATE VIEW lookup_sender_grants AS
     SELECT mb.address AS sender, r.grantee AS login, r.kind
       FROM sender_rights r JOIN lookup_mailboxes mb ON mb.address = r.mailbox
     UNION
     SELECT mb.address, m.address, r.kind
       FROM sender_rights r JOIN lookup_mailboxes mb ON mb.address = r.mailbox
       JOIN distribution_lists l ON l.address = r.grantee AND l.enabled
       JOIN distribution_list_members m ON m.list_id = l.id"""

SENDERS = SENDERS_OLD + """
     UNION ALL
     SELECT sender, login FROM lookup_sender_grants"""

SHARED_BOXES = """CREATE VIEW lookup_shared_boxes AS
     SELECT owner.address AS from_user, member.address AS to_user, '1'::text AS dummy
       FROM shared_mailbox_members sm
       JOIN shared_mailboxes s ON s.id = sm.shared_id
       JOIN lookup_mailboxes owner ON owner.address = s.address
       JOIN lookup_mailboxes member ON member.address = sm.member"""

# "anyone" shares (IMAP ACL identifier anyone): RuPost grants none; dovecot asks anyway
ANYONE_BOXES = """CREATE VIEW lookup_shared_boxes_anyone AS
     SELECT ''::text AS from_user, '1'::text AS dummy WHERE false"""

# dovecot rewrites its shared dict whenever it rebuilds a mailbox's ACL list (a member creates
# a folder, an IMAP SETACL, doveadm acl): the members are RuPost's rows, so those writes are
# accepted and dropped instead of failing with an error in dovecot's log
NO_WRITES = [f"CREATE RULE {view}_{event.lower()} AS ON {event} TO {view} DO INSTEAD NOTHING"
             for view in ("lookup_shared_boxes", "lookup_shared_boxes_anyone")
             for event in ("INSERT", "UPDATE", "DELETE")]


def upgrade() -> None:
    # addresses, not ids: the views join on them and the daemons ask by address; the
    # foreign keys keep a removed mailbox from leaving rights behind
    op.create_table(
        "shared_mailboxes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("address", sa.String(length=320),
                  sa.ForeignKey("mailboxes.address", ondelete="CASCADE", onupdate="CASCADE"),
                  nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_table(
        "shared_mailbox_members",
        sa.Column("shared_id", sa.Integer(), sa.ForeignKey("shared_mailboxes.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("member", sa.String(length=320),
                  sa.ForeignKey("mailboxes.address", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
        sa.Column("rights", sa.String(length=32), nullable=False),
        sa.CheckConstraint("rights ~ '^[lrwsipkxtea]+$'", name="ck_shared_mailbox_members_rights"),
    )
    op.create_index("ix_shared_mailbox_members_member", "shared_mailbox_members", ["member"])
    op.create_table(
        "sender_rights",
        sa.Column("mailbox", sa.String(length=320),
                  sa.ForeignKey("mailboxes.address", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
        sa.Column("grantee", sa.String(length=320), primary_key=True),
        sa.Column("kind", sa.String(length=16), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('send_as', 'send_on_behalf')", name="ck_sender_rights_kind"),
    )
    op.create_index("ix_sender_rights_grantee", "sender_rights", ["grantee"])
    op.execute("DROP VIEW lookup_senders")
    op.execute(GRANTS)
    op.execute(SENDERS)
    op.execute(SHARED_BOXES)
    op.execute(ANYONE_BOXES)
    for statement in NO_WRITES:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW lookup_shared_boxes_anyone")
    op.execute("DROP VIEW lookup_shared_boxes")
    op.execute("DROP VIEW lookup_senders")
    op.execute("DROP VIEW lookup_sender_grants")
    op.execute(SENDERS_OLD)
    op.drop_table("sender_rights")
    op.drop_table("shared_mailbox_members")
    op.drop_table("shared_mailboxes")
