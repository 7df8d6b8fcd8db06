"""Workers: claim a job, run the handler of its kind, record the outcome; heartbeat meanwhile.

A handler is ``handler(ctx: JobContext) -> dict | None``: it reads ``ctx.job`` (kind,
payload, cube, and ``id``/``attempts``), does the work, may report ``ctx.progress(f, msg)``
and returns a JSON object kept as the job's result. The contract:

- **Idempotent effect.** The queue guarantees at most one live lease per job, not that
  a job runs once: a worker killed after the effect and before recording it runs the job
  again. Key what you write by ``ctx.job.id`` (or make it a no-op the second time).
- **Steps.** ``ctx.progress`` and ``ctx.check()`` are step boundaries: there the handler
  raises :class:`~memos.scheduler.jobs.JobCancelled` if a cancel was requested (the job
  ends ``cancelled``) or :class:`WorkerStopping` if the worker is stopping (SIGTERM,
  ``stop()``: the job goes back to the queue without counting an attempt). A handler
  that never checks finishes its job first (and it ends ``done``: its effect happened).
- **Errors.** An exception fails the attempt: retried with backoff until ``max_attempts``,
  then ``failed`` with the error. ``InvalidInput``, ``NotFound`` and ``PermissionDenied``
  fail at once (retrying bad input changes nothing), as does a kind with no handler.

Handlers are found by kind in the dict given to the worker; ``memos scheduler run`` adds
those of the entry-point group ``memos.job_handlers`` and ``--handler kind=module:func``.
A worker claims only the kinds it has handlers for (or the ``kinds`` it is given: then a
kind it has no handler for fails, saying so), so workers with different handlers — a
GPU worker for training, CPU workers for the rest — can share one queue.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from memos.errors import Cancelled, InvalidInput, MemosError, NotFound, PermissionDenied
from memos.scheduler.jobs import Job, JobCancelled, JobQueue, LeaseLost

log = logging.getLogger(__name__)

#: what ``handler(ctx)`` returns: the job's result (a JSON object) or None
Handler = Callable[["JobContext"], "dict[str, Any] | None"]

#: entry-point group of third-party handlers: ``kind = "package.module:function"``
ENTRY_POINT_GROUP = "memos.job_handlers"

#: errors retrying cannot fix
_PERMANENT = (InvalidInput, NotFound, PermissionDenied)


class WorkerStopping(Cancelled):
    """The worker is stopping; the job is given back to the queue untouched."""


def load_handler(spec: str) -> Handler:
    """A handler from ``module:function``."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise InvalidInput(f"a handler is named module:function, got {spec!r}")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"cannot load job handler {spec!r}: {exc}") from exc
    if not callable(found):
        raise InvalidInput(f"job handler {spec!r} is not callable")
    return found  # type: ignore[no-any-return]


def installed_handlers() -> dict[str, Handler]:
    """The handlers registered under the ``memos.job_handlers`` entry-point group."""
    return {ep.name: load_handler(ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)}


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)
class JobContext:
    """What a handler gets: its job, the application it runs in, and step boundaries."""

    job: Job
    #: what the runner was built with (the ``MemOS`` of ``memos scheduler run``), or None
    app: Any
    worker: Worker
    cancel_seen: threading.Event = field(default_factory=threading.Event)
    lease_lost: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress (0..1), then :meth:`check`."""
        job = self.worker.queue.progress(self.job, fraction, message)
        if job.cancel_requested:  # no need to wait for the next heartbeat
            self.cancel_seen.set()
        if self.worker.on_progress is not None:
            self.worker.on_progress(job)
        self.check()

    def check(self) -> None:
        """A step boundary: stop here if the job was cancelled, its lease lost, or the
        worker is stopping."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"job {self.job.id}: the lease was lost; stop without applying anything more")
        if self.cancel_seen.is_set():
            raise JobCancelled(f"job {self.job.id} was cancelled while running")
        if self.worker.stopping:
            raise WorkerStopping(
                f"worker {self.worker.id} is stopping; job {self.job.id} goes back to the queue"
            )


