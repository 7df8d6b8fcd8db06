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
