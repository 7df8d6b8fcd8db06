"""``mos.scheduler``: the jobs of a home, as the facade offers them (SDK, CLI).

Who may do what: the home's operator (``user_id=None``, e.g. the CLI without ``--user``)
sees, enqueues and cancels every job; a user only the jobs of cubes they own (a job
with no cube is the operator's). A job of a cube the user cannot see is :class:`NotFound`,
as if it did not exist.

With ``scheduler.mode = "background"`` (``MemOS(..., scheduler="background")``) a worker
thread runs due jobs in this process until :meth:`Scheduler.close` (``MemOS.close``).

Built-in kinds: ``extract.deferred`` (the extraction queued by ``add(..., extract="defer")``,
see :mod:`memos.memories.maintenance`; run by any worker of a home with an extractor) and
``policy.apply`` (:mod:`memos.scheduler.policies`). With ``scheduler.policy_interval`` set,
every worker's :meth:`Scheduler.tick` queues ``policy.apply`` for each cube whose last run
is older than the interval (keyed by cube: several workers ticking queue it once).
``maintenance.sweep_blobs`` removes the blob files no row names, older than
``scheduler.blob_sweep_grace`` (:meth:`memos.memories.maintenance.Maintenance.sweep_blobs`);
with ``scheduler.blob_sweep_interval`` set (a day by default) the ticks keep one queued,
due an interval after the last one ended (the first: an interval after the first tick),
brought forward when the interval is shortened; turned off, the one queued does nothing.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from memos import acl
from memos.errors import InvalidInput, NotFound, PermissionDenied
from memos.home import Home
from memos.memories.maintenance import Maintenance
from memos.scheduler.jobs import QUEUED, RUNNING, STATES, Backoff, Job, JobQueue
from memos.scheduler.worker import Handler, JobContext, Worker, installed_handlers, load_handler
from memos.storage.relational.models import EXTRACT_JOB, LIVE_JOB_STATES, AclRow, CubeRow, JobRow

log = logging.getLogger(__name__)

#: the job kind that applies a cube's policies (:meth:`memos.scheduler.policies.Policies.apply`)
POLICY_JOB = "policy.apply"
#: the job kind that removes the blob files no row names (its payload may hold ``grace``, seconds)
SWEEP_JOB = "maintenance.sweep_blobs"
#: the results list at most this many of the files a sweep removed (all are counted)
SWEEP_LISTED = 1000


@dataclass(frozen=True, slots=True)
class SchedulerStatus:
    """Jobs per state (``totals``) and per kind and state (``kinds``), the running jobs,
    and whether this process runs a background worker."""

    mode: str
    background: bool
    totals: dict[str, int]
    kinds: dict[str, dict[str, int]]
    running: list[Job]


class Scheduler:
    def __init__(self, home: Home, *, app: Any = None) -> None:
        self.home = home
        self.app = app
        cfg = home.settings.scheduler
        self.queue = JobQueue(
            home.store, home.clock, max_attempts=cfg.max_attempts, backoff=Backoff(base=cfg.backoff_seconds)
        )
        #: handlers by job kind: ``register``'s, then the installed ones (``memos.job_handlers``,
        #: loaded when the first worker is built); the background worker reads it live
        self.handlers: dict[str, Handler] = {}
        self._installed = False
        self._background: Worker | None = None
        self._maintenance = Maintenance(home)
        if home.extractor is not None:  # else deferred extraction waits for a home with one
            self.register(EXTRACT_JOB, self._run_extraction)
        self.register(SWEEP_JOB, self._run_blob_sweep)
        if cfg.mode == "background":
            self.start_background()

    # ------------------------------------------------------------------ handlers and workers
    def register(self, kind: str, handler: Handler) -> None:
        """Run jobs of ``kind`` with ``handler`` in this process's workers (see
        :mod:`memos.scheduler.worker` for the contract: its effect must be idempotent)."""
        self.handlers[kind] = handler

    def worker(
        self,
        *,
        handlers: Mapping[str, Handler | str] | None = None,
        kinds: Iterable[str] | None = None,
        worker_id: str | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Worker:
        """A worker over this home's queue, with the registered handlers and ``handlers``
        (a handler, or its name as ``module:function``)."""
        cfg = self.home.settings.scheduler
        if not self._installed:
            for kind, found in installed_handlers().items():
                self.handlers.setdefault(kind, found)
            self._installed = True
        extra = {k: load_handler(h) if isinstance(h, str) else h for k, h in (handlers or {}).items()}
        table = {**self.handlers, **extra} if extra else self.handlers
        return Worker(
            self.queue,
            table,
            worker_id=worker_id,
            kinds=kinds,
            lease=cfg.lease_seconds,
            poll=cfg.poll_seconds,
            app=self.app,
            on_progress=on_progress,
            tick=self.tick
            if cfg.policy_interval is not None or cfg.blob_sweep_interval is not None
            else None,
        )

    def run_worker(
        self,
        *,
        handlers: Mapping[str, Handler | str] | None = None,
        kinds: Iterable[str] | None = None,
        worker_id: str | None = None,
        until_idle: bool = False,
        max_jobs: int | None = None,
        stop_on_signals: bool = False,
        on_job: Callable[[Job], None] | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> int:
        """Run jobs in this thread until stopped (SIGTERM/SIGINT with ``stop_on_signals``),
        or until none is due (``until_idle``); ``on_progress`` hears of each job as it
        starts and progresses, ``on_job`` as it ends. Returns how many ran."""
        worker = self.worker(handlers=handlers, kinds=kinds, worker_id=worker_id, on_progress=on_progress)
        previous = worker.stop_on_signals() if stop_on_signals else {}
        try:
            return worker.run(until_idle=until_idle, max_jobs=max_jobs, on_job=on_job)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start_background(self) -> None:
        """Run due jobs in a background thread of this process (until :meth:`close`)."""
        if self._background is None or not self._background.alive:
            self._background = self.worker()
            self._background.start()

    def close(self) -> None:
        """Stop the background worker after its current step (its job goes back to the
        queue if the handler checks; else the worker waits for it up to a lease)."""
        if self._background is not None:
            self._background.stop(timeout=self.home.settings.scheduler.lease_seconds)
            if self._background.alive:
                log.warning("the background worker did not stop within a lease; its job will be re-run")
            self._background = None

    def tick(self) -> list[Job]:
        """Queue the recurring work that is due: ``policy.apply`` for each cube whose last
        run (its latest ``policy.apply`` job: when it finished, or was queued if it has not)
        is ``scheduler.policy_interval`` old or more, and the next blob sweep if none is
        queued. Keyed (by cube; the sweep by kind), so workers ticking at once queue one
        job. Workers call it between jobs; returns the jobs queued (or the live ones found)."""
        return self._tick_policies() + self._tick_blob_sweep()

    def _tick_policies(self) -> list[Job]:
        interval = self.home.settings.scheduler.policy_interval
        if interval is None or POLICY_JOB not in self.handlers:
            return []
        now = self.home.clock()
        with self.home.store.read_session() as s:
            last = dict(
                s.execute(
                    select(JobRow.cube_id, func.max(func.coalesce(JobRow.finished_at, JobRow.created_at)))
                    .where(JobRow.kind == POLICY_JOB)
                    .group_by(JobRow.cube_id)
                ).all()
            )
            due = [
                c
                for c in s.scalars(select(CubeRow.id).order_by(CubeRow.id))
                if (t := last.get(c)) is None or t <= now - interval
            ]
        if not due:
            return []
        with self.home.store.session() as s:
            return [self.queue.enqueue(POLICY_JOB, {}, cube_id=c, key=c, session=s) for c in due]

    def _tick_blob_sweep(self) -> list[Job]:
        """Keep the next ``maintenance.sweep_blobs`` queued: due ``scheduler.blob_sweep_interval``
        after the last one ended (or, the first, after now). A queued one due later than
        that (the interval was shortened since it was queued) is brought forward."""
        interval = self.home.settings.scheduler.blob_sweep_interval
        if interval is None or SWEEP_JOB not in self.handlers:
            return []
        with self.home.store.read_session() as s:
            live = s.execute(  # the live-key index: cheap at every tick
                select(JobRow.id, JobRow.state, JobRow.run_after, JobRow.created_at).where(
                    JobRow.kind == SWEEP_JOB, JobRow.dedup_key == SWEEP_JOB, JobRow.state.in_(LIVE_JOB_STATES)
                )
            ).first()
            last = s.scalar(select(func.max(JobRow.finished_at)).where(JobRow.kind == SWEEP_JOB))
        if live is not None and last is None:  # none ended yet: the queued one counts from when it was queued
            last = live.created_at
        now = self.home.clock()
        due = now + interval if last is None else max(now, last + interval)
        if live is None:
            return [self.queue.enqueue(SWEEP_JOB, {}, key=SWEEP_JOB, run_after=due)]
        if live.state == RUNNING or live.run_after <= due:
            return []
        with self.home.store.session() as s:  # only while it is still queued (no worker took it)
            s.execute(
                update(JobRow)
                .where(JobRow.id == live.id, JobRow.state == QUEUED, JobRow.run_after > due)
                .values(run_after=due, updated_at=now)
            )
        return []

    def _run_blob_sweep(self, ctx: JobContext) -> dict[str, Any]:
        """``maintenance.sweep_blobs``: says how many files went, and which (the first
        :data:`SWEEP_LISTED`). One the ticks queued does nothing once
        ``scheduler.blob_sweep_interval`` is off (an operator's own runs still sweep)."""
        if ctx.job.key == SWEEP_JOB and self.home.settings.scheduler.blob_sweep_interval is None:
            return {"removed": 0, "files": [], "skipped": "scheduler.blob_sweep_interval is off"}
        removed = self._maintenance.sweep_blobs(grace=ctx.job.payload.get("grace"), actor="scheduler")
        return {"removed": len(removed), "files": removed[:SWEEP_LISTED]}

    def _run_extraction(self, ctx: JobContext) -> dict[str, Any]:
        """``extract.deferred``: the job's memories, in steps fenced by this worker's lease
        (short ones: a step holds the write lock, and progress and cancel land between)."""
        done = 0
        while True:
            n, left = self._maintenance.extract_job_step(lambda s: self.queue.fence(s, ctx.job), batch=500)
            done += n
            if not left:
                return {"memories": done}
            ctx.progress(done / (done + left), f"{left} memories left to extract")

    # ------------------------------------------------------------------ jobs
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        key: str | None = None,
        run_after: datetime | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        """Queue a job (with ``key``: the live job of that kind and key if there is one)."""
        if user_id is not None:
            if cube_id is None:
                raise PermissionDenied("only the home's operator (no user) may queue a job that has no cube")
            with self.home.store.read_session() as s:
                acl.require(s, cube_id, user_id, acl.OWNER)
        return self.queue.enqueue(
            kind, payload, cube_id=cube_id, key=key, run_after=run_after, max_attempts=max_attempts
        )

    def get(self, job_id: int, *, user_id: str | None = None) -> Job:
        job = self.queue.get(job_id)
        self._check(job, user_id)
        return job

    def jobs(
        self,
        *,
        user_id: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        cube_id: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs newest first, filtered; a user sees those of the cubes they own."""
        cubes = self._cubes(user_id, cube_id)
        return self.queue.list(state=state, kind=kind, cube_ids=cubes, limit=limit)

    def cancel(self, job_id: int, *, user_id: str | None = None) -> Job:
        """Cancel a queued job; ask a running one to stop at its next step."""
        self._check(self.queue.get(job_id), user_id)
        return self.queue.cancel(job_id)

    def prune(self, *, older_than_days: float = 7.0, user_id: str | None = None) -> int:
        """Delete the records of jobs that finished more than ``older_than_days`` ago
        (the home's operator only). Returns how many."""
        if user_id is not None:
            raise PermissionDenied("only the home's operator (no user) may prune the job history")
        if (
            isinstance(older_than_days, bool)
            or not isinstance(older_than_days, int | float)
            or older_than_days < 0
        ):
            raise InvalidInput(f"older_than_days is a number >= 0, got {older_than_days!r}")
        return self.queue.prune(self.home.clock() - timedelta(days=older_than_days))

    def status(self, *, user_id: str | None = None) -> SchedulerStatus:
        cubes = self._cubes(user_id, None)
        kinds = self.queue.counts(cubes)
        totals = {state: sum(k[state] for k in kinds.values()) for state in STATES}
        running = self.queue.list(state=RUNNING, cube_ids=cubes, limit=100) if totals[RUNNING] else []
        return SchedulerStatus(
            mode=self.home.settings.scheduler.mode,
            background=self._background is not None and self._background.alive,
            totals=totals,
            kinds=kinds,
            running=running,
        )

    # ------------------------------------------------------------------ access
    def _cubes(self, user_id: str | None, cube_id: str | None) -> list[str] | None:
        """The cubes whose jobs the caller may see (None: all, the operator)."""
        with self.home.store.read_session() as s:
            if user_id is None:
                return None if cube_id is None else [cube_id]
            return acl.maintained_cubes(s, user_id, None if cube_id is None else [cube_id], acl.OWNER)

    def _check(self, job: Job, user_id: str | None) -> None:
        if user_id is None:
            return
        with self.home.store.read_session() as s:
            acl.user(s, user_id)
            if job.cube_id is None or s.get(AclRow, (job.cube_id, user_id)) is None:
                raise NotFound(f"no job {job.id}")
            acl.require(s, job.cube_id, user_id, acl.OWNER)
