"""``.memcube`` export and import (memos.archive), on real homes.

A source home gets a cube with two sessions of turns, extracted facts (one superseded),
an update (two versions), a soft delete, a purge and a share; it is exported once per
module. Imports go into other homes; all share conftest's session embedder, so the model
loads once. Every refused archive must leave the target home as it was: the tests count
the rows of every table before and after. One test runs on each relational backend.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled embedder is local; never reach for a hub

import json
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import aliased

from memos import archive
from memos.archive.reading import Rules
from memos.core import MemOS
from memos.errors import AlreadyExists, ArchiveError, InvalidInput, MemosError, PermissionDenied
from memos.storage.relational.models import (
    AuditRow,
    Base,
    EdgeRow,
    EntityRow,
    MemoryRow,
    MessageRow,
    SessionRow,
)

Edit = Callable[[dict[str, bytes], dict[str, Any]], None]

TURNS_S1 = [
    {
        "role": "user",
        "name": "Alice",
        "content": "I moved to Berlin last month",
        "id": "m1",
        "timestamp": "2024-03-02T10:00:00Z",
    },
    {
        "role": "assistant",
        "content": "Nice! How do you like Berlin so far?",
        "id": "m2",
        "timestamp": "2024-03-02T10:01:00Z",
    },
    {
        "role": "user",
        "name": "Alice",
        "content": "I love the parks, and I adopted a cat named Miso",
        "id": "m3",
        "timestamp": "2024-03-02T10:02:00Z",
    },
]
TURNS_S2 = [
    {
        "role": "user",
        "name": "Alice",
        "content": "I moved to Paris now and I work at Google",
        "id": "m4",
        "timestamp": "2024-06-10T09:00:00Z",
    },
]


def build_cube(mos: MemOS, out: Path) -> dict[str, Any]:
    """Alice's cube with everything that must travel, exported to ``out``; returns its id,
    the archive and the memory ids of note."""
    for user in ("alice", "rita", "eve"):
        mos.add_user(user)
    cube = mos.create_cube("alice", "personal", description="Alice's memories")
    first = mos.add(messages=TURNS_S1, user_id="alice", cube_id=cube.id, session_id="s1")
    second = mos.add(messages=TURNS_S2, user_id="alice", cube_id=cube.id, session_id="s2")
    mos.add(
        text="Alice prefers tea to coffee",
        user_id="alice",
        cube_id=cube.id,
        tags=["drinks"],
        metadata={"source": "manual"},
        type="preference",
        importance=0.9,
    )
    updated = first.memories[1].id
    mos.update(updated, user_id="alice", text="Nice! How is Berlin treating you?", reason="typo")
    deleted = first.memories[2].id
    mos.delete(deleted, user_id="alice", reason="too personal")
    gone = mos.add(text="Alice's door code is 4711", user_id="alice", cube_id=cube.id).memories[0].id
    mos.purge(gone, user_id="alice", reason="secret")  # leaves a tombstone event naming a missing memory
    mos.share_cube(cube.id, "alice", "rita", "reader")
    path = mos.export_cube(cube.id, out, user_id="alice")
    assert second.superseded, "the fixture wants a superseded fact to travel"
    return {
        "cube": cube.id,
        "path": path,
        "updated": updated,
        "deleted": deleted,
        "purged": gone,
        "superseded": second.superseded,
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[MemOS]:
    mos = MemOS(home=tmp_path_factory.mktemp("a"), embedder=embedder)
    yield mos
    mos.close()


@pytest.fixture(scope="module")
def built(source: MemOS, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_cube(source, tmp_path_factory.mktemp("out") / "personal.memcube")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[MemOS]:
    """A second home that every refused import is tried on."""
    mos = MemOS(home=tmp_path_factory.mktemp("b"), embedder=embedder)
    mos.add_user("bob")
    yield mos
    mos.close()


@pytest.fixture
def fresh(tmp_path: Path, embedder: Any) -> Iterator[MemOS]:
    """An empty home for one test, with a cube of its own so entity ids must be remapped."""
    mos = MemOS(home=tmp_path / "c", embedder=embedder)
    mos.add_user("bob")
    own = mos.create_cube("bob", "work")
    mos.add(
        messages=[{"role": "user", "name": "Bob", "content": "I moved to Lisbon and work at Acme"}],
        user_id="bob",
        cube_id=own.id,
    )
    yield mos
    mos.close()


# ---------------------------------------------------------------------------- helpers
def rows_per_table(mos: MemOS) -> dict[str, int]:
    with mos.store.session() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables
        }


def memories(mos: MemOS, cube_id: str, user_id: str) -> dict[str, dict[str, Any]]:
    page = mos.list_memories(user_id=user_id, cube_id=cube_id, states=None, limit=1000)
    return {m.id: m.model_dump() for m in page.items}


def edges(mos: MemOS, cube_id: str) -> set[tuple[Any, ...]]:
    src, dst = aliased(EntityRow), aliased(EntityRow)
    with mos.store.session() as s:
        rows = s.execute(
            select(
                src.name, EdgeRow.predicate, dst.name, EdgeRow.memory_id, EdgeRow.valid_from, EdgeRow.valid_to
            )
            .join(src, src.id == EdgeRow.src_id)
            .join(dst, dst.id == EdgeRow.dst_id)
            .where(EdgeRow.cube_id == cube_id)
        )
        return {tuple(r) for r in rows}


def log_of(mos: MemOS, cube_id: str) -> list[tuple[Any, ...]]:
    """The cube's audit events without their ids (ids are new in the importing home)."""
    with mos.store.session() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.cube_id == cube_id).order_by(AuditRow.id))
        return [(e.ts, e.actor, e.memory_id, e.action, e.reason, e.details) for e in rows]


