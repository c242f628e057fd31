"""cluster: node admin state and queue directory, rolling deploys

Revision ID: 0003_main
Revises: 0002_main
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_main"
down_revision = "0002_main"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("admin_state", sa.String(length=16), nullable=False, server_default="enabled"))
    op.add_column("nodes", sa.Column("queue_directory", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("template_name", sa.String(length=128), nullable=False),
        sa.Column("template_version", sa.String(length=64), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "rollout_steps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rollout_id", sa.Integer(), sa.ForeignKey("rollouts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("node_name", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("rollout_id", "node_name"),
    )
    op.create_index("ix_rollout_steps_rollout_id", "rollout_steps", ["rollout_id"])


def downgrade() -> None:
    op.drop_index("ix_rollout_steps_rollout_id", table_name="rollout_steps")
    op.drop_table("rollout_steps")
    op.drop_table("rollouts")
    op.drop_column("nodes", "queue_directory")
    op.drop_column("nodes", "admin_state")
