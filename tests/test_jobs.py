"""The scheduler's jobs (memos.scheduler): the queue, its leases, workers, and runners.

On real SQLite and PostgreSQL: claims, retries with backoff, cancel, idempotent enqueue,
leases that expire under an injected clock (the old owner is fenced off), a worker
process SIGKILLed in the middle of a job (re-run, effect applied once), two and four
worker processes over one PostgreSQL queue (no job run twice, none lost), and the
background worker beside a busy SDK user in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_URL, Clock

from memos.errors import InvalidInput, InvalidState, NotFound, PermissionDenied
from memos.scheduler import JobCancelled, JobQueue, LeaseLost, Worker
from memos.scheduler.jobs import Backoff
from memos.storage.relational.engine import RelationalStore


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[RelationalStore]:
    url = PG_URL if backend == "postgres" else f"sqlite:///{tmp_path / 'jobs.db'}"
    assert url is not None
    st = RelationalStore(url)
    yield st
    st.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(store: RelationalStore, clock: Clock) -> JobQueue:
    return JobQueue(store, clock, max_attempts=3, backoff=Backoff(base=10, factor=2, cap=100))


def test_enqueue_claim_complete(queue: JobQueue) -> None:
    job = queue.enqueue("reindex", {"n": 1}, cube_id="c1")
    assert (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)
    claimed = queue.claim("w1", lease=30)
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.attempts, claimed.lease_owner) == ("running", 1, "w1")
    assert claimed.lease_expires_at is not None and claimed.started_at is not None
    assert queue.claim("w2") is None  # one job, one lease
    queue.progress(claimed, 0.5, "half way")
    assert (queue.get(job.id).progress, queue.get(job.id).message) == (0.5, "half way")
    done = queue.complete(claimed, {"ok": True})
    assert (done.state, done.result, done.lease_owner, done.progress) == ("done", {"ok": True}, None, 1.0)
    assert done.finished_at is not None
    assert queue.counts() == {"reindex": {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0}}
    with pytest.raises(LeaseLost):  # finished: nobody holds it any more
        queue.complete(claimed)
    assert [j.id for j in queue.list(state="done", kind="reindex", cube_ids=["c1"])] == [job.id]
    assert queue.list(cube_ids=["other"]) == []


def test_claim_order_kinds_and_run_after(queue: JobQueue, clock: Clock) -> None:
    later = queue.enqueue("a", run_after=clock.now + timedelta(seconds=60))
    first = queue.enqueue("a")
    other = queue.enqueue("b")
    got = queue.claim("w", kinds=["b"])
    assert got is not None and got.id == other.id
    got = queue.claim("w", kinds=["a"])
    assert got is not None and got.id == first.id
    assert queue.claim("w") is None  # `later` is not due yet
    clock.advance(seconds=61)
    got = queue.claim("w")
    assert got is not None and got.id == later.id


def test_enqueue_with_a_key_is_idempotent(queue: JobQueue) -> None:
    one = queue.enqueue("compile", {"cube": "c"}, key="c")
    assert queue.enqueue("compile", {"cube": "c"}, key="c").id == one.id  # queued: the same job
    assert queue.enqueue("train", key="c").id != one.id  # another kind, another job
    claimed = queue.claim("w", kinds=["compile"])
    assert claimed is not None
    assert queue.enqueue("compile", key="c").id == one.id  # running: still the same job
    queue.complete(claimed)
    again = queue.enqueue("compile", key="c")  # finished: new work is a new job
    assert again.id != one.id and again.state == "queued"
    assert len(queue.list(kind="compile")) == 2


def test_enqueue_in_the_callers_transaction(queue: JobQueue, store: RelationalStore) -> None:
    """The outbox: a job written with the change that asked for it lives or dies with it."""
    with pytest.raises(RuntimeError), store.session() as s:
        queue.enqueue("extract", {"memory": "m1"}, key="m1", session=s)
        raise RuntimeError("the change failed")
    assert queue.list() == []
    with store.session() as s:
        first = queue.enqueue("extract", {"memory": "m1"}, key="m1", session=s)
        assert queue.enqueue("extract", key="m1", session=s).id == first.id
    assert [j.id for j in queue.list()] == [first.id]


def test_concurrent_enqueues_of_one_key_make_one_job(queue: JobQueue) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for round_ in range(5):
        with ThreadPoolExecutor(6) as pool:
            keys = [f"cube-{round_}"] * 6
            ids = set(pool.map(lambda key: queue.enqueue("compile", key=key).id, keys))
        assert len(ids) == 1
    assert len(queue.list(kind="compile")) == 5


def test_bad_input_is_refused(queue: JobQueue) -> None:
    for call in (
        lambda: queue.enqueue("Bad Kind"),
        lambda: queue.enqueue("k", ["not", "a", "dict"]),  # type: ignore[arg-type]
        lambda: queue.enqueue("k", {"x": object()}),
        lambda: queue.enqueue("k", key=""),
        lambda: queue.enqueue("k", max_attempts=0),
        lambda: queue.claim("w", lease=0),
        lambda: queue.list(state="sleeping"),
        lambda: queue.get("1"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInput):
            call()
    with pytest.raises(NotFound):
        queue.get(999)
    assert queue.list() == []


def test_prune_keeps_recent_and_unfinished_jobs(queue: JobQueue, clock: Clock) -> None:
    old = queue.enqueue("k")
    running = queue.enqueue("k")
    held = queue.claim("w", lease=10_000)
    assert held is not None and held.id == old.id
    queue.complete(held)
    held = queue.claim("w", lease=10_000)
    assert held is not None and held.id == running.id
    clock.advance(days=8)
    recent = queue.enqueue("k")
    assert queue.cancel(recent.id).state == "cancelled"
    waiting = queue.enqueue("k")
    assert queue.prune(clock.now - timedelta(days=7)) == 1
    assert {j.id for j in queue.list()} == {running.id, recent.id, waiting.id}


def test_failures_back_off_then_fail_with_the_reason(queue: JobQueue, clock: Clock) -> None:
    job = queue.enqueue("flaky")
    for attempt, delay in ((1, 10), (2, 20)):
        claimed = queue.claim("w")
        assert claimed is not None and claimed.attempts == attempt
        back = queue.fail(claimed, f"boom {attempt}")
        assert (back.state, back.error) == ("queued", f"boom {attempt}")
        assert queue.claim("w") is None  # backing off
        clock.advance(seconds=delay)
    claimed = queue.claim("w")
    assert claimed is not None and claimed.attempts == 3
    failed = queue.fail(claimed, "boom 3")
    assert failed.state == "failed" and failed.error == "failed on attempt 3 of 3: boom 3"
    clock.advance(seconds=1000)
    assert queue.claim("w") is None and queue.get(job.id).state == "failed"


def test_cancel_queued_and_running(queue: JobQueue) -> None:
    queued = queue.enqueue("k")
    assert queue.cancel(queued.id).state == "cancelled"
    assert queue.claim("w") is None
    running = queue.enqueue("k")
    claimed = queue.claim("w")
    assert claimed is not None and claimed.id == running.id
    asked = queue.cancel(running.id)
    assert (asked.state, asked.cancel_requested) == ("running", True)
    with pytest.raises(JobCancelled):  # the worker learns it at its next heartbeat
        queue.heartbeat(claimed, lease=30)
    assert queue.acknowledge_cancel(claimed).state == "cancelled"
    with pytest.raises(InvalidState, match="cancelled already"):
        queue.cancel(running.id)
    # a cancel requested while an attempt fails (or its worker stops) is not retried
    for finish in (lambda j: queue.fail(j, "boom"), queue.release):
        job = queue.enqueue("k")
        held = queue.claim("w")
        assert held is not None and held.id == job.id
        queue.cancel(job.id)
        assert finish(held).state == "cancelled"
    with pytest.raises(NotFound):
        queue.cancel(12345)


def test_an_expired_lease_returns_the_job_and_fences_the_old_owner(queue: JobQueue, clock: Clock) -> None:
    job = queue.enqueue("k", max_attempts=2)
    old = queue.claim("w1", lease=30)
    assert old is not None
    clock.advance(seconds=20)
    queue.heartbeat(old, lease=30)  # extended: now valid until t+50
    clock.advance(seconds=25)
    assert queue.claim("w2") is None  # still w1's
    clock.advance(seconds=10)  # w1 stopped answering: the lease ran out
    new = queue.claim("w2", lease=30)
    assert new is not None and new.id == job.id
    assert (new.lease_owner, new.attempts) == ("w2", 2)
    for late in (
        lambda: queue.complete(old, {"from": "w1"}),
        lambda: queue.heartbeat(old),
        lambda: queue.fail(old, "x"),
    ):
        with pytest.raises(LeaseLost, match="no longer leased to 'w1'"):
            late()
    clock.advance(seconds=31)  # w2 dies too, on the last attempt: failed, saying why
    assert queue.reclaim_expired() == 1
    dead = queue.get(job.id)
    assert dead.state == "failed" and dead.error is not None and "lease expired" in dead.error
    with pytest.raises(LeaseLost):
        queue.complete(new)
    assert dead.result is None


def test_an_expired_lease_alone_fences_its_owner(queue: JobQueue, clock: Clock) -> None:
    """Even before anyone reclaims it, a lease past its expiry no longer lets the owner finish."""
    queue.enqueue("k")
    held = queue.claim("w1", lease=5)
    assert held is not None
    clock.advance(seconds=6)
    with pytest.raises(LeaseLost):
        queue.complete(held)
    back = queue.claim("w2")
    assert back is not None and back.attempts == 2


def test_worker_runs_handlers_and_records_outcomes(queue: JobQueue) -> None:
    seen: list[tuple[int, int]] = []

    def ok(ctx: Any) -> dict[str, Any]:
        seen.append((ctx.job.id, ctx.job.attempts))
        ctx.progress(0.5, "working")
        return {"double": ctx.job.payload["n"] * 2}

    def broken(ctx: Any) -> None:
        raise RuntimeError("disk on fire")

    def refuses(ctx: Any) -> None:
        raise PermissionDenied("not yours")

    reports: list[tuple[int, float | None, str | None]] = []
    worker = Worker(
        queue,
        {"ok": ok, "broken": broken, "refuses": refuses},
        worker_id="w",
        on_progress=lambda j: reports.append((j.id, j.progress, j.message)),
    )
    a = queue.enqueue("ok", {"n": 21})
    b = queue.enqueue("broken")
    c = queue.enqueue("refuses")
    d = queue.enqueue("mystery")
    assert worker.run(until_idle=True) == 3
    assert queue.get(a.id).result == {"double": 42} and queue.get(a.id).message == "working"
    assert seen == [(a.id, 1)]
    assert reports == [(a.id, None, None), (a.id, 0.5, "working"), (b.id, None, None), (c.id, None, None)]
    retry = queue.get(b.id)
    assert (retry.state, retry.error) == ("queued", "RuntimeError: disk on fire")
    assert queue.get(c.id).state == "failed" and "PermissionDenied: not yours" in str(queue.get(c.id).error)
    assert queue.get(d.id).state == "queued"  # left to a worker that can run it
    assert worker.run_once() is None  # b is backing off
    told = Worker(queue, {"ok": ok}, worker_id="w2", kinds=["mystery"])  # told to, it cannot
    told.run_once()
    unknown = queue.get(d.id)
    assert unknown.state == "failed" and "no handler for job kind 'mystery'" in str(unknown.error)
    assert Worker(queue, {}, worker_id="w3").run_once() is None


def test_worker_stop_releases_the_job_and_cancel_ends_it(queue: JobQueue) -> None:
    def stops(ctx: Any) -> None:
        ctx.worker.stop()  # what SIGTERM does
        ctx.check()  # the step boundary: the job goes back untouched

    def cancelled(ctx: Any) -> None:
        ctx.worker.queue.cancel(ctx.job.id)  # what `memos scheduler cancel` does meanwhile
        ctx.progress(0.1, "step 1")  # the next step sees it
        raise AssertionError("not reached")

    job = queue.enqueue("stops")
    worker = Worker(queue, {"stops": stops, "cancelled": cancelled}, worker_id="w")
    worker.run_once()
    back = queue.get(job.id)
    assert (back.state, back.attempts, back.lease_owner) == ("queued", 0, None)
    assert worker.stopping and worker.run() == 0  # a stopped worker claims nothing
    other = queue.enqueue("cancelled")
    Worker(queue, {"cancelled": cancelled}, worker_id="w2", kinds=["cancelled"]).run_once()
    assert queue.get(other.id).state == "cancelled"
    assert queue.get(job.id).state == "queued"


# ------------------------------------------------------------------------------- processes
HANDLERS = '''
import os, pathlib, time

def effect(ctx):
    """Applies its effect once per job (an exclusive file keyed by the job id)."""
    root = pathlib.Path(ctx.job.payload["dir"])
    with open(root / "executions", "a") as log:
        log.write(f"{ctx.job.id} {ctx.job.attempts}\\n")
    try:
        fd = os.open(root / f"effect-{ctx.job.id}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pass  # applied by an earlier attempt
    else:
        os.close(fd)
        with open(root / "effects", "a") as log:
            log.write(f"{ctx.job.id}\\n")
    if ctx.job.attempts == 1:
        (root / "started").write_text(str(os.getpid()))
        time.sleep(600)  # killed here, after the effect, before the job is recorded done
    return {"applied": True}
'''


def _memos(home: Path, tmp_path: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("memos")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "memos.cli"]
    env = {**os.environ, "MEMOS_HOME": str(home), "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("MEMOS_USER", None)
    return subprocess.Popen([*cmd, *args], env=env, text=True, **popen)


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_replaced_and_the_effect_applied_once(
    tmp_path: Path, embedder: Any
) -> None:
    from memos.core import MemOS

    (tmp_path / "handlers_e.py").write_text(HANDLERS)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[scheduler]\nlease_seconds = 1.0\npoll_seconds = 0.1\n")
    with MemOS(home=home, embedder=embedder) as mos:
        job = mos.scheduler.enqueue("effect", {"dir": str(tmp_path)})
    handler = ["--handler", "effect=handlers_e:effect"]
    first = _memos(home, tmp_path, "scheduler", "run", *handler, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (tmp_path / "started").exists():
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "the worker never started the job"
        time.sleep(0.1)
    first.kill()  # SIGKILL: no cleanup, the lease stays until it expires
    first.wait()
    time.sleep(1.5)  # past the 1 s lease
    second = _memos(
        home,
        tmp_path,
        "--json",
        "scheduler",
        "run",
        "--until-idle",
        *handler,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert json.loads(out) == {"jobs_run": 1}
    assert (tmp_path / "executions").read_text().split("\n")[:-1] == [f"{job.id} 1", f"{job.id} 2"]
    assert (tmp_path / "effects").read_text() == f"{job.id}\n"  # applied exactly once
    with MemOS(home=home, embedder=embedder) as mos:
        done = mos.scheduler.get(job.id)
    assert (done.state, done.attempts, done.result) == ("done", 2, {"applied": True})


WORKER = """
import sys
from memos.scheduler import JobQueue, Worker
from memos.storage.relational.engine import RelationalStore

