"""The memory operations of :class:`memos.core.MemOS`: add, search, get, list, update,
delete, restore, purge, history, stats — and the ACL checks they share.

Each write runs in one transaction; the index is brought up to date after the commit
(see :mod:`memos.indexer`). Every state change is an audit event with actor and reason.
"""

from __future__ import annotations

import builtins
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from memos import acl
from memos.config import Settings
from memos.convert import event_from_row, memory_event, memory_from_row, snapshot, version_from_row
from memos.errors import InvalidInput, InvalidState
from memos.events import Event, EventBus, EventKind
from memos.ingest import (
    Message,
    check_metadata,
    check_session_id,
    check_tags,
    check_text,
    parse_messages,
)
from memos.knowledge import Applied, KnowledgeWriter
from memos.protocols import Embedder, VectorIndex
from memos.retrieval import Query, build_filter
from memos.sealing import SealedIndex
from memos.storage.relational.bulk import execute_many
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import (
    AuditRow,
    CubeRow,
    EdgeRow,
    EntityRow,
    ExtractTaskRow,
    IndexTaskRow,
    MemoryEntityRow,
    MemoryRow,
    MemoryVersionRow,
    MessageRow,
    MetaRow,
    SessionRow,
    UserRow,
)
from memos.turns import positions
from memos.types import (
    SEARCHABLE_STATES,
    AddResult,
    History,
    MemoryItem,
    MemoryState,
    MemoryType,
    Page,
    SearchHit,
)

if TYPE_CHECKING:
    from memos.access import AccessStats
    from memos.extract import Extractor
    from memos.graph import GraphCache
    from memos.indexer import Indexer
    from memos.retrieval import Retriever

log = logging.getLogger(__name__)

MAX_TOP_K = 1000
MAX_PAGE = 1000


