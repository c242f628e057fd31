"""Shared Alembic env logic; each database's env.py calls run() with its metadata."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context


def run(metadata) -> None:
    url = context.config.attributes["url"]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
