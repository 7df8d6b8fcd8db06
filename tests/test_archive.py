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
from sqlalchemy.orm import aliased

from memos import archive
from memos.core import MemOS
from memos.errors import AlreadyExists, ArchiveError, InvalidInput, PermissionDenied
from memos.storage.relational.models import AuditRow, Base, EdgeRow, EntityRow, MessageRow, SessionRow

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
    with pytest.raises(AlreadyExists, match="cube_id="):
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


def test_import_twice_needs_new_ids(built: dict[str, Any], fresh: MemOS) -> None:
    fresh.import_cube(built["path"], user_id="bob")
    counts = rows_per_table(fresh)
    with pytest.raises(AlreadyExists, match="cube_id="):
        fresh.import_cube(built["path"], user_id="bob")
    with pytest.raises(AlreadyExists, match="name="):
        fresh.import_cube(built["path"], user_id="bob", cube_id="copy")
    with pytest.raises(AlreadyExists, match="imported before"):
        fresh.import_cube(built["path"], user_id="bob", cube_id="copy", name="personal-2")
    assert rows_per_table(fresh) == counts


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
