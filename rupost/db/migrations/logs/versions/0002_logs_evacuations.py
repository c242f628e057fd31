"""queue evacuations journal

Revision ID: 0002_logs
Revises: 0001_logs
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_logs"
down_revision = "0001_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evacuations",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("failed_node", sa.String(length=128), nullable=False),
        sa.Column("by_node", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("found", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_evacuations_failed_node", "evacuations", ["failed_node"])


def downgrade() -> None:
    op.drop_index("ix_evacuations_failed_node", table_name="evacuations")
    op.drop_table("evacuations")
