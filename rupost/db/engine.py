"""Connections to the three databases."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from ..config import DatabaseSettings
from ..errors import DatabaseError
from . import endpoints

KINDS = ("main", "data", "logs")


def url_for(settings: DatabaseSettings, dbname: str) -> URL:
    """With a highly available database, every member as a `host` query parameter and libpq's
    target_session_attrs (endpoints.core_target): SQLAlchemy's psycopg dialect hands libpq the
    list, and libpq connects to whichever member is the primary."""
    if endpoints.is_ha(settings):
        return URL.create("postgresql+psycopg", username=settings.user, password=settings.password or None,
                          database=dbname,
                          query={"host": tuple(f"{m.host}:{m.port}" for m in settings.members),
                                 "target_session_attrs": "read-write"})
    return URL.create(
        "postgresql+psycopg",
        username=settings.user,
        password=settings.password or None,
        host=settings.host,
        port=settings.port,
        database=dbname,
    )


# libpq's words when the server it talked to went away or stopped being the primary mid-way
# (a failover or a planned switchover): the transaction was rolled back, nothing was applied
_SWITCHING = ("server closed the connection unexpectedly", "terminating connection due to administrator",
              "terminating connection due to unexpected postmaster exit",
              "terminating connection due to conflict with recovery",
              "read-only transaction", "the database system is shutting down", "the database system is starting up",
              "consuming input failed", "connection to server", "could not receive data from server",
              "no connection to the server", "the connection is lost", "recovery is in progress")


def switching_over(exc: BaseException) -> bool:
    """The error is the server going away or turning read-only: a failover or switchover."""
    text = str(getattr(exc, "orig", None) or exc)
    return any(word in text for word in _SWITCHING)


def _quiet_rollback(session: Session) -> None:
    """A rollback on a connection the server closed fails too; the server has rolled back."""
    try:
        session.rollback()
    except sa.exc.SQLAlchemyError:
        pass


def describe_db_error(exc: BaseException, settings: DatabaseSettings, dbname: str, committing: bool = False) -> str:
    """One line an administrator can act on, never a traceback (and never the password)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else exc.__class__.__name__
    # psycopg prefixes with the connection target; keep only the server's reason
    if "FATAL:" in first:
        first = first.split("FATAL:", 1)[1].strip()
    elif "failed:" in first:
        first = first.rsplit("failed:", 1)[1].strip()
    if endpoints.is_ha(settings) and switching_over(exc):
        # a connection lost during COMMIT leaves the outcome unknown: the server may have
        # committed (and replicated) it before it died
        outcome = ("it may or may not have been applied: look before retrying" if committing
                   else "nothing of this operation was applied")
        return (f"database {dbname!r}: the database is switching over to another member ({first}); {outcome}; "
                "retry in a few seconds")
    return (f"cannot use database {dbname!r} at {endpoints.core_description(settings)} as {settings.user!r}: "
            f"{first}")


# set (transaction-local) by the trigger on the tables postfix's cached lookups read
LOOKUP_CHANGE_MARK = "rupost.lookups_changed"


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
        self._after_lookup_change: dict[str, list] = {}

    def after_lookup_change(self, kind: str, callback) -> None:
        """Call `callback()` after every session of `kind` whose transaction changed rows the
        mail lookups read has committed (not before: a reader between the flush and the commit
        would still see the old rows). The lookup tables' trigger marks such a transaction
        (LOOKUP_CHANGE_MARK, data migration 0015); other writes call nothing."""
        self._after_lookup_change.setdefault(kind, []).append(callback)

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
        conn = psycopg.connect(**endpoints.core_target(db), user=db.user, password=db.password,
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
        committing = False
        try:
            yield session
            changed_lookups = self._changed_lookups(kind, session)
            committing = True
            session.commit()
            committing = False
            if changed_lookups:
                for callback in self._after_lookup_change[kind]:
                    callback()
        except (sa.exc.OperationalError, sa.exc.InternalError) as exc:
            _quiet_rollback(session)
            if isinstance(exc, sa.exc.InternalError) and not switching_over(exc):
                raise
            raise DatabaseError(describe_db_error(exc, self.settings, self.name(kind), committing)) from None
        except BaseException:
            _quiet_rollback(session)
            raise
        finally:
            session.close()

    def _changed_lookups(self, kind: str, session: Session) -> bool:
        """Whether the session's transaction, about to commit, changed lookup rows: asked of
        the transaction itself (the trigger's mark), only when something was written."""
        if not self._after_lookup_change.get(kind):
            return False
        session.flush()
        if not session.info.pop("written", False):
            return False
        return session.scalar(sa.text(f"SELECT current_setting('{LOOKUP_CHANGE_MARK}', true)")) == "on"

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
