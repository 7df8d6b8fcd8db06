"""Crash consistency and the one-process lock, with real processes and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from memos.errors import HomeLocked

CHILD = textwrap.dedent(
    """
    import json, sys
    from memos.core import MemOS
    home, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mos = MemOS(home=home)
    mos.add_user("u")
    cube = mos.create_cube("u", "c").id
    print(json.dumps({"ready": cube}), flush=True)
    for b in range(batches):
        msgs = [{"role": "user", "name": "Ann", "id": f"b{b}m{i}",
                 "content": f"Memory token zq{b}x{i}y about hiking in Bergen batch {b}"} for i in range(size)]
        res = mos.add(messages=msgs, user_id="u", cube_id=cube)
        print(json.dumps({"committed": [m.provenance.message_id for m in res.memories]}), flush=True)
    print(json.dumps({"done": True}), flush=True)
    sys.stdin.readline()  # hold the home until the parent says so
    mos.close()
    """
)


def _spawn(home: Path, batches: int, size: int) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(batches), str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"child died: {proc.stderr.read() if proc.stderr else ''}")
    return dict(json.loads(line))


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 3])
def test_sigkill_mid_bulk_import_loses_nothing(tmp_path: Path, kill_after: int) -> None:
    home = tmp_path / "home"
    proc = _spawn(home, batches=40, size=25)
    try:
        cube = _read(proc)["ready"]
        reported: list[str] = []
        for _ in range(kill_after):
            reported += _read(proc)["committed"]
        time.sleep(0.05 * kill_after)  # land somewhere inside the next batch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    from memos.core import MemOS
    from memos.storage.relational.models import MemoryRow

    mos = MemOS(home=home)  # reopening repairs (with the default embedder the child used)
    try:
        from sqlalchemy import select

        with mos.store.session() as s:
            rows = {r.id: r for r in s.scalars(select(MemoryRow).where(MemoryRow.cube_id == cube))}
        by_message = {r.message_id: r.id for r in rows.values() if r.message_id}
        assert set(reported) <= set(by_message), "a memory the child saw committed is missing"
        active = {i for i, r in rows.items() if r.state == "active"}
        in_index = mos.index.ids(cube)
        assert in_index == active, (
            f"index/rows differ: missing {len(active - in_index)}, extra {len(in_index - active)}"
        )
        assert all(r.index_state == "done" for r in rows.values())
        # every committed memory is searchable by its unique token, and no hit lacks a row
        for mid in reported[:: max(1, len(reported) // 10)]:
            b, i = mid[1:].split("m")
            hits = mos.search(f"zq{b}x{i}y", user_id="u", top_k=5)
            assert any(h.memory.provenance.message_id == mid for h in hits), mid
            assert all(h.memory.id in rows for h in hits)
    finally:
        mos.close()


@pytest.mark.slow
def test_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = _spawn(home, batches=0, size=0)
    try:
        _read(proc)  # ready: the child holds the home
        from memos.core import MemOS

        with pytest.raises(HomeLocked) as info:
            MemOS(home=home)
        msg = str(info.value)
        assert str(proc.pid) in msg and "PostgreSQL" in msg and "server" in msg
        assert _read(proc) == {"done": True}
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # once the holder is gone the home opens normally and nothing was damaged
    mos = MemOS(home=home)
    try:
        assert [u.id for u in mos.list_users()] == ["u"]
    finally:
        mos.close()


# ------------------------------------------------------------------ blob files follow their rows

DROP_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from memos.blobs import BlobStore
    from memos.core import MemOS
    home, kv_id = sys.argv[1], sys.argv[2]
    mos = MemOS(home=home)
    # the process dies at the first file deletion: after the row's delete committed
    BlobStore.unlink = lambda self, sha, suffix=".safetensors": os.kill(os.getpid(), signal.SIGKILL)
    mos.activation.drop(kv_id, user_id="alice")
    print("not reached", flush=True)
    """
)


def _prefixes(home: Path, runtime: Any) -> tuple[Any, Any, Any]:
    """A home with alice's cube and two compiled KV prefixes; closed."""
    from memos.core import MemOS

    with MemOS(home=home) as mos:
        mos.add_user("alice")
        cube = mos.create_cube("alice", "personal").id
        kept, dropped = (
            mos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False).memories[0].id
            for t in ("Alice's sister Mira lives in Tromso", "Alice has a beagle named Pretzel")
        )
        one = mos.activation.compile(cube, user_id="alice", runtime=runtime, memory_ids=[kept], name="one")
        two = mos.activation.compile(cube, user_id="alice", runtime=runtime, memory_ids=[dropped], name="two")
        return cube, one, two


@pytest.mark.slow
def test_a_rolled_back_delete_leaves_the_blob_files(tmp_path: Path, hf_runtime: Any) -> None:
    """A transaction that removes a cube's KV prefixes and then fails keeps their rows — and
    their files, which are deleted only when the delete commits (they used to go first, so
    a failed delete left rows naming files that were gone)."""
    from memos.core import MemOS

    cube, one, two = _prefixes(tmp_path / "home", hf_runtime)
    with MemOS(home=tmp_path / "home") as mos:
        with pytest.raises(RuntimeError), mos.store.session() as s:
            assert len(mos.activation.delete_cube_blobs(s, cube, "alice")) == 2
            raise RuntimeError("the cube's delete failed after its prefixes")
        assert sorted(i.id for i in mos.activation.list(cube, user_id="alice")) == sorted([one.id, two.id])
        assert mos.activation.blob_path(one.id).exists() and mos.activation.blob_path(two.id).exists()
        info, prefix = mos.activation.load(one.id, hf_runtime)  # still usable
        assert info.id == one.id and prefix is not None
        mos.delete_cube(cube, "alice")  # committed: now the files go
        assert not mos.activation.blob_path(one.id).exists() and not mos.activation.blob_path(two.id).exists()


@pytest.mark.slow
def test_sigkill_after_a_prefix_drop_commits_leaves_a_file_swept_at_reopen(
    tmp_path: Path, hf_runtime: Any
) -> None:
    """A writer killed after ``activation.drop`` committed but before the file went leaves a
    file that no row names (for a purge, erased memories' keys and values); the next open of
    the home sees the unclean shutdown and removes it, with half-written temporary files,
    and keeps the files that rows name."""
    from memos.core import MemOS

    home = tmp_path / "home"
    _cube, one, two = _prefixes(home, hf_runtime)
    proc = subprocess.run(
        [sys.executable, "-c", DROP_CHILD, str(home), two.id],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    blobs = home / "blobs" / "sha256"
    orphan = next(blobs.rglob(f"{two.id}.safetensors"))
    partial = orphan.with_name(f"{'0' * 64}.123.partial")
    partial.write_bytes(b"half")  # a write a crash interrupted
    with MemOS(home=home) as mos:  # reopening repairs
        assert [i.id for i in mos.activation.list(_cube, user_id="alice")] == [one.id]  # the drop committed
        assert not orphan.exists() and not partial.exists()
        assert mos.activation.blob_path(one.id).exists()
        assert mos.repair()["applied"] == 0  # a clean open does not sweep again
