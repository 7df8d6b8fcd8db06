"""The scheduler's job queue: rows of work in the relational store, claimed under a lease.

A job is ``queued`` until a worker claims it; the claim makes it ``running`` with the
worker as ``lease_owner`` until ``lease_expires_at`` and counts an attempt. The worker
heartbeats to extend the lease and ends the job ``done`` (with a result), back to
``queued`` with a backoff after a failure, or ``failed`` once ``max_attempts`` claims have
failed (the error says why). A lease that expires — the worker was killed, or hung —
returns the job to the queue at the next claim by anyone; it counts as an attempt.

Claiming is atomic: on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` in the transaction
that marks the row running, so concurrent workers never take one job; on SQLite the write
session's ``BEGIN IMMEDIATE`` serializes claimers. Every later write by the worker is
*fenced* by (id, lease owner, attempt) and a lease still valid: a worker whose lease was
taken over gets :class:`LeaseLost` and its result is not recorded.

The queue guarantees at most one live lease per job, not exactly-once execution: a
worker killed after its effect but before ``complete`` runs the job again. A handler's
effect must therefore be idempotent (keyed by the job's id, or by what it writes).

``enqueue`` with a ``key`` is idempotent: while a job of that kind and key is queued or
running, enqueueing again returns it (a partial unique index enforces it).

Jobs of a *serial* kind (``serial_kinds``; by default deferred extraction, whose facts
must apply in the order the episodes were added) run one at a time per cube, in the
order they were queued: such a job is claimed only once no earlier job of its kind and
cube is queued or running. A handler that commits its effect step by step can check its
lease in the step's own transaction (:meth:`JobQueue.fence`), so a step is applied once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from memos.errors import Cancelled, InvalidInput, InvalidState, NotFound
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import LIVE_JOB_STATES, SERIAL_JOB_KINDS, JobRow

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)

_KIND = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
MAX_KEY_CHARS = 256
MAX_PAYLOAD_BYTES = 256 * 1024


class LeaseLost(InvalidState):
    """This worker no longer holds the job: its lease expired or another worker took it.

    Whatever the worker computed must not be applied; the job's current holder will."""


class JobCancelled(Cancelled):
    """A cancel was requested for a running job (seen at its next heartbeat)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Job:
    """A job as it was when read (a snapshot; the table is the truth)."""

    id: int
    kind: str
    cube_id: str | None
    payload: dict[str, Any]
    key: str | None
    state: str
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: float | None
    message: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        progress = row.progress or {}
        return cls(
            id=row.id,
            kind=row.kind,
            cube_id=row.cube_id,
            payload=dict(row.payload or {}),
            key=row.dedup_key,
            state=row.state,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            lease_owner=row.lease_owner,
            lease_expires_at=row.lease_expires_at,
            cancel_requested=row.cancel_requested,
            progress=progress.get("fraction"),
            message=progress.get("message"),
            result=row.result,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            run_after=row.run_after,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry n (1-based): ``base * factor**(n-1)``, at most ``cap`` seconds."""

    base: float = 5.0
    factor: float = 2.0
    cap: float = 600.0

    def delay(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.cap, self.base * self.factor ** max(0, attempt - 1)))


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise InvalidInput(
            f"a job kind is 1-64 characters of a-z, 0-9 and _ . : - starting with a letter, got {kind!r}"
        )
    return kind


