"""A memory's life after it is added: new versions, soft delete, archive and expiry, restore,
supersession by a newer memory, merging of near-duplicates, purge."""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from memos import acl
from memos.errors import InvalidInput, InvalidState
from memos.events import Event, EventKind
from memos.home import Home
from memos.memories.common import run_extractor
from memos.memories.maintenance import forget_deferred
from memos.plaintext.convert import memory_from_row, snapshot
from memos.plaintext.retrieval.turns import positions
from memos.plaintext.validation import (
    check_metadata,
    check_tags,
    check_text,
)
from memos.storage.relational.models import (
    AuditRow,
    EdgeRow,
    EntityRow,
    IndexTaskRow,
    MemoryEntityRow,
    MemoryRow,
    MemoryVersionRow,
    MessageRow,
)
from memos.types import (
    INDEXED_STATES,
    MemoryItem,
)

log = logging.getLogger(__name__)

#: the event each state change records
_KINDS = {
    "delete": EventKind.memory_deleted,
    "restore": EventKind.memory_restored,
    "archive": EventKind.memory_archived,
    "expire": EventKind.memory_expired,
}
#: the types the dedup policy compares (statements, not the turns they came from)
STATEMENT_TYPES = ("fact", "preference", "profile", "procedure")
_NOT_WORD = re.compile(r"[^\w]+")


def text_key(text: str) -> str:
    """``text`` with case, punctuation and spacing folded: two statements with the same key
    say the same thing in the same words."""
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())


