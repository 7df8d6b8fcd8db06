"""Keeping a home healthy: the index checked and rebuilt, queued extraction run, statistics.

Deferred extraction (``add(..., extract="defer")``) is queued on the scheduler's jobs
table: the add writes, in its own transaction, jobs of kind ``extract.deferred`` for its
cube, each listing up to :data:`PER_JOB` of the new episodes in the order they were added
(``{"memory_ids": [...], "actor": user, "done": n}``). The order matters — a functional
fact is superseded by a later one only if the later episode is extracted after — so
these jobs are *serial* (:mod:`memos.scheduler.jobs`): a cube's extraction jobs run one at
a time, in the order they were queued. A job is carried out in steps, each one
transaction that extracts the next episodes and advances ``done`` with them, so a step is
applied once, whoever runs it: a worker (the step is fenced by its lease), or
:meth:`Maintenance.run_deferred_extraction` inline (it locks the queued jobs it drains and
leaves a job a live worker holds, with those after it, to that worker). A purge, or an
update that re-extracts a memory, takes it out of the queue (:func:`forget_deferred`).
"""

from __future__ import annotations

import builtins
import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from memos import acl
from memos.audit import Recording
from memos.blobs import BlobStore
from memos.errors import InvalidInput, PermissionDenied
from memos.events import Event, EventKind
from memos.home import Home
from memos.memories.common import run_extractor
from memos.plaintext.sealing import SealedIndex
from memos.storage.relational.bulk import execute_many
from memos.storage.relational.models import (
    EXTRACT_JOB,
    LIVE_JOB_STATES,
    AuditRow,
    BlobRow,
    CubeRow,
    EdgeRow,
    EntityRow,
    JobRow,
    MemoryRow,
    MetaRow,
    UserRow,
)
from memos.types import (
    INDEXED_STATES,
)

log = logging.getLogger(__name__)

#: episodes per deferred-extraction job (its payload stays well under the jobs' limit)
PER_JOB = 2000
#: a blob sweep's audit row names at most this many of the files it removed (all are counted)
AUDIT_FILES = 100
#: the states a memory of the queue is extracted in (a deleted one is skipped)
_EXTRACTED_STATES = ("active", "archived")


def queue_extraction(
    s: Session, cube_id: str, memory_ids: Sequence[str], actor: str, now: datetime, max_attempts: int
) -> None:
    """Queue the extraction of ``memory_ids`` (just added to ``cube_id``, in this order) as
    ``extract.deferred`` jobs, in the caller's transaction: one many-row insert."""
    ids = builtins.list(memory_ids)
    execute_many(
        s.connection(),
        insert(JobRow.__table__),  # type: ignore[arg-type]
        [
            {
                "kind": EXTRACT_JOB,
                "cube_id": cube_id,
                "payload": {"memory_ids": ids[start : start + PER_JOB], "actor": actor, "done": 0},
                "dedup_key": None,
                "state": "queued",
                "attempts": 0,
                "max_attempts": max_attempts,
                "cancel_requested": False,
                "progress": {},
                "created_at": now,
                "updated_at": now,
                "run_after": now,
            }
            for start in range(0, len(ids), PER_JOB)
        ],
    )


def forget_deferred(s: Session, cube_id: str, memory_ids: Sequence[str]) -> None:
    """Take ``memory_ids`` out of ``cube_id``'s queued extraction, in the caller's
    transaction (a purge; an update that extracted them again). Their places stay, as
    ``null``, so a job's count of what it did stays right."""
    gone = set(memory_ids)
    for job in s.scalars(
        select(JobRow)
        .where(JobRow.kind == EXTRACT_JOB, JobRow.cube_id == cube_id, JobRow.state.in_(LIVE_JOB_STATES))
        .order_by(JobRow.id)
        .with_for_update()
    ):
        ids = job.payload.get("memory_ids", [])
        if not gone.isdisjoint(ids):
            job.payload = {**job.payload, "memory_ids": [None if m in gone else m for m in ids]}


def _left(payload: dict[str, Any]) -> int:
    """The memories a deferred-extraction job still has to extract."""
    return sum(1 for m in payload.get("memory_ids", [])[int(payload.get("done", 0)) :] if m is not None)


