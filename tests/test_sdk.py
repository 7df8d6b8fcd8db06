"""The SDK contract, on SQLite and PostgreSQL: users, cubes, ACL, the memory lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from memos.errors import (
    AlreadyExists,
    InvalidFilter,
    InvalidInput,
    InvalidState,
    MemosError,
    NotFound,
    PermissionDenied,
)

CHAT = [
    {
        "role": "user",
        "name": "Alice",
        "content": "I just moved to Berlin for a new job.",
        "id": "m1",
        "timestamp": "2024-03-02T10:00:00Z",
    },
    {
        "role": "assistant",
        "name": "Sam",
        "content": "Congrats! How is the apartment hunt going?",
        "id": "m2",
        "timestamp": "2024-03-02T10:01:00Z",
    },
    {
        "role": "user",
        "name": "Alice",
        "content": "My sister Mira lives in Tromsø and she loves the northern lights.",
        "id": "m3",
        "timestamp": "2024-03-02T10:02:00Z",
    },
]


def test_add_messages_stores_episodes_with_provenance(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    res = mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    assert [m.text for m in res.memories] == [m["content"] for m in CHAT]
    first = res.memories[0]
    assert first.type == "episode"
    assert first.provenance.message_id == "m1"
    assert first.provenance.speaker == "Alice"
    assert first.provenance.session_id == "s1"
    assert first.provenance.timestamp is not None and first.provenance.timestamp.isoformat().startswith(
        "2024-03-02T10:00"
    )
    assert res.entities > 0  # the rule extractor found people and places
    # re-adding the same message ids is a no-op, not a duplicate
    again = mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    assert again.memories == []
    assert mos.list(user_id="alice", cube_id=cube, filters={"type": "episode"}).total == 3


def test_search_returns_scored_explained_hits(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    mos.add(text="Alice is allergic to peanuts", user_id="alice", cube_id=cube, tags=["health"])
    hits = mos.search("Where does Mira live?", user_id="alice", top_k=5)
    assert hits, "no hits"
    assert "Tromsø" in hits[0].memory.text
    top = next(h for h in hits if h.memory.provenance.message_id == "m3")
    assert top.score > 0 and {"dense", "lexical"} & set(top.scores)
    assert top.why and all(isinstance(w, str) for w in top.why)
    assert top.memory.provenance.message_id == "m3"
    hits = mos.search("peanut allergy", user_id="alice", filters={"tags": ["health"]})
    assert [h.memory.text for h in hits] == ["Alice is allergic to peanuts"]
    # access statistics are recorded
    assert mos.get(hits[0].memory.id, user_id="alice").hits == 1


def test_a_search_counts_a_use_of_its_first_access_depth_hits_only(make_mos: Any, tmp_path: Any) -> None:
    """Only the first ``[search] access_depth`` hits of a search are counted as used (hits,
    last_accessed): the tail was offered, not read, and counting it makes everything look used."""
    mos = make_mos(tmp_path / "depth", search={"access_depth": 2})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    for food in ("peanuts", "walnuts", "cashews", "almonds", "hazelnuts"):
        mos.add(text=f"Alice is allergic to {food}", user_id="alice", cube_id=cube, extract=False)
    hits = mos.search("Alice allergic nuts", user_id="alice", top_k=5)
    assert len(hits) == 5
    counted = {m.id: m.hits for m in mos.list_memories(user_id="alice", cube_id=cube).items}
    assert [counted[h.memory.id] for h in hits] == [1, 1, 0, 0, 0]
    assert all(
        (m.last_accessed is not None) == (m.id in {h.memory.id for h in hits[:2]})
        for m in mos.list_memories(user_id="alice", cube_id=cube).items
    )


def test_search_hits_are_written_in_batches_and_before_reads(make_mos: Any, tmp_path: Any) -> None:
    """Access statistics are counted in memory and written in one batch: not per search, but
    before a read that returns them and on close (nothing counted is lost)."""
    from sqlalchemy import select

    from memos.storage.relational.models import MemoryRow

    home = tmp_path / "batched"
    mos = make_mos(home, search={"access_flush_seconds": 3600})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    mid = mos.add(text="Alice is allergic to peanuts", user_id="alice", cube_id=cube).memories[0].id

    def stored_hits() -> int:
        with mos.store.session() as s:
            return int(s.scalar(select(MemoryRow.hits).where(MemoryRow.id == mid)) or 0)

    for _ in range(3):
        assert mos.search("peanut allergy", user_id="alice")[0].memory.id == mid
    assert stored_hits() == 0 and mos.access.pending == 1  # counted, not yet written
    item = mos.get(mid, user_id="alice")  # a read that returns them writes them first
    assert item.hits == 3 and item.last_accessed is not None and stored_hits() == 3
    mos.search("peanut allergy", user_id="alice")
    assert mos.list_memories(user_id="alice", cube_id=cube).items[0].hits == 4
    mos.search("peanut allergy", user_id="alice")
    mos.close()  # written on close
    again = make_mos(home)
    assert again.get(mid, user_id="alice").hits == 5
    # 0 seconds: every search writes at once
    now = make_mos(tmp_path / "eager", search={"access_flush_seconds": 0})
    now.add_user("bob")
    c2 = now.create_cube("bob", "c").id
    m2 = now.add(text="Bob plays the cello", user_id="bob", cube_id=c2).memories[0].id
    now.search("cello", user_id="bob")
    assert now.access.pending == 0
    with now.store.session() as s:
        assert s.scalar(select(MemoryRow.hits).where(MemoryRow.id == m2)) == 1


def test_search_filters_and_time_range(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    mos.add(
        messages=[
            {
                "role": "user",
                "name": "Alice",
                "content": "Berlin is rainy today.",
                "timestamp": "2024-09-01T08:00:00Z",
            }
        ],
        user_id="alice",
        cube_id=cube,
        session_id="s2",
    )
    only_s2 = mos.search("Berlin", user_id="alice", filters={"session_id": "s2"})
    assert only_s2 and all(h.memory.provenance.session_id == "s2" for h in only_s2)
    early = mos.search("Berlin", user_id="alice", time_range=("2024-01-01", "2024-06-01"))
    assert early and all(
        h.memory.provenance.timestamp.year == 2024 and h.memory.provenance.timestamp.month == 3
        for h in early
        if h.memory.type == "episode"
    )
    by_speaker = mos.search("apartment", user_id="alice", filters={"speaker": "Sam"})
    assert [h.memory.provenance.message_id for h in by_speaker] == ["m2"]
    with pytest.raises(InvalidFilter, match="unknown filter"):
        mos.search("x", user_id="alice", filters={"colour": "red"})
    with pytest.raises(InvalidFilter):
        mos.search("x", user_id="alice", filters={"type": "nonsense"})


def test_update_keeps_history(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mem = mos.add(text="Alice works at Acme", user_id="alice", cube_id=cube).memories[0]
    new = mos.update(mem.id, user_id="alice", text="Alice works at Globex", reason="changed jobs")
    assert new.version == 2 and new.text == "Alice works at Globex" and new.id == mem.id
    hist = mos.history(mem.id, user_id="alice")
    assert [v.text for v in hist.versions] == ["Alice works at Acme", "Alice works at Globex"]
    assert hist.versions[1].reason == "changed jobs"
    assert [e.action for e in hist.events] == ["add", "update"]
    assert hist.events[1].actor == "alice"
    hits = mos.search("Where does Alice work?", user_id="alice", top_k=3)
    texts = [h.memory.text for h in hits]
    assert "Alice works at Globex" in texts and "Alice works at Acme" not in texts


def test_functional_facts_supersede_older_ones(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(
        messages=[
            {"role": "user", "name": "Alice", "content": "I live in Lisbon.", "timestamp": "2023-01-05"}
        ],
        user_id="alice",
        cube_id=cube,
    )
    res = mos.add(
        messages=[
            {
                "role": "user",
                "name": "Alice",
                "content": "I moved to Berlin last month.",
                "timestamp": "2024-02-10",
            }
        ],
        user_id="alice",
        cube_id=cube,
    )
    assert res.superseded, "the Lisbon fact should be superseded by the Berlin one"
    old = mos.get(res.superseded[0], user_id="alice")
    assert old.state == "superseded" and old.valid_to is not None and old.superseded_by
    assert "Lisbon" in old.text
    facts = [m.text for m in mos.list(user_id="alice", cube_id=cube, filters={"type": "fact"}).items]
    assert any("Berlin" in f for f in facts) and not any("Lisbon" in f for f in facts)
    assert [e.action for e in mos.history(old.id, user_id="alice").events][-1] == "supersede"


def test_supersede_retires_a_memory_for_a_newer_one(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    mos.add_user("bob")
    cube = mos.create_cube("alice", "personal").id
    other = mos.create_cube("alice", "work").id
    old, new = (
        mos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False).memories[0]
        for t in ("Alice's bike is red", "Alice's bike is blue")
    )
    elsewhere = mos.add(text="Alice's desk is tidy", user_id="alice", cube_id=other, extract=False)
    for by in (old.id, elsewhere.memories[0].id, "00000000-0000-4000-8000-000000000000"):
        with pytest.raises(InvalidInput, match="another memory of its cube"):
            mos.supersede(old.id, by=by, user_id="alice")
    with pytest.raises(NotFound):
        mos.supersede(old.id, by=new.id, user_id="bob")
    assert mos.get(old.id, user_id="alice").state == "active"  # refusals changed nothing
    item = mos.supersede(old.id, by=new.id, user_id="alice", reason="repainted")
    assert (item.state, item.superseded_by) == ("superseded", new.id) and item.valid_to is not None
    event = mos.history(old.id, user_id="alice").events[-1]
    assert (event.action, event.actor, event.reason, event.details) == (
        "supersede", "alice", "repainted", {"by": new.id}
    )  # fmt: skip
    assert [h.memory.id for h in mos.search("bike colour", user_id="alice", cube_ids=[cube])] == [new.id]
    with pytest.raises(InvalidState, match="superseded"):
        mos.supersede(old.id, by=new.id, user_id="alice")


def test_async_supersede(tmp_path: Any, embedder: Any) -> None:
    import asyncio

    from memos.aio import AsyncMemOS

    async def scenario() -> tuple[str, bool]:
        async with AsyncMemOS(home=tmp_path / "async", embedder=embedder) as amos:
            await amos.add_user("alice")
            cube = (await amos.create_cube("alice", "personal")).id
            old, new = [
                (await amos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False)).memories[0].id
                for t in ("Alice's bike is red", "Alice's bike is blue")
            ]
            item = await amos.supersede(old, by=new, user_id="alice")
            return str(item.state), item.superseded_by == new

    assert asyncio.run(scenario()) == ("superseded", True)


def test_delete_restore_purge(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    res = mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    target = res.memories[2]  # the Mira message
    mos.delete(target.id, user_id="alice", reason="oops")
    assert all(h.memory.id != target.id for h in mos.search("Mira Tromsø", user_id="alice"))
    assert mos.get(target.id, user_id="alice").state == "deleted"
    with pytest.raises(InvalidState):
        mos.update(target.id, user_id="alice", text="x")
    mos.restore(target.id, user_id="alice")
    assert any(h.memory.id == target.id for h in mos.search("Mira Tromsø", user_id="alice"))
    derived_before = [m.id for m in res.derived if target.id in m.provenance.source_ids]
    purged = mos.purge(target.id, user_id="alice", reason="user asked")
    assert target.id in purged and set(derived_before) <= set(purged)
    for mid in purged:
        with pytest.raises(NotFound):
            mos.get(mid, user_id="alice")
        assert mid not in mos.index.ids(cube)
    assert all("Tromsø" not in h.memory.text for h in mos.search("Mira Tromsø", user_id="alice", top_k=50))
    # graph: no entity row named Mira/Tromsø survives unless another memory mentions it
    from sqlalchemy import select

    from memos.storage.relational.models import AuditRow, EntityRow, MessageRow

    with mos.store.session() as s:
        keys = set(s.scalars(select(EntityRow.key).where(EntityRow.cube_id == cube)))
        assert "tromsø" not in keys
        assert not list(s.scalars(select(MessageRow).where(MessageRow.memory_id == target.id)))
        tomb = list(s.scalars(select(AuditRow).where(AuditRow.memory_id == target.id)))
        assert tomb[-1].action == "purge" and tomb[-1].details.get("tombstone")
        assert all("Tromsø" not in str(e.details) for e in tomb)
    hist_actions = mos.stats(user_id="alice")
    assert hist_actions["memories"] >= 2


def test_acl_isolation_until_shared(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    mos.add_user("bob")
    cube = mos.create_cube("alice", "private").id
    mem = mos.add(text="Alice's door code is 4711", user_id="alice", cube_id=cube).memories[0]
    with pytest.raises(PermissionDenied):
        mos.search("door code", user_id="bob", cube_ids=[cube])
    # a stranger is told exactly what an unknown id gets: nothing about the memory or its cube
    with pytest.raises(NotFound) as denied:
        mos.get(mem.id, user_id="bob")
    with pytest.raises(NotFound) as unknown:
        mos.get("00000000-0000-4000-8000-000000000000", user_id="bob")
    assert str(denied.value) == str(unknown.value).replace("00000000-0000-4000-8000-000000000000", mem.id)
    assert cube not in str(denied.value)
    for call in (mos.history, mos.delete, mos.purge):
        with pytest.raises(NotFound):
            call(mem.id, user_id="bob")
    with pytest.raises(PermissionDenied):
        mos.add(text="bob was here", user_id="bob", cube_id=cube)
    assert mos.search("door code", user_id="bob") == []  # bob's own cubes: none
    mos.share_cube(cube, "alice", "bob", "reader")
    assert mos.search("door code", user_id="bob")[0].memory.id == mem.id
    with pytest.raises(PermissionDenied, match="reader"):
        mos.add(text="bob was here", user_id="bob", cube_id=cube)
    with pytest.raises(PermissionDenied):
        mos.delete(mem.id, user_id="bob")
    mos.share_cube(cube, "alice", "bob", "writer")
    mos.add(text="bob was here", user_id="bob", cube_id=cube)
    with pytest.raises(PermissionDenied):
        mos.share_cube(cube, "bob", "alice", "reader")  # only the owner shares
    with pytest.raises(PermissionDenied):
        mos.delete_cube(cube, "bob")
    mos.unshare_cube(cube, "alice", "bob")
    with pytest.raises(NotFound):
        mos.get(mem.id, user_id="bob")
    assert [c.id for c in mos.list_cubes("bob")] == []


def test_bad_input_raises_typed_errors_and_writes_nothing(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(text="baseline", user_id="alice", cube_id=cube)
    before = mos.stats()["memories"]
    bad_calls = [
        dict(text=""),
        dict(text="   "),
        dict(text=123),
        dict(text="x" * 40_000),
        dict(messages=[]),
        dict(messages="hello"),
        dict(messages=[{"role": "user"}]),
        dict(messages=[{"role": "user", "content": "ok"}, {"content": "no role"}]),
        dict(messages=[{"role": "user", "content": "ok"}, {"role": "user", "content": "x", "colour": 1}]),
        dict(messages=[{"role": "user", "content": "ok", "timestamp": "not a date"}]),
        dict(messages=CHAT, text="both"),
        dict(text="fine", metadata={"k": object()}),
        dict(text="fine", tags="not-a-list"),
        dict(text="fine", importance=7),
    ]
    for kwargs in bad_calls:
        with pytest.raises(InvalidInput) as info:
            mos.add(user_id="alice", cube_id=cube, **kwargs)
        assert len(str(info.value)) > 10, kwargs
    with pytest.raises(NotFound, match="unknown user"):
        mos.add(text="x", user_id="nobody", cube_id=cube)
    with pytest.raises(NotFound, match="unknown cube"):
        mos.add(text="x", user_id="alice", cube_id="no-such-cube")
    with pytest.raises(NotFound):
        mos.get("00000000-0000-0000-0000-000000000000", user_id="alice")
    with pytest.raises(InvalidInput):
        mos.search("", user_id="alice")
    with pytest.raises(InvalidInput):
        mos.search("x", user_id="alice", top_k=0)
    with pytest.raises(InvalidInput):
        mos.list(user_id="alice", cube_id=cube, limit=0)
    with pytest.raises(AlreadyExists):
        mos.add_user("alice")
    with pytest.raises(AlreadyExists):
        mos.create_cube("alice", "personal")
    assert mos.stats()["memories"] == before
    # every one of these is a MemosError and also the builtin it replaces
    assert issubclass(NotFound, KeyError) and issubclass(InvalidInput, ValueError)
    assert issubclass(PermissionDenied, MemosError)


def test_list_pagination_and_states(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    ids = [
        mos.add(text=f"note number {i}", user_id="alice", cube_id=cube, extract=False).memories[0].id
        for i in range(7)
    ]
    page1 = mos.list(user_id="alice", cube_id=cube, limit=3, newest_first=False)
    page2 = mos.list(user_id="alice", cube_id=cube, limit=3, offset=3, newest_first=False)
    assert page1.total == 7 and [m.id for m in page1.items + page2.items] == ids[:6]
    mos.delete(ids[0], user_id="alice")
    assert mos.list(user_id="alice", cube_id=cube).total == 6
    assert [m.id for m in mos.list(user_id="alice", cube_id=cube, states=["deleted"]).items] == [ids[0]]


def test_delete_cube_removes_everything(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    assert mos.index.count(cube) > 0
    mos.delete_cube(cube, "alice")
    assert mos.index.count(cube) == 0
    with pytest.raises(NotFound):
        mos.get_cube(cube, "alice")
    assert mos.stats()["memories"] == 0


def test_reindex_rebuilds_from_rows(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    n = mos.index.count(cube)
    mos.index.delete_cube(cube)  # lose the derived index entirely
    # only the graph path (rows, not the index) can still answer
    assert all(set(h.ranks) == {"graph"} for h in mos.search("Tromsø", user_id="alice"))
    mos.reindex()
    assert mos.index.count(cube) == n
    hits = mos.search("Tromsø", user_id="alice")
    assert hits and {"dense", "lexical"} <= set(hits[0].ranks)


def test_async_twin(tmp_path: Any, embedder: Any) -> None:
    import asyncio

    from memos.aio import AsyncMemOS

    async def main() -> list[str]:
        async with AsyncMemOS(tmp_path / "async-home", embedder=embedder) as amos:
            await amos.add_user("carol")
            cube = await amos.create_cube("carol", "c")
            await asyncio.gather(
                *[
                    amos.add(text=f"Carol visited museum number {i}", user_id="carol", cube_id=cube.id)
                    for i in range(5)
                ]
            )
            hits = await amos.search("museum number 3", user_id="carol", top_k=3)
            return [h.memory.text for h in hits]

    texts = asyncio.run(main())
    assert "Carol visited museum number 3" in texts


class _BrokenExtractor:
    """Stands in for a failing model-backed extractor (the LLM one arrives with the runtimes)."""

    name = "broken"

    def extract(self, text: str, *, speaker: Any, reference_time: Any) -> Any:
        raise RuntimeError("model returned invalid JSON")


def test_extraction_failure_loses_nothing_and_is_counted(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.extractor = _BrokenExtractor()
    res = mos.add(messages=CHAT, user_id="alice", cube_id=cube, session_id="s1")
    assert len(res.memories) == 3 and res.extraction_failures == 3 and res.derived == []
    assert mos.stats()["extraction_failures"] == 3
    hits = mos.search("Tromsø", user_id="alice")
    assert hits and hits[0].memory.provenance.message_id == "m3"
    events = mos.history(res.memories[0].id, user_id="alice").events
    assert [e.action for e in events] == ["add", "extract_failed"]
    assert "invalid JSON" in events[1].details["error"]


def test_migrations_applied_on_open_and_idempotent(make_mos: Any, tmp_path: Any) -> None:
    from sqlalchemy import text

    mos = make_mos()
    with mos.store.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0005"
    assert {
        "users",
        "cubes",
        "cube_acl",
        "memories",
        "memory_versions",
        "entities",
        "edges",
        "sessions",
        "messages",
        "audit_events",
        "blobs",
        "index_tasks",
        "jobs",
    } <= set(mos.store.tables())
    mos.store.migrate()  # re-applying is a no-op
    with mos.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


class _HashEmbedder:
    """A second, deterministic embedder (letter-trigram hashing), to test switching models."""

    id = "test:trigram-hash-64"
    dim = 64

    def embed(self, texts: Any) -> list[list[float]]:
        import hashlib
        import math

        out = []
        for t in texts:
            v = [0.0] * self.dim
            s = f"  {t.lower()}  "
            for i in range(len(s) - 2):
                v[hashlib.blake2b(s[i : i + 3].encode(), digest_size=2).digest()[0] % self.dim] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]


def test_switching_embedder_needs_a_fresh_index(tmp_path: Any, embedder: Any) -> None:
    import shutil

    from memos.core import MemOS
    from memos.errors import ConfigError

    home = tmp_path / "switch"
    with MemOS(home, embedder=embedder) as mos:
        mos.add_user("u")
        cube = mos.create_cube("u", "c").id
        mos.add(text="The lighthouse keeper collects seashells", user_id="u", cube_id=cube)
    with pytest.raises(ConfigError, match="remove the index folder"):
        MemOS(home, embedder=_HashEmbedder())
    shutil.rmtree(home / "index")
    with MemOS(home, embedder=_HashEmbedder()) as mos:  # re-embeds every row on open
        assert mos.index.count(cube) == 1
        hits = mos.search("lighthouse seashells", user_id="u")
        assert hits and hits[0].memory.text == "The lighthouse keeper collects seashells"
        assert "dense" in hits[0].ranks


def test_onnx_backend_from_settings(tmp_path: Any) -> None:
    """The configured embedder backend is the one a home opens with, and records its id."""
    pytest.importorskip("onnxruntime")
    from memos.core import MemOS
    from memos.errors import ConfigError

    with MemOS(tmp_path / "onnx-home", embedder_backend="onnx", embedder_cache_dir=tmp_path / "cache") as mos:
        assert mos.embedder.id.startswith("onnx-fp32:")
        mos.add_user("u")
        cube = mos.create_cube("u", "c").id
        mos.add(text="The lighthouse keeper collects seashells", user_id="u", cube_id=cube)
        assert mos.search("seashells", user_id="u")[0].memory.text.startswith("The lighthouse")
    # unset, the backend is the one the home's index was built with: it opens as it was
    with MemOS(tmp_path / "onnx-home", embedder_cache_dir=tmp_path / "cache") as mos:
        assert mos.embedder.id.startswith("onnx-fp32:") and mos.settings.embedder_backend == "onnx"
        assert mos.search("seashells", user_id="u")[0].memory.text.startswith("The lighthouse")
    # another backend, set explicitly, is refused with a clear error (nothing rebuilt silently)
    with pytest.raises(ConfigError, match="built with onnx-fp32"):
        MemOS(tmp_path / "onnx-home", embedder_backend="torch")


def test_default_backend_is_onnx_int8_for_the_bundled_model_on_cpu() -> None:
    pytest.importorskip("onnxruntime")
    from memos.config import Settings
    from memos.factories import default_backend

    assert default_backend(Settings()) == "onnx-int8"
    assert default_backend(Settings(embedder="sentence-transformers/all-MiniLM-L6-v2")) == "onnx-int8"
    assert default_backend(Settings(embedder_device="cuda")) == "torch"  # ONNX runs on the CPU only
    assert default_backend(Settings(embedder="/models/another-encoder")) == "torch"  # int8 unmeasured there


def test_new_home_embeds_with_onnx_int8_and_old_homes_keep_torch(tmp_path: Any, embedder: Any) -> None:
    """A new home takes the default backend and records it; a home whose index was built
    with torch (the default before) reopens with torch, not refused and not rebuilt."""
    pytest.importorskip("onnxruntime")
    from memos.core import MemOS

    with MemOS(tmp_path / "new") as mos:
        assert mos.settings.embedder_backend == "onnx-int8"
        assert mos.embedder.id == "onnx-int8:all-MiniLM-L6-v2"
        mos.add_user("u")
        cube = mos.create_cube("u", "c").id
        mos.add(text="The lighthouse keeper collects seashells", user_id="u", cube_id=cube)
        mos.add(text="Our neighbour repairs vintage motorbikes", user_id="u", cube_id=cube)
        hits = mos.search("who gathers shells by the sea?", user_id="u")
        assert hits[0].memory.text.startswith("The lighthouse") and "dense" in hits[0].ranks
    with MemOS(tmp_path / "new") as mos:
        assert mos.embedder.id == "onnx-int8:all-MiniLM-L6-v2"

    with MemOS(tmp_path / "old", embedder=embedder) as mos:  # torch-built, as before the switch
        mos.add_user("u")
        cube = mos.create_cube("u", "c").id
        mos.add(text="The lighthouse keeper collects seashells", user_id="u", cube_id=cube)
    with MemOS(tmp_path / "old") as mos:
        assert mos.settings.embedder_backend == "torch" and mos.embedder.id == embedder.id
        assert mos.search("seashells", user_id="u")[0].memory.text.startswith("The lighthouse")


def test_search_over_turns_without_a_session(alice: tuple[Any, str]) -> None:
    """Messages added without a session_id are still turns; search must handle them."""
    mos, cube = alice
    mos.add(
        messages=[
            {"role": "user", "name": "Alice", "content": "The ferry to Bergen leaves at nine.", "id": "x1"},
            {"role": "user", "name": "Sam", "content": "Then we take the ferry.", "id": "x2"},
        ],
        user_id="alice",
        cube_id=cube,
    )
    hits = mos.search("When does the ferry to Bergen leave?", user_id="alice")
    assert hits and hits[0].memory.provenance.message_id == "x1"


def test_index_is_optimized_in_rounds_as_memories_arrive(make_mos: Any) -> None:
    """Every ``index_optimize_every`` new points the add that reaches the mark builds the
    index's search structures; the memories stay searchable across the rounds."""
    mos = make_mos(index_optimize_every=40)
    mos.add_user("u")
    cube = mos.create_cube("u", "notes").id
    pending = []
    for b in range(3):
        msgs = [
            {"role": "user", "content": f"batch {b} note {i} about harbour walks", "id": f"{b}-{i}"}
            for i in range(30)
        ]
        mos.add(messages=msgs, user_id="u", cube_id=cube, extract="defer")
        pending.append(mos.index.unoptimized_points)
    assert pending == [30, 0, 30]  # the second add crossed 40 and optimized
    hits = mos.search("batch 1 note 7 harbour", user_id="u", top_k=3)
    assert hits and hits[0].memory.provenance.message_id == "1-7"
    assert mos.index.count(cube) == 90

    # a rebuild goes through the same rounds (one batch of 90 on top of the 30 waiting), then
    # its last optimize
    calls = []
    inner = mos.home.optimize_index  # the home's, which every service calls
    mos.home.optimize_index = lambda: calls.append(mos.index.unoptimized_points) or inner()
    assert mos.reindex() == 90
    assert calls == [30 + 90, 0] and mos.index.count(cube) == 90

    off = make_mos(home=mos.settings.home.parent / "off", index_optimize_every=0)
    off.add_user("v")  # PostgreSQL: both homes share one database
    other = off.create_cube("v", "notes").id
    off.add(
        messages=[{"role": "user", "content": f"note {i}"} for i in range(50)], user_id="v", cube_id=other
    )
    assert off.index.unoptimized_points >= 50
