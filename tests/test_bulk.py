"""The bulk paths of ``add``: one multi-row insert per table, deferred extraction, and
payload indexes on ``metadata.*`` fields — each must behave exactly like the plain path.

Real SQLite/PostgreSQL, real Qdrant Edge, the bundled embedder.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from memos.errors import InvalidInput
from memos.protocols import FieldMatch, IndexFilter, IndexPoint, SparseVector
from memos.storage.relational.models import AuditRow, JobRow, MemoryVersionRow, MessageRow

TURNS = [
    ("Alice", "I moved to Berlin last month and I love it."),
    ("Sam", "How is the new job going?"),
    ("Alice", "I work at Acme now, as a data engineer."),
    ("Sam", "My sister Mira lives in Lisbon."),
    ("Alice", "We adopted a dog named Bruno in May."),
    ("Alice", "Actually I moved to Paris, Berlin was too cold."),
    ("Sam", "I don't eat meat anymore, I became vegetarian."),
    ("Alice", "I started pottery again this week."),
]


def _messages(prefix: str = "m") -> list[dict[str, Any]]:
    return [
        {
            "role": "user" if who == "Alice" else "assistant",
            "name": who,
            "content": text,
            "id": f"{prefix}{i}",
            "timestamp": f"2024-05-{i + 1:02d}T10:00:00Z",
            "metadata": {"topic": "life" if i % 2 else "work", "n": i},
        }
        for i, (who, text) in enumerate(TURNS)
    ]


def _shape(mos: Any, user: str, cube: str) -> dict[str, Any]:
    """What a cube holds, independent of ids and of how it was written."""
    page = mos.list(user_id=user, cube_id=cube, states=None, limit=1000, newest_first=False)
    memories = sorted(
        (
            m.type,
            m.text,
            m.state,
            m.provenance.speaker,
            m.provenance.message_id,
            str(sorted(m.metadata.items())),
        )
        for m in page.items
    )
    with mos.store.session() as s:
        ids = [m.id for m in page.items]
        log = [
            (r.message_id, r.name, r.content)
            for r in s.scalars(select(MessageRow).where(MessageRow.cube_id == cube).order_by(MessageRow.id))
        ]
        versions = s.scalar(select(MemoryVersionRow.id).where(MemoryVersionRow.memory_id.in_(ids)).limit(1))
        events = sorted(
            (r.action for r in s.scalars(select(AuditRow).where(AuditRow.memory_id.in_(ids)))),
        )
    return {"memories": memories, "log": log, "has_versions": versions is not None, "events": events}


def test_bulk_add_equals_one_message_at_a_time(alice: tuple[Any, str]) -> None:
    mos, bulk = alice
    single = mos.create_cube("alice", "single").id
    res = mos.add(messages=_messages(), user_id="alice", cube_id=bulk, session_id="s1")
    for m in _messages():
        mos.add(messages=[m], user_id="alice", cube_id=single, session_id="s1")
    got, want = _shape(mos, "alice", bulk), _shape(mos, "alice", single)
    assert got == want
    assert len(res.memories) == len(TURNS) and res.derived  # facts were derived inline
    assert any(m[2] == "superseded" for m in got["memories"])  # Berlin gave way to Paris
    # every memory has its first version and its add event, and the index has them all
    for m in res.memories:
        hist = mos.history(m.id, user_id="alice")
        assert [v.version for v in hist.versions] == [1] and hist.events[0].action == "add"
    assert mos.index.count(bulk) == mos.index.count(single) > 0
    stats = mos.stats()
    assert stats["index_pending"] == 0 and stats["extraction_pending"] == 0
    for cube in (bulk, single):
        hits = mos.search("Which pet did Alice adopt?", user_id="alice", cube_ids=[cube], top_k=3)
        assert "dog named Bruno" in hits[0].memory.text or any("dog" in h.memory.text for h in hits)
    # re-adding the same message ids is still a no-op
    again = mos.add(messages=_messages(), user_id="alice", cube_id=bulk, session_id="s1")
    assert again.memories == [] and _shape(mos, "alice", bulk) == got


def test_deferred_extraction_queues_then_matches_inline(alice: tuple[Any, str]) -> None:
    mos, inline = alice
    deferred = mos.create_cube("alice", "deferred").id
    mos.add(messages=_messages(), user_id="alice", cube_id=inline, session_id="s1")
    res = mos.add(messages=_messages(), user_id="alice", cube_id=deferred, session_id="s1", extract="defer")
    assert res.derived == [] and res.entities == 0
    assert mos.stats()["extraction_pending"] == len(TURNS)
    # stored and searchable at once, before any extraction
    hits = mos.search("Bruno the dog", user_id="alice", cube_ids=[deferred], top_k=3)
    assert any("Bruno" in h.memory.text for h in hits)
    assert mos.run_deferred_extraction(user_id="alice", batch=3) == len(TURNS)
    assert mos.stats()["extraction_pending"] == 0
    assert _shape(mos, "alice", deferred)["memories"] == _shape(mos, "alice", inline)["memories"]
    facts = mos.list(user_id="alice", cube_id=deferred, filters={"type": "fact"}).items
    assert facts and all(f.provenance.extractor == "rules" for f in facts)
    assert mos.index.count(deferred) == mos.index.count(inline)
    assert mos.run_deferred_extraction() == 0  # nothing left


def test_deferred_extraction_survives_reopen_and_skips_gone_memories(make_mos: Any, tmp_path: Path) -> None:
    home = tmp_path / "h"
    mos = make_mos(home)
    mos.add_user("alice")
    cube = mos.create_cube("alice", "c").id
    res = mos.add(messages=_messages(), user_id="alice", cube_id=cube, extract="defer")
    purged = res.memories[0].id  # "I moved to Berlin"
    deleted = res.memories[4].id  # the dog
    mos.purge(purged, user_id="alice")
    mos.delete(deleted, user_id="alice")
    mos.close()
    mos = make_mos(home)
    assert mos.stats()["extraction_pending"] == len(TURNS) - 1  # the purge took its task along
    assert mos.run_deferred_extraction() == len(TURNS) - 1
    texts = {f.text for f in mos.list(user_id="alice", cube_id=cube, filters={"type": "fact"}).items}
    assert not any("Berlin" in t for t in texts)  # purged before extraction: no fact of it
    assert not any("dog" in t for t in texts)  # deleted: skipped
    assert any("Paris" in t for t in texts)
    with mos.store.session() as s:
        assert {j.state for j in s.scalars(select(JobRow).where(JobRow.kind == "extract.deferred"))} == {"done"}


def test_extract_argument_is_checked(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    with pytest.raises(InvalidInput):
        mos.add(text="hello", user_id="alice", cube_id=cube, extract="later")
    with pytest.raises(InvalidInput):
        mos.run_deferred_extraction(batch=0)
    assert mos.stats()["memories"] == 0


def test_update_of_a_deferred_memory_extracts_it_once(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    res = mos.add(
        messages=[{"role": "user", "name": "Alice", "content": "I live in Berlin."}],
        user_id="alice",
        cube_id=cube,
        extract="defer",
    )
    mos.update(res.memories[0].id, user_id="alice", text="I live in Rome.")
    assert mos.stats()["extraction_pending"] == 0  # the update extracted it
    assert mos.run_deferred_extraction() == 0
    facts = [f.text for f in mos.list(user_id="alice", cube_id=cube, filters={"type": "fact"}).items]
    assert facts == ["Alice lives in Rome"]


# --------------------------------------------------------------------------- payload indexes


def _edge_index(tmp_path: Path) -> Any:
    from memos.storage.vector.qdrant_edge import QdrantEdgeIndex

    return QdrantEdgeIndex(tmp_path / "edge", 8)


def _points(n: int, seed: int = 3) -> list[IndexPoint]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        meta: dict[str, Any] = {
            "topic": rng.choice(["travel", "work", "health"]),
            "n": i % 4,
            "ok": i % 2 == 0,
        }
        if i % 7 == 0:
            meta["mixed"] = "seven" if i % 14 == 0 else 7  # a key whose values change type
        vec = [rng.gauss(0, 1) for _ in range(8)]
        out.append(
            IndexPoint(
                id=str(uuid.UUID(int=i + 1)),
                dense=vec,
                sparse=SparseVector([1], [1.0]),
                payload={"cube_id": "c", "type": "episode", "tags": [], "ts": float(i), "metadata": meta},
            )
        )
    return out


@pytest.mark.parametrize(
    ("key", "value"),
    [("metadata.topic", "travel"), ("metadata.n", 2), ("metadata.ok", True), ("metadata.mixed", 7),
     ("metadata.mixed", "seven")],
)  # fmt: skip
def test_metadata_filters_use_payload_indexes_and_stay_exact(tmp_path: Path, key: str, value: Any) -> None:
    idx = _edge_index(tmp_path)
    pts = _points(300)
    try:
        for start in range(0, len(pts), 64):
            idx.upsert(pts[start : start + 64])
        schema = set(idx._shard.info().payload_schema)
        assert {"metadata.topic", "metadata.n", "metadata.ok", "metadata.mixed"} <= schema
        field = key.split(".", 1)[1]
        want = {p.id for p in pts if p.payload["metadata"].get(field) == value}
        flt = IndexFilter(cube_ids=("c",), must=(FieldMatch(key, (value,)),))
        got = {h.id for h in idx.search_dense([1.0] * 8, flt, 1000)}
        assert got == want and want
    finally:
        idx.close()


def test_metadata_indexes_are_kept_across_reopen_and_capped(tmp_path: Path) -> None:
    from memos.storage.vector._common import MAX_METADATA_INDEXES

    idx = _edge_index(tmp_path)
    many = {f"k{i}": "v" for i in range(MAX_METADATA_INDEXES + 10)}
    point = IndexPoint(
        id=str(uuid.UUID(int=1)),
        dense=[1.0] * 8,
        sparse=SparseVector([1], [1.0]),
        payload={"cube_id": "c", "metadata": {**many, "bad key": "x", "f": 1.5}},
    )
    idx.upsert([point])
    idx.close()
    idx = _edge_index(tmp_path)
    try:
        meta_fields = {k for k in idx._shard.info().payload_schema if k.startswith("metadata.")}
        assert len(meta_fields) == MAX_METADATA_INDEXES
        assert "metadata.bad key" not in meta_fields and "metadata.f" not in meta_fields
        flt = IndexFilter(cube_ids=("c",), must=(FieldMatch("metadata.k40", ("v",)),))
        assert [h.id for h in idx.search_dense([1.0] * 8, flt, 5)] == [point.id]  # unindexed, still exact
    finally:
        idx.close()


def test_filtered_search_through_memos(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(messages=_messages(), user_id="alice", cube_id=cube, extract=False)
    hits = mos.search("Alice", user_id="alice", filters={"metadata.topic": "life"}, top_k=20)
    assert hits and all(h.memory.metadata["topic"] == "life" for h in hits)
    assert len(hits) == sum(1 for i in range(len(TURNS)) if i % 2)
    hits = mos.search("Alice", user_id="alice", filters={"metadata.n": [0, 1]}, top_k=20)
    assert sorted(h.memory.metadata["n"] for h in hits) == [0, 1]
    # the index keeps no empty fields: a memory without speaker, session, tags or metadata
    # is found by its cube, type and role, and by no filter on what it lacks
    fact = mos.add(text="Alice keeps bees on the roof", user_id="alice", cube_id=cube, extract=False)
    fact_id = fact.memories[0].id
    for flt in ({"type": "fact"}, {"role": "user"}):
        assert fact_id in {h.memory.id for h in mos.search("bees", user_id="alice", filters=flt)}
    for key, value in (("speaker", "Alice"), ("session_id", "s1"), ("tags", "x"), ("metadata.topic", "life")):
        found = mos.search("Alice bees", user_id="alice", filters={key: value}, top_k=20)
        assert fact_id not in {h.memory.id for h in found}
    assert mos.search("bees", user_id="alice", filters={"speaker": ""}) == []
    said = mos.search("Alice", user_id="alice", filters={"speaker": "Alice", "role": "user"}, top_k=20)
    assert len(said) == sum(1 for who, _ in TURNS if who == "Alice")


def test_cached_candidates_still_follow_the_rows(alice: tuple[Any, str]) -> None:
    """The retriever caches what never changes about a candidate; state and importance
    are read on every search."""
    mos, cube = alice
    res = mos.add(messages=_messages(), user_id="alice", cube_id=cube, extract=False)
    dog = next(m for m in res.memories if "dog" in m.text)
    first = mos.search("dog named Bruno", user_id="alice", top_k=3)
    assert first[0].memory.id == dog.id  # now cached
    mos.delete(dog.id, user_id="alice")
    assert dog.id not in {h.memory.id for h in mos.search("dog named Bruno", user_id="alice", top_k=8)}
    mos.restore(dog.id, user_id="alice")
    mos.update(dog.id, user_id="alice", importance=0.9)
    hit = mos.search("dog named Bruno", user_id="alice", top_k=3)[0]
    assert hit.memory.id == dog.id and hit.scores["importance"] == 0.9
    mos.retriever.clear_cache()
    assert mos.search("dog named Bruno", user_id="alice", top_k=3)[0].scores == hit.scores


def test_execute_many_stores_exactly_what_sqlalchemy_stores(make_mos: Any) -> None:
    """The bulk statement helper (own bind processing, values converted once per distinct
    value) writes the same bytes as ``Connection.execute`` on both backends."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import bindparam, insert, text, update

    from memos.storage.relational.bulk import execute_many

    mos = make_mos()
    now = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    same_instant = now.astimezone(timezone(timedelta(hours=2)))  # equal, hashes alike
    rows = [
        {
            "ts": ts,
            "actor": actor,
            "cube_id": None,
            "memory_id": f"m{i}",
            "action": "add",
            "reason": reason,
            "details": details,
        }
        for i, (ts, actor, reason, details) in enumerate(
            [
                (now, "alice", None, {}),
                (same_instant, "alice", "r", {"k": [1, True, None]}),
                (now + timedelta(days=1), "bob", None, {"x": 1.5}),
                (datetime(2020, 1, 1, 0, 0), "bob", "naive is UTC", {"n": "é"}),
                (now, "alice", None, []),  # an empty list is not the empty dict of row 0
            ]
        )
    ]
    table = AuditRow.__table__
    with mos.store.session() as s:
        n = execute_many(s.connection(), insert(table), [{**r, "action": "bulk"} for r in rows])  # type: ignore[arg-type]
        s.connection().execute(insert(table), [{**r, "action": "plain"} for r in rows])  # type: ignore[arg-type]
    # PostgreSQL's batched insert does not report a count; updates do, on both
    assert n == (len(rows) if mos.store.dialect == "sqlite" else -1)
    raw = "SELECT ts, actor, cube_id, memory_id, reason, details FROM audit_events WHERE action = :a ORDER BY id"
    with mos.store.session() as s:
        bulk = s.execute(text(raw), {"a": "bulk"}).all()
        plain = s.execute(text(raw), {"a": "plain"}).all()
    assert bulk == plain and len(bulk) == len(rows)
    # a statement with a value fixed in it, and rows that match or not
    stmt = (
        update(table)  # type: ignore[arg-type]
        .where(table.c.memory_id == bindparam("b_id"))
        .where(table.c.action == "bulk")
        .values(reason="updated")
    )
    with mos.store.session() as s:
        changed = execute_many(s.connection(), stmt, [{"b_id": "m0"}, {"b_id": "m2"}, {"b_id": "missing"}])
    assert changed == 2
    with mos.store.session() as s:
        reasons = s.execute(text(raw), {"a": "bulk"}).all()
    assert [r.reason for r in reasons] == ["updated", "r", "updated", "naive is UTC", None]
    with mos.store.engine.connect() as conn:
        assert execute_many(conn, insert(table), []) == 0  # type: ignore[arg-type]
