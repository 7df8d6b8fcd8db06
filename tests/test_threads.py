"""One MemOS, many threads (issue 19, item 6): no "database is locked", nothing lost.

Eight threads share one home for a bounded number of rounds, each mixing add, search,
get, update, delete and chat with write-back, with access statistics flushed on every
search (the write that used to collide with an add's transaction). Afterwards: no
thread saw an error, every acknowledged write reads back as acknowledged, and the index
holds exactly the searchable rows.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

THREADS = 8
ROUNDS = 12


def test_eight_threads_mixing_every_operation(make_mos: Any, hf_runtime: Any) -> None:
    mos = make_mos(clock=None, search={"access_flush_seconds": 0})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    seed = [
        mos.add(text=f"Seed fact {i}: Alice likes colour {i}", user_id="alice", cube_id=cube)
        for i in range(8)
    ]
    seed_ids = [r.memories[0].id for r in seed]

    errors: list[str] = []
    added: dict[str, str] = {}  # id -> text, as acknowledged
    updated: dict[str, str] = {}  # id -> last acknowledged text (each thread updates its own)
    deleted: set[str] = set()
    chats: list[list[str]] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        mine: list[str] = []
        start.wait()
        for r in range(ROUNDS):
            try:
                op = (n + r) % 6
                if op in (0, 3):
                    text = f"Thread {n} round {r}: Alice visited city number {n * 100 + r}"
                    res = mos.add(
                        messages=[{"role": "user", "name": "Alice", "content": text}],
                        user_id="alice",
                        cube_id=cube,
                        session_id=f"t{n}",
                    )
                    mid = res.memories[0].id
                    mine.append(mid)
                    with lock:
                        added[mid] = text
                elif op == 1:
                    hits = mos.search(f"city number {r}", user_id="alice", top_k=5)
                    for h in hits[:2]:
                        mos.get(h.memory.id, user_id="alice")
                elif op == 2 and mine:
                    text = f"Thread {n} revised round {r}: Alice moved to town {n * 100 + r}"
                    mos.update(mine[-1], user_id="alice", text=text, reason="revised")
                    with lock:
                        updated[mine[-1]] = text
                elif op == 4 and len(mine) > 1:
                    victim = mine.pop(0)
                    mos.delete(victim, user_id="alice", reason="tidy")
                    with lock:
                        deleted.add(victim)
                elif op == 5:
                    res = mos.chat(
                        f"Which city did thread {n} visit?",
                        user_id="alice",
                        cube_ids=[cube],
                        session_id=f"chat{n}",
                        runtime=hf_runtime,
                        max_tokens=2,
                        memories=3,
                    )
                    with lock:
                        chats.append(list(res.written))
                else:
                    mos.get(seed_ids[(n + r) % len(seed_ids)], user_id="alice")
                    mos.list(user_id="alice", cube_id=cube, limit=5)
            except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                with lock:
                    errors.append(f"thread {n} round {r}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert added and updated and deleted and chats

    for mid, text in added.items():
        item = mos.get(mid, user_id="alice")
        assert item.text == updated.get(mid, text)
        assert item.state == ("deleted" if mid in deleted else "active")
    for written in chats:
        assert len(written) == 2  # the question and the answer, both stored
        for mid in written:
            assert mos.get(mid, user_id="alice").state == "active"
    report = mos.check_index()
    assert (report["missing"], report["extra"], report["pending"], report["quarantined"]) == (0, 0, 0, [])
    assert report["index_points"] == report["searchable_rows"]
    assert mos.stats()["index_points"] == report["searchable_rows"]


@pytest.mark.parametrize("n", [THREADS])
def test_access_statistics_are_counted_under_concurrent_writes(make_mos: Any, n: int) -> None:
    """Searches from many threads while another adds: every access is counted once."""
    mos = make_mos(clock=None, search={"access_flush_seconds": 0})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    target = mos.add(text="Alice keeps bees on the roof", user_id="alice", cube_id=cube).memories[0].id
    errors: list[str] = []
    searches = 10

    def searcher() -> None:
        for _ in range(searches):
            try:
                hits = mos.search("bees on the roof", user_id="alice", top_k=1)
                assert hits[0].memory.id == target
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")

    def adder() -> None:
        for i in range(20):
            try:
                mos.add(text=f"Alice planted tree {i}", user_id="alice", cube_id=cube)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=searcher) for _ in range(n - 1)] + [threading.Thread(target=adder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    assert mos.get(target, user_id="alice").hits == (n - 1) * searches


def test_a_session_inside_a_write_session_of_the_same_thread_does_not_wait_on_it(tmp_path: Any) -> None:
    """Write sessions take SQLite's lock when they begin; one opened inside another by the
    same thread must not wait for the outer one (it would, until the busy timeout, and
    then fail "database is locked")."""
    from memos.storage.relational.engine import RelationalStore
    from memos.storage.relational.models import MetaRow

    store = RelationalStore(f"sqlite:///{tmp_path}/nested.db")
    try:
        with store.session() as outer:
            outer.merge(MetaRow(key="outer", value={"n": 1}))
            outer.flush()
            with store.session() as inner:
                assert inner.get(MetaRow, "outer") is None  # its own snapshot: not committed yet
        with store.read_session() as s:
            row = s.get(MetaRow, "outer")
            assert row is not None and row.value == {"n": 1}
    finally:
        store.close()
