"""Connections to the three databases."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from ..config import DatabaseSettings
from ..errors import DatabaseError

KINDS = ("main", "data", "logs")


def url_for(settings: DatabaseSettings, dbname: str) -> URL:
    return URL.create(
        "postgresql+psycopg",
        username=settings.user,
        password=settings.password or None,
        host=settings.host,
        port=settings.port,
        database=dbname,
    )


def describe_db_error(exc: BaseException, settings: DatabaseSettings, dbname: str) -> str:
    """One line an administrator can act on, never a traceback (and never the password)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else exc.__class__.__name__
    # psycopg prefixes with the connection target; keep only the server's reason
    if "FATAL:" in first:
        first = first.split("FATAL:", 1)[1].strip()
    elif "failed:" in first:
        first = first.rsplit("failed:", 1)[1].strip()
    return f"cannot use database {dbname!r} at {settings.host}:{settings.port} as {settings.user!r}: {first}"


def _mark_written(session, _flush_context) -> None:
    session.info["written"] = True


def _mark_statement_written(state) -> None:
    """session.execute(insert/update/delete/text...) writes without a flush; only a plain
    SELECT surely does not."""
    if not state.is_select:
        state.session.info["written"] = True


class Databases:
    """Engines and sessions for rupost, rupost_data and rupost_logs."""

    def __init__(self, settings: DatabaseSettings):
        self.settings = settings
        self._engines: dict[str, Engine] = {}
        self._makers: dict[str, sessionmaker] = {}
        self._after_write: dict[str, list] = {}

    def after_write(self, kind: str, callback) -> None:
        """Call `callback()` after every session of `kind` that wrote something has committed
        (not before: a reader between the flush and the commit would still see the old rows)."""
        self._after_write.setdefault(kind, []).append(callback)

    def name(self, kind: str) -> str:
        return self.settings.names()[kind]

    def engine(self, kind: str) -> Engine:
        if kind not in self._engines:
            self._engines[kind] = sa.create_engine(
                url_for(self.settings, self.name(kind)),
                pool_pre_ping=True,
                pool_size=2,
                max_overflow=4,
                connect_args={"connect_timeout": 5, "application_name": "rupost"},
            )
            self._makers[kind] = sessionmaker(self._engines[kind], expire_on_commit=False)
            sa.event.listen(self._makers[kind], "after_flush", _mark_written)
            sa.event.listen(self._makers[kind], "do_orm_execute", _mark_statement_written)
        return self._engines[kind]

    def listener(self, kind: str, *channels: str):
        """A connection of its own (psycopg, autocommit) that LISTENs on `channels`: a pooled
        connection would be handed to someone else between notifications. TCP keepalives:
        a listener only reads, and without them a database host gone silent (no RST) would
        leave it waiting for notifications that never come, believing itself connected."""
        import psycopg

        db = self.settings
        conn = psycopg.connect(host=db.host, port=db.port, user=db.user, password=db.password,
                               dbname=self.name(kind), autocommit=True, connect_timeout=5,
                               application_name="rupost-listen", keepalives=1, keepalives_idle=10,
                               keepalives_interval=5, keepalives_count=3)
        for channel in channels:
            conn.execute(f"LISTEN {channel}")
        return conn

    @contextlib.contextmanager
    def session(self, kind: str = "main") -> Iterator[Session]:
        self.engine(kind)
        session = self._makers[kind]()
        try:
            yield session
            session.commit()
            if session.info.pop("written", False):
                for callback in self._after_write.get(kind, ()):
                    callback()
        except sa.exc.OperationalError as exc:
            session.rollback()
            raise DatabaseError(describe_db_error(exc, self.settings, self.name(kind))) from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check(self, kind: str = "main") -> None:
        try:
            with self.engine(kind).connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(describe_db_error(exc, self.settings, self.name(kind))) from None

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        self._makers.clear()