class Worker:
    """Runs jobs from ``queue`` with ``handlers`` (by kind): in this thread (:meth:`run`,
    :meth:`run_once`) or in a background thread (:meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        kinds: Iterable[str] | None = None,
        lease: float = 60.0,
        poll: float = 1.0,
        app: Any = None,
        on_progress: Callable[[Job], None] | None = None,
        tick: Callable[[], object] | None = None,
    ) -> None:
        if not lease > 0 or not poll > 0:
            raise InvalidInput(f"lease and poll are positive seconds, got lease={lease!r}, poll={poll!r}")
        self.queue = queue
        self.handlers = handlers  # read at each job: kinds registered later are found
        self.id = worker_id or default_worker_id()
        self.kinds = list(kinds) if kinds is not None else None
        self.lease = lease
        self.poll = poll
        self.app = app
        #: told of each job when it starts and at each progress report (a display)
        self.on_progress = on_progress
        #: called between jobs, at most once a ``poll``: queues recurring work (Scheduler.tick)
        self.tick = tick
        self._next_tick = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ running
    def run_once(self) -> Job | None:
        """Claim one due job and run it; the job as it ended (None: nothing was due).

        A worker claims the kinds it was told to (``kinds``), else those it has a handler
        for: a job another worker can run is left to it, not failed here."""
        kinds = self.kinds if self.kinds is not None else list(self.handlers)
        if not kinds:
            return None
        job = self.queue.claim(self.id, kinds=kinds, lease=self.lease)
        return None if job is None else self._run(job)

    def run(
        self,
        *,
        until_idle: bool = False,
        max_jobs: int | None = None,
        on_job: Callable[[Job], None] | None = None,
    ) -> int:
        """Run jobs until :meth:`stop` (or, with ``until_idle``, until none is due),
        telling ``on_job`` how each ended. Returns how many were run."""
        ran = 0
        while not self._stop.is_set() and (max_jobs is None or ran < max_jobs):
            self._tick()
            try:
                job = self.run_once()
            except MemosError as exc:  # the store is busy or gone for a moment: try again later
                log.warning("worker %s could not claim a job: %s", self.id, exc)
                job = None
            if job is not None:
                ran += 1
                if on_job is not None:
                    on_job(job)
            elif until_idle:
                break
            else:
                self._stop.wait(self.poll)
        return ran

    def _tick(self) -> None:
        if self.tick is None or time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + self.poll
        try:
            self.tick()
        except MemosError as exc:  # the store is busy for a moment: the next tick queues it
            log.warning("worker %s could not queue recurring jobs: %s", self.id, exc)

    def stop(self, timeout: float | None = None) -> None:
        """Ask the worker to stop after its current step; with a background thread, wait
        for it up to ``timeout`` seconds."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None

    def start(self) -> None:
        """Run in a background (daemon) thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"memos-worker-{self.id}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop_on_signals(self) -> dict[int, Any]:
        """SIGTERM and SIGINT stop the worker after its current step (main thread only).
        Returns the handlers they had, to put back."""
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        return previous

    # ------------------------------------------------------------------ one job
    def _run(self, job: Job) -> Job:
        handler = self.handlers.get(job.kind)
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            reason = f"no handler for job kind {job.kind!r} in this worker (known: {known})"
            return self._record(job, lambda: self.queue.fail(job, reason, retry=False))
        ctx = JobContext(job=job, app=self.app, worker=self)
        if self.on_progress is not None:
            self.on_progress(job)
        beat = threading.Thread(
            target=self._heartbeat, args=(ctx,), name=f"memos-heartbeat-{job.id}", daemon=True
        )
        beat.start()
        try:
            result = handler(ctx)
        except JobCancelled:
            return self._record(job, lambda: self.queue.acknowledge_cancel(job))
        except LeaseLost as exc:
            log.warning("worker %s: %s", self.id, exc)
            return job
        except (WorkerStopping, KeyboardInterrupt, SystemExit) as exc:
            self._record(job, lambda: self.queue.release(job))
            if isinstance(exc, WorkerStopping):
                return job
            raise
        except Exception as exc:  # noqa: BLE001 - any handler error fails the attempt, with its reason
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("job %s (%s) attempt %s failed: %s", job.id, job.kind, job.attempts, reason)
            retry = not isinstance(exc, _PERMANENT)
            return self._record(job, lambda: self.queue.fail(job, reason, retry=retry))
        finally:
            ctx.finished.set()
            beat.join()
        return self._record(job, lambda: self.queue.complete(job, result))

    def _record(self, job: Job, write: Callable[[], Job]) -> Job:
        try:
            return write()
        except LeaseLost as exc:
            log.warning("worker %s: %s", self.id, exc)
        except MemosError as exc:  # the lease will expire and another attempt will run it
            log.error("worker %s could not record job %s: %s", self.id, job.id, exc)
        return job

    def _heartbeat(self, ctx: JobContext) -> None:
        """Extend the lease every third of it while the handler runs."""
        while not ctx.finished.wait(self.lease / 3):
            try:
                self.queue.heartbeat(ctx.job, lease=self.lease)
            except JobCancelled:
                ctx.cancel_seen.set()
            except LeaseLost:
                ctx.lease_lost.set()
                return
            except MemosError as exc:  # busy for a moment; the next beat may pass
                log.warning("worker %s could not extend the lease of job %s: %s", self.id, ctx.job.id, exc)
