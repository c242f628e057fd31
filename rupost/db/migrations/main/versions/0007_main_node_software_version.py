"""the RuPost version each node's agent runs (a rolling package upgrade shows which nodes are done)

Revision ID: 0007_main_node_software_version
Revises: 0003_main
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_main_node_software_version"
down_revision = "0003_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("software_version", sa.String(length=32), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("nodes", "software_version")