class MemoryOps:
    settings: Settings
    clock: Callable[[], datetime]
    store: RelationalStore
    index: VectorIndex
    embedder: Embedder
    indexer: Indexer
    graphs: GraphCache
    retriever: Retriever
    access: AccessStats
    extractor: Extractor | None
    write_lock: threading.RLock
    events: EventBus
    _failures: int = 0

    # ------------------------------------------------------------------ access checks
    def readable_cubes(self, user_id: str, cube_ids: Sequence[str] | None) -> list[str]:
        """The cubes named (each checked for read access), or every cube the user may read."""
        return acl.readable_cubes(self.store, user_id, cube_ids)

    # ------------------------------------------------------------------ add
    def add(
        self,
        messages: Sequence[Mapping[str, Any]] | None = None,
        *,
        text: str | None = None,
        user_id: str,
        cube_id: str,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        type: str | MemoryType | None = None,
        importance: float = 0.5,
        timestamp: datetime | str | None = None,
        extract: bool | Literal["defer"] = True,
    ) -> AddResult:
        """Remember chat ``messages`` (each becomes an ``episode``) or one ``text``.

        Messages are dicts with ``role`` and ``content`` and optionally ``name`` (the
        speaker), ``id`` (your message id; re-adding the same id to a cube is a no-op),
        ``timestamp`` and ``metadata``. The configured extractor then adds entities,
        relations and derived facts. Everything is validated before anything is written.

        ``extract="defer"`` is for bulk imports: the memories are stored and searchable at
        once, and their extraction is queued (``stats()["extraction_pending"]``) until
        :meth:`run_deferred_extraction`, which applies it in the order the memories were
        added. ``extract=False`` skips extraction for good.
        """
        from memos.timeparse import parse_timestamp

        if (messages is None) == (text is None):
            raise InvalidInput("give exactly one of messages=[…] or text='…'")
        meta = check_metadata(metadata, limits=self.settings.limits)
        tag_list = check_tags(tags, limits=self.settings.limits)
        if (
            isinstance(importance, bool)
            or not isinstance(importance, int | float)
            or not 0 <= importance <= 1
        ):
            raise InvalidInput("importance must be a number between 0 and 1")
        check_session_id(session_id)
        if text is not None:
            ts = parse_timestamp(timestamp)
            msgs = [
                Message(
                    role="user",
                    content=check_text(text, self.settings.max_text_chars),
                    name=None,
                    id=None,
                    timestamp=ts,
                    metadata={},
                )
            ]
            mtype = _memory_type(type, MemoryType.fact)
        else:
            msgs = parse_messages(
                messages,
                self.settings.max_text_chars,
                self.settings.max_messages_per_add,
                limits=self.settings.limits,
                base=meta,
            )
            mtype = _memory_type(type, MemoryType.episode)
        if extract not in (True, False, "defer"):
            raise InvalidInput("extract must be True, False or 'defer'")
        now = self.clock()
        result = AddResult(memories=[])
        with self.write_lock:
            with self.store.session() as s:
                acl.require(s, cube_id, user_id, acl.WRITE)
                if session_id is not None and s.get(SessionRow, (cube_id, session_id)) is None:
                    s.add(
                        SessionRow(
                            cube_id=cube_id, id=session_id, user_id=user_id, created_at=now, last_active=now
                        )
                    )
                elif session_id is not None:
                    sess = s.get(SessionRow, (cube_id, session_id))
                    assert sess is not None
                    sess.last_active = now
                ids = [m.id for m in msgs if m.id is not None]
                seen: set[str] = set()
                for start in range(0, len(ids), 500):
                    seen.update(
                        x
                        for x in s.scalars(
                            select(MemoryRow.message_id).where(
                                MemoryRow.cube_id == cube_id,
                                MemoryRow.message_id.in_(ids[start : start + 500]),
                            )
                        )
                        if x is not None
                    )
                new_rows: list[MemoryRow] = []
                kept: list[Message] = []
                for m in msgs:
                    if m.id is not None and m.id in seen:
                        continue  # idempotent re-import of the same message
                    if m.id is not None:
                        seen.add(m.id)
                    new_rows.append(
                        self._episode_row(
                            cube_id, m, mtype, session_id, {**meta, **m.metadata}, tag_list, importance, now
                        )
                    )
                    kept.append(m)
                s.flush()
                self._insert_new(s, new_rows, kept if text is None else None, user_id, now)
                derived: list[MemoryRow] = []
                if extract == "defer" and self.extractor is not None and new_rows:
                    execute_many(
                        s.connection(),
                        insert(ExtractTaskRow.__table__),  # type: ignore[arg-type]
                        [
                            {"memory_id": r.id, "cube_id": cube_id, "actor": user_id, "created_at": now}
                            for r in new_rows
                        ],
                    )
                elif extract and self.extractor is not None and new_rows:
                    applied = self._extract(s, cube_id, new_rows, now, user_id, new=True)
                    derived = applied.derived
                    result.superseded = applied.superseded
                    result.entities = applied.entities
                    result.relations = applied.relations
                    result.extraction_failures = self._failures
                s.flush()
                result.memories = [memory_from_row(r) for r in new_rows]
                result.derived = [memory_from_row(r) for r in derived]
            self.graphs.invalidate(cube_id)
            # the rows just committed are indexed as they are, without reading them back
            self.indexer.index_rows(new_rows + derived)
            if result.superseded:
                self.indexer.sync(result.superseded)
            self._optimize_in_rounds()
        self._published(
            cube_id, user_id, now, added=[r.id for r in new_rows + derived], superseded=result.superseded
        )
        return result

    def _published(
        self,
        cube_id: str,
        actor: str | None,
        now: datetime,
        *,
        added: Sequence[str] = (),
        superseded: Sequence[str] = (),
    ) -> None:
        """Publish what an ``add`` (or a deferred extraction) committed."""
        events = []
        if added:
            events.append(Event(EventKind.memory_added, now, actor, cube_id, tuple(added)))
        if superseded:
            events.append(Event(EventKind.memory_superseded, now, actor, cube_id, tuple(superseded)))
        self.events.publish(*events)

    def _insert_new(
        self,
        s: Session,
        rows: builtins.list[MemoryRow],
        messages: builtins.list[Message] | None,
        actor: str,
        now: datetime,
    ) -> None:
        """Insert new memories with their first version, messages and ``add`` events.

        One many-row statement per table (:func:`execute_many`) instead of the unit of work:
        the rows stay ``pending`` for the indexer, in this same transaction. Messages are
        inserted in order, so their ids keep the order of the conversation."""
        if not rows:
            return
        conn = s.connection()
        execute_many(conn, insert(MemoryRow.__table__), [_row_values(r) for r in rows])  # type: ignore[arg-type]
        execute_many(
            conn,
            insert(MemoryVersionRow.__table__),  # type: ignore[arg-type]
            [
                {
                    "memory_id": r.id,
                    "version": r.version,
                    "text": r.text,
                    "metadata": dict(r.meta or {}),
                    "tags": list(r.tags or []),
                    "importance": r.importance,
                    "valid_from": r.valid_from,
                    "valid_to": r.valid_to,
                    "recorded_at": r.updated_at,
                    "actor": actor,
                    "reason": "added",
                }
                for r in rows
            ],
        )
        if messages is not None:
            execute_many(
                conn,
                insert(MessageRow.__table__),  # type: ignore[arg-type]
                [
                    {
                        "cube_id": r.cube_id,
                        "session_id": r.session_id,
                        "message_id": m.id,
                        "role": m.role,
                        "name": m.name,
                        "content": m.content,
                        "timestamp": m.timestamp,
                        "memory_id": r.id,
                    }
                    for r, m in zip(rows, messages, strict=True)
                ],
            )
        execute_many(
            conn,
            insert(AuditRow.__table__),  # type: ignore[arg-type]
            [
                {
                    "ts": now,
                    "actor": actor,
                    "cube_id": r.cube_id,
                    "memory_id": r.id,
                    "action": "add",
                    "reason": None,
                    "details": {},
                }
                for r in rows
            ],
        )

    def _episode_row(
        self,
        cube_id: str,
        m: Message,
        mtype: MemoryType,
        session_id: str | None,
        meta: dict[str, Any],
        tags: builtins.list[str],
        importance: float,
        now: datetime,
    ) -> MemoryRow:
        row = _NewMemory(
            id=str(uuid.uuid4()),
            cube_id=cube_id,
            kind="plaintext",
            type=str(mtype),
            text=m.content,
            meta=meta,
            tags=tags,
            importance=float(importance),
            message_id=m.id,
            session_id=session_id,
            speaker=m.name or (None if mtype != MemoryType.episode else m.role),
            role=m.role,
            source_ids=[],
            extractor=None,
            confidence=None,
            occurred_at=m.timestamp,
            valid_from=m.timestamp or now,
            valid_to=None,
            recorded_at=now,
            retired_at=None,
            version=1,
            state="active",
            superseded_by=None,
            hits=0,
            last_accessed=None,
            updated_at=now,
            index_state="pending",
        )
        # Read like a row by the extractor, the indexer and memory_from_row; written with
        # one Core insert (see _insert_new). A mapped instance would cost as much as the insert.
        return cast(MemoryRow, row)

    def _extract(
        self,
        s: Session,
        cube_id: str,
        rows: builtins.list[MemoryRow],
        now: datetime,
        actor: str,
        *,
        new: bool,
    ) -> Applied:
        """Run the extractor on each memory and write what it found, in this transaction.

        An extractor failure on one memory is counted and audited, never raised: the memory
        itself is stored either way (``self._failures`` holds the count of this call)."""
        assert self.extractor is not None
        self._failures = 0
        items = []
        for row in rows:
            try:
                extraction = self.extractor.extract(
                    row.text, speaker=row.speaker, reference_time=row.occurred_at or now
                )
            except Exception as exc:  # noqa: BLE001 - any extractor failure must not lose the memory
                log.warning("extraction failed for memory %s: %s", row.id, exc)
                self._failures += 1
                s.add(
                    memory_event(
                        row,
                        "extract_failed",
                        now=now,
                        actor=actor,
                        details={
                            "extractor": self.extractor.name,
                            "error": f"{type(exc).__name__}: {exc}"[:500],
                        },
                    )
                )
                continue
            items.append((row, extraction))
        if self._failures:
            counter = s.get(MetaRow, "extraction_failures")
            if counter is None:
                s.add(MetaRow(key="extraction_failures", value={"count": self._failures}))
            else:
                counter.value = {"count": int(counter.value.get("count", 0)) + self._failures}
        writer = KnowledgeWriter(s, cube_id, now=now, actor=actor, extractor=self.extractor.name)
        if new:
            for row in rows:
                writer.mark_new(row.id)
        with s.no_autoflush:
            return writer.apply(items)

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: str,
        *,
        user_id: str,
        cube_ids: Sequence[str] | str | None = None,
        top_k: int = 10,
        filters: Mapping[str, Any] | None = None,
        time_range: tuple[datetime | str | None, datetime | str | None] | None = None,
    ) -> builtins.list[SearchHit]:
        """Hybrid search over the cubes ``user_id`` may read (all of them by default)."""
        from memos.timeparse import parse_timestamp

        query = check_text(query, self.settings.max_text_chars, "query")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer between 1 and {MAX_TOP_K}")
        if filters is not None and not isinstance(filters, Mapping):
            raise InvalidInput("filters must be a dict such as {'type': 'fact'}")
        tr = None
        if time_range is not None:
            if not isinstance(time_range, tuple | builtins.list) or len(time_range) != 2:
                raise InvalidInput("time_range must be a (start, end) pair; either may be None")
            tr = (parse_timestamp(time_range[0]), parse_timestamp(time_range[1]))
        cubes = self.readable_cubes(user_id, cube_ids if not isinstance(cube_ids, str) else [cube_ids])
        build_filter(cubes, filters, tr)  # validate before any work
        if not cubes:
            return []
        hits = self.retriever.search(
            Query(text=query, cube_ids=tuple(cubes), top_k=top_k, filters=dict(filters or {}), time_range=tr),
            self.clock(),
        )
        if hits:
            self._touch([h.memory.id for h in hits])
            if self.events.has_subscribers:
                by_cube: dict[str, builtins.list[str]] = {}
                for h in hits:
                    by_cube.setdefault(h.memory.cube_id, []).append(h.memory.id)
                now = self.clock()
                self.events.publish(
                    *(
                        Event(EventKind.memory_accessed, now, user_id, c, tuple(ids))
                        for c, ids in by_cube.items()
                    )
                )
        return hits

    def _touch(self, ids: builtins.list[str]) -> None:
        """Access statistics: bump hits and last_accessed (not a new version), in batches
        (:mod:`memos.access`)."""
        self.access.record(ids)

    # ------------------------------------------------------------------ read
    def get(self, memory_id: str, *, user_id: str) -> MemoryItem:
        self.access.flush()
        with self.store.read_session() as s:
            return memory_from_row(acl.memory(s, memory_id, user_id, acl.READ))

    def list_memories(
        self,
        *,
        user_id: str,
        cube_id: str,
        filters: Mapping[str, Any] | None = None,
        states: Sequence[str] | None = ("active",),
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page:
        """Memories of one cube, filtered and paginated."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be an integer between 1 and {MAX_PAGE}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset must be a non-negative integer")
        try:
            state_list = [MemoryState(x) for x in states] if states else None
        except ValueError as exc:
            raise InvalidInput(
                f"unknown state in {list(states or [])}; known: {', '.join(MemoryState)}"
            ) from exc
        flt = build_filter([cube_id], filters, None)
        self.access.flush()
        with self.store.read_session() as s:
            acl.require(s, cube_id, user_id, acl.READ)
            stmt = select(MemoryRow).where(MemoryRow.cube_id == cube_id)
            if state_list:
                stmt = stmt.where(MemoryRow.state.in_([str(x) for x in state_list]))
            for cond in flt.must:
                key = getattr(cond, "key", "")
                values = list(getattr(cond, "any", ()))
                if key in ("type", "speaker", "role", "session_id"):
                    stmt = stmt.where(getattr(MemoryRow, key).in_(values))
            order = MemoryRow.recorded_at.desc() if newest_first else MemoryRow.recorded_at.asc()
            rows = list(s.scalars(stmt.order_by(order, MemoryRow.id)))
            # tags and metadata.* are JSON: filter them here, identically on every backend
            from memos.retrieval import row_matches

            rows = [r for r in rows if row_matches(r, flt)]
            return Page(
                items=[memory_from_row(r) for r in rows[offset : offset + limit]],
                total=len(rows),
                offset=offset,
                limit=limit,
            )

    def history(self, memory_id: str, *, user_id: str) -> History:
        """Every version of a memory and every lifecycle event, oldest first."""
        with self.store.read_session() as s:
            acl.memory(s, memory_id, user_id, acl.READ)
            versions = s.scalars(
                select(MemoryVersionRow)
                .where(MemoryVersionRow.memory_id == memory_id)
                .order_by(MemoryVersionRow.version)
            )
            events = s.scalars(select(AuditRow).where(AuditRow.memory_id == memory_id).order_by(AuditRow.id))
            return History(
                memory_id=memory_id,
                versions=[version_from_row(v) for v in versions],
                events=[event_from_row(e) for e in events],
            )

    # ------------------------------------------------------------------ write
    def update(
        self,
        memory_id: str,
        *,
        user_id: str,
        text: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        importance: float | None = None,
        reason: str | None = None,
    ) -> MemoryItem:
        """Write a new version; the previous one stays in the history."""
        if text is None and metadata is None and tags is None and importance is None:
            raise InvalidInput("nothing to update: give text, metadata, tags or importance")
        new_text = check_text(text, self.settings.max_text_chars) if text is not None else None
        new_meta = check_metadata(metadata, limits=self.settings.limits) if metadata is not None else None
        new_tags = check_tags(tags, limits=self.settings.limits) if tags is not None else None
        if importance is not None and (
            isinstance(importance, bool)
            or not isinstance(importance, int | float)
            or not 0 <= importance <= 1
        ):
            raise InvalidInput("importance must be a number between 0 and 1")
        now = self.clock()
        with self.write_lock:
            with self.store.session() as s:
                row = acl.memory(s, memory_id, user_id, acl.WRITE)
                if row.state not in ("active", "archived"):
                    raise InvalidState(f"memory {memory_id} is {row.state}; restore it before updating")
                changed = []
                if new_text is not None and new_text != row.text:
                    row.text = new_text
                    changed.append("text")
                if new_meta is not None and new_meta != row.meta:
                    row.meta = new_meta
                    changed.append("metadata")
                if new_tags is not None and new_tags != row.tags:
                    row.tags = new_tags
                    changed.append("tags")
                if importance is not None and float(importance) != row.importance:
                    row.importance = float(importance)
                    changed.append("importance")
                if not changed:
                    return memory_from_row(row)
                row.version += 1
                row.updated_at = now
                row.index_state = "pending"
                s.add(snapshot(row, user_id, reason or "updated"))
                s.add(
                    memory_event(
                        row,
                        "update",
                        now=now,
                        actor=user_id,
                        reason=reason,
                        details={"version": row.version, "changed": changed},
                    )
                )
                if "text" in changed and self.extractor is not None:
                    # re-derive the graph from the new text; old derived facts stay (they have their own history)
                    s.execute(delete(MemoryEntityRow).where(MemoryEntityRow.memory_id == row.id))
                    s.execute(delete(EdgeRow).where(EdgeRow.memory_id == row.id))
                    s.execute(delete(ExtractTaskRow).where(ExtractTaskRow.memory_id == row.id))
                    self._extract(s, row.cube_id, [row], now, user_id, new=False)
                item = memory_from_row(row)
                cube_id = row.cube_id
            self.graphs.invalidate(cube_id)
            self.indexer.sync()
        self.events.publish(
            Event(EventKind.memory_updated, now, user_id, cube_id, (memory_id,), reason, {"changed": changed})
        )
        return item

    def delete(self, memory_id: str, *, user_id: str, reason: str | None = None) -> MemoryItem:
        """Soft-delete: the memory leaves search and lists but can be restored."""
        return self._transition(
            memory_id, user_id, {"active", "archived", "superseded", "expired"}, "deleted", "delete", reason
        )

    def restore(self, memory_id: str, *, user_id: str, reason: str | None = None) -> MemoryItem:
        """Undo a soft delete."""
        return self._transition(memory_id, user_id, {"deleted"}, "active", "restore", reason)

    def _transition(
        self, memory_id: str, user_id: str, allowed_from: set[str], to: str, action: str, reason: str | None
    ) -> MemoryItem:
        now = self.clock()
        with self.write_lock:
            with self.store.session() as s:
                row = acl.memory(s, memory_id, user_id, acl.WRITE)
                if row.state not in allowed_from:
                    raise InvalidState(f"cannot {action} memory {memory_id}: it is {row.state}")
                previous = row.state
                row.state = to
                row.retired_at = now if to == "deleted" else None
                row.updated_at = now
                row.index_state = "pending"
                s.add(
                    memory_event(
                        row,
                        action,
                        now=now,
                        actor=user_id,
                        reason=reason,
                        details={"from": previous, "to": to},
                    )
                )
                item = memory_from_row(row)
            self.indexer.sync([memory_id])
        kind = EventKind.memory_restored if action == "restore" else EventKind.memory_deleted
        self.events.publish(Event(kind, now, user_id, item.cube_id, (memory_id,), reason))
        return item

    def purge(self, memory_id: str, *, user_id: str, reason: str | None = None) -> builtins.list[str]:
        """Hard-delete a memory and every memory derived only from it.

        Rows, versions, messages, graph mentions and edges, and vector points go; orphaned
        entities go too. The audit log keeps a tombstone (ids, actor, reason — no content).
        Returns the purged ids.
        """
        now = self.clock()
        with self.write_lock:
            with self.store.session() as s:
                row = acl.memory(s, memory_id, user_id, acl.WRITE)
                cube_id = row.cube_id
                ids = [row.id, *self._derived_only_from(s, cube_id, row.id)]
                entity_ids = set(
                    s.scalars(select(MemoryEntityRow.entity_id).where(MemoryEntityRow.memory_id.in_(ids)))
                )
                entity_ids |= set(s.scalars(select(EdgeRow.src_id).where(EdgeRow.memory_id.in_(ids))))
                entity_ids |= set(s.scalars(select(EdgeRow.dst_id).where(EdgeRow.memory_id.in_(ids))))
                # the turn after each purged one is lexically indexed with its words
                # (memos.turns): index it again once they are gone
                following = self._turns_after(s, ids)
                s.execute(delete(MemoryEntityRow).where(MemoryEntityRow.memory_id.in_(ids)))
                s.execute(delete(EdgeRow).where(EdgeRow.memory_id.in_(ids)))
                s.execute(delete(MessageRow).where(MessageRow.memory_id.in_(ids)))
                s.execute(delete(ExtractTaskRow).where(ExtractTaskRow.memory_id.in_(ids)))
                s.execute(delete(MemoryVersionRow).where(MemoryVersionRow.memory_id.in_(ids)))
                # other memories pointing at a purged one keep no trace of it
                for other in s.scalars(select(MemoryRow).where(MemoryRow.superseded_by.in_(ids))):
                    other.superseded_by = None
                s.execute(delete(MemoryRow).where(MemoryRow.id.in_(ids)))
                self._drop_orphan_entities(s, entity_ids)
                # earlier audit events of these memories may carry details; keep only the skeleton
                s.execute(update(AuditRow).where(AuditRow.memory_id.in_(ids)).values(details={}, reason=None))
                for mid in ids:
                    s.merge(IndexTaskRow(memory_id=mid, op="delete", created_at=now))
                    s.add(
                        AuditRow(
                            ts=now,
                            actor=user_id,
                            cube_id=cube_id,
                            memory_id=mid,
                            action="purge",
                            reason=reason,
                            details={"tombstone": True, "with": memory_id}
                            if mid != memory_id
                            else {"tombstone": True},
                        )
                    )
            self.graphs.invalidate(cube_id)
            self.indexer.sync(following)
        # erasure from derived artifacts (KV prefixes, adapters) subscribes to this
        self.events.publish(Event(EventKind.memory_purged, now, user_id, cube_id, tuple(ids), reason))
        return ids

    @staticmethod
    def _turns_after(s: Session, ids: builtins.list[str]) -> builtins.list[str]:
        """The memories of the next message in the same session after each of ``ids``'
        messages (not among ``ids``), marked for indexing again."""
        out: builtins.list[str] = []
        for p in positions(s, ids).values():
            nxt = s.scalar(
                select(MessageRow.memory_id)
                .where(
                    MessageRow.cube_id == p.cube_id,
                    MessageRow.session_id == p.session_id,
                    MessageRow.id > p.seq,
                    MessageRow.memory_id.not_in(ids),
                )
                .order_by(MessageRow.id)
                .limit(1)
            )
            if nxt is not None and nxt not in out:
                out.append(nxt)
        if out:
            s.execute(
                update(MemoryRow)
                .where(MemoryRow.id.in_(out))
                .values(index_state="pending")
                .execution_options(synchronize_session=False)
            )
        return out

    def _derived_only_from(self, s: Session, cube_id: str, memory_id: str) -> builtins.list[str]:
        out = []
        for r in s.scalars(
            select(MemoryRow).where(MemoryRow.cube_id == cube_id, MemoryRow.type != "episode")
        ):
            sources = r.source_ids or []
            if r.id != memory_id and memory_id in sources:
                if sources == [memory_id]:
                    out.append(r.id)
                else:
                    r.source_ids = [x for x in sources if x != memory_id]
        return out

    def _drop_orphan_entities(self, s: Session, entity_ids: set[int]) -> None:
        for eid in entity_ids:
            used = s.scalar(
                select(func.count()).select_from(MemoryEntityRow).where(MemoryEntityRow.entity_id == eid)
            )
            edges = s.scalar(
                select(func.count())
                .select_from(EdgeRow)
                .where(or_(EdgeRow.src_id == eid, EdgeRow.dst_id == eid))
            )
            if not used and not edges:
                s.execute(delete(EntityRow).where(EntityRow.id == eid))

    # ------------------------------------------------------------------ maintenance
    def check_index(
        self, *, user_id: str | None = None, cube_ids: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Compare the vector index with the rows, changing nothing (``memos doctor``,
        ``memos reindex --check``).

        ``missing``: rows indexed as done whose point is gone; ``extra``: points of no
        searchable row; ``pending``: rows waiting for the indexer; ``quarantined``: rows the
        index refused (see :mod:`memos.indexer`), each with the reason — an update of the
        memory or a ``reindex`` tries them again."""
        with self.store.read_session() as s:
            cubes = acl.maintained_cubes(s, user_id, cube_ids, acl.READ)
        report: dict[str, Any] = {
            "cubes": len(cubes),
            "searchable_rows": 0,
            "index_points": 0,
            "missing": 0,
            "extra": 0,
            "pending": 0,
            "quarantined": [],
        }
        for cube_id in cubes:
            in_index = self.index.ids(cube_id)
            with self.store.read_session() as s:
                rows = s.execute(
                    select(MemoryRow.id, MemoryRow.state, MemoryRow.index_state).where(
                        MemoryRow.cube_id == cube_id
                    )
                ).all()
                quarantined = [i for i, _, ix in rows if ix == "quarantined"]
                errors = self._index_errors(s, quarantined)
            searchable = {i for i, st, ix in rows if st in SEARCHABLE_STATES and ix != "quarantined"}
            report["searchable_rows"] += len(searchable)
            report["index_points"] += len(in_index)
            report["missing"] += sum(
                1 for i, _, ix in rows if i in searchable and ix == "done" and i not in in_index
            )
            report["extra"] += len(in_index - searchable)
            report["pending"] += sum(1 for _, _, ix in rows if ix == "pending")
            report["quarantined"] += [
                {"memory_id": i, "cube_id": cube_id, **errors.get(i, {})} for i in quarantined
            ]
        return report

    @staticmethod
    def _index_errors(s: Session, ids: builtins.list[str]) -> dict[str, dict[str, str]]:
        """The latest ``index_failed`` reason and time of each of ``ids``."""
        out: dict[str, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            for e in s.scalars(
                select(AuditRow)
                .where(AuditRow.memory_id.in_(ids[start : start + 500]), AuditRow.action == "index_failed")
                .order_by(AuditRow.id)
            ):
                assert e.memory_id is not None
                out[e.memory_id] = {"error": str(e.details.get("error", "")), "since": e.ts.isoformat()}
        return out

    def reindex(self, *, user_id: str | None = None, cube_ids: Sequence[str] | None = None) -> int:
        """Rebuild the vector index from the rows (all cubes, or the given ones).

        A reindex of the whole home (no user, no cubes) also seals an index built before
        payloads were sealed (:mod:`memos.sealing`)."""
        whole_home = user_id is None and cube_ids is None
        with self.store.read_session() as s:
            cube_ids = acl.maintained_cubes(s, user_id, cube_ids, acl.WRITE)
        with self.write_lock:
            if whole_home and isinstance(self.index, SealedIndex):
                self.index.seal(self.store)
            n = self.indexer.rebuild(builtins.list(cube_ids), after_batch=self._optimize_in_rounds)
        self.optimize_index()
        return n

    def run_deferred_extraction(
        self, *, user_id: str | None = None, cube_ids: Sequence[str] | None = None, batch: int = 2000
    ) -> int:
        """Run the extraction queued by ``add(..., extract="defer")``; returns memories done.

        Cube by cube, in the order the memories were added, ``batch`` memories per
        transaction, each with the actor that added it. Memories deleted or purged in the
        meantime are skipped. Without ``user_id`` (the operator of the home) every cube
        is processed; with it, the cubes that user may write."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput("batch must be a positive integer")
        with self.store.read_session() as s:
            if user_id is None and cube_ids is None:  # the operator: every cube with a queue
                cubes = builtins.list(s.scalars(select(ExtractTaskRow.cube_id).distinct()))
            else:
                cubes = acl.maintained_cubes(s, user_id, cube_ids, acl.WRITE)
        if self.extractor is None:
            return 0  # extractor "none": the queue waits for a home configured with one
        done = 0
        for cube_id in cubes:
            while True:
                n = self._run_deferred_batch(cube_id, batch)
                if n == 0:
                    break
                done += n
        return done

    def _run_deferred_batch(self, cube_id: str, batch: int) -> int:
        with self.write_lock:
            now = self.clock()
            with self.store.session() as s:
                tasks = s.execute(
                    select(ExtractTaskRow.id, ExtractTaskRow.memory_id, ExtractTaskRow.actor)
                    .where(ExtractTaskRow.cube_id == cube_id)
                    .order_by(ExtractTaskRow.id)
                    .limit(batch)
                ).all()
                if not tasks:
                    return 0
                actor = tasks[0].actor
                run = []  # one actor per transaction: the audit events name who added the memory
                for t in tasks:
                    if t.actor != actor:
                        break
                    run.append(t)
                found: dict[str, MemoryRow] = {}
                mids = [t.memory_id for t in run]
                for start in range(0, len(mids), 500):
                    for row in s.scalars(
                        select(MemoryRow).where(MemoryRow.id.in_(mids[start : start + 500]))
                    ):
                        found[row.id] = row
                rows = [found[m] for m in mids if m in found and found[m].state in ("active", "archived")]
                derived: builtins.list[MemoryRow] = []
                superseded: builtins.list[str] = []
                if rows:
                    # new=False: links are checked, so a memory extracted meanwhile is not linked twice
                    applied = self._extract(s, cube_id, rows, now, actor or "system", new=False)
                    derived, superseded = applied.derived, applied.superseded
                task_ids = [t.id for t in run]
                for start in range(0, len(task_ids), 500):
                    s.execute(
                        delete(ExtractTaskRow).where(ExtractTaskRow.id.in_(task_ids[start : start + 500]))
                    )
            self.graphs.invalidate(cube_id)
            self.indexer.index_rows(derived)
            if superseded:
                self.indexer.sync(superseded)
            self._optimize_in_rounds()
        self._published(cube_id, actor, now, added=[r.id for r in derived], superseded=superseded)
        return len(run)

    def _optimize_in_rounds(self) -> None:
        """Optimize once enough points arrived since the last time (the caller holds the
        write lock): search stays on HNSW graphs as a home grows, and no single optimize
        has more than a round of points to index (:mod:`memos.storage.vector.qdrant_edge`)."""
        every = self.settings.index_optimize_every
        if every > 0 and getattr(self.index, "unoptimized_points", 0) >= every:
            self.optimize_index()

    def optimize_index(self) -> bool:
        """Build the index's search structures now (HNSW graphs, merged segments).

        The embedded Qdrant Edge does this only when asked; until then dense search
        scans. Worth running after a bulk import; ``reindex`` runs it. Returns whether
        the backend had anything to do."""
        optimize = getattr(self.index, "optimize", None)
        if optimize is None:
            return False
        with self.write_lock:
            return bool(optimize())

    def stats(self, *, user_id: str | None = None) -> dict[str, Any]:
        """Counts by cube, state and type; index health; extraction failures."""
        with self.store.read_session() as s:
            if user_id is not None:
                cubes = self.readable_cubes(user_id, None)
            else:
                cubes = builtins.list(s.scalars(select(CubeRow.id)))
            by_state = {
                st: n
                for st, n in s.execute(
                    select(MemoryRow.state, func.count())
                    .where(MemoryRow.cube_id.in_(cubes))
                    .group_by(MemoryRow.state)
                )
            }
            by_type = {
                t: n
                for t, n in s.execute(
                    select(MemoryRow.type, func.count())
                    .where(MemoryRow.cube_id.in_(cubes), MemoryRow.state == "active")
                    .group_by(MemoryRow.type)
                )
            }
            pending = s.scalar(
                select(func.count()).select_from(MemoryRow).where(MemoryRow.index_state == "pending")
            )
            quarantined = s.scalar(
                select(func.count())
                .select_from(MemoryRow)
                .where(MemoryRow.cube_id.in_(cubes), MemoryRow.index_state == "quarantined")
            )
            entities = s.scalar(
                select(func.count()).select_from(EntityRow).where(EntityRow.cube_id.in_(cubes))
            )
            edges = s.scalar(select(func.count()).select_from(EdgeRow).where(EdgeRow.cube_id.in_(cubes)))
            deferred = s.scalar(
                select(func.count()).select_from(ExtractTaskRow).where(ExtractTaskRow.cube_id.in_(cubes))
            )
            failures = s.get(MetaRow, "extraction_failures")
            reader = s.get(MetaRow, "reader_failures")
            users = s.scalar(select(func.count()).select_from(UserRow))
        return {
            "users": users,
            "cubes": len(cubes),
            "memories": sum(by_state.values()),
            "by_state": by_state,
            "by_type": by_type,
            "entities": entities,
            "edges": edges,
            "index_points": sum(self.index.count(c) for c in cubes),
            "index_pending": pending,
            "index_quarantined": quarantined,
            "extraction_failures": int(failures.value.get("count", 0)) if failures else 0,
            "extraction_pending": deferred,
            "relational": self.store.dialect,
            "vector_index": self.index.name,
            "embedder": self.embedder.id,
            # the LLM reader's failures (extractor = "llm"; memos.reader)
            "reader_failures": int(reader.value.get("count", 0)) if reader else 0,
            **(
                {"reader_last_error": reader.value["last_error"]}
                if reader and reader.value.get("last_error")
                else {}
            ),
        }

    # ``list`` last: inside the class body it would shadow the builtin for later annotations
    list = list_memories


@dataclass(slots=True)
class _NewMemory:
    """The values of a memory row about to be inserted, with :class:`MemoryRow`'s attribute names."""

    id: str
    cube_id: str
    kind: str
    type: str
    text: str
    meta: dict[str, Any]
    tags: builtins.list[Any]
    importance: float
    message_id: str | None
    session_id: str | None
    speaker: str | None
    role: str | None
    source_ids: builtins.list[Any]
    extractor: str | None
    confidence: float | None
    occurred_at: datetime | None
    valid_from: datetime | None
    valid_to: datetime | None
    recorded_at: datetime
    retired_at: datetime | None
    version: int
    state: str
    superseded_by: str | None
    hits: int
    last_accessed: datetime | None
    updated_at: datetime
    index_state: str


_MEMORY_COLUMNS = [(attr.key, attr.columns[0].name) for attr in MemoryRow.__mapper__.column_attrs]


def _row_values(row: MemoryRow) -> dict[str, Any]:
    """A memory row as ``{column name: value}`` for a Core insert."""
    return {column: getattr(row, key) for key, column in _MEMORY_COLUMNS}


def _memory_type(value: str | MemoryType | None, default: MemoryType) -> MemoryType:
    if value is None:
        return default
    try:
        return MemoryType(value)
    except ValueError:
        raise InvalidInput(f"unknown memory type {value!r}; known: {', '.join(MemoryType)}") from None
