"""Applies an extractor's findings to a cube: entities, edges, derived facts, supersession.

Derived facts are memories of type ``fact`` whose provenance lists the episode they came
from. A *functional* relation (``lives_in``, ``works_at``…) holds one value at a time:
when a newer episode states a different value, the older fact is marked ``superseded``
(with ``valid_to`` and a link to its successor) instead of being overwritten, so its
history stays readable.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from memos.convert import snapshot
from memos.extract import Extraction, Relation
from memos.storage.relational.models import (
    AuditRow,
    EdgeRow,
    EntityRow,
    MemoryEntityRow,
    MemoryRow,
)

log = logging.getLogger(__name__)


@dataclass
class Applied:
    derived: list[MemoryRow] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    entities: int = 0
    relations: int = 0


def relation_text(rel: Relation) -> str:
    return f"{rel.subject} {rel.predicate.replace('_', ' ')} {rel.object}"


class EntityResolver:
    """Finds or creates entity rows of one cube within one transaction."""

    def __init__(self, session: Session, cube_id: str, now: datetime) -> None:
        self.s = session
        self.cube_id = cube_id
        self.now = now
        self._cache: dict[str, EntityRow] = {}
        #: (memory id, entity id) links written in this transaction
        self.linked: set[tuple[str, int]] = set()
        #: memories created in this transaction (they cannot have older links)
        self.new_memories: set[str] = set()

    def reset(self) -> None:
        """Forget cached rows (after a rolled-back savepoint they may not exist)."""
        self._cache.clear()
        self.linked.clear()

    def get(self, name: str, kind: str) -> EntityRow:
        key = " ".join(name.lower().split())
        row = self._cache.get(key)
        if row is None:
            row = self.s.scalar(
                select(EntityRow).where(EntityRow.cube_id == self.cube_id, EntityRow.key == key)
            )
            if row is None:
                row = EntityRow(cube_id=self.cube_id, key=key, name=name, kind=kind, created_at=self.now)
                self.s.add(row)
                self.s.flush()
            self._cache[key] = row
        return row


def link(s: Session, resolver: EntityResolver, memory_id: str, entity_ids: set[int]) -> None:
    """Record that ``memory_id`` mentions ``entity_ids`` (each pair once)."""
    todo = {e for e in entity_ids if (memory_id, e) not in resolver.linked}
    if todo and memory_id not in resolver.new_memories:
        todo -= set(
            s.scalars(
                select(MemoryEntityRow.entity_id).where(
                    MemoryEntityRow.memory_id == memory_id, MemoryEntityRow.entity_id.in_(todo)
                )
            )
        )
    for eid in todo:
        s.add(MemoryEntityRow(memory_id=memory_id, entity_id=eid))
        resolver.linked.add((memory_id, eid))


def apply_extraction(
    s: Session,
    episode: MemoryRow,
    extraction: Extraction,
    resolver: EntityResolver,
    *,
    now: datetime,
    actor: str | None,
    extractor: str,
) -> Applied:
    """Write what ``extraction`` found in ``episode`` into the cube (same transaction)."""
    out = Applied()
    when = episode.occurred_at or now
    mentioned: set[int] = set()
    for ent in extraction.entities:
        if ent.name.strip():
            mentioned.add(resolver.get(ent.name, ent.kind).id)
    out.entities = len(mentioned)
    facts = list(extraction.facts)
    for i, rel in enumerate(extraction.relations):
        if not (rel.subject.strip() and rel.object.strip()):
            continue
        src = resolver.get(rel.subject, "person" if rel.subject == episode.speaker else "thing")
        dst = resolver.get(rel.object, "thing")
        mentioned.update((src.id, dst.id))
        text = facts[i] if len(facts) == len(extraction.relations) else relation_text(rel)
        # A memory that is itself a statement (not a raw turn) carries its own relations;
        # deriving a copy of it would only duplicate it.
        fact = (
            episode
            if episode.type != "episode"
            else _find_fact(s, episode.cube_id, text, src.id, rel.predicate, dst.id)
        )
        if fact is None:
            fact = MemoryRow(
                id=str(uuid.uuid4()),
                cube_id=episode.cube_id,
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
                extractor=extractor,
                confidence=0.6,
                occurred_at=episode.occurred_at,
                valid_from=when,
                recorded_at=now,
                version=1,
                state="active",
                hits=0,
                updated_at=now,
                index_state="pending",
            )
            s.add(fact)
            resolver.new_memories.add(fact.id)
            s.flush()
            s.add(snapshot(fact, actor, f"extracted from {episode.id}"))
            s.add(_event(now, actor, fact, "extract", {"source": episode.id, "extractor": extractor}))
            out.derived.append(fact)
            out.superseded += _supersede(s, fact, rel, src.id, when, now, actor)
        elif fact is not episode:
            sources = list(fact.source_ids or [])
            if episode.id not in sources:
                fact.source_ids = [*sources, episode.id]
        if fact is episode:
            out.superseded += _supersede(s, fact, rel, src.id, when, now, actor)
        link(s, resolver, fact.id, {src.id, dst.id})
        known_edge = fact.id not in resolver.new_memories and s.scalar(
            select(EdgeRow.id).where(
                EdgeRow.memory_id == fact.id,
                EdgeRow.src_id == src.id,
                EdgeRow.predicate == rel.predicate,
                EdgeRow.dst_id == dst.id,
                EdgeRow.valid_to.is_(None),
            )
        )
        if known_edge:  # the same relation told again: one edge, one fact, one more source
            out.relations += 1
            continue
        s.add(
            EdgeRow(
                cube_id=episode.cube_id,
                src_id=src.id,
                predicate=rel.predicate,
                dst_id=dst.id,
                memory_id=fact.id,
                valid_from=when,
                created_at=now,
            )
        )
        out.relations += 1
    link(s, resolver, episode.id, mentioned)
    return out


def _find_fact(
    s: Session, cube_id: str, text: str, src_id: int, predicate: str, dst_id: int
) -> MemoryRow | None:
    """The active fact that already states this relation (or this exact text), if any.

    Matching on (subject, predicate, object) first: the same relation told twice may be
    worded differently ("Alice is vegetarian" / "… (since 2024-10)") and is still one fact.
    """
    same_relation = s.scalar(
        select(MemoryRow)
        .join(EdgeRow, EdgeRow.memory_id == MemoryRow.id)
        .where(
            EdgeRow.cube_id == cube_id,
            EdgeRow.src_id == src_id,
            EdgeRow.predicate == predicate,
            EdgeRow.dst_id == dst_id,
            EdgeRow.valid_to.is_(None),
            MemoryRow.type == "fact",
            MemoryRow.state == "active",
        )
        .limit(1)
    )
    if same_relation is not None:
        return same_relation
    return s.scalar(
        select(MemoryRow)
        .where(
            MemoryRow.cube_id == cube_id,
            MemoryRow.type == "fact",
            MemoryRow.state == "active",
            MemoryRow.text == text,
        )
        .limit(1)
    )


def _supersede(
    s: Session,
    new_fact: MemoryRow,
    rel: Relation,
    src_id: int,
    when: datetime,
    now: datetime,
    actor: str | None,
) -> list[str]:
    """Retire the current facts about ``rel.subject`` that ``rel`` contradicts: another
    value of a functional predicate, or an opposing predicate on the same object
    (``likes steak`` against ``avoids steak``). See :meth:`Relation.conflicts_with`."""
    current = s.execute(
        select(EdgeRow, EntityRow.name)
        .join(EntityRow, EntityRow.id == EdgeRow.dst_id)
        .where(
            EdgeRow.cube_id == new_fact.cube_id,
            EdgeRow.src_id == src_id,
            EdgeRow.valid_to.is_(None),
            EdgeRow.memory_id != new_fact.id,
        )
    ).all()
    retired: list[str] = []
    for edge, dst_name in current:
        if not rel.conflicts_with(Relation.of(rel.subject, edge.predicate, dst_name)):
            continue
        edge.valid_to = when
        old = s.get(MemoryRow, edge.memory_id)
        if old is None or old.state != "active" or old.type != "fact":
            continue
        old.state = "superseded"
        old.superseded_by = new_fact.id
        old.valid_to = when
        old.retired_at = now
        old.updated_at = now
        old.index_state = "pending"
        s.add(_event(now, actor, old, "supersede", {"by": new_fact.id, "predicate": rel.predicate}))
        retired.append(old.id)
    return retired


def _event(
    now: datetime, actor: str | None, row: MemoryRow, action: str, details: dict[str, object]
) -> AuditRow:
    return AuditRow(
        ts=now, actor=actor, cube_id=row.cube_id, memory_id=row.id, action=action, details=details
    )