def conversation(mos: MemOS, cube_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with mos.store.session() as s:
        msgs = s.scalars(select(MessageRow).where(MessageRow.cube_id == cube_id).order_by(MessageRow.id))
        sess = s.scalars(select(SessionRow).where(SessionRow.cube_id == cube_id).order_by(SessionRow.id))
        return (
            [(m.session_id, m.message_id, m.role, m.name, m.content, m.timestamp, m.memory_id) for m in msgs],
            [(x.id, x.user_id, x.created_at, x.last_active) for x in sess],
        )


def repack(src: Path, dst: Path, edit: Edit, *, rehash: bool = True) -> Path:
    """Copy an archive through ``edit(files, manifest)``; ``rehash`` re-signs the members
    that the manifest lists, so that a test isolates the one fault it means to make."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(files.pop(archive.MANIFEST))
    edit(files, manifest)
    if rehash:
        for name in manifest["members"]:
            if name in files:
                manifest["members"][name] = {"sha256": _sha(files[name]), "bytes": len(files[name])}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (
                (stat.S_IFLNK | 0o777) << 16 if name == "link" else (stat.S_IFREG | 0o644) << 16
            )
            z.writestr(info, data)
        z.writestr(archive.MANIFEST, json.dumps(manifest))
    return dst


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _add(name: str, data: bytes = b"", *, listed: bool = True) -> Edit:
    def edit(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        files[name] = data
        if listed:
            manifest["members"][name] = {"sha256": _sha(data), "bytes": len(data)}

    return edit


def _first_line(member: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        lines = files[member].decode().splitlines()
        row = json.loads(lines[0])
        change(row)
        files[member] = ("\n".join([json.dumps(row), *lines[1:]]) + "\n").encode()

    return edit


def _raw_value(member: str, key: str, raw: str) -> Edit:
    """Set ``key`` of the first row to the JSON text ``raw`` (for what json.dumps will not write)."""

    def edit(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        _first_line(member, lambda r: r.update({key: "@@raw@@"}))(files, manifest)
        files[member] = files[member].replace(b'"@@raw@@"', raw.encode(), 1)

    return edit


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return root


# ---------------------------------------------------------------------------- round trip
def test_archive_layout(built: dict[str, Any], source: MemOS) -> None:
    with zipfile.ZipFile(built["path"]) as z:
        manifest = json.loads(z.read(archive.MANIFEST))
        names = set(z.namelist())
        for name, entry in manifest["members"].items():
            assert _sha(z.read(name)) == entry["sha256"] and len(z.read(name)) == entry["bytes"]
        for line in z.read("memories.jsonl").decode().splitlines():
            row = json.loads(line)
            assert row["recorded_at"].endswith("+00:00")
    assert names == {archive.MANIFEST} | {m.name for m in archive.MEMBERS}
    assert manifest["format"] == "memcube" and manifest["format_version"] == 1
    assert manifest["embedder_id"] == source.embedder.id
    assert manifest["cube"]["id"] == built["cube"] and manifest["cube"]["owner_id"] == "alice"
    assert manifest["counts"]["messages"] == 4 and manifest["counts"]["acl"] == 2
    assert not list(built["path"].parent.glob(".*.tmp")), "the temporary file must be gone"


def test_format_1_layout_is_pinned() -> None:
    # Changing a table changes what format 1 means: bump FORMAT_VERSION and update this.
    assert {m.name: m.fields for m in archive.MEMBERS} == {
        "memories.jsonl": (
            "id",
            "kind",
            "type",
            "text",
            "metadata",
            "tags",
            "importance",
            "message_id",
            "session_id",
            "speaker",
            "role",
            "source_ids",
            "extractor",
            "confidence",
            "occurred_at",
            "valid_from",
            "valid_to",
            "recorded_at",
            "retired_at",
            "version",
            "state",
            "superseded_by",
            "hits",
            "last_accessed",
            "updated_at",
        ),
        "memory_versions.jsonl": (
            "memory_id",
            "version",
            "text",
            "metadata",
            "tags",
            "importance",
            "valid_from",
            "valid_to",
            "recorded_at",
            "actor",
            "reason",
        ),
        "entities.jsonl": ("id", "key", "name", "kind", "created_at"),
        "memory_entities.jsonl": ("memory_id", "entity_id"),
        "edges.jsonl": ("src_id", "predicate", "dst_id", "memory_id", "valid_from", "valid_to", "created_at"),
        "sessions.jsonl": ("id", "user_id", "created_at", "last_active"),
        "messages.jsonl": ("session_id", "message_id", "role", "name", "content", "timestamp", "memory_id"),
        "audit_events.jsonl": ("ts", "actor", "memory_id", "action", "reason", "details"),
        "acl.jsonl": ("user_id", "role", "granted_at", "granted_by"),
        "blobs.jsonl": ("sha256", "kind", "size", "created_at", "manifest"),
    }


def test_round_trip_is_lossless(built: dict[str, Any], source: MemOS, fresh: MemOS) -> None:
    cube_id = built["cube"]
    cube = fresh.import_cube(built["path"], user_id="bob")
    assert (cube.id, cube.name, cube.owner_id, cube.role) == (cube_id, "personal", "bob", "owner")
    assert cube.description == "Alice's memories"
    assert cube.created_at == source.get_cube(cube_id, "alice").created_at

    before, after = memories(source, cube_id, "alice"), memories(fresh, cube_id, "bob")
    assert after == before  # ids, versions, times, states, metadata, tags, provenance
    assert after[built["deleted"]]["state"] == "deleted"
    assert all(after[i]["state"] == "superseded" and after[i]["superseded_by"] for i in built["superseded"])
    assert after[built["updated"]]["version"] == 2

    for mid in before:
        old, new = source.history(mid, user_id="alice"), fresh.history(mid, user_id="bob")
        assert new.versions == old.versions
        assert [e.model_dump(exclude={"id"}) for e in new.events] == [
            e.model_dump(exclude={"id"}) for e in old.events
        ]
    assert [e.action for e in fresh.history(built["updated"], user_id="bob").events] == ["add", "update"]
    assert [e.action for e in fresh.history(built["deleted"], user_id="bob").events] == ["add", "delete"]

    assert edges(fresh, cube_id) == edges(source, cube_id) and edges(source, cube_id)
    assert conversation(fresh, cube_id) == conversation(source, cube_id)
    # the cube's log travels in order; the importing home adds its own import event
    imported_log = log_of(fresh, cube_id)
    exported_log = [e for e in log_of(source, cube_id) if e[3] != "export"]
    assert imported_log[:-1] == exported_log
    assert imported_log[-1][1:4] == ("bob", None, "import")
    assert imported_log[-1][5]["source_cube"]["owner_id"] == "alice"
    assert "reembedded_with" not in imported_log[-1][5]
    assert [s.user_id for s in fresh.shares(cube_id, "bob")] == ["bob"], (
        "grants of the old home do not travel"
    )

    hits = fresh.search("Where does Alice live now?", user_id="bob", cube_ids=[cube_id])
    assert any("Paris" in h.memory.text for h in hits)
    assert built["deleted"] not in {h.memory.id for h in hits}
    assert built["purged"] not in after and ("alice", built["purged"], "purge") in {
        e[1:4] for e in imported_log
    }
    cat = fresh.search("What is the name of Alice's cat?", user_id="bob", cube_ids=[cube_id], top_k=50)
    assert built["deleted"] not in {h.memory.id for h in cat}, "a deleted memory stays out of search"
    # the imported cube is an ordinary cube: it can be written to and exported again
    fresh.restore(built["deleted"], user_id="bob")
    assert fresh.get(built["deleted"], user_id="bob").state == "active"


def test_delete_then_reimport(make_mos: Callable[..., MemOS], tmp_path: Path) -> None:
    """In one home, on each relational backend: what AlreadyExists advises (delete the
    cube, import again) restores the cube as it was."""
    mos = make_mos()
    built = build_cube(mos, tmp_path / "personal.memcube")
    cube_id = built["cube"]
    items, graph, chat = memories(mos, cube_id, "alice"), edges(mos, cube_id), conversation(mos, cube_id)
    histories = {mid: mos.history(mid, user_id="alice") for mid in items}
    with pytest.raises(AlreadyExists, match="in this home already as cube 'personal'.*copy=True"):
        mos.import_cube(built["path"], user_id="alice")
    mos.delete_cube(cube_id, "alice")
    cube = mos.import_cube(built["path"], user_id="alice")
    assert (cube.id, cube.owner_id) == (cube_id, "alice")
    assert memories(mos, cube_id, "alice") == items
    assert edges(mos, cube_id) == graph and conversation(mos, cube_id) == chat
    for mid, old in histories.items():
        new = mos.history(mid, user_id="alice")
        assert new.versions == old.versions
        # the home kept its own log of the deleted cube; the imported events follow it, in order
        events = [e.model_dump(exclude={"id"}) for e in new.events]
        assert events[-len(old.events) :] == [e.model_dump(exclude={"id"}) for e in old.events]
    # rita's grant did not travel back: import grants nobody but the importing owner
    assert [s.user_id for s in mos.shares(cube_id, "alice")] == ["alice"]
    assert any("Paris" in h.memory.text for h in mos.search("Where does Alice live now?", user_id="alice"))


def test_import_twice_says_so_and_copies(built: dict[str, Any], source: MemOS, fresh: MemOS) -> None:
    """A second import of the same archive used to advise cube_id='…', which then failed
    on the memory ids: now it says the archive is there, and copy=True imports it again."""
    first = fresh.import_cube(built["path"], user_id="bob")
    counts = rows_per_table(fresh)
    with pytest.raises(
        archive.Conflict, match=r"already as cube 'personal' \(.*\); pass copy=True and name="
    ) as info:
        fresh.import_cube(built["path"], user_id="bob")
    assert info.value.fix == ("copy", "name")
    with pytest.raises(AlreadyExists, match="pass copy=True"):
        fresh.import_cube(built["path"], user_id="bob", cube_id="other", name="personal-2")
    with pytest.raises(AlreadyExists, match="already has a cube named 'personal'; pass name="):
        fresh.import_cube(built["path"], user_id="bob", copy=True)
    with pytest.raises(AlreadyExists, match=f"id '{first.id}' exists.*pass cube_id='…' to choose another"):
        fresh.import_cube(built["path"], user_id="bob", copy=True, cube_id=first.id, name="personal-2")
    assert rows_per_table(fresh) == counts

    copy = fresh.import_cube(built["path"], user_id="bob", copy=True, name="personal-2")
    assert copy.id not in (first.id, built["cube"]) and copy.name == "personal-2"
    old, new = memories(fresh, first.id, "bob"), memories(fresh, copy.id, "bob")
    assert not set(old) & set(new) and len(old) == len(new)

    def same(m: dict[str, Any]) -> tuple[Any, ...]:
        return m["text"], m["state"], m["version"], m["metadata"], m["tags"]

    assert sorted(map(same, old.values())) == sorted(map(same, new.values()))
    renamed = {m["text"]: i for i, m in new.items()}
    for m in new.values():  # links within the copy point into the copy
        assert set(m["provenance"]["source_ids"]) <= set(new)
        assert m["superseded_by"] is None or m["superseded_by"] in new
    updated = renamed[old[built["updated"]]["text"]]
    assert [v.text for v in fresh.history(updated, user_id="bob").versions] == [
        v.text for v in fresh.history(built["updated"], user_id="bob").versions
    ]
    assert edges(fresh, copy.id) and {e[3] for e in edges(fresh, copy.id)} <= set(new)
    assert {m[6] for m in conversation(fresh, copy.id)[0]} <= set(new)
    assert log_of(fresh, copy.id)[-1][5]["copy"] is True
    # the copy is searchable on its own, and the original is untouched
    hits = fresh.search("Where does Alice live now?", user_id="bob", cube_ids=[copy.id])
    assert any("Paris" in h.memory.text for h in hits) and {h.memory.id for h in hits} <= set(new)
    assert memories(fresh, first.id, "bob") == old


def test_other_embedder_is_recorded(built: dict[str, Any], fresh: MemOS, tmp_path: Path) -> None:
    def other(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        manifest["embedder_id"] = "some-other-model"

    # under an id and a name of our choosing, as a second copy beside other cubes would be
    cube = fresh.import_cube(
        repack(built["path"], tmp_path / "x.memcube", other), user_id="bob", cube_id="mine", name="alice-copy"
    )
    assert (cube.id, cube.name, cube.owner_id) == ("mine", "alice-copy", "bob")
    assert {m["cube_id"] for m in memories(fresh, "mine", "bob").values()} == {"mine"}
    event = log_of(fresh, cube.id)[-1]
    assert event[3] == "import" and event[5]["archive"]["embedder_id"] == "some-other-model"
    assert event[5]["reembedded_with"] == fresh.embedder.id
    assert fresh.search("Where does Alice live now?", user_id="bob", cube_ids=[cube.id])


def test_export_and_import_publish_their_events(built: dict[str, Any], fresh: MemOS, tmp_path: Path) -> None:
    from memos.events import Event, EventKind

    seen: list[Event] = []
    fresh.events.subscribe(seen.append, [EventKind.cube_exported, EventKind.cube_imported])
    cube = fresh.import_cube(built["path"], user_id="bob")
    [imported] = seen
    assert (imported.kind, imported.actor, imported.cube_id) == (EventKind.cube_imported, "bob", cube.id)
    assert imported.details["source_cube"]["id"] == built["cube"]
    fresh.export_cube(cube.id, tmp_path / "again.memcube", user_id="bob")
    exported = seen[1]
    assert (exported.kind, exported.actor, exported.cube_id) == (EventKind.cube_exported, "bob", cube.id)
    assert exported.details["counts"]["memories"] > 0
    assert log_of(fresh, cube.id)[-1][3] == "export"  # and the audit log keeps both, as before


# ---------------------------------------------------------------------------- access
def test_reader_can_export_and_stranger_cannot(built: dict[str, Any], source: MemOS, tmp_path: Path) -> None:
    path = source.export_cube(built["cube"], tmp_path / "rita.memcube", user_id="rita")
    with zipfile.ZipFile(path) as z:
        assert json.loads(z.read(archive.MANIFEST))["counts"]["memories"] > 0
    with pytest.raises(PermissionDenied, match="no access"):
        source.export_cube(built["cube"], tmp_path / "eve.memcube", user_id="eve")
    assert not (tmp_path / "eve.memcube").exists() and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(InvalidInput):
        source.export_cube(built["cube"], tmp_path / "missing" / "x.memcube", user_id="alice")


# ---------------------------------------------------------------------------- refusals
def _unknown_version(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
    manifest["format_version"] = 99


def _tamper(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
    files["memories.jsonl"] = files["memories.jsonl"].replace(b"Berlin", b"Bxrlin", 1)


def _drop_manifest_entry(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
    del manifest["members"]["edges.jsonl"]


def _wrong_count(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
    manifest["counts"]["memories"] += 1


REFUSED: dict[str, tuple[Edit, bool, str]] = {
    # name: (edit, rehash members, expected message)
    "tampered member": (_tamper, False, "memories.jsonl' fails its checksum"),
    "unknown format_version": (
        _unknown_version,
        True,
        "format_version 99 is not supported.*reads format_version 1",
    ),
    "path traversal": (_add("../evil"), True, "'../evil' has an unsafe path"),
    "nested traversal": (_add("blobs/../../evil"), True, "unsafe path"),
    "absolute path": (_add("/etc/evil"), True, "'/etc/evil' has an unsafe path"),
    "backslash": (_add("..\\evil"), True, "unsafe path"),
    "symlink": (_add("link", b"/etc/passwd"), True, "'link' is a directory, symlink or special file"),
    "unlisted member": (_add("extra.txt", b"hello", listed=False), True, "'extra.txt' is not listed"),
    "unknown listed member": (_add("extra.txt", b"hello"), True, "unknown member 'extra.txt'"),
    "member missing from manifest": (_drop_manifest_entry, True, "'edges.jsonl' is not listed"),
    "row with a missing key": (
        _first_line("memories.jsonl", lambda r: r.pop("text")),
        True,
        "memories.jsonl line 1",
    ),
    "row with a bad type": (
        _first_line("memories.jsonl", lambda r: r.update(version="2")),
        True,
        "'version' must be",
    ),
    "row with a naive time": (
        _first_line("messages.jsonl", lambda r: r.update(timestamp="2024-03-02T10:00:00")),
        True,
        "UTC offset",
    ),
    "row with an unknown state": (
        _first_line("memories.jsonl", lambda r: r.update(state="zombie")),
        True,
        "'state' is 'zombie'",
    ),
    "dangling reference": (
        _first_line("edges.jsonl", lambda r: r.update(memory_id="nope")),
        True,
        "memory_id 'nope' is not in",
    ),
    "wrong row count": (_wrong_count, True, "counts"),
    # rows that add refuses, re-signed so that only the row is wrong: import checks them as add does
    "1 MB text": (
        _first_line("memories.jsonl", lambda r: r.update(text="x" * 1_000_000)),
        True,
        r"memories.jsonl line 1: text has 1,000,000 characters, more than the limit of 32,000",
    ),
    "empty text": (_first_line("memories.jsonl", lambda r: r.update(text="")), True, "text is empty"),
    "blank version text": (
        _first_line("memory_versions.jsonl", lambda r: r.update(text="  ")),
        True,
        "memory_versions.jsonl line 1: text is empty",
    ),
    "empty message": (
        _first_line("messages.jsonl", lambda r: r.update(content="")),
        True,
        "content is empty",
    ),
    "lone surrogate in text": (
        _first_line("memories.jsonl", lambda r: r.update(text="Berlin \ud800")),
        True,
        r"memories.jsonl line 1\['text'\] holds a lone surrogate",
    ),
    "lone surrogate in an entity": (
        _first_line("entities.jsonl", lambda r: r.update(name="\udc00")),
        True,
        "entities.jsonl line 1.*lone surrogate",
    ),
    "lone surrogate in audit details": (
        _first_line("audit_events.jsonl", lambda r: r.update(details={"k": ["\ud800"]})),
        True,
        r"audit_events.jsonl line 1\['details'\]\['k'\]\[0\] holds a lone surrogate",
    ),
    "20,000 tags": (
        _first_line("memories.jsonl", lambda r: r.update(tags=[f"t{i}" for i in range(20_000)])),
        True,
        "20,000 tags, more than the limit of 100",
    ),
    "deep metadata": (
        _first_line("memory_versions.jsonl", lambda r: r.update(metadata=nested(30))),
        True,
        "metadata is nested more than 20 levels",
    ),
    "5,000 levels of metadata": (
        _raw_value("memories.jsonl", "metadata", '{"a": ' * 5000 + "1" + "}" * 5000),
        True,
        "memories.jsonl line 1 is not valid JSON",
    ),
    "huge metadata": (
        _first_line("memories.jsonl", lambda r: r.update(metadata={"k": "v" * 5_000_000})),
        True,
        "setting max_metadata_bytes",
    ),
    "infinite metadata": (
        _raw_value("memories.jsonl", "metadata", '{"x": 1e999}'),
        True,
        r"memories.jsonl line 1\['metadata'\]\['x'\] is inf",
    ),
    "importance out of range": (
        _first_line("memories.jsonl", lambda r: r.update(importance=7.5)),
        True,
        "importance is 7.5, not between 0 and 1",
    ),
    "integer past the column": (
        _first_line("memories.jsonl", lambda r: r.update(hits=10**30)),
        True,
        "'hits' must be an integer value that fits the column",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_archives_change_nothing(
    case: str, built: dict[str, Any], target: MemOS, tmp_path: Path
) -> None:
    edit, rehash, message = REFUSED[case]
    _refuse(target, repack(built["path"], tmp_path / "bad.memcube", edit, rehash=rehash), message)


def _refuse(target: MemOS, path: Path, message: str) -> None:
    """Import must fail with ``message`` and write nothing at all."""
    counts = rows_per_table(target)
    with pytest.raises(ArchiveError, match=message):
        target.import_cube(path, user_id="bob")
    assert rows_per_table(target) == counts
    assert target.list_cubes("bob") == []


def test_flipped_byte_is_caught(built: dict[str, Any], target: MemOS, tmp_path: Path) -> None:
    data = bytearray(built["path"].read_bytes())
    with zipfile.ZipFile(built["path"]) as z:
        info = z.getinfo("memories.jsonl")
    # a local header is 30 bytes, then the name and extra field (lengths at 26 and 28), then the data
    at = info.header_offset
    start = (
        at
        + 30
        + int.from_bytes(data[at + 26 : at + 28], "little")
        + int.from_bytes(data[at + 28 : at + 30], "little")
    )
    data[start + info.compress_size // 2] ^= 0xFF
    (tmp_path / "flipped.memcube").write_bytes(bytes(data))
    _refuse(target, tmp_path / "flipped.memcube", "memories.jsonl' (is damaged and )?fails its checksum")


def test_not_an_archive_and_missing_manifest(built: dict[str, Any], target: MemOS, tmp_path: Path) -> None:
    (tmp_path / "notes.memcube").write_text("just some text, not a zip\n")
    _refuse(target, tmp_path / "notes.memcube", "is not a .memcube archive")
    _refuse(target, tmp_path / "nothing-here.memcube", "no archive at")
    with zipfile.ZipFile(built["path"]) as src, zipfile.ZipFile(tmp_path / "bare.memcube", "w") as dst:
        for name in src.namelist():
            if name != archive.MANIFEST:
                dst.writestr(name, src.read(name))
    _refuse(target, tmp_path / "bare.memcube", "has no manifest.json")


def test_oversized_member(built: dict[str, Any], embedder: Any, tmp_path: Path) -> None:
    small = MemOS(home=tmp_path / "small", embedder=embedder, archive_max_member_bytes=1000)
    try:
        small.add_user("bob")
        _refuse(
            small,
            built["path"],
            r"is [\d,]+ bytes, over the limit of 1,000 \(setting archive_max_member_bytes\)",
        )
    finally:
        small.close()


def test_member_size_differs_from_manifest(built: dict[str, Any], target: MemOS, tmp_path: Path) -> None:
    def lie(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        manifest["members"]["sessions.jsonl"]["bytes"] += 1

    bad = repack(built["path"], tmp_path / "lie.memcube", lie, rehash=False)
    _refuse(target, bad, "sessions.jsonl' is [\\d,]+ bytes, manifest.json says")


def test_lying_zip_headers(built: dict[str, Any], target: MemOS, tmp_path: Path) -> None:
    """A zip bomb's central directory understates sizes; duplicate names shadow each other."""
    with zipfile.ZipFile(built["path"]) as z:
        files = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(files.pop(archive.MANIFEST))
    bomb = tmp_path / "bomb.memcube"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.getinfo("memories.jsonl").file_size = 500  # the central directory, written on close, says 500
        manifest["members"]["memories.jsonl"]["bytes"] = 500
        z.writestr(archive.MANIFEST, json.dumps(manifest))
    _refuse(target, bomb, "memories.jsonl' (is damaged|holds more than)")

    twice = tmp_path / "twice.memcube"
    with zipfile.ZipFile(twice, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in [*files.items(), ("edges.jsonl", b"")]:
            z.writestr(name, data)
    _refuse(target, twice, "'edges.jsonl' appears twice")


def test_a_zip_bomb_line_is_refused_before_it_is_read_whole(
    built: dict[str, Any], embedder: Any, tmp_path: Path
) -> None:
    """A small archive whose member inflates to one huge line (honestly declared, re-signed)
    used to be joined and parsed whole (920 MB RSS for 256 MiB). Lines are now capped by what
    a row within this home's limits can be; the cap is refused while streaming."""
    bomb = repack(
        built["path"], tmp_path / "bomb.memcube", _add_bytes("memories.jsonl", b" " * (48 * 1024**2))
    )
    assert bomb.stat().st_size < 1024**2  # it is a bomb: small on disk
    low = MemOS(home=tmp_path / "low", embedder=embedder, max_text_chars=1000, max_metadata_bytes=1000)
    try:
        low.add_user("bob")
        _refuse(low, bomb, r"memories.jsonl line \d+ is longer than [\d,]+ bytes, more than any row")
        assert Rules.of(low.settings).max_line < 9 * 1024**2  # relative to the limits
    finally:
        low.close()


def _add_bytes(member: str, data: bytes) -> Edit:
    def edit(files: dict[str, bytes], manifest: dict[str, Any]) -> None:
        files[member] += data

    return edit


# ---------------------------------------------------------------------------- export targets
def test_export_never_overwrites_by_accident(built: dict[str, Any], source: MemOS, tmp_path: Path) -> None:
    """export used to os.replace whatever was at the path: a text file, even /dev/null."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(
        archive.Conflict, match=r"notes.txt exists already; pass overwrite=True to replace it"
    ):
        source.export_cube(built["cube"], notes, user_id="alice")
    assert notes.read_text() == "my notes\n"
    source.export_cube(built["cube"], notes, user_id="alice", overwrite=True)
    assert zipfile.is_zipfile(notes)
    # a symlink to a file: the file it points to is replaced, the link stays a link
    real, link = tmp_path / "real.memcube", tmp_path / "link.memcube"
    real.write_text("old")
    link.symlink_to(real)
    with pytest.raises(AlreadyExists):
        source.export_cube(built["cube"], link, user_id="alice")
    source.export_cube(built["cube"], link, user_id="alice", overwrite=True)
    assert link.is_symlink() and zipfile.is_zipfile(real)
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_never_replaces_what_is_not_a_regular_file(
    built: dict[str, Any], source: MemOS, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-pipe.memcube"
    to_fifo.symlink_to(fifo)
    for path, kind in [(folder, "a directory"), (fifo, "a FIFO"), (to_fifo, "a FIFO")]:
        for overwrite in (False, True):
            with pytest.raises(InvalidInput, match=f"is {kind}.*never replaces anything but a regular file"):
                source.export_cube(built["cube"], path, user_id="alice", overwrite=overwrite)
    assert folder.is_dir() and stat.S_ISFIFO(fifo.stat().st_mode) and to_fifo.is_symlink()
    null = Path("/dev/null")
    if stat.S_ISCHR(null.stat().st_mode):  # the device the report saw replaced, when run as root
        with pytest.raises(InvalidInput, match="is a character device"):
            source.export_cube(built["cube"], null, user_id="alice", overwrite=True)
        assert stat.S_ISCHR(null.stat().st_mode)
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_os_errors_are_typed(built: dict[str, Any], source: MemOS, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="there is no folder"):
        source.export_cube(built["cube"], tmp_path / "missing" / "x.memcube", user_id="alice")
    with pytest.raises(InvalidInput, match=r"cannot write the archive to /proc/memos-test.memcube: "):
        source.export_cube(built["cube"], "/proc/memos-test.memcube", user_id="alice")
    with pytest.raises(InvalidInput, match="there is no folder .*file$"):
        (tmp_path / "file").write_text("x")
        source.export_cube(built["cube"], tmp_path / "file" / "x.memcube", user_id="alice")
    with pytest.raises(MemosError):  # /proc files look regular: replacing one is refused by the OS
        source.export_cube(built["cube"], "/proc/self/comm", user_id="alice", overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_names_a_row_json_cannot_hold(fresh: MemOS, tmp_path: Path) -> None:
    """A NaN that an older memos let into the metadata used to surface as an untyped
    ValueError from json; export now names the memory and what to do, and writes nothing."""
    cube = fresh.list_cubes("bob")[0].id
    mid = fresh.list_memories(user_id="bob", cube_id=cube).items[0].id
    (tmp_path / "out").mkdir()
    with fresh.store.session() as s:
        s.execute(sql_update(MemoryRow).where(MemoryRow.id == mid).values(meta={"x": float("nan")}))
    with pytest.raises(
        ArchiveError, match=f"memories \\(id {mid}.*NaN or infinity.*update that memory's metadata"
    ):
        fresh.export_cube(cube, tmp_path / "out" / "work.memcube", user_id="bob")
    assert not list((tmp_path / "out").iterdir())
    fresh.update(mid, user_id="bob", metadata={"x": None})
    assert zipfile.is_zipfile(fresh.export_cube(cube, tmp_path / "out" / "work.memcube", user_id="bob"))


# ---------------------------------------------------------------------------- the CLI
def _cli(home: Path, *args: str) -> Any:
    from typer.testing import CliRunner

    from memos.cli import app

    return CliRunner().invoke(app, ["--home", str(home), *args], env={"HF_HUB_OFFLINE": "1"})


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stdout} {result.stderr}"
    return result


def _error(result: Any) -> str:
    assert result.exit_code == 1 and result.stdout == "", (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line
    return line


def test_cli_export_refuses_to_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _ok(_cli(home, "init"))
    _ok(_cli(home, "add", "Alice lives in Berlin"))
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    line = _error(_cli(home, "export", "default", str(notes)))
    assert line.endswith("notes.txt exists already; pass --force to replace it") and "overwrite=" not in line
    assert notes.read_text() == "mine\n"
    _ok(_cli(home, "export", "default", str(notes), "--force"))
    assert zipfile.is_zipfile(notes)
    assert "is a directory" in _error(_cli(home, "export", "default", str(tmp_path), "--force"))
    assert "there is no folder" in _error(_cli(home, "export", "default", str(tmp_path / "no" / "x.memcube")))
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_import_as_the_readme_shows(tmp_path: Path) -> None:
    """`memos export default alice.memcube ; memos --home OTHER import alice.memcube` used to
    fail on a fresh home (unknown user 'default'), and name SDK keywords in its advice."""
    home, other, third = tmp_path / "home", tmp_path / "other", tmp_path / "third"
    _ok(_cli(home, "init"))
    _ok(_cli(home, "add", "Alice lives in Berlin"))
    archive_path = tmp_path / "alice.memcube"
    _ok(_cli(home, "export", "default", str(archive_path)))

    bad = repack(
        archive_path, tmp_path / "bad.memcube", _first_line("memories.jsonl", lambda r: r.update(text=""))
    )
    assert "text is empty" in _error(_cli(other, "import", str(bad)))
    assert not other.exists(), "a refused archive leaves no new home behind"

    result = _ok(_cli(other, "import", str(archive_path)))  # a fresh home: created, with its user
    assert "imported cube default" in result.stdout and "created the home" in result.stderr
    listed = json.loads(_ok(_cli(other, "--json", "list")).stdout)
    assert [m["text"] for m in listed["items"]] == ["Alice lives in Berlin"]

    again = _error(_cli(other, "import", str(archive_path)))
    assert "this archive is in this home already as cube 'default'" in again
    assert "pass --copy and --name NAME" in again and "copy=True" not in again and "name='" not in again
    copy = json.loads(
        _ok(_cli(other, "--json", "import", str(archive_path), "--copy", "--name", "again")).stdout
    )
    assert copy["name"] == "again"
    texts = json.loads(_ok(_cli(other, "--json", "list", "--cube", "again")).stdout)["items"]
    assert [m["text"] for m in texts] == ["Alice lives in Berlin"]
    assert texts[0]["id"] != listed["items"][0]["id"]

    _ok(_cli(third, "init"))  # after init the user has a cube named "default" already
    line = _error(_cli(third, "import", str(archive_path)))
    assert line.endswith(
        "already has a cube named 'default'; pass --name NAME to import it under another name"
    )
    _ok(_cli(third, "import", str(archive_path), "--name", "alice"))
