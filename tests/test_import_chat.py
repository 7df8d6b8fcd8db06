"""The facade's portability calls that the CLI used to do itself (issue 20, thin skins):
``MemOS.read_chat`` / ``MemOS.import_chat`` (a chat log checked whole, then added in
batches, session by session), ``MemOS.verify_archive`` (a ``.memcube`` checked with no
home open), ``memos.errors.Conflict``, and ``MemOS.lock_holder`` (who has a home open)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from memos import ChatLog, Manifest, MemOS
from memos.config import Settings
from memos.errors import AlreadyExists, ArchiveError, Conflict, InvalidInput
from memos.types import ChatImport

SESSIONS = {
    "sessions": [
        {
            "id": "s1",
            "date": "2023-05-08T13:56:00Z",
            "messages": [
                {
                    "role": "user",
                    "name": "Alice",
                    "content": "We adopted a beagle named Biscuit.",
                    "id": "s1-1",
                },
                {"role": "assistant", "content": "Biscuit is a lovely name!", "id": "s1-2"},
                {"role": "user", "name": "Alice", "content": "He sleeps on the sofa.", "id": "s1-3"},
            ],
        },
        {
            "id": "s2",
            "date": "2023-06-20T09:00:00Z",
            "messages": [
                {"role": "user", "name": "Alice", "content": "My sister Carol moved to Lisbon.", "id": "s2-1"}
            ],
        },
    ]
}


def _garden(n: int = 250) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"note number {i} about the garden", "id": f"g{i}"} for i in range(n)]


def _everything(mos: Any, cube_id: str) -> list[Any]:
    page = mos.list_memories(user_id="alice", cube_id=cube_id, states=None, limit=500)
    return list(page.items)


def test_import_chat_adds_every_message_to_its_session(alice: tuple[Any, str], tmp_path: Path) -> None:
    mos, cube_id = alice
    log = tmp_path / "conversation.json"
    log.write_text(json.dumps(SESSIONS), encoding="utf-8")
    told: list[tuple[str | None, int]] = []

    done = mos.import_chat(
        log,
        user_id="alice",
        cube_id=cube_id,
        batch_size=2,
        extract=False,
        progress=lambda session, n: told.append((session, n)),
    )

    assert isinstance(done, ChatImport)
    assert done.model_dump() == {
        "file": str(log),
        "sessions": 2,
        "messages": 4,
        "added": 4,
        "skipped": 0,
        "derived": 0,
        "extraction_failures": 0,
        "cube_id": cube_id,
    }
    # each session starts (0), then its batches of at most 2
    assert told == [("s1", 0), ("s1", 2), ("s1", 1), ("s2", 0), ("s2", 1)]
    stored = {m.provenance.message_id: m for m in _everything(mos, cube_id)}
    assert set(stored) == {"s1-1", "s1-2", "s1-3", "s2-1"}
    assert {k: m.provenance.session_id for k, m in stored.items()} == {
        "s1-1": "s1",
        "s1-2": "s1",
        "s1-3": "s1",
        "s2-1": "s2",
    }
    assert stored["s2-1"].provenance.timestamp.isoformat().startswith("2023-06-20")
    assert all(m.type == "episode" for m in stored.values())

    again = mos.import_chat(log, user_id="alice", cube_id=cube_id, extract=False)
    assert (again.added, again.skipped) == (0, 4)  # message ids make a re-import a no-op
    assert len(_everything(mos, cube_id)) == 4


def test_messages_outside_a_session_get_the_default_one(alice: tuple[Any, str], tmp_path: Path) -> None:
    mos, cube_id = alice
    log = tmp_path / "chat.jsonl"
    lines = [{"role": "user", "content": f"line {i} of the lesson", "id": f"l{i}"} for i in range(3)]
    lines.append({"role": "user", "content": "a line of its own session", "id": "x", "session_id": "other"})
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")

    chat = MemOS.read_chat(log, mos.settings, session_id="lesson")
    assert isinstance(chat, ChatLog)
    assert ([s.id for s in chat.sessions], chat.messages) == (["lesson", "other"], 4)
    with pytest.raises(InvalidInput, match="pass session_id to read_chat"):
        mos.import_chat(chat, user_id="alice", cube_id=cube_id, session_id="lesson")
    done = mos.import_chat(chat, user_id="alice", cube_id=cube_id, extract="defer")
    assert (done.sessions, done.added) == (2, 4)
    sessions = {m.provenance.message_id: m.provenance.session_id for m in _everything(mos, cube_id)}
    assert sessions == {"l0": "lesson", "l1": "lesson", "l2": "lesson", "x": "other"}


def test_a_bad_message_is_named_by_its_place_in_the_file_and_nothing_is_stored(
    alice: tuple[Any, str], tmp_path: Path
) -> None:
    mos, cube_id = alice
    messages = _garden()
    del messages[180]["content"]
    log = tmp_path / "bad.json"
    log.write_text(json.dumps(messages), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"messages\[180\]") as bad:
        mos.import_chat(log, user_id="alice", cube_id=cube_id, batch_size=100)
    assert "messages[80]" not in str(bad.value)  # not its index within its batch
    assert _everything(mos, cube_id) == []

    sessions = {"sessions": [{"id": "a", "messages": messages[:2]}, {"id": "b", "messages": messages[170:]}]}
    log.write_text(json.dumps(sessions), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"^session 2 of 2 \('b'\): messages\[10\]"):
        mos.import_chat(log, user_id="alice", cube_id=cube_id)
    assert _everything(mos, cube_id) == []

    log.write_text(json.dumps(_garden(3)), encoding="utf-8")
    with pytest.raises(InvalidInput, match="batch_size must be at least 1"):
        mos.import_chat(log, user_id="alice", cube_id=cube_id, batch_size=0)
    assert _everything(mos, cube_id) == []


def test_the_home_limits_apply_to_the_whole_file(make_mos: Any, tmp_path: Path) -> None:
    """The file is checked with the home's limits, and batches keep to add's count limit."""
    mos = make_mos(max_text_chars=40, max_messages_per_add=3)
    mos.add_user("alice")
    cube_id = mos.create_cube("alice", "garden").id
    log = tmp_path / "garden.json"
    messages = _garden(7)
    log.write_text(json.dumps(messages), encoding="utf-8")
    done = mos.import_chat(log, user_id="alice", cube_id=cube_id, batch_size=100, extract=False)
    assert done.added == 7  # batches of 3, 3, 1: within max_messages_per_add

    messages[5]["content"] = "x" * 41
    log.write_text(json.dumps(messages), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"messages\[5\]"):
        mos.import_chat(log, user_id="alice", cube_id=cube_id, extract=False)


def test_read_chat_opens_no_home(tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    settings = Settings(home=home)
    log = tmp_path / "conversation.json"
    log.write_text(json.dumps(SESSIONS), encoding="utf-8")
    chat = MemOS.read_chat(log, settings)
    assert [(s.id, len(s.messages)) for s in chat.sessions] == [("s1", 3), ("s2", 1)]
    assert chat.sessions[0].messages[0]["timestamp"] == "2023-05-08T13:56:00Z"  # the session's date

    messages = _garden(3)
    messages[2]["role"] = ""
    log.write_text(json.dumps(messages), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"messages\[2\]"):
        MemOS.read_chat(log, settings)
    log.write_text(json.dumps(_garden(2)), encoding="utf-8")
    with pytest.raises(InvalidInput, match="session 1 of 1: the session id is empty"):
        MemOS.read_chat(log, settings, session_id=" ")
    log.write_text('{"not": "a chat log"}', encoding="utf-8")
    with pytest.raises(InvalidInput, match="expected a list of messages"):
        MemOS.read_chat(log, settings)
    assert not home.exists()


def test_verify_archive_and_conflicts(alice: tuple[Any, str], tmp_path: Path) -> None:
    mos, cube_id = alice
    mos.add(text="Alice keeps bees on the roof", user_id="alice", cube_id=cube_id, extract=False)
    path = tmp_path / "personal.memcube"
    mos.export_cube(cube_id, path, user_id="alice")

    fresh = Settings(home=tmp_path / "elsewhere")
    manifest = MemOS.verify_archive(path, fresh)
    assert isinstance(manifest, Manifest)
    assert (manifest.cube.id, manifest.counts["memories"]) == (cube_id, 1)
    assert not fresh.home.exists()  # checked with no home opened

    with pytest.raises(Conflict, match="exists already; pass overwrite=True to replace it") as clash:
        mos.export_cube(cube_id, path, user_id="alice")
    assert isinstance(clash.value, AlreadyExists)
    assert clash.value.advice({"overwrite": "--force"}).endswith("pass --force to replace it")

    broken = tmp_path / "broken.memcube"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data.replace(b"bees", b"wasp") if item.filename == "memories.jsonl" else data)
    with pytest.raises(ArchiveError, match="checksum"):
        MemOS.verify_archive(broken, fresh)


def test_lock_holder(make_mos: Any, tmp_path: Path) -> None:
    home = tmp_path / "held"
    settings = Settings(home=home)
    assert MemOS.lock_holder(settings) is None  # no home yet
    mos = make_mos(home)
    holder = MemOS.lock_holder(mos.settings)
    assert holder is not None and holder["pid"] == os.getpid()
    mos.close()
    assert MemOS.lock_holder(mos.settings) is None
    server = Settings(home=home, vector_url="http://127.0.0.1:6333", relational_url="postgresql://x@h/db")
    assert MemOS.lock_holder(server) is None  # a server-backed home takes no lock
