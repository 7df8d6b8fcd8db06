"""The audit log has one writer (memos.audit), fed by the events of each change.

The rows are written in the change's own transaction and the events published only after
it committed: a rolled-back change leaves neither, and a subscriber finds the row."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from memos.events import Event, EventKind
from memos.storage.relational.models import AuditRow, MemoryRow

ROOT = Path(__file__).resolve().parents[1]


class _Broken:
    name = "broken"

    def extract(self, text: str, *, speaker: Any, reference_time: Any) -> Any:
        raise RuntimeError("model returned invalid JSON")


class _Abort(BaseException):
    """Not an extraction failure (those are audited and absorbed): the whole change fails."""


class _Aborting:
    name = "aborting"

    def extract(self, text: str, *, speaker: Any, reference_time: Any) -> Any:
        raise _Abort


def _sequence(mos: Any) -> dict[str, str]:
    """Every kind of change the audit log records, in one home; returns memory ids by name."""
    mos.add_user("alice")
    mos.add_user("bob")
    mos.create_cube("alice", "personal", cube_id="c1")
    mos.create_cube("alice", "scratch", cube_id="c2")
    tea = mos.add(text="Alice likes green tea", user_id="alice", cube_id="c1").memories[0]
    lisbon = mos.add(
        messages=[
            {"role": "user", "name": "Alice", "content": "I live in Lisbon.", "timestamp": "2023-01-05"}
        ],
        user_id="alice",
        cube_id="c1",
    )
    berlin = mos.add(
        messages=[
            {
                "role": "user",
                "name": "Alice",
                "content": "I moved to Berlin last month.",
                "timestamp": "2024-02-10",
            },
            {"role": "user", "name": "Alice", "content": "My sister Mira lives in Tromsø.", "id": "m9"},
        ],
        user_id="alice",
        cube_id="c1",
        session_id="s1",
    )
    mos.update(tea.id, user_id="alice", text="Alice likes jasmine tea", tags=["drink"], reason="taste")
    mos.delete(tea.id, user_id="alice", reason="tidy")
    mos.restore(tea.id, user_id="alice")
    mira = berlin.memories[1].id
    mos.purge(mira, user_id="alice", reason="user asked")
    mos.share_cube("c1", "alice", "bob", "writer")
    bob = mos.add(text="Bob was here", user_id="bob", cube_id="c1").memories[0]
    mos.unshare_cube("c1", "alice", "bob")
    mos.add(text="Scratch note", user_id="alice", cube_id="c2")
    mos.delete_cube("c2", "alice")
    extractor = mos.extractor
    mos.extractor = _Broken()
    bike = mos.add(text="Alice owns a bike", user_id="alice", cube_id="c1").memories[0]
    mos.extractor = extractor
    porto = mos.add(
        messages=[
            {"role": "user", "name": "Alice", "content": "I moved to Porto.", "timestamp": "2024-05-01"}
        ],
        user_id="alice",
        cube_id="c1",
        extract="defer",
    ).memories[0]
    mos.run_deferred_extraction()
    return {
        "tea": tea.id,
        "lisbon": lisbon.memories[0].id,
        "berlin": berlin.memories[0].id,
        "mira": mira,
        "bob": bob.id,
        "bike": bike.id,
        "porto": porto.id,
    }


# What the audit log held for this sequence before it had one writer (recorded on the
# previous main): actor, cube, memory (M<n>: memory ids in order of first appearance),
# action, reason, details. The purge scrubbed the details of the memories it removed, and
# the deleted cube's rows went with it.
BEFORE = [
    ("alice", None, None, "user_add", None, {}),
    ("bob", None, None, "user_add", None, {}),
    ("alice", "c1", None, "cube_create", None, {"name": "personal"}),
    ("alice", "c1", "M0", "add", None, {}),
    ("alice", "c1", "M1", "add", None, {}),
    ("alice", "c1", "M2", "extract", None, {"source": "M1", "extractor": "rules"}),
    ("alice", "c1", "M3", "add", None, {}),
    ("alice", "c1", "M4", "add", None, {}),
    ("alice", "c1", "M5", "extract", None, {"source": "M3", "extractor": "rules"}),
    ("alice", "c1", "M6", "extract", None, {"source": "M3", "extractor": "rules"}),
    ("alice", "c1", "M2", "supersede", None, {"by": "M6", "predicate": "lives_in"}),
    ("alice", "c1", "M7", "extract", None, {}),
    ("alice", "c1", "M8", "extract", None, {}),
    ("alice", "c1", "M0", "update", "taste", {"version": 2, "changed": ["text", "tags"]}),
    ("alice", "c1", "M0", "delete", "tidy", {"from": "active", "to": "deleted"}),
    ("alice", "c1", "M0", "restore", None, {"from": "deleted", "to": "active"}),
    ("alice", "c1", "M4", "purge", "user asked", {"tombstone": True}),
    ("alice", "c1", "M7", "purge", "user asked", {"tombstone": True, "with": "M4"}),
    ("alice", "c1", "M8", "purge", "user asked", {"tombstone": True, "with": "M4"}),
    ("alice", "c1", None, "share", None, {"user": "bob", "role": "writer"}),
    ("bob", "c1", "M9", "add", None, {}),
    ("alice", "c1", None, "unshare", None, {"user": "bob"}),
    ("alice", "c2", None, "cube_delete", None, {"memories": 1}),
    ("alice", "c1", "M10", "add", None, {}),
    (
        "alice",
        "c1",
        "M10",
        "extract_failed",
        None,
        {"extractor": "broken", "error": "RuntimeError: model returned invalid JSON"},
    ),
    ("alice", "c1", "M11", "add", None, {}),
    ("alice", "c1", "M12", "extract", None, {"source": "M11", "extractor": "rules"}),
    ("alice", "c1", "M13", "extract", None, {"source": "M11", "extractor": "rules"}),
    ("alice", "c1", "M6", "supersede", None, {"by": "M13", "predicate": "lives_in"}),
]


def _audit_log(mos: Any) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    labels: dict[str, str] = {}

    def label(value: Any) -> Any:
        if isinstance(value, str) and len(value) == 36 and value.count("-") == 4:
            return labels.setdefault(value, f"M{len(labels)}")
        if isinstance(value, dict):
            return {k: label(v) for k, v in value.items()}
        return value

    with mos.store.read_session() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.id)))
    times = [r.ts for r in rows]
    assert times == sorted(times) and all(t.year == 2024 for t in times)  # the home's clock
    out = [(r.actor, r.cube_id, label(r.memory_id), r.action, r.reason, label(r.details)) for r in rows]
    return out, labels


def test_the_audit_log_of_a_sequence_is_what_it_was(make_mos: Any) -> None:
    mos = make_mos()
    ids = _sequence(mos)
    log, labels = _audit_log(mos)
    assert log == BEFORE
    # history() reads the same rows back, memory by memory
    for name in ("tea", "lisbon", "berlin", "mira", "bob", "bike", "porto"):
        mid = ids[name]
        mine = [(actor, action) for actor, _, m, action, _, _ in BEFORE if m == labels[mid]]
        if name == "mira":  # purged: only its tombstone is left, and no memory to ask about
            assert mine == [("alice", "add"), ("alice", "purge")]
            continue
        events = mos.history(mid, user_id="alice").events
        assert [(e.actor, e.action) for e in events] == mine
        assert all(e.memory_id == mid and e.cube_id == "c1" for e in events)


def test_each_change_publishes_the_events_it_audited(make_mos: Any) -> None:
    mos = make_mos()
    seen: list[Event] = []
    mos.events.subscribe(seen.append)
    ids = _sequence(mos)
    published = [
        (e.actor, e.cube_id, mid, e.kind)
        for e in seen
        if e.kind != EventKind.memory_accessed
        for mid in (e.memory_ids or (None,))
    ]
    log, labels = _audit_log(mos)
    names = {v: k for k, v in labels.items()}
    from memos.audit import ACTIONS

    # every audited row came from a published event (the cube's own rows went with c2)
    audited = [(actor, cube, names.get(m) if m else None, action) for actor, cube, m, action, _, _ in log]
    assert audited == [
        (actor, cube, mid, ACTIONS[kind])
        for actor, cube, mid, kind in published
        if cube != "c2" or kind == EventKind.cube_deleted
    ]
    assert ("alice", "c1", ids["mira"], EventKind.memory_purged) in published
    assert [e.kind for e in seen if e.cube_id == "c2"] == [
        EventKind.cube_created,
        EventKind.memory_added,
        EventKind.cube_deleted,
    ]


def test_a_rolled_back_change_writes_no_audit_row_and_publishes_no_event(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    kept = mos.add(text="Alice likes green tea", user_id="alice", cube_id=cube).memories[0]
    with mos.store.read_session() as s:
        before = s.scalar(select(AuditRow.id).order_by(AuditRow.id.desc()).limit(1))
    seen: list[Event] = []
    mos.events.subscribe(seen.append)

    # the add's memory_added event is recorded before the extractor runs; the extractor
    # then aborts the whole add
    mos.extractor = _Aborting()
    with pytest.raises(_Abort):
        mos.add(messages=[{"role": "user", "content": "I moved to Porto."}], user_id="alice", cube_id=cube)
    # the update records memory_updated, then re-extracts the new text
    with pytest.raises(_Abort):
        mos.update(kept.id, user_id="alice", text="Alice likes jasmine tea")
    # an error inside a unit of work, after its event was recorded
    with pytest.raises(RuntimeError, match="boom"), mos.home.recording() as rec, mos.store.session() as s:
        rec.record(s, Event(EventKind.cube_shared, mos.clock(), "alice", cube, details={"user": "x"}))
        raise RuntimeError("boom")

    assert seen == []
    with mos.store.read_session() as s:
        assert s.scalar(select(AuditRow.id).order_by(AuditRow.id.desc()).limit(1)) == before
        assert list(s.scalars(select(MemoryRow.id).where(MemoryRow.cube_id == cube))) == [kept.id]
    assert mos.get(kept.id, user_id="alice").text == "Alice likes green tea"


def test_events_of_a_session_that_committed_are_published_even_if_a_later_step_fails(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    seen: list[Event] = []
    mos.events.subscribe(seen.append)
    with pytest.raises(RuntimeError, match="after the commit"), mos.home.recording() as rec:
        with mos.store.session() as s:
            rec.record(s, Event(EventKind.cube_created, mos.clock(), "alice", "c9", details={"name": "n"}))
        raise RuntimeError("after the commit")
    assert [e.kind for e in seen] == [EventKind.cube_created]  # that change happened


def test_subscribers_run_after_the_commit_and_find_the_audit_row(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    found: list[tuple[str, list[str], int]] = []

    def check(event: Event) -> None:
        with mos.store.read_session() as s:  # a fresh transaction sees only what committed
            actions = list(
                s.scalars(
                    select(AuditRow.action)
                    .where(AuditRow.memory_id == event.memory_ids[0])
                    .order_by(AuditRow.id)
                )
            )
            rows = s.scalar(select(MemoryRow.id).where(MemoryRow.id == event.memory_ids[0]))
        found.append((event.kind, actions, 0 if rows is None else 1))

    mos.events.subscribe(check, [EventKind.memory_added, EventKind.memory_updated, EventKind.memory_purged])
    mid = mos.add(text="Alice likes green tea", user_id="alice", cube_id=cube).memories[0].id
    mos.update(mid, user_id="alice", tags=["drink"])
    mos.purge(mid, user_id="alice")
    assert found == [
        (EventKind.memory_added, ["add"], 1),
        (EventKind.memory_updated, ["add", "update"], 1),
        (EventKind.memory_purged, ["add", "update", "purge"], 0),
    ]


def test_a_search_writes_no_audit_row(make_mos: Any) -> None:
    mos = make_mos()
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    mos.add(text="Alice likes green tea", user_id="alice", cube_id=cube)
    seen: list[Event] = []
    mos.events.subscribe(seen.append)
    with mos.store.read_session() as s:
        before = list(s.scalars(select(AuditRow.id)))
    assert mos.search("tea", user_id="alice")
    assert [e.kind for e in seen] == [EventKind.memory_accessed]
    with mos.store.read_session() as s:
        assert list(s.scalars(select(AuditRow.id))) == before


def test_an_event_kind_the_audit_log_does_not_keep_cannot_be_recorded(make_mos: Any) -> None:
    mos = make_mos()
    with (
        pytest.raises(ValueError, match="not audited"),
        mos.home.recording() as rec,
        mos.store.session() as s,
    ):
        rec.record(s, Event(EventKind.memory_accessed, mos.clock(), "alice", "c", ("m",)))


def _audit_writes(tree: ast.AST) -> list[int]:
    """Lines that construct an AuditRow or hand its table to insert/update/delete."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        writes = name in ("insert", "update", "delete") and any("AuditRow" in ast.dump(a) for a in node.args)
        if name == "AuditRow" or writes:
            lines.append(node.lineno)
    return lines


