"""the last TOTP time-step accepted per administrator (a code is good once)

Revision ID: 0006_main_admin_totp_step
Revises: 0004_main_panel
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_main_admin_totp_step"
down_revision = "0004_main_panel"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("panel_admins", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("panel_admins", "totp_last_step")
