"""A row the index cannot hold never locks its owner out of the rest of the home (issue 19, item 1).

Validation now refuses such values before anything is written (tests/test_validation.py);
these tests build the situation an older version could leave behind: a home whose index
keeps payloads in clear (built before sealing) and a row with a NaN in its metadata,
which Qdrant Edge refuses. SQLite only: PostgreSQL's JSON cannot store NaN at all.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memos.core import MemOS


def _legacy_home_with_bad_row(home: Path, embedder: Any, n_good: int = 20) -> tuple[str, list[str], str]:
    """A home as an older memos left it: unsealed index, one pending row with NaN metadata."""
    with MemOS(home=home, embedder=embedder) as mos:
        mos.add_user("alice")
        cube = mos.create_cube("alice", "personal").id
        good = [
            mos.add(text=f"Fact number {i}: Alice owns {i} blue kites", user_id="alice", cube_id=cube)
            .memories[0]
            .id
            for i in range(n_good)
        ]
        bad = (
            mos.add(text="Alice measured the river", user_id="alice", cube_id=cube, metadata={"depth": 3})
            .memories[0]
            .id
        )
    db = sqlite3.connect(home / "memos.db")
    with db:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'index'").fetchone()
        meta = json.loads(value)
        meta.pop("payload_key", None)  # built before payloads were sealed
        db.execute("UPDATE meta SET value = ? WHERE key = 'index'", (json.dumps(meta),))
        # everything pending, as after an unclean stop in the middle of a bulk import
        db.execute("UPDATE memories SET index_state = 'pending'")
        db.execute("UPDATE memories SET metadata = ? WHERE id = ?", ('{"depth": NaN}', bad))
    db.close()
    return cube, good, bad


def test_a_row_the_index_refuses_is_quarantined_and_the_home_opens(tmp_path: Path, embedder: Any) -> None:
    home = tmp_path / "home"
    cube, good, bad = _legacy_home_with_bad_row(home, embedder)
    with MemOS(home=home, embedder=embedder) as mos:  # before: the repair on open raised InvalidInput
        stats = mos.stats()
        assert stats["index_quarantined"] == 1 and stats["index_pending"] == 0
        assert stats["index_points"] == len(good)
        report = mos.check_index()
        assert [q["memory_id"] for q in report["quarantined"]] == [bad]
        assert report["quarantined"][0]["cube_id"] == cube
        assert "NaN" in report["quarantined"][0]["error"] or "payload" in report["quarantined"][0]["error"]
        assert report["quarantined"][0]["since"]
        assert (report["missing"], report["extra"], report["pending"]) == (0, 0, 0)
        assert report["searchable_rows"] == report["index_points"] == len(good)
        # the rest of the home works: every good memory is found, the bad one is still readable
        hits = mos.search("blue kites", user_id="alice", top_k=50)
        assert {h.memory.id for h in hits} == set(good)
        assert mos.get(bad, user_id="alice").text == "Alice measured the river"
        assert [e.action for e in mos.history(bad, user_id="alice").events][-1] == "index_failed"
        new = mos.add(text="Alice flies kites on Sundays", user_id="alice", cube_id=cube).memories[0].id
        assert new in {h.memory.id for h in mos.search("kites Sundays", user_id="alice")}
        # a reindex of the cube tries it again, keeps going and keeps it quarantined
        assert mos.reindex(cube_ids=[cube]) == len(good) + 2
        assert mos.stats()["index_quarantined"] == 1
        assert mos.stats()["index_points"] == len(good) + 1
    with MemOS(home=home, embedder=embedder) as mos:  # and it does not come back on every open
        assert mos.stats()["index_quarantined"] == 1
        events = [e.action for e in mos.history(bad, user_id="alice").events]
        assert events.count("index_failed") == 2  # the first open and the reindex, not this open
        # fixing the row indexes it again
        mos.update(bad, user_id="alice", metadata={"depth": 3.5}, reason="fixed")
        assert mos.stats()["index_quarantined"] == 0
        assert bad in {h.memory.id for h in mos.search("river measured", user_id="alice")}
        assert mos.check_index()["quarantined"] == []


def test_a_whole_reindex_seals_an_old_index(tmp_path: Path, embedder: Any) -> None:
    """The old index held the NaN in clear; the sealed one holds no value a filter cannot
    name (memos.plaintext.sealing), so the row that was refused is indexed after a whole reindex."""
    home = tmp_path / "home"
    cube, good, bad = _legacy_home_with_bad_row(home, embedder)
    with MemOS(home=home, embedder=embedder) as mos:
        assert mos.stats()["index_quarantined"] == 1
        assert mos.search("river", user_id="alice", filters={"metadata.depth": 3}) == []
        assert mos.reindex() == len(good) + 1
        assert mos.stats()["index_quarantined"] == 0
        assert mos.check_index()["index_points"] == len(good) + 1
    db = sqlite3.connect(home / "memos.db")
    (value,) = db.execute("SELECT value FROM meta WHERE key = 'index'").fetchone()
    db.close()
    assert len(json.loads(value)["payload_key"]) == 64
    with MemOS(home=home, embedder=embedder) as mos:
        mos.update(bad, user_id="alice", metadata={"depth": 3})
        hits = mos.search("river", user_id="alice", filters={"metadata.depth": 3})
        assert [h.memory.id for h in hits] == [bad]
        assert mos.search("river", user_id="alice", filters={"metadata.depth": 4}) == []


def test_check_index_changes_nothing_and_reports_lost_points(tmp_path: Path, embedder: Any) -> None:
    with MemOS(home=tmp_path / "home", embedder=embedder) as mos:
        mos.add_user("alice")
        mos.add_user("bob")
        cube = mos.create_cube("alice", "personal").id
        ids = [
            mos.add(text=f"note {i} about tea", user_id="alice", cube_id=cube).memories[0].id
            for i in range(5)
        ]
        clean = mos.check_index()
        assert clean == {
            "cubes": 1,
            "searchable_rows": 5,
            "index_points": 5,
            "missing": 0,
            "extra": 0,
            "pending": 0,
            "quarantined": [],
        }
        mos.index.delete([ids[0]])  # a point lost behind the store's back
        report = mos.check_index()
        assert (report["missing"], report["index_points"]) == (1, 4)
        assert mos.check_index() == report  # reading it repaired nothing
        assert mos.check_index(user_id="bob")["cubes"] == 0  # bob reads no cube
        with pytest.raises(Exception, match="no access|unknown"):
            mos.check_index(user_id="bob", cube_ids=[cube])
        mos.reindex()
        assert mos.check_index()["missing"] == 0
