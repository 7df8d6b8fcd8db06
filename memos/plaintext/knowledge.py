"""Applies extractors' findings to a cube: entities, edges, derived facts, supersession.

Derived facts are memories of type ``fact`` whose provenance lists the episodes they came
from. A relation that contradicts a current one (:meth:`Relation.conflicts_with`: another
value of a functional predicate such as ``lives_in``, or an opposing predicate such as
``likes``/``avoids`` on the same object) marks the older fact ``superseded`` — with
``valid_to`` and a link to its successor — instead of overwriting it, so its history
stays readable. The same relation told twice is one fact with two sources.

:class:`KnowledgeWriter` works on a whole batch of memories in one transaction: it loads
the entities, current edges and candidate facts the batch needs with a few queries up
front, then applies the extractions in order, in memory, so a bulk import does not pay
several round trips per message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, insert, or_, select
from sqlalchemy.orm import Session

from memos.audit import Recording
from memos.events import Event, EventKind
from memos.extract import Extraction, Relation
from memos.storage.relational.bulk import execute_many
from memos.storage.relational.models import (
    EdgeRow,
    EntityRow,
    MemoryEntityRow,
    MemoryRow,
    MemoryVersionRow,
)

log = logging.getLogger(__name__)

_CHUNK = 500
T = TypeVar("T")


@dataclass
class Applied:
    derived: list[MemoryRow] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    entities: int = 0
    relations: int = 0


def entity_key(name: str) -> str:
    return " ".join(name.lower().split())


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class KnowledgeWriter:
    """Writes the graph and the derived facts of a batch of memories of one cube."""

    def __init__(
        self, s: Session, rec: Recording, cube_id: str, *, now: datetime, actor: str | None, extractor: str
    ) -> None:
        self.s = s
        self.rec = rec
        self.cube_id = cube_id
        self.now = now
        self.actor = actor
        self.extractor = extractor
        self._entities: dict[str, EntityRow] = {}
        #: current (valid_to is None) edges by subject entity id, with the object's name
        self._edges: dict[int, list[tuple[EdgeRow, str]]] = {}
        self._edge_ids: set[int] = set()  # edges loaded from the store
        self._facts: dict[str, MemoryRow] = {}  # memory rows behind current edges, by id
        self._facts_by_text: dict[str, MemoryRow] = {}
        self._links: set[tuple[str, int]] = set()
        self._new: set[str] = set()
        # Rows that reference memories created here: added after those memories are
        # flushed, since the unit of work does not order inserts by foreign keys alone.
        self._after: list[object] = []
        # Write-once rows (versions of new facts) and the events of new facts and of
        # supersessions, written with one statement per table once the memories exist.
        self._versions: list[dict[str, Any]] = []
        self._events: list[Event] = []

    # ------------------------------------------------------------------ public
    def apply(self, items: Sequence[tuple[MemoryRow, Extraction]]) -> Applied:
        """Apply ``(memory, extraction)`` pairs in order; rows are added to the session."""
        out = Applied()
        self._preload(items)
        pending_links: list[tuple[str, set[int]]] = []
        for row, extraction in items:
            pending_links += self._apply_one(row, extraction, out)
        self.s.flush()
        self.s.add_all(self._after)
        self._after = []
        conn = self.s.connection()
        if self._versions:
            execute_many(conn, insert(MemoryVersionRow.__table__), self._versions)  # type: ignore[arg-type]
            self._versions = []
        self.rec.record(self.s, *self._events)
        self._events = []
        self._write_links(pending_links)
        return out

    def mark_new(self, memory_id: str) -> None:
        """``memory_id`` was created in this transaction (it has no links yet)."""
        self._new.add(memory_id)

    # ------------------------------------------------------------------ loading
    def _preload(self, items: Sequence[tuple[MemoryRow, Extraction]]) -> None:
        wanted: dict[str, tuple[str, str]] = {}
        texts: set[str] = set()
        for row, ex in items:
            for ent in ex.entities:
                if ent.name.strip():
                    wanted.setdefault(entity_key(ent.name), (ent.name, ent.kind))
            for i, rel in enumerate(ex.relations):
                if rel.subject.strip() and rel.object.strip():
                    kind = "person" if rel.subject == row.speaker else "thing"
                    wanted.setdefault(entity_key(rel.subject), (rel.subject, kind))
                    wanted.setdefault(entity_key(rel.object), (rel.object, "thing"))
                    texts.add(_fact_text(ex, i))
        keys = [k for k in wanted if k not in self._entities]
        for chunk in _chunks(keys):
            for found in self.s.scalars(
                select(EntityRow).where(EntityRow.cube_id == self.cube_id, EntityRow.key.in_(chunk))
            ):
                self._entities[found.key] = found
        created = False
        for key in keys:
            if key not in self._entities:
                name, kind = wanted[key]
                row_ = EntityRow(cube_id=self.cube_id, key=key, name=name, kind=kind, created_at=self.now)
                self.s.add(row_)
                self._entities[key] = row_
                created = True
        if created:
            self.s.flush()  # entity ids are needed for edges and links
        # Only the current edges the batch can touch: those of its subjects with one of
        # its functional predicates (a new value supersedes them) or one of its objects
        # (the same relation again, or an opposing one). A speaker's whole history of
        # facts is never loaded, so an add costs the same in a small cube as in a large one.
        subjects: set[int] = set()
        functional: set[str] = set()
        objects: set[int] = set()
        for _, ex in items:
            for rel in ex.relations:
                if rel.subject.strip() and rel.object.strip():
                    subjects.add(self._entities[entity_key(rel.subject)].id)
                    objects.add(self._entities[entity_key(rel.object)].id)
                    if rel.functional:
                        functional.add(rel.predicate)
        memory_ids: set[str] = set()
        for src_chunk in _chunks(sorted(subjects)):
            for obj_chunk in _chunks(sorted(objects)):
                related: ColumnElement[bool] = EdgeRow.dst_id.in_(obj_chunk)
                if functional:
                    related = or_(related, EdgeRow.predicate.in_(sorted(functional)))
                for edge, dst_name in self.s.execute(
                    select(EdgeRow, EntityRow.name)
                    .join(EntityRow, EntityRow.id == EdgeRow.dst_id)
                    .where(EdgeRow.src_id.in_(src_chunk), EdgeRow.valid_to.is_(None), related)
                ):
                    if edge.id in self._edge_ids:
                        continue
                    self._edge_ids.add(edge.id)
                    self._edges.setdefault(edge.src_id, []).append((edge, dst_name))
                    memory_ids.add(edge.memory_id)
        for chunk in _chunks(sorted(memory_ids - set(self._facts))):
            for mem in self.s.scalars(select(MemoryRow).where(MemoryRow.id.in_(chunk))):
                self._facts[mem.id] = mem
        for chunk in _chunks(sorted(texts - set(self._facts_by_text))):
            for mem in self.s.scalars(
                select(MemoryRow).where(
                    MemoryRow.cube_id == self.cube_id,
                    MemoryRow.type == "fact",
                    MemoryRow.state == "active",
                    MemoryRow.text.in_(chunk),
                )
            ):
                self._facts_by_text.setdefault(mem.text, mem)

    # ------------------------------------------------------------------ applying
    def _apply_one(self, episode: MemoryRow, ex: Extraction, out: Applied) -> list[tuple[str, set[int]]]:
        when = episode.occurred_at or self.now
        links: list[tuple[str, set[int]]] = []
        mentioned = {self._entities[entity_key(e.name)].id for e in ex.entities if e.name.strip()}
        out.entities += len(mentioned)
        for i, rel in enumerate(ex.relations):
            if not (rel.subject.strip() and rel.object.strip()):
                continue
            src = self._entities[entity_key(rel.subject)]
            dst = self._entities[entity_key(rel.object)]
            mentioned.update((src.id, dst.id))
            out.relations += 1
            # A memory that is itself a statement (not a raw turn) carries its own relations;
            # deriving a copy of it would only duplicate it.
            if episode.type != "episode":
                fact = episode
            else:
                found = self._find_fact(src.id, rel.predicate, dst.id, _fact_text(ex, i))
                fact = found or self._new_fact(episode, rel, _fact_text(ex, i), when, out)
                if found is not None and episode.id not in (found.source_ids or []):
                    found.source_ids = [*(found.source_ids or []), episode.id]
            out.superseded += self._supersede(fact, rel, src.id, when)
            links.append((fact.id, {src.id, dst.id}))
            if not self._has_edge(src.id, rel.predicate, dst.id, fact.id):
                edge = EdgeRow(
                    cube_id=self.cube_id,
                    src_id=src.id,
                    predicate=rel.predicate,
                    dst_id=dst.id,
                    memory_id=fact.id,
                    valid_from=when,
                    created_at=self.now,
                )
                self._after.append(edge)
                self._edges.setdefault(src.id, []).append((edge, dst.name))
        links.append((episode.id, mentioned))
        return links

    def _find_fact(self, src_id: int, predicate: str, dst_id: int, text: str) -> MemoryRow | None:
        """The active fact already stating this relation (or this exact text), if any.

        The same relation told twice may be worded differently ("Alice is vegetarian" /
        "… (since 2024-10)") and is still one fact."""
        for edge, _ in self._edges.get(src_id, []):
            if edge.valid_to is None and edge.predicate == predicate and edge.dst_id == dst_id:
                mem = self._facts.get(edge.memory_id)
                if mem is not None and mem.type == "fact" and mem.state == "active":
                    return mem
        mem = self._facts_by_text.get(text)
        return mem if mem is not None and mem.state == "active" else None

    def _new_fact(
        self, episode: MemoryRow, rel: Relation, text: str, when: datetime, out: Applied
    ) -> MemoryRow:
        fact = MemoryRow(
            id=str(uuid.uuid4()),
            cube_id=self.cube_id,
            kind="plaintext",
            type="fact",
            text=text,
            meta={"predicate": rel.predicate},
            tags=[],
            importance=0.6,
            session_id=episode.session_id,
            speaker=episode.speaker,
            role=episode.role,
            source_ids=[episode.id],
            extractor=self.extractor,
            confidence=0.6,
            occurred_at=episode.occurred_at,
            valid_from=when,
            recorded_at=self.now,
            version=1,
            state="active",
            hits=0,
            updated_at=self.now,
            index_state="pending",
        )
        self.s.add(fact)
        self._versions.append(
            {
                "memory_id": fact.id,
                "version": fact.version,
                "text": fact.text,
                "metadata": dict(fact.meta),
                "tags": [],
                "importance": fact.importance,
                "valid_from": fact.valid_from,
                "valid_to": None,
                "recorded_at": fact.updated_at,
                "actor": self.actor,
                "reason": f"extracted from {episode.id}",
            }
        )
        self._event(EventKind.memory_extracted, fact.id, {"source": episode.id, "extractor": self.extractor})
        self._new.add(fact.id)
        self._facts[fact.id] = fact
        self._facts_by_text[text] = fact
        out.derived.append(fact)
        return fact

    def _has_edge(self, src_id: int, predicate: str, dst_id: int, memory_id: str) -> bool:
        return any(
            e.valid_to is None
            and e.predicate == predicate
            and e.dst_id == dst_id
            and e.memory_id == memory_id
            for e, _ in self._edges.get(src_id, [])
        )

    def _supersede(self, new_fact: MemoryRow, rel: Relation, src_id: int, when: datetime) -> list[str]:
        """Retire the current facts about ``rel.subject`` that ``rel`` contradicts."""
        retired: list[str] = []
        for edge, dst_name in self._edges.get(src_id, []):
            if edge.valid_to is not None or edge.memory_id == new_fact.id:
                continue
            if not rel.conflicts_with(Relation.of(rel.subject, edge.predicate, dst_name)):
                continue
            edge.valid_to = when
            old = self._facts.get(edge.memory_id)
            if old is None or old.state != "active" or old.type != "fact":
                continue
            old.state = "superseded"
            old.superseded_by = new_fact.id
            old.valid_to = when
            old.retired_at = self.now
            old.updated_at = self.now
            old.index_state = "pending"
            self._event(EventKind.memory_superseded, old.id, {"by": new_fact.id, "predicate": rel.predicate})
            retired.append(old.id)
        return retired

    def _write_links(self, pending: list[tuple[str, set[int]]]) -> None:
        wanted = {(m, e) for m, ents in pending for e in ents} - self._links
        old_memories = sorted({m for m, _ in wanted if m not in self._new})
        for chunk in _chunks(old_memories):
            existing = self.s.execute(
                select(MemoryEntityRow.memory_id, MemoryEntityRow.entity_id).where(
                    MemoryEntityRow.memory_id.in_(chunk)
                )
            )
            wanted -= {(m, e) for m, e in existing}
        if wanted:
            self.s.connection().execute(
                insert(MemoryEntityRow.__table__),  # type: ignore[arg-type]
                [{"memory_id": m, "entity_id": e} for m, e in sorted(wanted)],
            )
        self._links |= wanted

    def _event(self, kind: EventKind, memory_id: str, details: dict[str, Any]) -> None:
        """One event per run of memories that the same thing happened to (the facts retired by
        one new fact, say), in the order it happened."""
        last = self._events[-1] if self._events else None
        if last is not None and last.kind == kind and last.details == details:
            self._events[-1] = replace(last, memory_ids=(*last.memory_ids, memory_id))
        else:
            self._events.append(
                Event(kind, self.now, self.actor, self.cube_id, (memory_id,), details=details)
            )


def _fact_text(ex: Extraction, i: int) -> str:
    """The statement of relation ``i``: the extractor's wording when it gives one per relation."""
    if len(ex.facts) == len(ex.relations):
        return ex.facts[i]
    rel = ex.relations[i]
    return f"{rel.subject} {rel.predicate.replace('_', ' ')} {rel.object}"
