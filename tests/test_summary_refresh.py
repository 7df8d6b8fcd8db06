"""A session that resumes after it was summarised (issue 21, policy 4): its summary is
refreshed — a new version of the same memory covering the later turns — not left stale
and not doubled. Deterministic: every home runs on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memos.errors import InvalidState
from memos.policies.base import CubeView, MemoryView, RefreshSummary, Summarize
from memos.policies.summaries import SummariesPolicy, SummariesSettings
from memos.types import text_digest

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

FIRST = [
    ("user", "Alice", "I moved to Lisbon last month and I work at Feedzai on fraud detection."),
    ("assistant", "Bob", "Nice. How is the new job going?"),
    ("user", "Alice", "Busy. My sister Mira visited me in May and loved the pastries."),
    ("assistant", "Bob", "Did she like the city?"),
]
LATER = [
    ("user", "Alice", "Back again! Yesterday I adopted a grey kitten named Pixel from the Porto shelter."),
    ("assistant", "Bob", "Congratulations, how old is Pixel?"),
    ("user", "Alice", "Pixel is ten weeks old and already sleeps on my keyboard every afternoon."),
]


def talk(mos: Any, cube: str, turns: list[tuple[str, str, str]], **kw: Any) -> list[str]:
    messages = [{"role": r, "name": n, "content": c} for r, n, c in turns]
    added = mos.add(messages, user_id="alice", cube_id=cube, session_id="s1", **kw)
    return [m.id for m in added.memories]


def actions(report: Any, policy: str) -> list[Any]:
    return [a for c in report.cubes for o in c.outcomes if o.policy == policy for a in o.actions]


def summaries(mos: Any, cube: str) -> list[Any]:
    items = mos.list_memories(user_id="alice", cube_id=cube, states=None, limit=1000).items
    return [m for m in items if m.type == "summary"]


def summarised_then_resumed(mos: Any, cube: str) -> tuple[Any, list[str], list[str]]:
    """s1 summarised by the policy, then resumed three days later (later turns not extracted:
    only the summary could cover them)."""
    first = talk(mos, cube, FIRST)
    mos.clock.advance(days=2)
    mos.policies.set(cube, "summaries.after", "1d", user_id="alice")
    assert mos.policies.apply().counts() == {"failed": 0, "summarize": 1}
    (summary,) = summaries(mos, cube)
    mos.clock.advance(days=3)
    later = talk(mos, cube, LATER, extract=False)
    mos.clock.advance(hours=2)
    return summary, first, later


def test_a_resumed_session_gets_its_summary_refreshed_not_a_second_one(alice: Any) -> None:
    mos, cube = alice
    summary, first, later = summarised_then_resumed(mos, cube)
    assert "Pixel" not in summary.text and summary.provenance.source_ids == first
    # the later turns are not covered by the old summary: capacity does not archive them as such
    active = [m for m in mos.list_memories(user_id="alice", cube_id=cube, limit=1000).items]
    mos.policies.set(cube, "capacity.max_active", len(active) - len(first) - 1, user_id="alice")
    capacity = actions(mos.policies.plan(), "capacity")
    assert {a.memory_id for a in capacity if "covered" in a.reason} == set(first)
    mos.policies.unset(cube, "capacity.max_active", user_id="alice")
    assert actions(mos.policies.plan(), "summaries") == []  # not idle for a day yet

    mos.clock.advance(days=1)
    plan = mos.policies.plan()
    (refresh,) = actions(plan, "summaries")
    assert isinstance(refresh, RefreshSummary) and refresh.memory_id == summary.id
    assert sorted(refresh.episode_ids) == sorted(first + later) and refresh.version == 1
    assert "3 episodes since its summary" in refresh.reason
    applied = mos.policies.apply()
    assert [c.as_dict() for c in applied.cubes] == [c.as_dict() for c in plan.cubes]
    assert applied.counts() == {"failed": 0, "refresh_summary": 1}

    (new,) = summaries(mos, cube)  # the same memory, a new version
    assert new.id == summary.id and new.version == 2 and new.state == "active"
    assert new.provenance.source_ids == [*first, *later]
    assert new.metadata == {"summary_of": "s1", "episodes": 7, "method": "extractive", "version": 2,
                            "text_sha256": text_digest(new.text)}
    assert "Pixel" in new.text and "Feedzai" in new.text
    history = mos.history(summary.id, user_id="alice")
    assert [(v.version, v.text, v.actor) for v in history.versions] == [
        (1, summary.text, "policy:summaries"),
        (2, new.text, "policy:summaries"),
    ]
    assert [(e.action, e.actor, e.reason) for e in history.events][-1] == (
        "update", "policy:summaries", refresh.reason
    )  # fmt: skip
    assert history.events[-1].details["added"] == 3

    # idempotent: the summary covers every episode, so the next runs leave it alone
    assert actions(mos.policies.plan(), "summaries") == []
    assert "refresh_summary" not in mos.policies.apply().counts()
    assert mos.get(summary.id, user_id="alice").version == 2
    # what the later turns said survives their archiving, in default search
    cap = len(mos.list_memories(user_id="alice", cube_id=cube, limit=1000).items) - len(first + later)
    mos.policies.set(cube, "capacity.max_active", cap, user_id="alice")
    mos.policies.apply()
    assert {mos.get(e, user_id="alice").state for e in first + later} == {"archived"}  # all covered now
    hits = [h.memory.id for h in mos.search("Alice's kitten Pixel", user_id="alice", top_k=5)]
    assert summary.id in hits and not set(later) & set(hits)


def test_summarize_session_refresh(alice: Any) -> None:
    mos, cube = alice
    first = talk(mos, cube, FIRST)
    made = mos.summarize_session(cube, "s1", user_id="alice", refresh=True)  # none yet: written
    assert made.version == 1 and made.provenance.source_ids == first
    later = talk(mos, cube, LATER)
    # the default is unchanged: asked again, the summary it has, without the later turns
    assert mos.summarize_session(cube, "s1", user_id="alice") == made
    new = mos.summarize_session(cube, "s1", user_id="alice", refresh=True, reason="caught up")
    assert new.id == made.id and new.version == 2 and new.provenance.source_ids == [*first, *later]
    assert mos.history(made.id, user_id="alice").versions[-1].reason == "caught up"
    # nothing new: left as it is (no version, no event)
    events = len(mos.history(made.id, user_id="alice").events)
    assert mos.summarize_session(cube, "s1", user_id="alice", refresh=True) == new
    assert len(mos.history(made.id, user_id="alice").events) == events

    # a guard on the version read: a person's edit since makes it fail, writing nothing
    talk(mos, cube, [("user", "Alice", "One more thing: Pixel hates the vacuum cleaner a lot.")])
    mos.update(made.id, user_id="alice", text="Alice lives in Lisbon and has a kitten.")
    with pytest.raises(InvalidState, match="at version 3, not 2"):
        mos.summarize_session(cube, "s1", user_id="alice", refresh=True, if_version=2)
    assert mos.get(made.id, user_id="alice").version == 3
    # a deleted summary is not rewritten (nor replaced by a second one)
    mos.delete(made.id, user_id="alice")
    with pytest.raises(InvalidState, match="is deleted; restore it"):
        mos.summarize_session(cube, "s1", user_id="alice", refresh=True)
    assert mos.summarize_session(cube, "s1", user_id="alice").id == made.id
    assert len(summaries(mos, cube)) == 1


def test_a_summary_edited_by_a_person_is_not_rewritten_by_the_policy(alice: Any) -> None:
    mos, cube = alice
    summary, first, later = summarised_then_resumed(mos, cube)
    mine = "Alice (Lisbon, Feedzai) told Bob about her sister Mira's visit."
    mos.update(summary.id, user_id="alice", text=mine)
    mos.clock.advance(days=2)
    assert actions(mos.policies.apply(), "summaries") == []
    kept = mos.get(summary.id, user_id="alice")
    assert kept.text == mine and kept.version == 2 and kept.provenance.source_ids == first
    # asked for explicitly, the person gets a fresh one; from then on the policy keeps it current
    fresh = mos.summarize_session(cube, "s1", user_id="alice", refresh=True)
    assert fresh.version == 3 and fresh.metadata["version"] == 3 and "Pixel" in fresh.text
    assert mos.history(summary.id, user_id="alice").versions[1].text == mine
    talk(mos, cube, [("user", "Alice", "Pixel learned to open the kitchen cupboard doors today.")])
    mos.clock.advance(days=2)
    (refresh,) = actions(mos.policies.apply(), "summaries")
    assert isinstance(refresh, RefreshSummary) and mos.get(summary.id, user_id="alice").version == 4


def test_a_summary_whose_tags_or_importance_changed_is_still_refreshed(alice: Any) -> None:
    mos, cube = alice
    summary, first, later = summarised_then_resumed(mos, cube)
    assert summary.metadata["text_sha256"] == text_digest(summary.text)
    # a person files it and marks it important: a new version, but the words are the service's
    mos.update(summary.id, user_id="alice", tags=["trip"], importance=0.9)
    assert mos.get(summary.id, user_id="alice").version == 2
    mos.clock.advance(days=2)
    (refresh,) = actions(mos.policies.apply(), "summaries")
    assert isinstance(refresh, RefreshSummary) and refresh.version == 2
    kept = mos.get(summary.id, user_id="alice")
    assert kept.version == 3 and "Pixel" in kept.text and kept.provenance.source_ids == [*first, *later]
    assert kept.tags == ["trip"] and kept.importance == 0.9  # the person's changes stay
    assert kept.metadata["text_sha256"] == text_digest(kept.text)
    # then the person rewrites it: from now on the policy leaves it alone
    mos.update(summary.id, user_id="alice", text="Alice's trip, in her words.")
    talk(mos, cube, [("user", "Alice", "Pixel learned to open the kitchen cupboard doors today.")])
    mos.clock.advance(days=2)
    assert actions(mos.policies.apply(), "summaries") == []
    assert mos.get(summary.id, user_id="alice").text == "Alice's trip, in her words."


def _mem(mid: str, **kw: Any) -> MemoryView:
    values: dict[str, Any] = {
        "id": mid, "type": "episode", "state": "active", "importance": 0.5, "tags": (), "metadata": {},
        "recorded_at": T0, "updated_at": T0, "retired_at": None, "hits": 0, "last_accessed": None,
        "session_id": "s", "source_ids": (), "chars": 10,
    }  # fmt: skip
    values.update(kw)
    return MemoryView(**values)


def test_refresh_decision_rules() -> None:
    old = tuple(_mem(f"e{i}", recorded_at=T0 + timedelta(minutes=i)) for i in range(4))
    later = _mem("e4", recorded_at=T0 + timedelta(days=3), state="archived")
    own = {"summary_of": "s", "episodes": 4, "method": "extractive", "version": 1}

    def decide(summary: MemoryView, at: timedelta, *extra: MemoryView) -> list[Any]:
        view = CubeView("c", "alice", (*old, later, summary, *extra))
        return SummariesPolicy().decide(view, [], T0 + at, SummariesSettings(after="1d", min_episodes=9))

    summary = _mem("sum", type="summary", metadata=own, source_ids=("e0", "e1", "e2", "e3"),
                   recorded_at=T0 + timedelta(days=1))  # fmt: skip
    assert decide(summary, timedelta(days=3, hours=23)) == []  # resumed, not idle for a day yet
    (r,) = decide(summary, timedelta(days=4))
    assert isinstance(r, RefreshSummary) and not isinstance(r, Summarize)  # min_episodes is for the first
    assert (r.memory_id, r.version, r.memory_ids[0]) == ("sum", 1, "sum")
    assert r.episode_ids == ("e0", "e1", "e2", "e3", "e4")  # the whole session, archived turns too
    assert r.as_dict()["action"] == "refresh_summary" and r.as_dict()["version"] == 1
    # with the digest of the text the service wrote, only a change of that text is an edit
    digest = {**own, "text_sha256": "d1"}
    retagged = _mem("sum", type="summary", metadata=digest, source_ids=summary.source_ids, version=3, digest="d1")
    assert len(decide(retagged, timedelta(days=4))) == 1
    rewritten = _mem("sum", type="summary", metadata=digest, source_ids=summary.source_ids, version=1, digest="d2")
    assert decide(rewritten, timedelta(days=4)) == []
    # a summary written before refresh existed (no version key) is refreshed too
    legacy = {k: v for k, v in own.items() if k != "version"}
    unversioned = _mem("sum", type="summary", metadata=legacy, source_ids=summary.source_ids)
    assert len(decide(unversioned, timedelta(days=4))) == 1
    left_alone = [
        _mem("sum", type="summary", metadata=own, source_ids=(*summary.source_ids, "e4")),  # covers all
        _mem("sum", type="summary", metadata=own, source_ids=summary.source_ids, version=2),  # edited
        _mem("sum", type="summary", metadata={}, source_ids=summary.source_ids),  # added by hand
        _mem("sum", type="summary", metadata=own, source_ids=summary.source_ids, state="deleted"),
    ]
    for s in left_alone:
        assert decide(s, timedelta(days=9)) == [], s
    # the session's oldest summary is the one refreshed (the one the kernel finds)
    twin = _mem("zzz", type="summary", metadata=own, recorded_at=T0 + timedelta(days=2))
    assert [a.memory_id for a in decide(summary, timedelta(days=9), twin)] == ["sum"]
