"""State: SQLAlchemy models for the three databases and their Alembic migrations."""