def _check_payload(payload: object) -> dict[str, Any]:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise InvalidInput(f"a job payload is a JSON object (a dict), got {type(payload).__name__}")
    try:
        size = len(json.dumps(payload, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a job payload must be JSON-serializable: {exc}") from exc
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidInput(f"a job payload is at most {MAX_PAYLOAD_BYTES} bytes as JSON, got {size}")
    return payload


def _positive(value: float, name: str) -> timedelta:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise InvalidInput(f"{name} must be a positive number of seconds, got {value!r}")
    return timedelta(seconds=value)


class JobQueue:
    """The ``jobs`` table as a queue. Every time is read from ``clock`` (tests move it)."""

    def __init__(
        self,
        store: RelationalStore,
        clock: Callable[[], datetime] = _utcnow,
        *,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        serial_kinds: Iterable[str] = SERIAL_JOB_KINDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        #: kinds whose jobs of one cube run one at a time, in the order they were queued
        self.serial_kinds = tuple(serial_kinds)

    # ------------------------------------------------------------------ producers
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        cube_id: str | None = None,
        key: str | None = None,
        run_after: datetime | None = None,
        max_attempts: int | None = None,
        session: Session | None = None,
    ) -> Job:
        """Queue a job; with ``key``, return the queued or running job of that kind and key
        if there is one (enqueueing the same work twice yields one job).

        With ``session`` the job is written in the caller's transaction, so it commits or
        rolls back with the change that asked for it (an outbox)."""
        kind = _check_kind(kind)
        payload = _check_payload(payload)
        if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS):
            raise InvalidInput(f"a job key is a non-empty string of at most {MAX_KEY_CHARS} characters")
        attempts = self.max_attempts if max_attempts is None else max_attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise InvalidInput(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        with nullcontext(session) if session is not None else self.store.session() as s:
            for _ in range(3):  # PostgreSQL: a concurrent enqueue of the same key may win the insert
                if key is not None and (live := self._live(s, kind, key)) is not None:
                    return Job.of(live)
                now = self.clock()
                row = JobRow(
                    kind=kind,
                    cube_id=cube_id,
                    payload=payload,
                    dedup_key=key,
                    state=QUEUED,
                    attempts=0,
                    max_attempts=attempts,
                    cancel_requested=False,
                    progress={},
                    created_at=now,
                    updated_at=now,
                    run_after=run_after or now,
                )
                try:
                    with s.begin_nested():  # a savepoint: losing the race keeps the caller's transaction
                        s.add(row)
                except IntegrityError:
                    if key is None:
                        raise
                    continue
                return Job.of(row)
        raise InvalidState(f"could not enqueue job {kind!r} with key {key!r}: its key kept changing hands")

    @staticmethod
    def _live(s: Session, kind: str, key: str) -> JobRow | None:
        return s.scalars(
            select(JobRow).where(
                JobRow.kind == kind, JobRow.dedup_key == key, JobRow.state.in_(LIVE_JOB_STATES)
            )
        ).first()

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job now; ask a running one to stop (its worker sees it at its
        next heartbeat). A finished job cannot be cancelled."""
        with self.store.session() as s:
            row = self._row(s, job_id)
            if row.state == QUEUED:
                row.state, row.finished_at = CANCELLED, self.clock()
            elif row.state == RUNNING:
                row.cancel_requested = True
            else:
                raise InvalidState(
                    f"job {job_id} is {row.state} already; only queued or running jobs can be cancelled"
                )
            row.updated_at = self.clock()
            return Job.of(row)

    # ------------------------------------------------------------------ workers
    def claim(self, worker_id: str, *, kinds: Iterable[str] | None = None, lease: float = 60.0) -> Job | None:
        """Take the next due job (oldest ``run_after`` first) for ``worker_id``, or None.

        Expired leases are returned to the queue first, in the same transaction."""
        span = _positive(lease, "lease")
        kinds = list(kinds) if kinds is not None else None
        due = or_(
            and_(JobRow.state == QUEUED, JobRow.run_after <= self.clock()),
            and_(JobRow.state == RUNNING, JobRow.lease_expires_at < self.clock()),
        )
        with self.store.read_session() as s:  # an idle worker takes no write lock
            if s.scalar(select(JobRow.id).where(due).limit(1)) is None:
                return None
        with self.store.session() as s:
            now = self.clock()
            self._reclaim(s, now)
            query = select(JobRow).where(JobRow.state == QUEUED, JobRow.run_after <= now)
            if kinds is not None:
                query = query.where(JobRow.kind.in_(kinds))
            if self.serial_kinds:
                earlier = aliased(JobRow)
                waiting = exists().where(
                    earlier.kind == JobRow.kind,
                    earlier.cube_id == JobRow.cube_id,
                    earlier.state.in_(LIVE_JOB_STATES),
                    earlier.id < JobRow.id,
                )
                query = query.where(or_(JobRow.kind.not_in(self.serial_kinds), ~waiting))
            query = query.order_by(JobRow.run_after, JobRow.id).limit(1).with_for_update(skip_locked=True)
            row = s.scalars(query).first()
            if row is None:
                return None
            row.state, row.lease_owner, row.lease_expires_at = RUNNING, worker_id, now + span
            row.attempts += 1
            row.started_at = row.updated_at = now
            s.flush()
            return Job.of(row)

    def heartbeat(self, job: Job, *, lease: float = 60.0) -> Job:
        """Extend the lease; raises :class:`LeaseLost` if it is gone, :class:`JobCancelled`
        (after extending) if a cancel was requested."""
        span = _positive(lease, "lease")
        with self.store.session() as s:
            now = self.clock()
            row = self._fenced(s, job, now)
            row.lease_expires_at, row.updated_at = now + span, now
            current = Job.of(row)
        if current.cancel_requested:
            raise JobCancelled(f"job {job.id} was cancelled while running")
        return current

    def progress(self, job: Job, fraction: float, message: str | None = None) -> Job:
        """Record how far the job got (0..1) and what it is doing."""
        if not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise InvalidInput(f"progress is a fraction between 0 and 1, got {fraction!r}")
        with self.store.session() as s:
            now = self.clock()
            row = self._fenced(s, job, now)
            row.progress = {"fraction": float(fraction), "message": message}
            row.updated_at = now
            return Job.of(row)

    def complete(self, job: Job, result: dict[str, Any] | None = None) -> Job:
        """The job is done; ``result`` (a JSON object) is kept with it."""
        result = _check_payload(result)
        with self.store.session() as s:
            now = self.clock()
            row = self._fenced(s, job, now)
            message = (row.progress or {}).get("message")
            self._finish(row, DONE, now)
            row.result, row.progress, row.error = result, {"fraction": 1.0, "message": message}, None
            return Job.of(row)

    def fail(self, job: Job, error: str, *, retry: bool = True) -> Job:
        """A failed attempt: back to the queue after a backoff while attempts remain (and
        ``retry``), else ``failed`` with the reason."""
        with self.store.session() as s:
            now = self.clock()
            row = self._fenced(s, job, now)
            if row.cancel_requested:  # cancelled meanwhile: no retry
                self._finish(row, CANCELLED, now)
                row.error = f"cancelled; the last attempt failed: {error}"
            elif retry and row.attempts < row.max_attempts:
                self._requeue(row, now + self.backoff.delay(row.attempts), now)
                row.error = error
            else:
                self._finish(row, FAILED, now)
                row.error = f"failed on attempt {row.attempts} of {row.max_attempts}: {error}"
            return Job.of(row)

    def release(self, job: Job) -> Job:
        """Give the job back untouched (a worker stopping): queued again at once, this
        attempt not counted (``cancelled`` if a cancel was requested)."""
        with self.store.session() as s:
            now = self.clock()
            row = self._fenced(s, job, now)
            if row.cancel_requested:
                self._finish(row, CANCELLED, now)
            else:
                self._requeue(row, now, now)
                row.attempts -= 1
            return Job.of(row)

    def acknowledge_cancel(self, job: Job) -> Job:
        """The worker stopped the job on a cancel request: it is ``cancelled``."""
        with self.store.session() as s:
            now = self.clock()
            row = self._fenced(s, job, now)
            self._finish(row, CANCELLED, now)
            row.error = "cancelled while running"
            return Job.of(row)

    def prune(self, finished_before: datetime) -> int:
        """Delete finished jobs (done, failed, cancelled) that ended before ``finished_before``:
        the table keeps recent history, not all of it. Returns how many."""
        with self.store.session() as s:
            result = s.execute(
                delete(JobRow).where(
                    JobRow.state.in_((DONE, FAILED, CANCELLED)), JobRow.finished_at < finished_before
                ),
                execution_options={"synchronize_session": False},
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def reclaim_expired(self) -> int:
        """Return running jobs whose lease expired to the queue (or fail them, attempts
        spent); ``claim`` does this too. Returns how many."""
        with self.store.session() as s:
            return self._reclaim(s, self.clock())

    # ------------------------------------------------------------------ reading
    def get(self, job_id: int) -> Job:
        with self.store.read_session() as s:
            return Job.of(self._row(s, job_id, lock=False))

    def list(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        cube_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs, newest first; ``cube_ids`` restricts to those cubes (None: every job)."""
        if state is not None and state not in STATES:
            raise InvalidInput(f"a job state is one of {', '.join(STATES)}; got {state!r}")
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be a positive integer, got {limit!r}")
        query = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
        if state is not None:
            query = query.where(JobRow.state == state)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if cube_ids is not None:
            query = query.where(JobRow.cube_id.in_(list(cube_ids)))
        with self.store.read_session() as s:
            return [Job.of(r) for r in s.scalars(query)]

    def counts(self, cube_ids: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Jobs per kind and state: ``{kind: {state: n}}``."""
        query = select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
        if cube_ids is not None:
            query = query.where(JobRow.cube_id.in_(list(cube_ids)))
        out: dict[str, dict[str, int]] = {}
        with self.store.read_session() as s:
            for kind, state, n in s.execute(query):
                out.setdefault(kind, dict.fromkeys(STATES, 0))[state] = int(n)
        return out

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _row(s: Session, job_id: object, *, lock: bool = True) -> JobRow:
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise InvalidInput(f"a job id is an integer, got {job_id!r}")
        row = s.get(JobRow, job_id, with_for_update=lock)
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def fence(self, s: Session, job: Job) -> JobRow:
        """The job's row, locked in the caller's transaction, if ``job``'s worker still
        holds it; else :class:`LeaseLost` (and the caller's transaction rolls back). A
        handler that commits its effect in steps calls it in each step's transaction, so
        a step is applied by the lease's holder only, and once."""
        return self._fenced(s, job, self.clock())

    @staticmethod
    def _fenced(s: Session, job: Job, now: datetime) -> JobRow:
        row = s.get(JobRow, job.id, with_for_update=True)
        if (
            row is None
            or row.state != RUNNING
            or row.lease_owner != job.lease_owner
            or row.attempts != job.attempts
            or row.lease_expires_at is None
            or row.lease_expires_at < now
        ):
            raise LeaseLost(
                f"job {job.id} (attempt {job.attempts}) is no longer leased to {job.lease_owner!r}: "
                "its lease expired or another worker took it over; this result was not recorded"
            )
        return row

    @staticmethod
    def _finish(row: JobRow, state: str, now: datetime) -> None:
        row.state, row.finished_at, row.updated_at = state, now, now
        row.lease_owner = row.lease_expires_at = None

    @staticmethod
    def _requeue(row: JobRow, run_after: datetime, now: datetime) -> None:
        row.state, row.run_after, row.updated_at = QUEUED, run_after, now
        row.lease_owner = row.lease_expires_at = None

    @staticmethod
    def _reclaim(s: Session, now: datetime) -> int:
        expired = (JobRow.state == RUNNING, JobRow.lease_expires_at < now)
        cleared = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        n = 0
        for where, values in (
            ((JobRow.cancel_requested.is_(True),), {"state": CANCELLED, "finished_at": now}),
            (
                (JobRow.attempts >= JobRow.max_attempts,),
                {
                    "state": FAILED,
                    "finished_at": now,
                    "error": "its lease expired on the last attempt (the worker was killed or hung)",
                },
            ),
            (
                (),
                {
                    "state": QUEUED,
                    "run_after": now,
                    "error": "the lease expired (the worker was killed or hung)",
                },
            ),
        ):
            result = s.execute(
                update(JobRow).where(*expired, *where).values(**cleared, **values),
                execution_options={"synchronize_session": False},
            )
            n += int(getattr(result, "rowcount", 0) or 0)
        return n