class Maintenance:
    """``MemOS.check_index``, ``reindex``, ``run_deferred_extraction``, ``optimize_index``, ``stats``."""

    def __init__(self, home: Home) -> None:
        self.home = home

    def check_index(
        self, *, user_id: str | None = None, cube_ids: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Compare the vector index with the rows, changing nothing (``memos doctor``,
        ``memos reindex --check``).

        ``missing``: rows indexed as done whose point is gone; ``extra``: points of no
        searchable row; ``pending``: rows waiting for the indexer; ``quarantined``: rows the
        index refused (see :mod:`memos.plaintext.indexer`), each with the reason — an update of the
        memory or a ``reindex`` tries them again."""
        with self.home.store.read_session() as s:
            cubes = acl.maintained_cubes(s, user_id, cube_ids, acl.READ)
        report: dict[str, Any] = {
            "cubes": len(cubes),
            "searchable_rows": 0,
            "index_points": 0,
            "missing": 0,
            "extra": 0,
            "pending": 0,
            "quarantined": [],
        }
        for cube_id in cubes:
            in_index = self.home.index.ids(cube_id)
            with self.home.store.read_session() as s:
                rows = s.execute(
                    select(MemoryRow.id, MemoryRow.state, MemoryRow.index_state).where(
                        MemoryRow.cube_id == cube_id
                    )
                ).all()
                quarantined = [i for i, _, ix in rows if ix == "quarantined"]
                errors = self._index_errors(s, quarantined)
            searchable = {i for i, st, ix in rows if st in INDEXED_STATES and ix != "quarantined"}
            report["searchable_rows"] += len(searchable)
            report["index_points"] += len(in_index)
            report["missing"] += sum(
                1 for i, _, ix in rows if i in searchable and ix == "done" and i not in in_index
            )
            report["extra"] += len(in_index - searchable)
            report["pending"] += sum(1 for _, _, ix in rows if ix == "pending")
            report["quarantined"] += [
                {"memory_id": i, "cube_id": cube_id, **errors.get(i, {})} for i in quarantined
            ]
        return report

    @staticmethod
    def _index_errors(s: Session, ids: builtins.list[str]) -> dict[str, dict[str, str]]:
        """The latest ``index_failed`` reason and time of each of ``ids``."""
        out: dict[str, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            for e in s.scalars(
                select(AuditRow)
                .where(AuditRow.memory_id.in_(ids[start : start + 500]), AuditRow.action == "index_failed")
                .order_by(AuditRow.id)
            ):
                assert e.memory_id is not None
                out[e.memory_id] = {"error": str(e.details.get("error", "")), "since": e.ts.isoformat()}
        return out

    def reindex(self, *, user_id: str | None = None, cube_ids: Sequence[str] | None = None) -> int:
        """Rebuild the vector index from the rows (all cubes, or the given ones).

        A reindex of the whole home (no user, no cubes) also seals an index built before
        payloads were sealed (:mod:`memos.plaintext.sealing`)."""
        whole_home = user_id is None and cube_ids is None
        with self.home.store.read_session() as s:
            cube_ids = acl.maintained_cubes(s, user_id, cube_ids, acl.WRITE)
        with self.home.write_lock:
            if whole_home and isinstance(self.home.index, SealedIndex):
                self.home.index.seal(self.home.store)
            n = self.home.indexer.rebuild(builtins.list(cube_ids), after_batch=self.home.optimize_in_rounds)
        self.home.optimize_index()
        return n

    def run_deferred_extraction(
        self, *, user_id: str | None = None, cube_ids: Sequence[str] | None = None, batch: int = 2000
    ) -> int:
        """Run the extraction queued by ``add(..., extract="defer")`` now, in this thread;
        returns memories done.

        Cube by cube, in the order the memories were added, ``batch`` memories per
        transaction, each with the actor that added it; the jobs drained are marked done.
        A job a worker is running now is left to it, with the cube's later ones. Memories
        deleted in the meantime are skipped (and counted), purged ones are not counted.
        Without ``user_id`` (the operator of the home) every cube is processed; with it,
        the cubes that user may write."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput("batch must be a positive integer")
        with self.home.store.read_session() as s:
            if user_id is None and cube_ids is None:  # the operator: every cube with a queue
                cubes = [
                    c
                    for c in s.scalars(
                        select(JobRow.cube_id)
                        .where(JobRow.kind == EXTRACT_JOB, JobRow.state.in_(LIVE_JOB_STATES))
                        .distinct()
                    )
                    if c is not None
                ]
            else:
                cubes = acl.maintained_cubes(s, user_id, cube_ids, acl.WRITE)
        if self.home.extractor is None:
            return 0  # extractor "none": the queue waits for a home configured with one
        done = 0
        for cube_id in cubes:
            while (n := self._drain_step(cube_id, batch)) is not None:
                done += n
        return done

    def _drain_step(self, cube_id: str, batch: int) -> int | None:
        """Extract the next ``batch`` queued memories of ``cube_id`` (None: nothing to take)."""
        with self.home.recording() as rec, self.home.write_lock:
            now = self.home.clock()
            with self.home.store.session() as s:
                jobs = s.scalars(
                    select(JobRow)
                    .where(
                        JobRow.kind == EXTRACT_JOB,
                        JobRow.cube_id == cube_id,
                        JobRow.state.in_(LIVE_JOB_STATES),
                    )
                    .order_by(JobRow.id)
                    .limit(64)
                    .with_for_update()
                ).all()
                taken: builtins.list[tuple[JobRow, int]] = []
                ids: builtins.list[str | None] = []
                actor: str | None = None
                for job in jobs:
                    if (
                        job.state == "running"
                        and job.lease_expires_at is not None
                        and job.lease_expires_at >= now
                    ):
                        break  # a worker holds it: it and the later ones are its to run
                    if taken and job.payload.get("actor") != actor:
                        break  # one actor per transaction: the audit events name who added the memory
                    actor = job.payload.get("actor")
                    queued = job.payload.get("memory_ids", [])
                    start = int(job.payload.get("done", 0))
                    end = min(len(queued), start + batch - len(ids))
                    taken.append((job, end))
                    ids += queued[start:end]
                    if len(ids) >= batch:
                        break
                if not taken:
                    return None
                n, derived, superseded = self._extract(s, rec, cube_id, ids, actor, now)
                for job, end in taken:
                    self._advance(job, end, now)
            self._after_extraction(cube_id, derived, superseded)
        return n

    @staticmethod
    def _advance(job: JobRow, end: int, now: datetime) -> None:
        """Record a drained job's progress inline: done at its end, else queued where it is."""
        ids = job.payload.get("memory_ids", [])
        job.payload = {**job.payload, "done": end}
        job.lease_owner = job.lease_expires_at = None  # an expired lease, taken over here
        job.updated_at = now
        if end >= len(ids):
            job.state, job.finished_at = "done", now
            job.progress = {"fraction": 1.0, "message": "extracted inline (run_deferred_extraction)"}
            job.result = {"memories": sum(1 for m in ids if m is not None)}
        else:
            job.state = "queued"

    def extract_job_step(self, fence: Callable[[Session], JobRow], batch: int = 2000) -> tuple[int, int]:
        """One step of an ``extract.deferred`` job run by a worker: the next ``batch`` of its
        memories, in the transaction that ``fence`` checks the worker's lease in (it raises
        if the lease is lost, and nothing is applied). Returns (memories done, left)."""
        with self.home.recording() as rec, self.home.write_lock:
            now = self.home.clock()
            with self.home.store.session() as s:
                job = fence(s)
                queued = job.payload.get("memory_ids", [])
                start = int(job.payload.get("done", 0))
                end = min(len(queued), start + batch)
                assert job.cube_id is not None
                cube_id = job.cube_id
                n, derived, superseded = self._extract(
                    s, rec, cube_id, queued[start:end], job.payload.get("actor"), now
                )
                job.payload = {**job.payload, "done": end}
                left = _left(job.payload)
            self._after_extraction(cube_id, derived, superseded)
        return n, left

    def _extract(
        self,
        s: Session,
        rec: Recording,
        cube_id: str,
        ids: Sequence[str | None],
        actor: str | None,
        now: datetime,
    ) -> tuple[int, builtins.list[MemoryRow], builtins.list[str]]:
        """Extract the queued memories ``ids`` in order; (memories found, derived, superseded)."""
        mids = [m for m in ids if m is not None]  # None: taken out of the queue
        found: dict[str, MemoryRow] = {}
        for start in range(0, len(mids), 500):
            for row in s.scalars(select(MemoryRow).where(MemoryRow.id.in_(mids[start : start + 500]))):
                found[row.id] = row
        rows = [found[m] for m in mids if m in found and found[m].state in _EXTRACTED_STATES]
        if not rows:
            return len(found), [], []
        # new=False: links are checked, so a memory extracted meanwhile is not linked twice
        applied, _ = run_extractor(self.home, s, rec, cube_id, rows, now, actor or "system", new=False)
        return len(found), applied.derived, applied.superseded

    def _after_extraction(
        self, cube_id: str, derived: builtins.list[MemoryRow], superseded: builtins.list[str]
    ) -> None:
        self.home.graphs.invalidate(cube_id)
        self.home.indexer.index_rows(derived)
        if superseded:
            self.home.indexer.sync(superseded)
        self.home.optimize_in_rounds()

    def sweep_blobs(
        self, *, grace: float | timedelta | None = None, user_id: str | None = None, actor: str = "operator"
    ) -> builtins.list[str]:
        """Delete the blob files no ``blobs`` row names (a KV prefix or adapter whose row
        went, with the process killed before its file did; a file written for a row that
        never committed) and abandoned temporary files, if their mtime is ``grace`` old
        (seconds; default ``scheduler.blob_sweep_grace``): files younger than that may be
        another process's write whose row has not committed yet. ``grace=0`` only while no
        other process can write blobs (:meth:`MemOS.repair` under the home's lock). The
        scheduler runs it as the job ``maintenance.sweep_blobs``; the home's operator only.
        Returns the names of the files removed; a sweep that removed any is audited
        (``blob_sweep``, no cube, the first :data:`AUDIT_FILES` names) as ``actor``'s."""
        if user_id is not None:
            raise PermissionDenied("only the home's operator (no user) may sweep the blob files")
        if grace is None:
            grace = self.home.settings.scheduler.blob_sweep_grace
        seconds = grace.total_seconds() if isinstance(grace, timedelta) else grace
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
            raise InvalidInput(f"grace is a number of seconds >= 0, got {grace!r}")

        def known() -> set[str]:  # read after the old files are listed: see BlobStore.sweep
            with self.home.store.read_session() as s:
                rows = s.execute(select(BlobRow.sha256, BlobRow.manifest)).all()
            gguf = {str(m["gguf"]["sha256"]) for _, m in rows if isinstance((m or {}).get("gguf"), dict)}
            return {sha for sha, _ in rows} | gguf

        removed = BlobStore(self.home.settings.home).sweep(known, grace=float(seconds))
        if removed:
            log.info("removed %d blob files no row names: %s", len(removed), ", ".join(removed[:5]))
            details = {"removed": len(removed), "files": removed[:AUDIT_FILES], "grace": float(seconds)}
            event = Event(EventKind.blobs_swept, self.home.clock(), actor, None, (), None, details)
            with self.home.recording() as rec, self.home.store.session() as s:
                rec.record(s, event)
        return removed

    def optimize_index(self) -> bool:
        """:meth:`memos.home.Home.optimize_index`."""
        return self.home.optimize_index()

    def stats(self, *, user_id: str | None = None) -> dict[str, Any]:
        """Counts by cube, state and type; index health; extraction failures."""
        with self.home.store.read_session() as s:
            if user_id is not None:
                cubes = acl.readable_cubes(self.home.store, user_id, None)
            else:
                cubes = builtins.list(s.scalars(select(CubeRow.id)))
            by_state = {
                st: n
                for st, n in s.execute(
                    select(MemoryRow.state, func.count())
                    .where(MemoryRow.cube_id.in_(cubes))
                    .group_by(MemoryRow.state)
                )
            }
            by_type = {
                t: n
                for t, n in s.execute(
                    select(MemoryRow.type, func.count())
                    .where(MemoryRow.cube_id.in_(cubes), MemoryRow.state == "active")
                    .group_by(MemoryRow.type)
                )
            }
            pending = s.scalar(
                select(func.count()).select_from(MemoryRow).where(MemoryRow.index_state == "pending")
            )
            quarantined = s.scalar(
                select(func.count())
                .select_from(MemoryRow)
                .where(MemoryRow.cube_id.in_(cubes), MemoryRow.index_state == "quarantined")
            )
            entities = s.scalar(
                select(func.count()).select_from(EntityRow).where(EntityRow.cube_id.in_(cubes))
            )
            edges = s.scalar(select(func.count()).select_from(EdgeRow).where(EdgeRow.cube_id.in_(cubes)))
            deferred = sum(
                _left(p)
                for p in s.scalars(
                    select(JobRow.payload).where(
                        JobRow.kind == EXTRACT_JOB,
                        JobRow.state.in_(LIVE_JOB_STATES),
                        JobRow.cube_id.in_(cubes),
                    )
                )
            )
            failed_jobs = s.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.kind == EXTRACT_JOB, JobRow.state == "failed", JobRow.cube_id.in_(cubes))
            )
            failures = s.get(MetaRow, "extraction_failures")
            reader = s.get(MetaRow, "reader_failures")
            users = s.scalar(select(func.count()).select_from(UserRow))
        out: dict[str, Any] = {
            "users": users,
            "cubes": len(cubes),
            "memories": sum(by_state.values()),
            "by_state": by_state,
            "by_type": by_type,
            "entities": entities,
            "edges": edges,
            "index_points": sum(self.home.index.count(c) for c in cubes),
            "index_pending": pending,
            "index_quarantined": quarantined,
            "extraction_failures": int(failures.value.get("count", 0)) if failures else 0,
            "extraction_pending": deferred,
            # extract.deferred jobs that failed for good (memos scheduler jobs --state failed)
            "extraction_jobs_failed": failed_jobs,
            "relational": self.home.store.dialect,
            "vector_index": self.home.index.name,
            "embedder": self.home.embedder.id,
            # the LLM reader's failures (extractor = "llm"; memos.extract.llm)
            "reader_failures": int(reader.value.get("count", 0)) if reader else 0,
        }
        if reader and reader.value.get("last_error"):
            out["reader_last_error"] = reader.value["last_error"]
        return out
