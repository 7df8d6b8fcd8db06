"""Purge erases everywhere (issue 19, items 4 and 5).

After a purge and a close, no file of the home and no row of the relational store holds
a unique string of the purged memory's text, tags or metadata — not the index's
write-ahead log or segments, not SQLite's free pages or WAL — and the turn that answered
it no longer matches its words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text as sql

from memos.plaintext.retrieval import lexical
from memos.protocols import IndexFilter

SECRET_WORD = "qzvxlocker"
SECRET_TAG = "tagqzvxpriv"
SECRET_META_KEY = "metakeyqzvx"
SECRET_META_VALUE = "metavalqzvx"
SECRETS = (SECRET_WORD, SECRET_TAG, SECRET_META_KEY, SECRET_META_VALUE)


def _files_holding(home: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """``grep -r`` of every file of the home, for each needle (UTF-8 bytes)."""
    found: dict[str, list[str]] = {}
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for needle in needles:
            if needle.encode() in data:
                found.setdefault(needle, []).append(str(path.relative_to(home)))
    return found


def _rows_holding(mos: Any, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """Every row of every table, as text, for each needle."""
    found: dict[str, list[str]] = {}
    with mos.store.engine.connect() as conn:
        for table in mos.store.tables():
            for row in conn.execute(sql(f'SELECT * FROM "{table}"')):
                line = " ".join(str(v) for v in row)
                for needle in needles:
                    if needle in line:
                        found.setdefault(needle, []).append(table)
    return found


def _lexical_hits(mos: Any, cube: str, word: str) -> list[str]:
    return [
        h.id for h in mos.index.search_sparse(lexical.encode_query(word), IndexFilter(cube_ids=(cube,)), 10)
    ]


def test_purge_leaves_no_trace_in_any_file_or_row(make_mos: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    mos = make_mos(home)
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    mos.add(
        messages=[{"role": "user", "name": "Alice", "content": "Hi Sam, the weather is fine today."}],
        user_id="alice",
        cube_id=cube,
        session_id="s1",
    )
    secret = mos.add(
        messages=[
            {
                "role": "user",
                "name": "Alice",
                "content": f"My locker code word is {SECRET_WORD}, keep it safe.",
            }
        ],
        user_id="alice",
        cube_id=cube,
        session_id="s1",
        tags=[SECRET_TAG, "health"],
        metadata={SECRET_META_KEY: SECRET_META_VALUE, "level": 3},
    ).memories[0]
    reply = mos.add(
        messages=[{"role": "assistant", "name": "Sam", "content": "Noted, I will remember that for you."}],
        user_id="alice",
        cube_id=cube,
        session_id="s1",
    ).memories[0]
    # before: the reply matches the secret word, through the turn it answers
    assert set(_lexical_hits(mos, cube, SECRET_WORD)) == {secret.id, reply.id}
    assert [h.memory.id for h in mos.search("x", user_id="alice", filters={"tags": SECRET_TAG})] == [
        secret.id
    ]
    mos.update(secret.id, user_id="alice", importance=0.9, reason="important")  # a second version
    mos.close()  # segments and WAL hold the payload now
    mos = make_mos(home)

    purged = mos.purge(secret.id, user_id="alice", reason="user request")
    assert secret.id in purged
    assert _lexical_hits(mos, cube, SECRET_WORD) == []  # the reply no longer carries the word
    assert all(h.memory.id != secret.id for h in mos.search(SECRET_WORD, user_id="alice"))
    assert mos.search("x", user_id="alice", filters={"tags": SECRET_TAG}) == []
    assert mos.search("x", user_id="alice", filters={f"metadata.{SECRET_META_KEY}": SECRET_META_VALUE}) == []
    assert mos.get(reply.id, user_id="alice").text.startswith("Noted")
    for i in range(30):
        mos.add(text=f"Alice waters plant number {i}", user_id="alice", cube_id=cube, tags=["plants"])
    assert _rows_holding(mos, SECRETS) == {}
    mos.close()
    assert _files_holding(home, SECRETS) == {}

    mos = make_mos(home)  # and across a reopen (the repair does not bring anything back)
    assert _lexical_hits(mos, cube, SECRET_WORD) == []
    assert mos.stats()["index_points"] == mos.check_index()["searchable_rows"]
    mos.close()
    assert _files_holding(home, SECRETS) == {}


def test_filters_match_as_before_on_the_sealed_index(make_mos: Any) -> None:
    """Speaker, role, session, tags and metadata are sealed in the index (memos.plaintext.sealing);
    every filter the SDK offers still selects exactly the memories whose rows match."""
    mos = make_mos()
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    a = mos.add(
        messages=[{"role": "user", "name": "Alice", "content": "I like green tea in the morning."}],
        user_id="alice", cube_id=cube, session_id="s1", tags=["drinks", "morning"],
        metadata={"topic": "tea", "n": 2, "flag": True, "ratio": 0.5, "lst": ["x", "y"]}, extract=False,
    ).memories[0]  # fmt: skip
    b = mos.add(
        messages=[{"role": "assistant", "name": "Sam", "content": "Green tea is a good morning drink."}],
        user_id="alice", cube_id=cube, session_id="s2", tags=["drinks"],
        metadata={"topic": "coffee", "n": 3, "flag": False}, extract=False,
    ).memories[0]  # fmt: skip
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"speaker": "Alice"}, {a.id}),
        ({"speaker": ["Alice", "Sam"]}, {a.id, b.id}),
        ({"role": "assistant"}, {b.id}),
        ({"session_id": "s1"}, {a.id}),
        ({"tags": "morning"}, {a.id}),
        ({"tags": ["drinks"]}, {a.id, b.id}),
        ({"metadata.topic": "tea"}, {a.id}),
        ({"metadata.n": 3}, {b.id}),
        ({"metadata.n": "3"}, set()),  # a string is not the number
        ({"metadata.flag": True}, {a.id}),
        ({"metadata.flag": 0}, {b.id}),  # False == 0, as in Python
        ({"metadata.lst": "y"}, {a.id}),
        ({"metadata.missing": "tea"}, set()),
        ({"speaker": "Alice", "tags": "drinks", "metadata.topic": "tea"}, {a.id}),
        ({"speaker": "Alice", "metadata.topic": "coffee"}, set()),
    ]
    for filters, expected in cases:
        got = {h.memory.id for h in mos.search("green tea morning", user_id="alice", filters=filters)}
        assert got == expected, filters
        listed = mos.list(user_id="alice", cube_id=cube, filters=filters).items  # filtered on the rows
        assert {m.id for m in listed} == expected, filters
