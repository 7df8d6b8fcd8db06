"""The content policies (issue 21): session summaries and dedup/merge, with the kernel
operations they run through (MemOS.summarize_session, MemOS.merge). Deterministic: every
home runs on an injected clock that moves only when the test says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memos.errors import InvalidInput, InvalidState
from memos.extract.rules import RuleExtractor
from memos.memories.summaries import Turn, extractive_summary
from memos.policies.base import CubeView, MemoryView, Merge, Summarize
from memos.policies.dedup import DedupPolicy, DedupSettings
from memos.policies.summaries import SummariesPolicy, SummariesSettings
from memos.types import text_digest

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

SESSION = [
    ("user", "Alice", "Hi Bob! I moved to Lisbon last month. It is sunny there."),
    ("assistant", "Bob", "Nice. How is the new job going?"),
    ("user", "Alice", "I work at Feedzai now, on fraud detection models. My sister Mira visited me in May."),
    ("assistant", "Bob", "Great, ok. Did she like the city?"),
    ("user", "Alice", "She loved the pastries and wants to come back for the jazz festival in July."),
]


def talk(mos: Any, cube: str, session: str, turns: list[tuple[str, str, str]] = SESSION) -> list[str]:
    added = mos.add(
        [{"role": r, "name": n, "content": c} for r, n, c in turns],
        user_id="alice",
        cube_id=cube,
        session_id=session,
    )
    return [m.id for m in added.memories]


def every(mos: Any, cube: str) -> dict[str, Any]:
    return {m.id: m for m in mos.list_memories(user_id="alice", cube_id=cube, states=None, limit=1000).items}


def actions(report: Any, policy: str) -> list[Any]:
    return [a for c in report.cubes for o in c.outcomes if o.policy == policy for a in o.actions]


def strip(report: Any) -> list[Any]:
    return [c.as_dict() for c in report.cubes]


# ------------------------------------------------------------------ summaries


def test_a_closed_session_gets_one_summary_linked_to_its_episodes(alice: Any) -> None:
    mos, cube = alice
    episodes = talk(mos, cube, "s1")
    talk(mos, cube, "short", SESSION[:2])  # fewer than min_episodes (4)
    mos.clock.advance(hours=30)
    recent = talk(mos, cube, "s2")  # its last turn is new
    mos.clock.advance(hours=2)
    assert actions(mos.policies.plan(), "summaries") == []  # off by default
    mos.policies.set(cube, "summaries.after", "1d", user_id="alice")

    plan = mos.policies.plan()
    (summarize,) = actions(plan, "summaries")
    assert isinstance(summarize, Summarize) and summarize.session_id == "s1"
    assert sorted(summarize.episode_ids) == sorted(episodes)  # s2 is recent, "short" too short
    applied = mos.policies.apply()
    assert strip(applied) == strip(plan)

    (summary,) = [m for m in every(mos, cube).values() if m.type == "summary"]
    # linked to its episodes in the order they were said
    assert summary.provenance.source_ids == episodes and summary.provenance.session_id == "s1"
    assert not set(recent) & set(summary.provenance.source_ids)
    assert summary.metadata == {"summary_of": "s1", "episodes": 5, "method": "extractive", "version": 1,
                                "text_sha256": text_digest(summary.text)}  # fmt: skip
    # the extractive fallback: the same episodes give the same text, bounded, said in order
    rows = [every(mos, cube)[e] for e in episodes]
    turns = [Turn(m.id, m.provenance.speaker, m.text, m.provenance.timestamp or m.recorded_at) for m in rows]
    assert summary.text == extractive_summary(turns, 600, RuleExtractor())
    assert summary.text.startswith("Session of 2024-06-01: Alice: I moved to Lisbon last month.")
    assert "Alice: I work at Feedzai now" in summary.text and "Hi Bob!" not in summary.text
    assert len(summary.text) <= 600
    assert len(extractive_summary(turns, 120, RuleExtractor())) <= 120
    events = mos.history(summary.id, user_id="alice").events
    assert [(e.action, e.actor, e.reason) for e in events] == [
        ("extract", "policy:summaries", summarize.reason)
    ]
    assert [h.memory.id for h in mos.search("Feedzai fraud detection", user_id="alice", top_k=10)].count(
        summary.id
    ) == 1

    # once: a re-plan proposes nothing for s1, and asking the kernel again gives the same memory
    assert actions(mos.policies.plan(), "summaries") == []
    again = mos.summarize_session(cube, "s1", user_id="alice")
    assert again.id == summary.id
    mos.clock.advance(days=2)  # now s2 is closed too: it alone is summarised
    (later,) = actions(mos.policies.apply(), "summaries")
    assert later.session_id == "s2"
    assert len([m for m in every(mos, cube).values() if m.type == "summary"]) == 2


def test_capacity_then_archives_the_summarised_episodes_first(alice: Any) -> None:
    mos, cube = alice
    notes = [
        mos.add(text=f"garden note {i}", type="episode", user_id="alice", cube_id=cube, extract=False)
        .memories[0]
        .id
        for i in range(3)
    ]  # older, so colder than the session: without a summary they would go first
    mos.clock.advance(days=3)
    episodes = talk(mos, cube, "s1")
    mos.clock.advance(days=2)
    mos.policies.set(cube, "summaries.after", "1d", user_id="alice")
    mos.policies.apply()
    active = [m for m in every(mos, cube).values() if m.state == "active"]
    mos.policies.set(cube, "capacity.max_active", len(active) - len(episodes), user_id="alice")
    report = mos.policies.plan()
    archived = [a.memory_id for a in actions(report, "capacity")]
    assert sorted(archived) == sorted(episodes)
    assert all("covered by a derived memory" in a.reason for a in actions(report, "capacity"))
    mos.policies.apply()
    states = {k: m.state for k, m in every(mos, cube).items()}
    assert {states[e] for e in episodes} == {"archived"} and {states[n] for n in notes} == {"active"}
    # what they said is still found: in the summary, and in them with include_archived
    hits = [h.memory for h in mos.search("Feedzai fraud detection", user_id="alice", top_k=5)]
    assert "summary" in [m.type for m in hits] and not set(episodes) & {m.id for m in hits}
    with_archive = mos.search("Feedzai fraud detection", user_id="alice", top_k=5, include_archived=True)
    assert set(episodes) & {h.memory.id for h in with_archive}


def test_summarize_session_refuses_what_it_cannot_summarise(alice: Any) -> None:
    mos, cube = alice
    ids = talk(mos, cube, "s1")
    with pytest.raises(InvalidInput, match="no episodes"):
        mos.summarize_session(cube, "nope", user_id="alice")
    with pytest.raises(InvalidInput, match="not active or archived episodes of session"):
        mos.summarize_session(cube, "s1", episode_ids=["x"], user_id="alice")
    mos.delete(ids[0], user_id="alice")
    with pytest.raises(InvalidInput, match=ids[0]):
        mos.summarize_session(cube, "s1", episode_ids=ids, user_id="alice")
    assert not [m for m in every(mos, cube).values() if m.type == "summary"]


def _mem(mid: str, **kw: Any) -> MemoryView:
    values: dict[str, Any] = {
        "id": mid, "type": "episode", "state": "active", "importance": 0.5, "tags": (), "metadata": {},
        "recorded_at": T0, "updated_at": T0, "retired_at": None, "hits": 0, "last_accessed": None,
        "session_id": None, "source_ids": (), "chars": 10,
    }  # fmt: skip
    values.update(kw)
    return MemoryView(**values)


def test_summaries_decision_idle_time_size_and_once() -> None:
    eps = [_mem(f"e{i}", session_id="s", recorded_at=T0 + timedelta(minutes=i)) for i in range(4)]
    view = CubeView(
        "c", "alice", (*eps, _mem("x", session_id="s", state="deleted", recorded_at=T0 + timedelta(hours=5)))
    )
    cfg = SummariesSettings(after="1d")
    decide = SummariesPolicy().decide
    assert decide(view, [], T0 + timedelta(hours=28, minutes=59), cfg) == []  # the deleted turn was the last
    (s,) = decide(view, [], T0 + timedelta(hours=29), cfg)
    assert s.episode_ids == ("e0", "e1", "e2", "e3")  # the deleted turn is not summarised
    assert decide(view, [], T0 + timedelta(days=9), SummariesSettings(after="1d", min_episodes=5)) == []
    done = CubeView(
        "c", "alice", (*view.memories, _mem("sum", type="summary", session_id="s", state="archived"))
    )
    assert decide(done, [], T0 + timedelta(days=9), cfg) == []


# ------------------------------------------------------------------ dedup / merge


def _duplicate_facts(mos: Any, cube: str) -> tuple[str, str, str, str]:
    """Two active facts of one relation, each with its own source: told, archived, told again."""
    first = mos.add(
        [{"role": "user", "name": "Alice", "content": "I live in Berlin."}], user_id="alice", cube_id=cube
    )
    (fact_a,) = [m.id for m in first.derived if "lives in" in m.text]
    mos.archive(fact_a, user_id="alice")
    mos.clock.advance(days=1)
    second = mos.add(
        [{"role": "user", "name": "Alice", "content": "I live in Berlin, near the river."}],
        user_id="alice",
        cube_id=cube,
    )
    (fact_b,) = [m.id for m in second.derived if "lives in" in m.text]
    assert fact_b != fact_a
    mos.restore(fact_a, user_id="alice")
    mos.update(fact_b, user_id="alice", tags=["home"], reason="tagged")
    return fact_a, fact_b, first.memories[0].id, second.memories[0].id


def test_duplicate_facts_are_merged_keeping_both_histories_and_provenance(alice: Any) -> None:
    mos, cube = alice
    fact_a, fact_b, ep_a, ep_b = _duplicate_facts(mos, cube)
    plan = mos.policies.plan()  # on by default for exact duplicates
    (merge,) = actions(plan, "dedup")
    assert isinstance(merge, Merge) and merge.memory_id == fact_a and merge.merged_ids == (fact_b,)
    assert "the same lives_in" in merge.reason
    applied = mos.policies.apply()
    assert strip(applied) == strip(plan) and applied.counts()["merge"] == 1

    kept, merged = mos.get(fact_a, user_id="alice"), mos.get(fact_b, user_id="alice")
    assert kept.state == "active" and kept.provenance.source_ids == [ep_a, ep_b] and kept.tags == ["home"]
    assert merged.state == "superseded" and merged.superseded_by == fact_a and merged.valid_to is not None
    history_b = mos.history(fact_b, user_id="alice")
    assert [v.reason for v in history_b.versions] == ["extracted from " + ep_b, "tagged"]
    assert history_b.events[-1].action == "merge" and history_b.events[-1].actor == "policy:dedup"
    history_a = mos.history(fact_a, user_id="alice")
    assert len(history_a.versions) == 2 and history_a.versions[-1].reason == merge.reason
    assert history_a.events[-1].details == {"into": fact_a, "merged": [fact_b], "version": 2}
    assert fact_b not in [h.memory.id for h in mos.search("Where does Alice live? Berlin", user_id="alice")]
    assert actions(mos.policies.plan(), "dedup") == []  # nothing left to merge

    back = mos.restore(fact_b, user_id="alice")  # nothing is lost: the merged one comes back
    assert back.state == "active" and back.superseded_by is None and back.valid_to is None
    assert fact_b in [h.memory.id for h in mos.search("Alice lives in Berlin", user_id="alice", top_k=10)]
    assert mos.get(fact_a, user_id="alice").provenance.source_ids == [ep_a, ep_b]
    assert actions(mos.policies.plan(), "dedup") == []  # restored by a person: not merged again


def test_merge_refuses_bad_input_and_writes_nothing(alice: Any) -> None:
    mos, cube = alice
    a = mos.add(text="Alice likes tea.", user_id="alice", cube_id=cube).memories[0].id
    b = mos.add(text="alice likes tea", user_id="alice", cube_id=cube).memories[0].id
    mos.delete(b, user_id="alice")
    other = mos.create_cube("alice", "work").id
    c = mos.add(text="Alice likes tea!", user_id="alice", cube_id=other).memories[0].id
    with pytest.raises(InvalidInput):
        mos.merge(a, [a], user_id="alice")
    with pytest.raises(InvalidInput):
        mos.merge(a, [], user_id="alice")
    with pytest.raises(InvalidState, match="deleted"):
        mos.merge(a, [b], user_id="alice")
    with pytest.raises(InvalidInput, match="within a cube"):
        mos.merge(a, [c], user_id="alice")
    assert mos.get(a, user_id="alice").version == 1 and mos.get(c, user_id="alice").state == "active"
    assert [e.action for e in mos.history(a, user_id="alice").events] == ["add"]


def test_dedup_decision_rules() -> None:
    def fact(mid: str, key: str, rel: frozenset[str] = frozenset(), **kw: Any) -> MemoryView:
        return _mem(mid, type="fact", text_key=key, relations=rel, **kw)

    berlin = frozenset({"alice|lives_in|berlin"})
    view = CubeView(
        "c",
        "alice",
        (
            fact("a", "alice lives in berlin", berlin, recorded_at=T0 + timedelta(days=1)),
            fact("b", "alice lives in berlin since 2024 06", berlin),
            fact("c", "alice lives in berlin"),
            fact("d", "bob likes green tea very much"),
            fact("e", "bob likes green tea very much indeed"),
            fact("f", "alice lives in berlin", state="archived"),
            _mem("g", type="preference", text_key="alice lives in berlin"),
        ),
    )
    policy = DedupPolicy()
    (m,) = policy.decide(view, [], T0, DedupSettings())
    assert (m.memory_id, m.merged_ids) == ("b", ("c", "a"))  # the oldest kept; transitive; same type only
    assert "the same lives_in" in m.reason and "the same text" in m.reason
    (by_text,) = policy.decide(view, [], T0, DedupSettings(same_relation=False))
    assert (by_text.memory_id, by_text.merged_ids) == ("c", ("a",))
    near = policy.decide(view, [], T0, DedupSettings(same_text=False, same_relation=False, similarity=0.8))
    assert [(x.memory_id, x.merged_ids) for x in near] == [("c", ("a",)), ("d", ("e",))]  # 1.0 and 6/7
    assert policy.decide(
        view, [], T0, DedupSettings(same_text=False, same_relation=False, similarity=0.9)
    ) == [Merge(memory_id="c", reason=near[0].reason.replace("0.8", "0.9"), merged_ids=("a",))]
    assert policy.decide(view, [], T0, DedupSettings(types=["preference"])) == []


def test_async_merge_and_summarize_session(tmp_path: Any, embedder: Any) -> None:
    import asyncio

    from memos.aio import AsyncMemOS

    async def scenario() -> tuple[bool, str, list[str]]:
        async with AsyncMemOS(home=tmp_path / "async", embedder=embedder) as amos:
            await amos.add_user("alice")
            cube = (await amos.create_cube("alice", "personal")).id
            a, b = [
                (await amos.add(text=t, user_id="alice", cube_id=cube)).memories[0].id
                for t in ("Bob likes green tea.", "bob likes green tea")
            ]
            kept = await amos.merge(a, [b], user_id="alice")
            turns = [{"role": "user", "name": "Alice", "content": c} for _, _, c in SESSION]
            episodes = (await amos.add(turns, user_id="alice", cube_id=cube, session_id="s1")).memories
            summary = await amos.summarize_session(cube, "s1", user_id="alice")
            return (
                kept.id == a and kept.version == 2,
                str(summary.type),
                [str(x) for x in summary.provenance.source_ids] + [m.id for m in episodes],
            )

    merged, kind, ids = asyncio.run(scenario())
    assert merged and kind == "summary" and ids[:5] == ids[5:] and len(ids) == 10


def test_summaries_and_merges_travel_through_export_and_import(
    alice: Any, make_mos: Any, tmp_path: Any
) -> None:
    mos, cube = alice
    _duplicate_facts(mos, cube)
    assert mos.policies.apply().counts() == {"failed": 0, "merge": 1}
    talk(mos, cube, "s1")  # (Alice now lives in Lisbon: the Berlin fact is superseded)
    mos.clock.advance(days=2)
    mos.policies.set(cube, "summaries.after", "1d", user_id="alice")
    assert mos.policies.apply().counts() == {"failed": 0, "summarize": 1}
    path = mos.export_cube(cube, tmp_path / "c.memcube", user_id="alice")
    other = make_mos(home=tmp_path / "other")  # on PostgreSQL the same database: a copy, new ids
    other.add_user("carol")
    new = other.import_cube(path, user_id="carol", copy=True)
    items = other.list_memories(user_id="carol", cube_id=new.id, states=None, limit=1000).items
    by_id = {m.id: m for m in items}
    (summary,) = [m for m in items if m.type == "summary"]
    assert [by_id[s].type for s in summary.provenance.source_ids] == ["episode"] * 5
    (merged,) = [m for m in items if m.state == "superseded" and by_id[m.superseded_by].version == 2]
    assert "merge" in [e.action for e in other.history(merged.id, user_id="carol").events]
    assert other.restore(merged.id, user_id="carol").state == "active"


@pytest.mark.slow
def test_llm_summary_with_the_bundled_model(tmp_path: Any, embedder: Any) -> None:
    from memos.core import MemOS

    with MemOS(home=tmp_path / "llm", embedder=embedder, extractor="llm") as mos:
        mos.add_user("alice")
        cube = mos.create_cube("alice", "personal").id
        episodes = talk(mos, cube, "s1")
        summary = mos.summarize_session(cube, "s1", user_id="alice", max_chars=300)
        assert summary.type == "summary" and summary.provenance.source_ids == episodes
        assert (
            summary.metadata["method"] == "llm:smollm2-135m-instruct" and "llm_error" not in summary.metadata
        )
        assert 0 < len(summary.text) <= 300 and summary.provenance.extractor == summary.metadata["method"]
