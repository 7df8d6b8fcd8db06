"""Keeps the vector index in step with the relational rows.

The relational store is the source of truth. Every write commits its rows with
``index_state='pending'``; :meth:`Indexer.sync` then embeds the pending rows, upserts
(:data:`~memos.types.INDEXED_STATES`: active, archived, expired) or removes (every
other state) their points, and marks them ``done`` — but only if the row has not changed since it was read, so a concurrent
update is never marked indexed with stale content. Removals for rows that no longer
exist (purge, cube deletion) go through ``index_tasks``. Because upserts are
idempotent and keyed by memory id, re-running any of this after a crash is safe.

A row the index refuses (a value the engine cannot hold, a text the embedder fails on)
is *quarantined*: ``index_state='quarantined'``, its point removed, an ``index_failed``
audit event with the reason. It stays in the store, readable and exportable, and is not
retried by every sync — so one bad row never fails the writes, the repair on open or the
reindex of everyone else. ``MemOS.check_index`` and ``stats`` report it; an update of
the row or a ``reindex`` tries it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update

from memos.audit import recording
from memos.errors import InvalidInput
from memos.events import Event, EventBus, EventKind
from memos.plaintext.retrieval import lexical
from memos.plaintext.retrieval.turns import previous_turns
from memos.protocols import Embedder, IndexPoint, VectorIndex
from memos.storage.relational.bulk import execute_many
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import IndexTaskRow, MemoryRow
from memos.types import INDEXED_STATES

log = logging.getLogger(__name__)

BATCH = 256
#: rows per embedding call and index update on the bulk path (larger batches embed faster)
BULK_BATCH = 1024
#: what a row's own content can make the embedder or the index raise (anything else — a
#: closed index, a full disk, a TypeError of our own — is raised, not quarantined)
ROW_ERRORS = (InvalidInput, ValueError, UnicodeError)


def index_text(row: MemoryRow) -> str:
    """The text that is embedded and lexically indexed for a memory.

    A turn is indexed with its speaker's name: questions name people ("What did Mira
    say about…"), and the bare turn text often says only "I".
    """
    if row.speaker and row.type == "episode":
        return f"{row.speaker}: {row.text}"
    return row.text


def payload(row: MemoryRow) -> dict[str, Any]:
    """What the index keeps of a memory: the fields searches filter on.

    A field the memory does not have (no speaker, no tags, no metadata) is left out
    rather than stored empty: the engine converts a point's payload field by field, and
    a filter on an absent field matches nothing, as :func:`memos.plaintext.retrieval.retriever.row_matches`
    says of the row."""
    when = row.occurred_at or row.valid_from or row.recorded_at
    out: dict[str, Any] = {"cube_id": row.cube_id, "type": row.type, "ts": when.timestamp()}
    if row.speaker:
        out["speaker"] = row.speaker
    if row.role:
        out["role"] = row.role
    if row.session_id:
        out["session_id"] = row.session_id
    if row.tags:
        out["tags"] = list(row.tags)
    if row.meta:
        out["metadata"] = dict(row.meta)
    return out


class Indexer:
    def __init__(
        self,
        store: RelationalStore,
        index: VectorIndex,
        embedder: Embedder,
        clock: Callable[[], datetime],
        events: EventBus,
    ) -> None:
        self.store = store
        self.index = index
        self.embedder = embedder
        self.clock = clock
        self.events = events  # quarantines are recorded (memos.audit) and published
        self._lock = threading.Lock()

    def sync(self, ids: Sequence[str] | None = None, *, after_batch: Callable[[], None] | None = None) -> int:
        """Apply pending rows (all, or just ``ids``) and owed removals. Returns rows applied.

        ``after_batch`` runs after each batch of the pending rows (a rebuild optimizes the
        index in rounds with it)."""
        applied = 0
        with self._lock:
            self._apply_tasks()
            if ids is not None:
                for start in range(0, len(ids), BATCH):
                    applied += self._apply(list(ids[start : start + BATCH]))
                return applied
            while True:
                with self.store.read_session() as s:
                    batch = list(
                        s.scalars(select(MemoryRow.id).where(MemoryRow.index_state == "pending").limit(BATCH))
                    )
                if not batch:
                    return applied
                done = self._apply(batch)
                applied += done
                if after_batch is not None:
                    after_batch()
                if done == 0:  # rows changed under us on every try; the next sync picks them up
                    return applied

    def index_rows(self, rows: Sequence[MemoryRow]) -> int:
        """Apply rows that were just committed as ``pending``, as they are in hand.

        The bulk path of ``add``: the same as :meth:`sync` for their ids without reading
        the rows back. Marking them done is still conditional on ``updated_at``, so a row
        changed in the meantime stays pending for the next sync."""
        applied = 0
        with self._lock:
            self._apply_tasks()
            for start in range(0, len(rows), BULK_BATCH):
                applied += self._index(list(rows[start : start + BULK_BATCH]))
        return applied

    def _apply(self, ids: list[str]) -> int:
        with self.store.read_session() as s:
            rows = list(
                s.scalars(select(MemoryRow).where(MemoryRow.id.in_(ids), MemoryRow.index_state == "pending"))
            )
        return self._index(rows)

    def _index(self, rows: list[MemoryRow]) -> int:
        if not rows:
            return 0
        live = [r for r in rows if r.state in INDEXED_STATES]
        gone = [r.id for r in rows if r.state not in INDEXED_STATES]
        failed = self._upsert(live) if live else {}
        if failed:
            gone += list(failed)  # an older version's point must not answer for it
        if gone:
            self.index.delete(gone)
        # One statement for the batch; a row updated since it was read keeps 'pending'.
        table = MemoryRow.__table__
        stmt = (
            update(table)  # type: ignore[arg-type]
            .where(table.c.id == bindparam("b_id"))
            .where(table.c.updated_at == bindparam("b_updated"))
            .values(index_state=bindparam("b_state"))
        )
        params = [
            {"b_id": r.id, "b_updated": r.updated_at, "b_state": "quarantined" if r.id in failed else "done"}
            for r in rows
        ]
        with recording(self.events) as rec, self.store.session() as s:
            done = execute_many(s.connection(), stmt, params)
            if failed:
                rec.record(s, *self._quarantine([r for r in live if r.id in failed], failed))
        return done

    def _upsert(self, rows: list[MemoryRow]) -> dict[str, str]:
        """Index ``rows``; returns the ids the embedder or the index refused, with why.

        A refused batch is split in halves until the refused rows are alone, so one bad
        row costs a few more calls, not the batch."""
        try:
            self.index.upsert(self._points(rows))
            return {}
        except ROW_ERRORS as exc:
            if len(rows) == 1:
                return {rows[0].id: f"{type(exc).__name__}: {exc}"[:500]}
        half = len(rows) // 2
        return {**self._upsert(rows[:half]), **self._upsert(rows[half:])}

    def _points(self, rows: list[MemoryRow]) -> list[IndexPoint]:
        texts = [index_text(r) for r in rows]
        # a turn is lexically indexed with the turn it answers (see memos.plaintext.retrieval.turns)
        with self.store.read_session() as s:
            contexts = previous_turns(s, [r.id for r in rows if r.type == "episode"])
        vectors = self.embedder.embed(texts)
        return [
            IndexPoint(
                id=r.id,
                dense=v,
                sparse=lexical.encode_document(t, context=contexts.get(r.id)),
                payload=payload(r),
            )
            for r, t, v in zip(rows, texts, vectors, strict=True)
        ]

    def _quarantine(self, rows: list[MemoryRow], errors: dict[str, str]) -> list[Event]:
        now = self.clock()
        for r in rows:
            log.warning("memory %s cannot be indexed and is quarantined: %s", r.id, errors[r.id])
        return [
            Event(
                EventKind.indexing_failed, now, "system", r.cube_id, (r.id,), details={"error": errors[r.id]}
            )
            for r in rows
        ]

    def _apply_tasks(self) -> None:
        with self.store.read_session() as s:
            tasks = list(s.scalars(select(IndexTaskRow).limit(10_000)))
        if not tasks:
            return
        ids = [t.memory_id for t in tasks]
        self.index.delete(ids)
        with self.store.session() as s:
            s.execute(delete(IndexTaskRow).where(IndexTaskRow.memory_id.in_(ids)))

    def reconcile(self, cube_ids: Sequence[str]) -> dict[str, int]:
        """Compare index and rows cube by cube; queue what is missing, drop what is extra."""
        missing = extra = 0
        for cube_id in cube_ids:
            in_index = self.index.ids(cube_id)
            with self.store.session() as s:
                rows = s.execute(
                    select(MemoryRow.id, MemoryRow.state, MemoryRow.index_state).where(
                        MemoryRow.cube_id == cube_id
                    )
                ).all()
                # a quarantined row waits for an update or a reindex, not for every repair
                should = {i for i, st, ix in rows if st in INDEXED_STATES and ix != "quarantined"}
                lacking = should - in_index
                if lacking:
                    for start in range(0, len(lacking), 500):
                        chunk = list(lacking)[start : start + 500]
                        s.execute(
                            update(MemoryRow)
                            .where(MemoryRow.id.in_(chunk))
                            .values(index_state="pending")
                            .execution_options(synchronize_session=False)
                        )
            surplus = in_index - should
            if surplus:
                self.index.delete(list(surplus))
            missing += len(lacking)
            extra += len(surplus)
        if missing:
            self.sync()
        return {"missing": missing, "extra": extra}

    def rebuild(self, cube_ids: Sequence[str], *, after_batch: Callable[[], None] | None = None) -> int:
        """Drop each cube's points and index every row again from the relational store."""
        total = 0
        for cube_id in cube_ids:
            self.index.delete_cube(cube_id)
            with self.store.session() as s:
                res = s.execute(
                    update(MemoryRow)
                    .where(MemoryRow.cube_id == cube_id)
                    .values(index_state="pending")
                    .execution_options(synchronize_session=False)
                )
                total += res.rowcount or 0  # type: ignore[attr-defined]
        self.sync(after_batch=after_batch)
        return total
