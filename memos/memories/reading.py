"""Reading memories: hybrid search, get, list, history."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from memos import acl
from memos.errors import InvalidInput
from memos.events import Event, EventKind
from memos.home import Home
from memos.plaintext.convert import event_from_row, memory_from_row, version_from_row
from memos.plaintext.retrieval.retriever import Query, build_filter
from memos.plaintext.validation import (
    check_text,
)
from memos.storage.relational.models import (
    AuditRow,
    MemoryRow,
    MemoryVersionRow,
)
from memos.types import (
    History,
    MemoryItem,
    MemoryState,
    Page,
    SearchHit,
)

log = logging.getLogger(__name__)

MAX_TOP_K = 1000
MAX_PAGE = 1000
_ACTIVE = frozenset({str(MemoryState.active)})
_WITH_ARCHIVED = _ACTIVE | {str(MemoryState.archived)}


class Reading:
    """``MemOS.search``, ``get``, ``list``, ``history`` and ``readable_cubes``."""

    def __init__(self, home: Home) -> None:
        self.home = home

    def readable_cubes(self, user_id: str, cube_ids: Sequence[str] | None) -> builtins.list[str]:
        """The cubes named (each checked for read access), or every cube the user may read."""
        return acl.readable_cubes(self.home.store, user_id, cube_ids)

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
        include_archived: bool = False,
    ) -> builtins.list[SearchHit]:
        """Hybrid search over the cubes ``user_id`` may read (all of them by default).

        Active memories only, unless ``include_archived``: then archived ones too (moved
        out by a policy or ``archive``). Expired memories are never returned: they wait
        for their purge (list them with ``list_memories(states=["expired"])``)."""
        from memos.extract.timeparse import parse_timestamp

        query = check_text(query, self.home.settings.max_text_chars, "query")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer between 1 and {MAX_TOP_K}")
        if filters is not None and not isinstance(filters, Mapping):
            raise InvalidInput("filters must be a dict such as {'type': 'fact'}")
        tr = None
        if time_range is not None:
            if not isinstance(time_range, tuple | builtins.list) or len(time_range) != 2:
                raise InvalidInput("time_range must be a (start, end) pair; either may be None")
            tr = (parse_timestamp(time_range[0]), parse_timestamp(time_range[1]))
        cubes = acl.readable_cubes(
            self.home.store, user_id, cube_ids if not isinstance(cube_ids, str) else [cube_ids]
        )
        build_filter(cubes, filters, tr)  # validate before any work
        if not cubes:
            return []
        hits = self.home.retriever.search(
            Query(
                text=query,
                cube_ids=tuple(cubes),
                top_k=top_k,
                filters=dict(filters or {}),
                time_range=tr,
                states=_WITH_ARCHIVED if include_archived else _ACTIVE,
            ),
            self.home.clock(),
        )
        used = hits[: self.home.settings.search.access_depth]
        if used:
            self._touch([h.memory.id for h in used])
            if self.home.events.wants(EventKind.memory_accessed):
                by_cube: dict[str, builtins.list[str]] = {}
                for h in used:
                    by_cube.setdefault(h.memory.cube_id, []).append(h.memory.id)
                now = self.home.clock()
                self.home.events.publish(
                    *(
                        Event(EventKind.memory_accessed, now, user_id, c, tuple(ids))
                        for c, ids in by_cube.items()
                    )
                )
        return hits

    def _touch(self, ids: builtins.list[str]) -> None:
        """Access statistics: bump hits and last_accessed (not a new version), in batches
        (:mod:`memos.plaintext.hits`)."""
        self.home.access.record(ids)

    # ------------------------------------------------------------------ read
    def get(self, memory_id: str, *, user_id: str) -> MemoryItem:
        self.home.access.flush()
        with self.home.store.read_session() as s:
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
        self.home.access.flush()
        with self.home.store.read_session() as s:
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
            from memos.plaintext.retrieval.retriever import row_matches

            rows = [r for r in rows if row_matches(r, flt)]
            return Page(
                items=[memory_from_row(r) for r in rows[offset : offset + limit]],
                total=len(rows),
                offset=offset,
                limit=limit,
            )

    def history(self, memory_id: str, *, user_id: str) -> History:
        """Every version of a memory and every lifecycle event, oldest first."""
        with self.home.store.read_session() as s:
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

    # ``list`` last: inside the class body it would shadow the builtin for later annotations
    list = list_memories
