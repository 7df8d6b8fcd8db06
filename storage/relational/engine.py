"""Opening the relational store: engine, pragmas, migrations.

SQLite runs in WAL mode with foreign keys on and a busy timeout; PostgreSQL through
psycopg 3. Alembic migrations are applied on open, so a home created by an older
version is upgraded in place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
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
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


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
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
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
        """A transaction: commits on success, rolls back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def tables(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    def close(self) -> None:
        self.engine.dispose()
