"""The memory scheduler: jobs in the relational store, run by workers under leases.

- :mod:`memos.scheduler.jobs` — :class:`JobQueue` (enqueue, atomic claim, heartbeat,
  complete/fail with backoff, cancel, reclaim of expired leases) and :class:`Job`;
- :mod:`memos.scheduler.worker` — :class:`Worker` (handlers by kind, heartbeats, SIGTERM,
  background thread) and the handler contract;
- :mod:`memos.scheduler.service` — :class:`Scheduler`, ``mos.scheduler`` on the facade.

Policies (issue 21) will be built on these: they decide, jobs carry the work out.
"""

from __future__ import annotations

from memos.scheduler.jobs import STATES, Job, JobCancelled, JobQueue, LeaseLost
from memos.scheduler.service import Scheduler, SchedulerStatus
from memos.scheduler.worker import Handler, JobContext, Worker, WorkerStopping

__all__ = [
    "STATES",
    "Handler",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobQueue",
    "LeaseLost",
    "Scheduler",
    "SchedulerStatus",
    "Worker",
    "WorkerStopping",
]
