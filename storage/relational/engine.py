"""Opening the relational store: engine, pragmas, migrations.

SQLite runs in WAL mode with foreign keys on, a busy timeout and ``secure_delete`` (a
purged memory's text is overwritten in the file, not left in free pages); PostgreSQL
through psycopg 3. Alembic migrations are applied on open, so a home created by an
older version is upgraded in place.

Write transactions (:meth:`RelationalStore.session`) take SQLite's write lock when they
begin (``BEGIN IMMEDIATE``), waiting up to the busy timeout for another writer. A
deferred transaction that reads and then writes cannot wait: if another connection
committed since its first read, SQLite answers "database is locked" at once. Pure reads
(:meth:`RelationalStore.read_session`) begin deferred and never wait for a writer (WAL).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from memos.errors import ConfigError, DependencyMissing, StorageError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def _normalise_url(url: str) -> str:
    # Users write postgresql://…; we speak psycopg 3, not psycopg2.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; SQLAlchemy emits BEGIN itself
    # (see _sqlite_begin), which is the documented recipe for correct nested transactions.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


#: execution option of the connections of write sessions
_WRITE = "memos_write"
#: what a driver raises for "busy", "connection lost", …: a StorageError for our callers
_DRIVER_ERRORS = (OperationalError, InterfaceError, InternalError)


class RelationalStore:
    """An engine plus a session factory over a migrated schema."""

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        try:
            if self.url.startswith("sqlite"):
                db_path = self.url.split("///", 1)[-1]
                if db_path and db_path != ":memory:":
                    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = create_engine(
                    self.url, connect_args={"check_same_thread": False, "timeout": 30}
                )
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "begin", _sqlite_begin)
            else:
                self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=10)
        except ModuleNotFoundError as exc:
            raise DependencyMissing(
                f"the driver for {self.dialect_of(url)} is not installed: pip install 'memcube-os[postgres]'"
            ) from exc
        except SQLAlchemyError as exc:
            raise ConfigError(f"cannot use relational URL {url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._local = threading.local()  # write sessions this thread is inside
        self.migrate()

    @staticmethod
    def dialect_of(url: str) -> str:
        return url.split(":", 1)[0]

    def migrate(self) -> None:
        """Apply Alembic migrations up to head (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StorageError(f"cannot open the relational store at {self.url}: {exc.orig}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any error.

        A write session opened by a thread that is inside one already begins deferred, as
        every session did before: ``BEGIN IMMEDIATE`` there would wait on the outer one,
        in its own thread, until the busy timeout."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            with self._transaction(self._read_sessions if depth else self._sessions) as session:
                yield session
        finally:
            self._local.depth = depth

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A transaction that only reads (on SQLite it takes no write lock; writing in it
        can fail with "database is locked" when another writer committed meanwhile)."""
        with self._transaction(self._read_sessions) as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A bare connection for a quick read without the ORM (the hot paths)."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"the relational store failed ({self.dialect}): {exc.orig}") from exc

    @contextmanager
    def _transaction(self, factory: sessionmaker[Session]) -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException as exc:
            session.rollback()
            if isinstance(exc, _DRIVER_ERRORS):
                # a driver's word for "busy", "connection lost", …: ours, typed, actionable
                raise StorageError(f"the relational store failed ({self.dialect}): {exc.orig}") from exc
            raise
        finally:
            session.close()

    def tables(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    def close(self) -> None:
        self.engine.dispose()