url, out, name = sys.argv[1:4]
queue = JobQueue(RelationalStore(url))
with open(out, "a") as log:
    def record(ctx):
        log.write(f"{ctx.job.id} {name}\\n")
        log.flush()
        return {"worker": name}
    Worker(queue, {"count": record}, worker_id=name, lease=30, poll=0.05).run(until_idle=True)
"""

N_JOBS = 1000


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [2, 4])
def test_many_worker_processes_on_postgres_run_each_job_once(tmp_path: Path, workers: int) -> None:
    if not PG_URL:
        pytest.skip("PostgreSQL suite skipped: set MEMOS_TEST_POSTGRES_URL to run it (.ci/run does)")
    from conftest import reset_postgres

    reset_postgres(PG_URL)
    store = RelationalStore(PG_URL)
    queue = JobQueue(store)
    ids = {queue.enqueue("count", {"i": i}).id for i in range(N_JOBS)}
    script = tmp_path / "worker_e.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), PG_URL, str(tmp_path / f"log-{w}"), f"w{w}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    runs = [line.split() for w in range(workers) for line in (tmp_path / f"log-{w}").read_text().splitlines()]
    per_job = Counter(int(job) for job, _ in runs)
    assert set(per_job) == ids  # none lost
    assert max(per_job.values()) == 1  # none run twice
    assert len({name for _, name in runs}) > 1  # the work was shared
    assert queue.counts()["count"]["done"] == N_JOBS
    done = {j.id: j.result for j in queue.list(state="done", limit=N_JOBS)}
    assert all(done[int(job)] == {"worker": name} for job, name in runs)
    store.close()


def test_background_worker_beside_a_busy_sdk_user(make_mos: Any, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the embedded case: one process, one SQLite file")
    mos = make_mos(scheduler={"mode": "background", "poll_seconds": 0.05, "lease_seconds": 30})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id

    def note(ctx: Any) -> dict[str, Any]:
        # idempotent: re-adding a message id to a cube is a no-op
        msg = {
            "role": "user",
            "content": f"background note {ctx.job.payload['n']}",
            "id": f"job-{ctx.job.id}",
        }
        ctx.app.add([msg], user_id="alice", cube_id=cube, extract=False)
        return {"n": ctx.job.payload["n"]}

    mos.scheduler.register("note", note)
    assert mos.scheduler.status().background
    jobs = [mos.scheduler.enqueue("note", {"n": n}, user_id="alice", cube_id=cube) for n in range(20)]
    for n in range(40):  # the user keeps writing and reading meanwhile
        mos.add(text=f"foreground fact number {n}", user_id="alice", cube_id=cube)
        if n % 8 == 0:
            mos.search("fact number", user_id="alice", cube_ids=[cube])
    deadline = time.monotonic() + 120
    while mos.scheduler.status().totals["done"] < len(jobs):
        assert time.monotonic() < deadline, mos.scheduler.status()
        time.sleep(0.05)
    texts = [m.text for m in mos.list_memories(user_id="alice", cube_id=cube, limit=500).items]
    assert sorted(t for t in texts if t.startswith("foreground")) == sorted(
        f"foreground fact number {n}" for n in range(40)
    )
    assert sorted(t for t in texts if t.startswith("background")) == sorted(
        f"background note {n}" for n in range(20)
    )
    workers = [t for t in threading.enumerate() if t.name.startswith("memos-worker-")]
    assert workers and all(t.is_alive() for t in workers)
    mos.close()  # stops the worker and joins it
    assert not any(t.is_alive() for t in workers)


def test_scheduler_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memos.config import load_settings
    from memos.errors import ConfigError

    assert load_settings(tmp_path).scheduler.mode == "off"
    assert load_settings(tmp_path, scheduler="background").scheduler.mode == "background"  # the short form
    monkeypatch.setenv("MEMOS_SCHEDULER__LEASE_SECONDS", "7.5")
    assert load_settings(tmp_path).scheduler.lease_seconds == 7.5
    for bad in ("sometimes", {"mode": "off", "workers": 3}, {"lease_seconds": 0}):
        with pytest.raises(ConfigError, match="scheduler"):
            load_settings(tmp_path, scheduler=bad)


def test_who_may_queue_see_and_cancel_jobs(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add_user("bob")
    mos.add_user("carol")
    mos.share_cube(cube, "alice", "bob", "writer")
    job = mos.scheduler.enqueue("compile", user_id="alice", cube_id=cube)
    home_job = mos.scheduler.enqueue("reindex")  # the operator's, no cube
    with pytest.raises(PermissionDenied, match="owner"):
        mos.scheduler.enqueue("compile", user_id="bob", cube_id=cube)  # a writer is not the owner
    with pytest.raises(PermissionDenied, match="operator"):
        mos.scheduler.enqueue("reindex", user_id="alice")
    assert [j.id for j in mos.scheduler.jobs(user_id="alice")] == [job.id]
    assert mos.scheduler.jobs(user_id="bob") == [] and mos.scheduler.jobs(user_id="carol") == []
    assert {j.id for j in mos.scheduler.jobs()} == {job.id, home_job.id}
    with pytest.raises(PermissionDenied):
        mos.scheduler.cancel(job.id, user_id="bob")
    with pytest.raises(NotFound):  # a stranger learns nothing, not even that it exists
        mos.scheduler.cancel(job.id, user_id="carol")
    with pytest.raises(NotFound):
        mos.scheduler.get(home_job.id, user_id="alice")
    assert mos.scheduler.get(job.id, user_id="alice").state == "queued"
    assert mos.scheduler.cancel(job.id, user_id="alice").state == "cancelled"
    assert mos.scheduler.status(user_id="alice").totals["cancelled"] == 1
    assert mos.scheduler.status().totals == {
        "queued": 1,
        "running": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 1,
    }


SLOW_HANDLER = """
import pathlib, time

def slow(ctx):
    pathlib.Path(ctx.job.payload["dir"], "started").write_text("")
    for _ in range(6000):
        time.sleep(0.01)
        ctx.check()  # a step boundary: SIGTERM lands here
    return {"finished": True}
"""


@pytest.mark.slow
def test_sigterm_gives_the_running_job_back(tmp_path: Path, embedder: Any) -> None:
    import signal

    from memos.core import MemOS

    (tmp_path / "slow_e.py").write_text(SLOW_HANDLER)
    home = tmp_path / "home"
    with MemOS(home=home, embedder=embedder) as mos:
        job = mos.scheduler.enqueue("slow", {"dir": str(tmp_path)})
    worker = _memos(
        home, tmp_path, "scheduler", "run", "--handler", "slow=slow_e:slow", stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    while not (tmp_path / "started").exists():
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert time.monotonic() < deadline, "the worker never started the job"
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    with MemOS(home=home, embedder=embedder) as mos:
        back = mos.scheduler.get(job.id)
    assert (back.state, back.attempts, back.lease_owner, back.result) == ("queued", 0, None, None)
