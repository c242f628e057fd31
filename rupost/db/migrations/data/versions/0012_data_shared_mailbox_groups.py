"""Groups (distribution lists, LDAP groups included) as members of shared mailboxes, and no
IMAP "administer" right

Revision ID: 0012_data_shared_mailbox_groups
Revises: 0011_data_shared_mailboxes

- ``shared_mailbox_groups``: a distribution list granted rights on a shared mailbox. Its
  *current* members hold them: dovecot's userdb answer carries each user's groups
  (``acl_groups``, from the view ``lookup_acl_groups``: the lists the user is in that are
  members of some shared mailbox), the shared mailbox's ACL file grants ``group=LIST``.
- ``lookup_shared_boxes_groups``: dovecot's acl_shared_dict keys
  ``shared/shared-boxes/group/LIST/OWNER`` (which shared mailboxes a group's members see).
- ``calendar_group_delegations``: a distribution list delegated an owner's calendar. SOGo's
  ACLs take groups only from LDAP sources, so the core expands the list into one SOGo ACL per
  member and keeps them in step with the list; ``members`` records whom it granted.
- the ``a`` (administer) right is gone: a member changing rights over IMAP SETACL would make
  the ACL file differ from the members RuPost keeps; existing grants lose it.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_data_shared_mailbox_groups"
down_revision = "0011_data_shared_mailboxes"
branch_labels = None
depends_on = None

GROUP_BOXES = """CREATE VIEW lookup_shared_boxes_groups AS
     SELECT owner.address AS from_user, l.address AS to_group, '1'::text AS dummy
       FROM shared_mailbox_groups g
       JOIN shared_mailboxes s ON s.id = g.shared_id
       JOIN lookup_mailboxes owner ON owner.address = s.address
       JOIN distribution_lists l ON l.id = g.list_id AND l.enabled"""

# the userdb's acl_groups: only lists that are members of a shared mailbox (a short string,
# read at every login and delivery); NULL (no such list) leaves the field out
ACL_GROUPS = """CREATE VIEW lookup_acl_groups AS
     SELECT m.address AS login, string_agg(DISTINCT l.address, ',' ORDER BY l.address) AS groups
       FROM shared_mailbox_groups g
       JOIN distribution_lists l ON l.id = g.list_id AND l.enabled
       JOIN distribution_list_members m ON m.list_id = l.id
      GROUP BY m.address"""

# as for lookup_shared_boxes (0011): dovecot's writes to its shared dict are dropped
NO_WRITES = [f"CREATE RULE lookup_shared_boxes_groups_{event.lower()} AS ON {event} TO lookup_shared_boxes_groups "
             "DO INSTEAD NOTHING" for event in ("INSERT", "UPDATE", "DELETE")]


def upgrade() -> None:
    op.create_table(
        "shared_mailbox_groups",
        sa.Column("shared_id", sa.Integer(), sa.ForeignKey("shared_mailboxes.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("list_id", sa.Integer(), sa.ForeignKey("distribution_lists.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("rights", sa.String(length=32), nullable=False),
        sa.CheckConstraint("rights ~ '^[lrwsipkxte]+$'", name="ck_shared_mailbox_groups_rights"),
    )
    op.create_index("ix_shared_mailbox_groups_list_id", "shared_mailbox_groups", ["list_id"])
    op.create_table(
        "calendar_group_delegations",
        sa.Column("owner", sa.String(length=320),
                  sa.ForeignKey("mailboxes.address", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
        sa.Column("list_id", sa.Integer(), sa.ForeignKey("distribution_lists.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("rights", sa.String(length=16), nullable=False),
        sa.Column("members", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.CheckConstraint("rights IN ('read', 'write', 'freebusy')", name="ck_calendar_group_delegations_rights"),
    )
    op.create_index("ix_calendar_group_delegations_list_id", "calendar_group_delegations", ["list_id"])
    op.execute("UPDATE shared_mailbox_members SET rights = replace(rights, 'a', '')")
    op.drop_constraint("ck_shared_mailbox_members_rights", "shared_mailbox_members", type_="check")
    op.create_check_constraint("ck_shared_mailbox_members_rights", "shared_mailbox_members",
                               "rights ~ '^[lrwsipkxte]+$'")
    op.execute(GROUP_BOXES)
    op.execute(ACL_GROUPS)
    for statement in NO_WRITES:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW lookup_acl_groups")
    op.execute("DROP VIEW lookup_shared_boxes_groups")
    op.drop_constraint("ck_shared_mailbox_members_rights", "shared_mailbox_members", type_="check")
    op.create_check_constraint("ck_shared_mailbox_members_rights", "shared_mailbox_members",
                               "rights ~ '^[lrwsipkxtea]+$'")
    op.drop_table("calendar_group_delegations")
    op.drop_table("shared_mailbox_groups")
