"""Alembic migrations for the three databases, run programmatically."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .engine import KINDS, Databases, url_for

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(dbs: Databases, kind: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / kind))
    # the URL travels as an attribute, not through ConfigParser, so '%' in a
    # password needs no escaping and the password never lands in a file
    cfg.attributes["url"] = url_for(dbs.settings, dbs.name(kind))
    return cfg


def upgrade(dbs: Databases, kinds=KINDS) -> None:
    for kind in kinds:
        command.upgrade(alembic_config(dbs, kind), "head")


def status(dbs: Databases) -> list[dict]:
    rows = []
    for kind in KINDS:
        head = ScriptDirectory.from_config(alembic_config(dbs, kind)).get_current_head()
        with dbs.engine(kind).connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        rows.append({"database": dbs.name(kind), "kind": kind, "current": current, "head": head,
                     "up_to_date": current == head})
    return rows
