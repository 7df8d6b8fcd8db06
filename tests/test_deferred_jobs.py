"""Deferred extraction on the scheduler's jobs table, and the recurring policy runs.

``add(..., extract="defer")`` queues ``extract.deferred`` jobs in its own transaction; a
worker (``Worker.run_once``, ``memos scheduler run``) or ``run_deferred_extraction`` runs
them exactly once and in the order the episodes were added — a functional fact ends
superseded by the later one even with two workers. ``stats``/``memos doctor`` count the
queue from the jobs, and a home left by a version with the ``extract_tasks`` table still
runs its queue. ``Scheduler.tick`` queues ``policy.apply`` per cube once its interval has
passed (injected clock). Real SQLite and PostgreSQL, Qdrant Edge, the bundled embedder.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

import memos.memories.adding as adding
import memos.memories.maintenance as maintenance
from memos.memories.maintenance import Maintenance
from memos.scheduler import LeaseLost
from memos.storage.relational.models import JobRow

KIND = "extract.deferred"

#: Alice's city changes turn after turn: the last one must be the one fact left standing
CITIES = ["Berlin", "Paris", "Lisbon", "Madrid", "Vienna", "Prague", "Oslo", "Rome"]


def _turns(prefix: str = "t") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "name": "Alice",
            "content": f"I moved to {city} this spring.",
            "id": f"{prefix}{i}",
            "timestamp": f"2024-05-{i + 1:02d}T10:00:00Z",
        }
        for i, city in enumerate(CITIES)
    ]


def _facts(mos: Any, cube: str) -> dict[str, list[str]]:
    """The cube's facts by state, texts sorted."""
    out: dict[str, list[str]] = {}
    for m in mos.list(user_id="alice", cube_id=cube, states=None, filters={"type": "fact"}, limit=1000).items:
        out.setdefault(m.state, []).append(m.text)
    return {k: sorted(v) for k, v in out.items()}


def _jobs(mos: Any, cube: str | None = None) -> list[JobRow]:
    with mos.store.read_session() as s:
        query = select(JobRow).where(JobRow.kind == KIND).order_by(JobRow.id)
        if cube is not None:
            query = query.where(JobRow.cube_id == cube)
        return list(s.scalars(query))


@pytest.fixture
def home(make_mos: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, str]:
    """alice with an inline cube (the reference) and a deferred one, queued one episode a
    job (so order and concurrency are exercised job by job)."""
    monkeypatch.setattr(maintenance, "PER_JOB", 1)
    mos = make_mos()
    mos.add_user("alice")
    inline = mos.create_cube("alice", "inline").id
    deferred = mos.create_cube("alice", "deferred").id
    mos.add(messages=_turns(), user_id="alice", cube_id=inline, session_id="s")
    mos.add(messages=_turns(), user_id="alice", cube_id=deferred, session_id="s", extract="defer")
    return mos, inline, deferred


def test_a_deferred_add_queues_its_jobs_with_its_rows(home: tuple[Any, str, str]) -> None:
    mos, inline, deferred = home
    jobs = _jobs(mos, deferred)
    turn = {m.id: m.provenance.message_id for m in mos.list(user_id="alice", cube_id=deferred).items}
    assert [[turn[i] for i in j.payload["memory_ids"]] for j in jobs] == [
        [f"t{i}"] for i in range(len(CITIES))
    ]
    assert {(j.state, j.payload["actor"], j.payload["done"]) for j in jobs} == {("queued", "alice", 0)}
    assert _jobs(mos, inline) == []  # extracted inline: nothing queued
    assert mos.stats()["extraction_pending"] == len(CITIES)
    assert _facts(mos, deferred) == {}


