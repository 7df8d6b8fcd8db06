"""The blob sweep on every deployment: ``maintenance.sweep_blobs``, queued by the workers' ticks.

A crash between a ``blobs`` row's delete and its file's leaves a file no row names (for a
purged memory, tensors derived from erased text); a writer killed between ``write_blob``
and its row's commit leaves one too. The scheduler sweeps them on SQLite and PostgreSQL
alike (no home lock, no unclean-shutdown marker needed), taking only files older than
``scheduler.blob_sweep_grace`` by their mtime (set here with ``os.utime``), so another
process's write whose row has not committed yet keeps its file. Job times run on the
injected clock; mtimes on the file system's. Real SQLite and PostgreSQL, Qdrant Edge.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from memos.blobs import BlobStore
from memos.cli import app
from memos.errors import InvalidInput, PermissionDenied
from memos.storage.relational.models import AuditRow, BlobRow

KIND = "maintenance.sweep_blobs"
HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _name(mos: Any, sha: str, manifest: dict[str, Any] | None = None) -> None:
    """A ``blobs`` row naming ``sha`` (as a compiled prefix or an adapter commits one)."""
    with mos.home.store.session() as s:
        s.add(
            BlobRow(
                sha256=sha, cube_id=None, kind="kv", size=1, created_at=mos.clock(), manifest=manifest or {}
            )
        )


def test_the_scheduled_sweep_removes_old_orphans_and_keeps_named_and_young_files(make_mos: Any) -> None:
    mos = make_mos()
    assert mos.home.settings.scheduler.blob_sweep_interval == timedelta(days=1)  # on by default
    assert mos.home.settings.scheduler.blob_sweep_grace == timedelta(hours=1)
    blobs = BlobStore(mos.home.settings.home)
    named = blobs.write(b"a prefix a row names")
    gguf = blobs.write(b"its llama.cpp export", ".gguf")
    _name(mos, named, {"gguf": {"sha256": gguf}})
    old_orphan = blobs.write(b"the tensors of a purged memory")
    young_orphan = blobs.write(b"a write whose row has not committed yet")
    reused = blobs.write(b"an orphan a new row is about to name")
    old_partial = blobs.path(old_orphan).with_name(f"{'ab' * 32}.safetensors.4242-0000.partial")
    young_partial = old_partial.with_name(f"{'ab' * 32}.safetensors.4243-0000.partial")
    for p in (old_partial, young_partial):
        p.write_bytes(b"half")
    for p in (
        blobs.path(named),
        blobs.path(gguf, ".gguf"),
        blobs.path(old_orphan),
        blobs.path(reused),
        old_partial,
    ):
        _age(p, 2 * HOUR)
    # content-addressed dedup: the new row's write finds the old file and refreshes its mtime
    before = blobs.path(reused).stat().st_mtime
    assert blobs.write(b"an orphan a new row is about to name") == reused
    assert blobs.path(reused).stat().st_mtime > before + HOUR

    [queued] = mos.scheduler.tick()  # no lock, no unclean marker: the tick queues it
    assert (queued.kind, queued.cube_id, queued.state) == (KIND, None, "queued")
    assert mos.scheduler.run_worker(until_idle=True) == 0  # due a day after the first tick
    mos.clock.advance(days=1, minutes=1)
    assert mos.scheduler.run_worker(until_idle=True) == 1
    [done] = mos.scheduler.jobs(kind=KIND, state="done")
    gone = sorted([f"{old_orphan}.safetensors", old_partial.name])
    assert done.id == queued.id and done.result == {"removed": 2, "files": gone}
    assert not blobs.path(old_orphan).exists() and not old_partial.exists()
    for kept in (blobs.path(named), blobs.path(gguf, ".gguf"), blobs.path(young_orphan), blobs.path(reused)):
        assert kept.exists(), kept.name
    assert young_partial.exists()
    assert not list(blobs.root.rglob("*.sweep.partial"))  # nothing left moved aside

    _name(mos, reused)  # the row commits; an hour later its file is old, and named
    _age(blobs.path(reused), 2 * HOUR)
    _age(blobs.path(young_orphan), 2 * HOUR)  # its writer died: now it goes
    assert mos.sweep_blobs() == [f"{young_orphan}.safetensors"]
    assert blobs.path(reused).exists() and blobs.path(named).exists()


def test_ticking_workers_queue_one_sweep_per_interval(make_mos: Any, backend: str, tmp_path: Path) -> None:
    clock = Clock()
    mos = make_mos(clock=clock)
    # on PostgreSQL a second deployment's process shares the jobs; on SQLite, a second worker
    other = make_mos(tmp_path / "other", clock=clock) if backend == "postgres" else mos
    workers = [mos.scheduler.worker(worker_id="w1"), other.scheduler.worker(worker_id="w2")]
    barrier = threading.Barrier(len(workers))
    found: list[list[Any]] = []

    def tick(w: Any) -> None:
        barrier.wait()
        found.append(w.tick())

    threads = [threading.Thread(target=tick, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {j.id for jobs in found for j in jobs}
    assert len(ids) == 1 and {j.kind for jobs in found for j in jobs} == {KIND}
    for _ in range(3):
        assert [w.tick() for w in workers] == [[], []]  # one is queued already
    clock.advance(days=1, minutes=1)
    first = workers[0].run_once()
    assert first is not None and (first.id, first.kind, first.state) == (ids.pop(), KIND, "done")
    assert first.result == {"removed": 0, "files": []}
    [nxt] = [j for w in workers for j in w.tick()]  # the next one: a day after this one ended
    assert nxt.run_after is not None and nxt.run_after >= first.finished_at + timedelta(days=1)
    clock.advance(hours=23)
    assert workers[1].run_once() is None
    clock.advance(hours=2)
    second = workers[1].run_once()
    assert second is not None and (second.id, second.state) == (nxt.id, "done")
    assert [j.state for j in mos.scheduler.jobs(kind=KIND)] == ["done", "done"]
    assert [j.kind for j in mos.scheduler.jobs(state="queued")] == []  # not ticked since
    assert {j.kind for jobs in (w.tick() for w in workers) for j in jobs} == {KIND}


def test_a_shorter_interval_brings_the_queued_sweep_forward_and_off_stops_it(make_mos: Any) -> None:
    clock = Clock()
    mos = make_mos(clock=clock)
    [queued] = mos.scheduler.tick()
    assert abs(queued.run_after - (queued.created_at + timedelta(days=1))) < timedelta(seconds=1)
    blobs = BlobStore(mos.home.settings.home)
    orphan = blobs.write(b"left by a crash")
    _age(blobs.path(orphan), 2 * HOUR)
    mos.close()
    # the operator shortens the interval and restarts the worker: the queued one is due sooner
    mos = make_mos(clock=clock, scheduler={"blob_sweep_interval": "1h"})
    assert mos.scheduler.tick() == []
    [job] = mos.scheduler.jobs(kind=KIND, state="queued")
    assert (job.id, job.run_after) == (queued.id, queued.created_at + timedelta(hours=1))
    clock.advance(minutes=61)
    assert mos.scheduler.run_worker(until_idle=True) == 1
    assert mos.scheduler.get(queued.id).result == {"removed": 1, "files": [f"{orphan}.safetensors"]}
    # the sweep is in the audit log: no cube, who ran it, what went
    with mos.home.store.read_session() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.action == "blob_sweep")).all()
    assert [(r.cube_id, r.actor, r.details) for r in rows] == [
        (None, "scheduler", {"removed": 1, "files": [f"{orphan}.safetensors"], "grace": HOUR})
    ]
    [nxt] = mos.scheduler.tick()  # an hour after that one ended; lengthening it leaves it be
    mos.close()
    mos = make_mos(clock=clock, scheduler={"blob_sweep_interval": "2d"})
    assert mos.scheduler.tick() == [] and mos.scheduler.get(nxt.id).run_after == nxt.run_after
    mos.close()
    # turned off: the sweep the ticks queued runs without sweeping; one asked for by hand sweeps
    mos = make_mos(clock=clock, scheduler={"blob_sweep_interval": "off"})
    other = blobs.write(b"another crash")
    _age(blobs.path(other), 2 * HOUR)
    clock.advance(hours=2)
    assert mos.scheduler.run_worker(until_idle=True) == 1
    assert mos.scheduler.get(nxt.id).result == {
        "removed": 0, "files": [], "skipped": "scheduler.blob_sweep_interval is off"
    }  # fmt: skip
    assert blobs.path(other).exists() and mos.scheduler.tick() == []
    mos.scheduler.enqueue(KIND, {})
    assert mos.scheduler.run_worker(until_idle=True) == 1 and not blobs.path(other).exists()


def test_the_sweep_settings_and_off(make_mos: Any, tmp_path: Path) -> None:
    from memos.config import SchedulerSettings

    for bad in ("often", "0s", -1):
        with pytest.raises(ValueError):
            SchedulerSettings(blob_sweep_grace=bad)
    home = tmp_path / "off"
    home.mkdir()
    (home / "config.toml").write_text('[scheduler]\nblob_sweep_interval = "off"\nblob_sweep_grace = "30m"\n')
    mos = make_mos(home)
    cfg = mos.home.settings.scheduler
    assert (cfg.blob_sweep_interval, cfg.blob_sweep_grace) == (None, timedelta(minutes=30))
    assert mos.scheduler.tick() == [] and mos.scheduler.run_worker(until_idle=True) == 0
    assert mos.scheduler.jobs() == []


def test_sweep_on_demand_is_the_operators(make_mos: Any, backend: str) -> None:
    mos = make_mos()
    mos.add_user("alice")
    blobs = BlobStore(mos.home.settings.home)
    orphan = blobs.write(b"left by a crash a minute ago")
    with pytest.raises(PermissionDenied, match="operator"):
        mos.sweep_blobs(user_id="alice")
    for bad in (-1, float("nan"), "1h", True):
        with pytest.raises(InvalidInput, match="grace"):
            mos.sweep_blobs(grace=bad)
    assert mos.sweep_blobs() == [] and blobs.path(orphan).exists()  # within the default grace
    assert mos.sweep_blobs(grace=timedelta(0)) == [f"{orphan}.safetensors"]
    # a job queued by hand may say its grace
    blobs.write(b"another")
    job = mos.scheduler.enqueue(KIND, {"grace": 0})
    assert mos.scheduler.run_worker(until_idle=True) == 1
    assert mos.scheduler.get(job.id).result["removed"] == 1


def test_cli_sweep_blobs(tmp_path: Path, embedder: Any) -> None:
    from memos.core import MemOS

    home = tmp_path / "home"
    with MemOS(home=home, embedder=embedder) as mos:
        mos.add_user("alice")
    blobs = BlobStore(home)
    orphan = blobs.write(b"an adapter of a purged memory", ".gguf")
    runner = CliRunner()
    env = {"MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    out = runner.invoke(app, ["sweep-blobs"], env=env)
    assert (
        out.exit_code == 0 and "removed 0 blob files" in out.stdout and blobs.path(orphan, ".gguf").exists()
    )
    denied = runner.invoke(app, ["sweep-blobs", "--grace", "0"], env={**env, "MEMOS_USER": "alice"})
    assert (
        denied.exit_code == 1 and "operator" in denied.stderr and len(denied.stderr.strip().splitlines()) == 1
    )
    out = runner.invoke(app, ["--json", "sweep-blobs", "--grace", "0"], env=env)
    assert out.exit_code == 0, out.stderr
    assert out.stdout.strip() and '"removed": 1' in out.stdout and f"{orphan}.gguf" in out.stdout
    assert not blobs.path(orphan, ".gguf").exists()


def test_an_unclean_reopen_still_sweeps_without_grace(tmp_path: Path, embedder: Any) -> None:
    """The embedded home's own sweep (it holds the lock): a file a crash left a moment ago
    goes at the next open — guards the repair path against the new grace (passes on the
    old code too)."""
    from memos.core import MemOS

    home = tmp_path / "home"
    with MemOS(home=home, embedder=embedder) as mos:
        blobs = BlobStore(home)
        named = blobs.write(b"named")
        _name(mos, named)
    orphan = blobs.write(b"its row's delete committed, then the process died")
    partial = blobs.path(orphan).with_name(f"{orphan}.77.partial")
    partial.write_bytes(b"half")
    engine = create_engine(f"sqlite:///{home / 'memos.db'}")  # as a crash leaves the marker
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE meta SET value = :v WHERE key = 'open'"), {"v": json.dumps({"clean": False})}
        )
    engine.dispose()
    with MemOS(home=home, embedder=embedder) as mos:
        assert not blobs.path(orphan).exists() and not partial.exists()
        assert blobs.path(named).exists()


def test_a_write_between_the_listing_and_the_unlink_keeps_its_file(tmp_path: Path) -> None:
    """The order that keeps a committing row's file: the old files are listed, then the
    rows read; a writer that re-uses an old orphan (dedup) in between touches it, and the
    sweep reads the mtime again before it removes anything."""
    blobs = BlobStore(tmp_path)
    reused = blobs.write(b"an old orphan")
    orphan = blobs.write(b"another old orphan")
    for sha in (reused, orphan):
        _age(blobs.path(sha), 2 * HOUR)

    def rows() -> set[str]:  # the new row's write lands after the listing; the row commits later
        blobs.write(b"an old orphan")
        return set()

    assert blobs.sweep(rows, grace=HOUR) == [f"{orphan}.safetensors"]
    assert blobs.path(reused).read_bytes() == b"an old orphan"
    assert sorted(p.name for p in blobs.root.rglob("*") if p.is_file()) == [f"{reused}.safetensors"]


def test_a_file_left_aside_by_a_dead_sweep_goes_back_when_a_row_names_it(tmp_path: Path) -> None:
    """A sweep killed between moving a file aside and putting it back (a writer had touched
    it: its row was committing) leaves it under a temporary name. The next sweep puts back
    the one a row names and removes the one no row names."""
    blobs = BlobStore(tmp_path)
    named, orphan = blobs.write(b"named meanwhile"), blobs.write(b"no row")
    for sha in (named, orphan):
        path = blobs.path(sha)
        path.rename(path.with_name(f"{path.name}.123-abcd.sweep.partial"))
        _age(path.with_name(f"{path.name}.123-abcd.sweep.partial"), 2 * HOUR)
    assert blobs.sweep(lambda: {named}, grace=HOUR) == [f"{orphan}.safetensors.123-abcd.sweep.partial"]
    assert blobs.path(named).read_bytes() == b"named meanwhile"
    assert sorted(p.name for p in blobs.root.rglob("*") if p.is_file()) == [f"{named}.safetensors"]
