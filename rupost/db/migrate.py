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
    # "heads": features land as independent branches off a common base (each
    # area's tables in its own revision), so a database may have several heads
    for kind in kinds:
        command.upgrade(alembic_config(dbs, kind), "heads")


def _applied(script: ScriptDirectory, current: set[str]) -> set[str]:
    """Every revision the recorded ones stand on. Alembic records only the tips: a revision
    another one depends on (``depends_on``) is applied but no longer listed itself."""
    seen, todo = set(), list(current)
    while todo:
        rev = script.get_revision(todo.pop())
        if rev is None or rev.revision in seen:
            continue
        seen.add(rev.revision)
        for parent in (rev.down_revision, rev.dependencies):
            todo.extend([parent] if isinstance(parent, str) else list(parent or ()))
    return seen


def status(dbs: Databases) -> list[dict]:
    rows = []
    for kind in KINDS:
        script = ScriptDirectory.from_config(alembic_config(dbs, kind))
        heads = set(script.get_heads())
        with dbs.engine(kind).connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        rows.append({"database": dbs.name(kind), "kind": kind,
                     "current": ",".join(sorted(current)) or None, "head": ",".join(sorted(heads)),
                     "up_to_date": heads <= _applied(script, current)})
    return rows