def statement_keys(s: Session, cube_id: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Per active statement of the cube: its :func:`text_key` and the
    ``subject|predicate|object`` keys of the current graph edges it states.

    A statement that was merged into another and then restored is left out: someone said
    it is not a duplicate, and the dedup policy does not merge it again."""
    kept_apart: set[str] = set()
    merged: set[str] = set()
    for memory_id, action, details in s.execute(
        select(AuditRow.memory_id, AuditRow.action, AuditRow.details)
        .where(AuditRow.cube_id == cube_id, AuditRow.action.in_(("merge", "restore")))
        .order_by(AuditRow.id)
    ):
        if action == "merge" and memory_id != (details or {}).get("into"):
            merged.add(memory_id)
        elif action == "restore" and memory_id in merged:
            kept_apart.add(memory_id)
    rows = [
        r
        for r in s.execute(
            select(MemoryRow.id, MemoryRow.text).where(
                MemoryRow.cube_id == cube_id, MemoryRow.state == "active", MemoryRow.type.in_(STATEMENT_TYPES)
            )
        )
        if r[0] not in kept_apart
    ]
    relations: dict[str, set[str]] = {}
    src, dst = EntityRow.__table__.alias("src"), EntityRow.__table__.alias("dst")
    for memory_id, subject, predicate, obj in s.execute(
        select(EdgeRow.memory_id, src.c.key, EdgeRow.predicate, dst.c.key)
        .join(src, src.c.id == EdgeRow.src_id)
        .join(dst, dst.c.id == EdgeRow.dst_id)
        .where(EdgeRow.cube_id == cube_id, EdgeRow.valid_to.is_(None))
    ):
        relations.setdefault(memory_id, set()).add(f"{subject}|{predicate}|{obj}")
    return {mid: (text_key(text), frozenset(relations.get(mid, ()))) for mid, text in rows}


class Lifecycle:
    """``MemOS.update``, ``delete``, ``archive``, ``expire``, ``restore`` and ``purge``."""

    def __init__(self, home: Home) -> None:
        self.home = home

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
        new_text = check_text(text, self.home.settings.max_text_chars) if text is not None else None
        new_meta = (
            check_metadata(metadata, limits=self.home.settings.limits) if metadata is not None else None
        )
        new_tags = check_tags(tags, limits=self.home.settings.limits) if tags is not None else None
        if importance is not None and (
            isinstance(importance, bool)
            or not isinstance(importance, int | float)
            or not 0 <= importance <= 1
        ):
            raise InvalidInput("importance must be a number between 0 and 1")
        now = self.home.clock()
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
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
                rec.record(
                    s,
                    Event(
                        EventKind.memory_updated,
                        now,
                        user_id,
                        row.cube_id,
                        (row.id,),
                        reason,
                        {"version": row.version, "changed": changed},
                    ),
                )
                if "text" in changed and self.home.extractor is not None:
                    # re-derive the graph from the new text; old derived facts stay (they have their own history)
                    s.execute(delete(MemoryEntityRow).where(MemoryEntityRow.memory_id == row.id))
                    s.execute(delete(EdgeRow).where(EdgeRow.memory_id == row.id))
                    forget_deferred(s, row.cube_id, [row.id])
                    run_extractor(self.home, s, rec, row.cube_id, [row], now, user_id, new=False)
                item = memory_from_row(row)
                cube_id = row.cube_id
            self.home.graphs.invalidate(cube_id)
            self.home.indexer.sync()
        return item

    def delete(self, memory_id: str, *, user_id: str, reason: str | None = None) -> MemoryItem:
        """Soft-delete: the memory leaves search and lists but can be restored."""
        return self._transition(
            memory_id, user_id, {"active", "archived", "superseded", "expired"}, "deleted", "delete", reason
        )

    def archive(
        self, memory_id: str, *, user_id: str, reason: str | None = None, actor: str | None = None
    ) -> MemoryItem:
        """Take an active memory out of default search; ``search(include_archived=True)``
        still finds it and ``restore`` brings it back. Its row, history and index point stay.
        ``actor`` names who decided in the audit log (``policy:decay``), ``user_id`` is
        whose access is checked."""
        return self._transition(memory_id, user_id, {"active"}, "archived", "archive", reason, actor)

    def expire(
        self, memory_id: str, *, user_id: str, reason: str | None = None, actor: str | None = None
    ) -> MemoryItem:
        """Mark a memory expired: out of every search (``include_archived`` too), listed with
        ``states=["expired"]``, restorable until it is purged (the ttl policy's grace)."""
        return self._transition(
            memory_id, user_id, {"active", "archived"}, "expired", "expire", reason, actor
        )

    def restore(
        self, memory_id: str, *, user_id: str, reason: str | None = None, actor: str | None = None
    ) -> MemoryItem:
        """Bring a deleted, archived, expired or superseded memory back to active. A merged
        or superseded one stands on its own again (``superseded_by`` and ``valid_to``
        cleared); the memory it was merged into keeps its merged version."""
        return self._transition(
            memory_id,
            user_id,
            {"deleted", "archived", "expired", "superseded"},
            "active",
            "restore",
            reason,
            actor,
        )

    def merge(
        self,
        keep_id: str,
        others: Sequence[str],
        *,
        user_id: str,
        reason: str | None = None,
        actor: str | None = None,
    ) -> MemoryItem:
        """Merge near-duplicates ``others`` into ``keep_id``, all active memories of one cube.

        The kept memory gets a new version whose provenance (``source_ids``) and tags are the
        union of all of theirs, and whose importance is the highest; each other memory becomes
        ``superseded`` by it (out of search, ``superseded_by`` set, its row and history kept)
        and ``restore`` brings it back. One ``memory_merged`` event names them all."""
        merged = list(dict.fromkeys(others))
        if not merged or keep_id in merged or not all(isinstance(x, str) for x in merged):
            raise InvalidInput("merge needs the id to keep and at least one other memory id, not that one")
        now = self.home.clock()
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
                keep = acl.memory(s, keep_id, user_id, acl.WRITE)
                rows = [acl.memory(s, mid, user_id, acl.WRITE) for mid in merged]
                for row in (keep, *rows):
                    if row.state != "active":
                        raise InvalidState(f"cannot merge memory {row.id}: it is {row.state}")
                    if row.cube_id != keep.cube_id:
                        raise InvalidInput(
                            f"memory {row.id} is not in the cube of {keep_id}; merge within a cube"
                        )
                sources = list(
                    dict.fromkeys([*(keep.source_ids or []), *(x for r in rows for x in r.source_ids or [])])
                )
                tags = list(dict.fromkeys([*(keep.tags or []), *(t for r in rows for t in r.tags or [])]))
                keep.source_ids = [x for x in sources if x != keep.id and x not in merged]
                if tags != list(keep.tags or []):
                    keep.tags = tags
                    keep.index_state = "pending"  # tags are filtered in the index
                keep.importance = max([keep.importance, *(r.importance for r in rows)])
                keep.version += 1
                keep.updated_at = now
                s.add(snapshot(keep, actor or user_id, reason or f"merged {', '.join(merged)}"))
                for row in rows:
                    row.state = "superseded"
                    row.superseded_by = keep.id
                    row.valid_to = now
                    row.retired_at = now
                    row.updated_at = now
                    row.index_state = "pending"
                details = {"into": keep.id, "merged": merged, "version": keep.version}
                rec.record(
                    s,
                    Event(
                        EventKind.memory_merged,
                        now,
                        actor or user_id,
                        keep.cube_id,
                        (keep.id, *merged),
                        reason,
                        details,
                    ),
                )
                item = memory_from_row(keep)
            self.home.indexer.sync([keep_id, *merged])
            self.home.graphs.invalidate(item.cube_id)
        return item

    def supersede(self, memory_id: str, *, by: str, user_id: str, reason: str | None = None) -> MemoryItem:
        """Retire an active memory in favour of ``by``, a memory of the same cube that
        contradicts or replaces it: it leaves search, keeps its history, and says what
        replaced it (``superseded_by``) and until when it held (``valid_to``)."""
        now = self.home.clock()
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
                row = acl.memory(s, memory_id, user_id, acl.WRITE)
                if row.state != "active":
                    raise InvalidState(f"cannot supersede memory {memory_id}: it is {row.state}")
                newer = s.get(MemoryRow, by)
                if by == memory_id or newer is None or newer.cube_id != row.cube_id:
                    raise InvalidInput(
                        f"memory {memory_id} can be superseded only by another memory of its cube; got {by!r}"
                    )
                row.state = "superseded"
                row.superseded_by = by
                row.valid_to = now
                row.retired_at = now
                row.updated_at = now
                row.index_state = "pending"
                kind, details = EventKind.memory_superseded, {"by": by}
                rec.record(s, Event(kind, now, user_id, row.cube_id, (row.id,), reason, details))
                item = memory_from_row(row)
            self.home.indexer.sync([memory_id])
            self.home.graphs.invalidate(item.cube_id)
        return item

    def _transition(
        self,
        memory_id: str,
        user_id: str,
        allowed_from: set[str],
        to: str,
        action: str,
        reason: str | None,
        actor: str | None = None,
    ) -> MemoryItem:
        now = self.home.clock()
        kind = _KINDS[action]
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
                row = acl.memory(s, memory_id, user_id, acl.WRITE)
                if row.state not in allowed_from:
                    raise InvalidState(f"cannot {action} memory {memory_id}: it is {row.state}")
                previous = row.state
                row.state = to
                if previous == "superseded":
                    row.superseded_by = None
                    row.valid_to = None
                row.retired_at = now if to in ("deleted", "expired") else None
                row.updated_at = now
                # archived and expired rows keep their points: only a move in or out of the
                # indexed states touches the index (no re-embedding for an archive)
                if (previous in INDEXED_STATES) != (to in INDEXED_STATES):
                    row.index_state = "pending"
                details = {"from": previous, "to": to}
                rec.record(s, Event(kind, now, actor or user_id, row.cube_id, (row.id,), reason, details))
                item = memory_from_row(row)
            self.home.indexer.sync([memory_id])
        return item

    def purge(
        self, memory_id: str, *, user_id: str, reason: str | None = None, actor: str | None = None
    ) -> builtins.list[str]:
        """Hard-delete a memory and every memory derived only from it.

        Rows, versions, messages, graph mentions and edges, and vector points go; orphaned
        entities go too. The audit log keeps a tombstone (ids, actor, reason — no content);
        ``actor`` names who decided (``policy:ttl``) when it is not ``user_id``.
        Returns the purged ids.
        """
        now = self.home.clock()
        # erasure from derived artifacts (KV prefixes, adapters) subscribes to the event
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
                row = acl.memory(s, memory_id, user_id, acl.WRITE)
                cube_id = row.cube_id
                ids = [row.id, *self._derived_only_from(s, cube_id, row.id)]
                # the queued extraction first: a worker's step locks its job before the rows
                # it writes, so taking the locks in that order too leaves no deadlock
                forget_deferred(s, cube_id, ids)
                entity_ids = set(
                    s.scalars(select(MemoryEntityRow.entity_id).where(MemoryEntityRow.memory_id.in_(ids)))
                )
                entity_ids |= set(s.scalars(select(EdgeRow.src_id).where(EdgeRow.memory_id.in_(ids))))
                entity_ids |= set(s.scalars(select(EdgeRow.dst_id).where(EdgeRow.memory_id.in_(ids))))
                # the turn after each purged one is lexically indexed with its words
                # (memos.plaintext.retrieval.turns): index it again once they are gone
                following = self._turns_after(s, ids)
                s.execute(delete(MemoryEntityRow).where(MemoryEntityRow.memory_id.in_(ids)))
                s.execute(delete(EdgeRow).where(EdgeRow.memory_id.in_(ids)))
                s.execute(delete(MessageRow).where(MessageRow.memory_id.in_(ids)))
                s.execute(delete(MemoryVersionRow).where(MemoryVersionRow.memory_id.in_(ids)))
                # other memories pointing at a purged one keep no trace of it
                for other in s.scalars(select(MemoryRow).where(MemoryRow.superseded_by.in_(ids))):
                    other.superseded_by = None
                s.execute(delete(MemoryRow).where(MemoryRow.id.in_(ids)))
                self._drop_orphan_entities(s, entity_ids)
                for mid in ids:
                    s.merge(IndexTaskRow(memory_id=mid, op="delete", created_at=now))
                # the audit keeps a tombstone per memory and scrubs their earlier events
                purged = Event(EventKind.memory_purged, now, actor or user_id, cube_id, tuple(ids), reason)
                rec.record(s, purged)
            self.home.graphs.invalidate(cube_id)
            self.home.indexer.sync(following)
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
