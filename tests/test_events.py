"""The event bus (memos.events): typed events after commit, for every lifecycle change."""

from __future__ import annotations

from typing import Any

import pytest

from memos.errors import InvalidInput, NotFound
from memos.events import Event, EventBus, EventKind


def test_lifecycle_changes_publish_typed_events_after_commit(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    seen: list[Event] = []
    mos.events.subscribe(seen.append)

    first = mos.add(text="Alice lives in Lisbon", user_id="alice", cube_id=cube).memories[0]
    moved = mos.add(text="Alice lives in Berlin", user_id="alice", cube_id=cube)
    assert [e.kind for e in seen] == [
        EventKind.memory_added,
        EventKind.memory_added,
        EventKind.memory_superseded,
    ]
    added = seen[1]
    assert added.actor == "alice" and added.cube_id == cube
    assert moved.memories[0].id in added.memory_ids
    assert seen[2].memory_ids == tuple(moved.superseded) and first.id in moved.superseded
    assert added.at == mos.get(moved.memories[0].id, user_id="alice").recorded_at

    seen.clear()
    hits = mos.search("Where does Alice live?", user_id="alice")
    assert [e.kind for e in seen] == [EventKind.memory_accessed]
    assert set(seen[0].memory_ids) == {h.memory.id for h in hits}

    seen.clear()
    mid = moved.memories[0].id
    mos.update(mid, user_id="alice", tags=["home"], reason="tagging")
    mos.delete(mid, user_id="alice", reason="tidy")
    mos.restore(mid, user_id="alice")
    purged = mos.purge(mid, user_id="alice", reason="user request")
    assert [e.kind for e in seen] == [
        EventKind.memory_updated,
        EventKind.memory_deleted,
        EventKind.memory_restored,
        EventKind.memory_purged,
    ]
    assert seen[0].details == {"version": 2, "changed": ["tags"]} and seen[0].reason == "tagging"
    assert seen[3].memory_ids == tuple(purged) and seen[3].reason == "user request"

    # nothing is published for what did not happen
    keep = mos.add(text="Alice likes green tea", user_id="alice", cube_id=cube).memories[0]
    seen.clear()
    with pytest.raises(InvalidInput):
        mos.add(text="  ", user_id="alice", cube_id=cube)
    with pytest.raises(NotFound):
        mos.purge(mid, user_id="alice")
    mos.update(keep.id, user_id="alice", text="Alice likes green tea")  # no change: no new version
    assert seen == []


def test_a_failing_subscriber_does_not_stop_the_others_and_is_not_silent() -> None:
    from datetime import UTC, datetime

    bus = EventBus()
    got: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    assert not bus.wants(EventKind.memory_purged)
    bus.subscribe(lambda e: got.append(e.kind), [EventKind.memory_purged])
    assert bus.wants(EventKind.memory_purged) and not bus.wants(EventKind.memory_accessed)
    bus.subscribe(broken)
    unsubscribe = bus.subscribe(lambda e: got.append("all"))
    event = Event(EventKind.memory_purged, datetime.now(UTC), "alice", "c", ("m",))
    with pytest.raises(RuntimeError, match="subscriber bug"):
        bus.publish(event)
    assert got == [EventKind.memory_purged, "all"]
    unsubscribe()
    got.clear()
    with pytest.raises(RuntimeError):
        bus.publish(Event(EventKind.memory_added, datetime.now(UTC), "alice", "c", ("m",)))
    assert got == []  # the kinds filter, and the unsubscribed one is gone