def test_only_the_audit_module_writes_audit_rows() -> None:
    """The archive importer restores an archive's audit rows through the generic per-table
    insert of the archive format (verbatim: they are another home's record), which names
    no AuditRow; its own ``import`` row is an event like any other."""
    writers = {}
    for path in sorted((ROOT / "memos").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        lines = _audit_writes(ast.parse(path.read_text(), rel))
        if lines and rel != "memos/audit.py":
            writers[rel] = lines
    assert writers == {}
    assert _audit_writes(ast.parse((ROOT / "memos/audit.py").read_text()))  # the check sees writes


def test_a_quarantine_is_audited_and_published(tmp_path: Path, embedder: Any) -> None:
    from test_quarantine import _legacy_home_with_bad_row

    from memos.core import MemOS

    home = tmp_path / "home"
    cube, _, bad = _legacy_home_with_bad_row(home, embedder, n_good=2)
    with MemOS(home=home, embedder=embedder) as mos:
        seen: list[Event] = []
        mos.events.subscribe(seen.append, [EventKind.indexing_failed])
        mos.reindex(cube_ids=[cube])  # tries the bad row again
        assert [(e.actor, e.cube_id, e.memory_ids) for e in seen] == [("system", cube, (bad,))]
        last = mos.history(bad, user_id="alice").events[-1]
        assert (last.action, last.actor, last.details) == ("index_failed", "system", dict(seen[0].details))
