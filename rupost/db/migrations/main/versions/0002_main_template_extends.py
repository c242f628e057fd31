"""custom templates: resolved body, extends, importer

Revision ID: 0002_main
Revises: 0001_main
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_main"
down_revision = "0001_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("templates", sa.Column("resolved", sa.Text(), nullable=True))
    op.add_column("templates", sa.Column("extends", sa.String(length=200), nullable=False, server_default=""))
    op.add_column("templates", sa.Column("imported_by", sa.String(length=128), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("templates", "imported_by")
    op.drop_column("templates", "extends")
    op.drop_column("templates", "resolved")
