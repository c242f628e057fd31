"""Per-domain allow and deny lists of senders for rspamd (docs/antispam.md)

Revision ID: 0012_data_antispam_lists
Revises: 0001_data

- ``antispam_lists``: one row per (recipient domain, sender): ``allow`` or ``deny``. The
  recipient domain is NULL for an entry of every domain (a global one); the sender is an
  address (``user@example.org``) or a whole domain (``example.org``), lower case.
- ``antispam_map``: the rows as rspamd's map keys (``SCOPE|SENDER`` with ``*`` for global and
  ``@DOMAIN`` for a sender domain), which each node's policy server serves to its rspamd.
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_data_antispam_lists"
down_revision = "0001_data"
branch_labels = None
depends_on = None

MAP = """CREATE VIEW antispam_map AS
     SELECT coalesce(d.name, '*') || '|' || CASE WHEN strpos(l.sender, '@') > 0 THEN l.sender
                                                  ELSE '@' || l.sender END AS key,
            l.kind
       FROM antispam_lists l LEFT JOIN domains d ON d.id = l.domain_id"""


def upgrade() -> None:
    op.create_table(
        "antispam_lists",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"), nullable=True),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.String(320), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('allow', 'deny')", name="antispam_lists_kind"),
        sa.CheckConstraint("sender = lower(sender) AND sender <> ''", name="antispam_lists_sender"),
    )
    # one entry per scope and sender; NULL (global) is a scope of its own
    op.execute("CREATE UNIQUE INDEX antispam_lists_scope_sender ON antispam_lists "
               "(coalesce(domain_id, 0), sender)")
    op.execute(MAP)


def downgrade() -> None:
    op.execute("DROP VIEW antispam_map")
    op.drop_table("antispam_lists")
