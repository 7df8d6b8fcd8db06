"""Access statistics of memories (``hits``, ``last_accessed``), written in batches.

Every search bumps the statistics of the memories it returns in its first
``access_depth`` places (``[search]``, 5): those are the ones a caller reads; counting
the 25th hit of every search as a use makes every memory look used (on LoCoMo each turn
then gets ~20 "uses", evidence and chatter alike, and heat cannot tell them apart).

Writing them at once costs each search a write transaction (about a sixth of a search at 100k memories on
SQLite, and a writer's lock that other writers wait for). Instead the counts are kept in
memory and written in one statement per batch: at most every ``access_flush_seconds``
(``[search]``), when many are pending, before any read that returns them (``get``,
``list``, the activation and parametric selectors that order by hits, export) and on
close. What a crash can lose is at most that interval's counts; memories themselves are
never affected.

A flush is a write like any other: it takes the home's write lock, so it never races an
``add`` for the database (SQLite would answer "database is locked", PostgreSQL could
deadlock on the rows both touch). A search that finds the lock taken leaves its counts
for the next flush instead of waiting; rows are updated in id order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.exc import SQLAlchemyError

from memos.errors import StorageError
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import MemoryRow

log = logging.getLogger(__name__)

MAX_PENDING = 4096


class AccessStats:
    def __init__(
        self,
        store: RelationalStore,
        clock: Callable[[], datetime],
        interval_s: float,
        write_lock: threading.RLock | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval_s = interval_s
        self.write_lock = write_lock if write_lock is not None else threading.RLock()
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._lock = threading.Lock()
        self._flushed = time.monotonic()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, ids: Iterable[str]) -> None:
        """Count one access of each of ``ids`` now; write if the interval is over."""
        now = self.clock()
        with self._lock:
            for mid in ids:
                n, _ = self._pending.get(mid, (0, now))
                self._pending[mid] = (n + 1, now)
            due = len(self._pending) >= MAX_PENDING or time.monotonic() - self._flushed >= self.interval_s
        if due and self.write_lock.acquire(blocking=False):
            try:
                self.flush(strict=False)
            finally:
                self.write_lock.release()

    def flush(self, *, strict: bool = True) -> None:
        """Write what is pending (one executemany), under the write lock. ``strict=False``
        (the search path) logs a failure and keeps the counts for the next flush instead
        of failing the search."""
        with self.write_lock:
            self._flush(strict)

    def _flush(self, strict: bool) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed = time.monotonic()
        if not pending:
            return
        table = cast(Table, MemoryRow.__table__)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("mid"))
            .values(
                hits=table.c.hits + bindparam("n"),
                last_accessed=bindparam("at", type_=table.c.last_accessed.type),
            )
        )
        params = [{"mid": mid, "n": n, "at": at} for mid, (n, at) in sorted(pending.items())]
        try:
            with self.store.session() as s:
                s.connection().execute(stmt, params)
        except (SQLAlchemyError, StorageError) as exc:
            with self._lock:  # put them back, merged with what came in meanwhile
                for mid, (n, at) in pending.items():
                    m, later = self._pending.get(mid, (0, at))
                    self._pending[mid] = (n + m, max(at, later))
            if strict:
                raise StorageError(f"could not write access statistics: {exc}") from exc
            log.warning("could not write access statistics (kept for the next flush): %s", exc)