def test_a_failed_add_leaves_no_job(make_mos: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mos = make_mos()
    mos.add_user("alice")
    cube = mos.create_cube("alice", "c").id

    def broken(row: Any) -> Any:  # fails after the jobs were written, inside the add's transaction
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(adding, "memory_from_row", broken)
    with pytest.raises(RuntimeError):
        mos.add(messages=_turns(), user_id="alice", cube_id=cube, extract="defer")
    monkeypatch.undo()
    assert _jobs(mos) == [] and mos.stats()["extraction_pending"] == 0
    assert mos.list(user_id="alice", cube_id=cube).items == []


def test_a_worker_applies_the_queue_once_and_in_order(home: tuple[Any, str, str]) -> None:
    mos, inline, deferred = home
    assert mos.scheduler.run_worker(until_idle=True) == len(CITIES)
    assert _facts(mos, deferred) == _facts(mos, inline)
    lives = [t for t in _facts(mos, deferred)["active"] if "lives in" in t]
    assert len(lives) == 1 and "Rome" in lives[0]  # the last move stands, the others superseded
    assert {(j.state, j.attempts, j.payload["done"]) for j in _jobs(mos)} == {("done", 1, 1)}
    assert mos.stats()["extraction_pending"] == 0
    before = mos.stats()
    assert mos.scheduler.worker().run_once() is None  # nothing left; running again changes nothing
    assert mos.run_deferred_extraction() == 0
    assert mos.stats() == before


def test_two_workers_keep_the_order(home: tuple[Any, str, str]) -> None:
    mos, inline, deferred = home
    # more cubes, so both workers have work at once; each cube's jobs still run one at a time
    cubes = [deferred] + [mos.create_cube("alice", f"more-{i}").id for i in range(3)]
    for cube in cubes[1:]:
        mos.add(messages=_turns(), user_id="alice", cube_id=cube, extract="defer")
    firsts = {j.id for j in _jobs(mos) if j.payload["memory_ids"] and j.id == _jobs(mos, j.cube_id)[0].id}

    def slow_start(job: Any) -> None:  # a worker slow to start a cube's first job: the other must wait
        if job.id in firsts and job.progress is None:
            time.sleep(0.3)

    ran: list[int] = []
    workers = [mos.scheduler.worker(worker_id=f"w{i}", on_progress=slow_start) for i in range(2)]
    threads = [threading.Thread(target=lambda w=w: ran.append(w.run(until_idle=True))) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sum(ran) == len(CITIES) * len(cubes)
    for cube in cubes:
        assert _facts(mos, cube) == _facts(mos, inline)
    assert {(j.state, j.attempts) for j in _jobs(mos)} == {("done", 1)}  # none ran twice


def test_run_deferred_extraction_drains_the_jobs_and_leaves_a_held_one_to_its_worker(
    home: tuple[Any, str, str],
) -> None:
    mos, inline, deferred = home
    queue = mos.scheduler.queue
    held = queue.claim("elsewhere", kinds=[KIND], lease=60)
    assert held is not None and held.payload["memory_ids"] == _jobs(mos)[0].payload["memory_ids"]
    assert queue.claim("another", kinds=[KIND]) is None  # serial: the next one waits for it
    assert mos.run_deferred_extraction() == 0  # held by a live worker: it and the later ones are its
    assert mos.stats()["extraction_pending"] == len(CITIES)
    # the worker died: once its lease expired, the inline run takes its job over
    mos.clock.advance(seconds=61)
    assert mos.run_deferred_extraction(batch=3) == len(CITIES)
    assert _facts(mos, deferred) == _facts(mos, inline)
    assert {j.state for j in _jobs(mos)} == {"done"}
    with pytest.raises(LeaseLost):  # the old holder is fenced off: nothing it does applies
        Maintenance(mos.home).extract_job_step(lambda s: queue.fence(s, held))
    assert _facts(mos, deferred) == _facts(mos, inline)


def test_a_job_resumed_after_its_worker_died_applies_each_step_once(
    make_mos: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mos = make_mos()
    mos.add_user("alice")
    inline = mos.create_cube("alice", "inline").id
    deferred = mos.create_cube("alice", "deferred").id
    mos.add(messages=_turns(), user_id="alice", cube_id=inline)
    mos.add(messages=_turns(), user_id="alice", cube_id=deferred, extract="defer")
    [job] = _jobs(mos)  # one job of all eight
    queue = mos.scheduler.queue
    first = queue.claim("doomed", kinds=[KIND], lease=60)
    assert first is not None
    # one step of three memories commits, then the worker is killed before the rest
    assert Maintenance(mos.home).extract_job_step(lambda s: queue.fence(s, first), batch=3) == (3, 5)
    assert mos.stats()["extraction_pending"] == 5
    mos.clock.advance(seconds=61)
    assert mos.scheduler.run_worker(until_idle=True) == 1
    [again] = _jobs(mos)
    assert (again.state, again.attempts, again.payload["done"], again.result) == (
        "done",
        2,
        8,
        {"memories": 5},
    )
    assert _facts(mos, deferred) == _facts(mos, inline)  # steps 1-3 again would have doubled facts


def test_purge_and_update_take_memories_out_of_the_queue(home: tuple[Any, str, str]) -> None:
    mos, _, deferred = home
    turn = {m.provenance.message_id: m for m in mos.list(user_id="alice", cube_id=deferred).items}
    items = [turn[f"t{i}"] for i in range(len(CITIES))]
    mos.purge(items[-1].id, user_id="alice")  # "Rome": purged before extraction
    mos.update(items[-2].id, user_id="alice", text="I moved to Oslo this spring, for good.")  # extracted now
    assert mos.stats()["extraction_pending"] == len(CITIES) - 2
    assert mos.run_deferred_extraction() == len(CITIES) - 2
    facts = _facts(mos, deferred)
    assert not any("Rome" in t for v in facts.values() for t in v)
    assert all(items[-1].id not in (j.payload["memory_ids"]) for j in _jobs(mos))  # no trace of it


def test_stats_and_doctor_count_the_queue_from_the_jobs(make_mos: Any, tmp_path: Path, backend: str) -> None:
    from test_cli import cli, cli_json, ok

    if backend == "postgres":
        pytest.skip("the CLI opens the default SQLite home; the SDK half runs on PostgreSQL elsewhere")
    path = tmp_path / "cli-home"
    mos = make_mos(path)
    mos.add_user("alice")
    cube = mos.create_cube("alice", "c").id
    mos.add(messages=_turns(), user_id="alice", cube_id=cube, extract="defer")
    assert mos.stats()["extraction_pending"] == len(CITIES)
    mos.close()
    report = cli_json(path, "doctor")
    assert report["extraction"]["pending"] == len(CITIES) and report["extraction"]["jobs_failed"] == 0
    assert any("queued for extraction" in n for n in report["notes"])
    ok(cli(path, "scheduler", "run", "--until-idle"))
    report = cli_json(path, "doctor")
    assert report["extraction"]["pending"] == 0 and report["notes"] == []
    jobs = cli_json(path, "scheduler", "jobs", "--kind", KIND)
    assert [j["state"] for j in jobs] == ["done"]
    # a job that failed for good is a problem doctor names (exit status 1)
    mos = make_mos(path)
    mos.add(messages=_turns("u"), user_id="alice", cube_id=cube, extract="defer")
    job = mos.scheduler.queue.claim("w", kinds=[KIND])
    assert job is not None
    mos.scheduler.queue.fail(job, "the extractor crashed", retry=False)
    assert (mos.stats()["extraction_jobs_failed"], mos.stats()["extraction_pending"]) == (1, 0)
    mos.close()
    result = cli(path, "--json", "doctor")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["extraction"]["jobs_failed"] == 1
    assert any("extraction jobs failed" in p for p in report["problems"])


def _downgrade(mos: Any, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from memos.storage.relational.engine import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with mos.store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_an_old_home_with_extract_tasks_opens_and_runs_its_queue(make_mos: Any, tmp_path: Path) -> None:
    """A home as the version before left it: schema 0004, deferred extraction in ``extract_tasks``."""
    path = tmp_path / "old"
    mos = make_mos(path)
    mos.add_user("alice")
    inline = mos.create_cube("alice", "inline").id
    old = mos.create_cube("alice", "old").id
    mos.add(messages=_turns(), user_id="alice", cube_id=inline)
    stored = mos.add(messages=_turns(), user_id="alice", cube_id=old, extract=False).memories
    _downgrade(mos, "0004")
    with mos.store.engine.begin() as conn:
        assert (
            "extract_tasks" in mos.store.tables()
            and conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
        )
        for m in stored:
            conn.execute(
                text(
                    "INSERT INTO extract_tasks (memory_id, cube_id, actor, created_at) VALUES (:m, :c, 'alice', :t)"
                ),
                {"m": m.id, "c": old, "t": mos.clock.now},
            )
    mos.close()
    mos = make_mos(path)  # migrated on open
    assert "extract_tasks" not in mos.store.tables()
    [job] = _jobs(mos)
    assert (job.cube_id, job.state, job.payload["memory_ids"]) == (old, "queued", [m.id for m in stored])
    assert mos.stats()["extraction_pending"] == len(CITIES)
    assert mos.run_deferred_extraction() == len(CITIES)
    assert _facts(mos, old) == _facts(mos, inline)


def test_the_migration_down_and_up_keeps_the_queue(make_mos: Any, tmp_path: Path) -> None:
    mos = make_mos(tmp_path / "h")
    mos.add_user("alice")
    cube = mos.create_cube("alice", "c").id
    added = mos.add(messages=_turns(), user_id="alice", cube_id=cube, extract="defer").memories
    mos.purge(added[0].id, user_id="alice")
    _downgrade(mos, "0004")
    with mos.store.engine.connect() as conn:
        tasks = conn.execute(text("SELECT memory_id FROM extract_tasks ORDER BY id")).scalars().all()
    assert tasks == [m.id for m in added[1:]]
    mos.store.migrate()
    assert mos.stats()["extraction_pending"] == len(CITIES) - 1


# --------------------------------------------------------------------------- recurring policy runs


def test_tick_queues_policy_runs_once_per_interval(make_mos: Any) -> None:
    mos = make_mos(scheduler={"policy_interval": "1h", "blob_sweep_interval": None})  # see test_blob_sweep
    mos.add_user("alice")
    cubes = sorted(mos.create_cube("alice", n).id for n in ("a", "b"))
    queued = mos.scheduler.tick()
    assert sorted(j.cube_id for j in queued) == cubes and {j.kind for j in queued} == {"policy.apply"}
    assert mos.scheduler.tick() == []  # queued just now
    mos.clock.advance(minutes=61)
    # due again, but not run yet: keyed by cube, ticking (by any worker) finds the live jobs
    assert sorted(j.id for j in mos.scheduler.tick()) == sorted(j.id for j in queued)
    assert mos.scheduler.run_worker(until_idle=True) == 2
    assert len(mos.scheduler.jobs(kind="policy.apply")) == 2
    mos.clock.advance(minutes=59)
    assert mos.scheduler.tick() == []
    mos.clock.advance(minutes=2)
    assert sorted(j.cube_id for j in mos.scheduler.tick()) == cubes
    assert [j.state for j in mos.scheduler.jobs(kind="policy.apply")] == ["queued"] * 2 + ["done"] * 2


def test_a_worker_ticks_and_without_an_interval_nothing_is_queued(make_mos: Any, tmp_path: Path) -> None:
    off = make_mos(tmp_path / "off", scheduler={"blob_sweep_interval": None})
    off.add_user("alice")
    off.create_cube("alice", "a")
    assert off.home.settings.scheduler.policy_interval is None
    assert off.scheduler.tick() == [] and off.scheduler.run_worker(until_idle=True) == 0
    assert off.scheduler.jobs() == []
    off.close()
    on = make_mos(tmp_path / "on", scheduler={"policy_interval": "30m"})
    on.add_user("bob")  # on PostgreSQL the home is the same database: alice's cube is there too
    on.create_cube("bob", "b")
    cubes = on.stats()["cubes"]
    assert on.scheduler.run_worker(until_idle=True) == cubes  # the worker ticked, then ran them
    assert [j.state for j in on.scheduler.jobs(kind="policy.apply")] == ["done"] * cubes


def test_policy_interval_setting() -> None:
    from datetime import timedelta

    from memos.config import SchedulerSettings
    from memos.errors import ConfigError

    assert SchedulerSettings().policy_interval is None
    assert SchedulerSettings(policy_interval="90m").policy_interval == timedelta(minutes=90)
    with pytest.raises((ValueError, ConfigError)):
        SchedulerSettings(policy_interval="often")
