"""Adding memories: validation up front, one transaction, then the index and the events."""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from memos import acl
from memos.audit import Recording
from memos.errors import InvalidInput
from memos.events import Event, EventKind
from memos.home import Home
from memos.memories.common import MemoryType, memory_type, new_row, row_values, run_extractor
from memos.memories.maintenance import queue_extraction
from memos.plaintext.convert import memory_from_row
from memos.plaintext.validation import (
    Message,
    check_metadata,
    check_session_id,
    check_tags,
    check_text,
    parse_messages,
)
from memos.storage.relational.bulk import execute_many
from memos.storage.relational.models import (
    MemoryRow,
    MemoryVersionRow,
    MessageRow,
    SessionRow,
)
from memos.types import (
    AddResult,
)

log = logging.getLogger(__name__)


class Adding:
    """``MemOS.add``."""

    def __init__(self, home: Home) -> None:
        self.home = home

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
        once, and their extraction is queued as jobs (``stats()["extraction_pending"]``)
        that a scheduler worker (``memos scheduler run``, or the background scheduler) or
        :meth:`run_deferred_extraction` runs, in the order the memories were added.
        ``extract=False`` skips extraction for good.
        """
        from memos.extract.timeparse import parse_timestamp

        if (messages is None) == (text is None):
            raise InvalidInput("give exactly one of messages=[…] or text='…'")
        meta = check_metadata(metadata, limits=self.home.settings.limits)
        tag_list = check_tags(tags, limits=self.home.settings.limits)
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
                    content=check_text(text, self.home.settings.max_text_chars),
                    name=None,
                    id=None,
                    timestamp=ts,
                    metadata={},
                )
            ]
            mtype = memory_type(type, MemoryType.fact)
        else:
            msgs = parse_messages(
                messages,
                self.home.settings.max_text_chars,
                self.home.settings.max_messages_per_add,
                limits=self.home.settings.limits,
                base=meta,
            )
            mtype = memory_type(type, MemoryType.episode)
        if extract not in (True, False, "defer"):
            raise InvalidInput("extract must be True, False or 'defer'")
        now = self.home.clock()
        result = AddResult(memories=[])
        # the events are published once the rows are committed and indexed
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
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
                self._insert_new(s, rec, new_rows, kept if text is None else None, user_id, now)
                derived: list[MemoryRow] = []
                if extract == "defer" and self.home.extractor is not None and new_rows:
                    # jobs of the scheduler's queue, committed with the rows (memos.memories.maintenance)
                    queue_extraction(
                        s,
                        cube_id,
                        [r.id for r in new_rows],
                        user_id,
                        now,
                        self.home.settings.scheduler.max_attempts,
                    )
                elif extract and self.home.extractor is not None and new_rows:
                    applied, failures = run_extractor(
                        self.home, s, rec, cube_id, new_rows, now, user_id, new=True
                    )
                    derived = applied.derived
                    result.superseded = applied.superseded
                    result.entities = applied.entities
                    result.relations = applied.relations
                    result.extraction_failures = failures
                s.flush()
                result.memories = [memory_from_row(r) for r in new_rows]
                result.derived = [memory_from_row(r) for r in derived]
            self.home.graphs.invalidate(cube_id)
            # the rows just committed are indexed as they are, without reading them back
            self.home.indexer.index_rows(new_rows + derived)
            if result.superseded:
                self.home.indexer.sync(result.superseded)
            self.home.optimize_in_rounds()
        return result

    def _insert_new(
        self,
        s: Session,
        rec: Recording,
        rows: builtins.list[MemoryRow],
        messages: builtins.list[Message] | None,
        actor: str,
        now: datetime,
    ) -> None:
        """Insert new memories with their first version and messages; record them added.

        One many-row statement per table (:func:`execute_many`) instead of the unit of work:
        the rows stay ``pending`` for the indexer, in this same transaction. Messages are
        inserted in order, so their ids keep the order of the conversation."""
        if not rows:
            return
        conn = s.connection()
        execute_many(conn, insert(MemoryRow.__table__), [row_values(r) for r in rows])  # type: ignore[arg-type]
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
        rec.record(s, Event(EventKind.memory_added, now, actor, rows[0].cube_id, tuple(r.id for r in rows)))

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
        row = new_row(  # written with one Core insert (see _insert_new)
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
        return row
