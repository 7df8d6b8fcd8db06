"""Keeping a home healthy: the index checked and rebuilt, queued extraction run, statistics."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from memos import acl
from memos.errors import InvalidInput
from memos.home import Home
from memos.memories.common import run_extractor
from memos.plaintext.sealing import SealedIndex
from memos.storage.relational.models import (
    AuditRow,
    CubeRow,
    EdgeRow,
    EntityRow,
    ExtractTaskRow,
    MemoryRow,
    MetaRow,
    UserRow,
)
from memos.types import (
    INDEXED_STATES,
)

log = logging.getLogger(__name__)


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
        """Run the extraction queued by ``add(..., extract="defer")``; returns memories done.

        Cube by cube, in the order the memories were added, ``batch`` memories per
        transaction, each with the actor that added it. Memories deleted or purged in the
        meantime are skipped. Without ``user_id`` (the operator of the home) every cube
        is processed; with it, the cubes that user may write."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput("batch must be a positive integer")
        with self.home.store.read_session() as s:
            if user_id is None and cube_ids is None:  # the operator: every cube with a queue
                cubes = builtins.list(s.scalars(select(ExtractTaskRow.cube_id).distinct()))
            else:
                cubes = acl.maintained_cubes(s, user_id, cube_ids, acl.WRITE)
        if self.home.extractor is None:
            return 0  # extractor "none": the queue waits for a home configured with one
        done = 0
        for cube_id in cubes:
            while True:
                n = self._run_deferred_batch(cube_id, batch)
                if n == 0:
                    break
                done += n
        return done

    def _run_deferred_batch(self, cube_id: str, batch: int) -> int:
        with self.home.recording() as rec, self.home.write_lock:
            now = self.home.clock()
            with self.home.store.session() as s:
                tasks = s.execute(
                    select(ExtractTaskRow.id, ExtractTaskRow.memory_id, ExtractTaskRow.actor)
                    .where(ExtractTaskRow.cube_id == cube_id)
                    .order_by(ExtractTaskRow.id)
                    .limit(batch)
                ).all()
                if not tasks:
                    return 0
                actor = tasks[0].actor
                run = []  # one actor per transaction: the audit events name who added the memory
                for t in tasks:
                    if t.actor != actor:
                        break
                    run.append(t)
                found: dict[str, MemoryRow] = {}
                mids = [t.memory_id for t in run]
                for start in range(0, len(mids), 500):
                    for row in s.scalars(
                        select(MemoryRow).where(MemoryRow.id.in_(mids[start : start + 500]))
                    ):
                        found[row.id] = row
                rows = [found[m] for m in mids if m in found and found[m].state in ("active", "archived")]
                derived: builtins.list[MemoryRow] = []
                superseded: builtins.list[str] = []
                if rows:
                    # new=False: links are checked, so a memory extracted meanwhile is not linked twice
                    applied, _ = run_extractor(
                        self.home, s, rec, cube_id, rows, now, actor or "system", new=False
                    )
                    derived, superseded = applied.derived, applied.superseded
                task_ids = [t.id for t in run]
                for start in range(0, len(task_ids), 500):
                    s.execute(
                        delete(ExtractTaskRow).where(ExtractTaskRow.id.in_(task_ids[start : start + 500]))
                    )
            self.home.graphs.invalidate(cube_id)
            self.home.indexer.index_rows(derived)
            if superseded:
                self.home.indexer.sync(superseded)
            self.home.optimize_in_rounds()
        return len(run)

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
            deferred = s.scalar(
                select(func.count()).select_from(ExtractTaskRow).where(ExtractTaskRow.cube_id.in_(cubes))
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
            "relational": self.home.store.dialect,
            "vector_index": self.home.index.name,
            "embedder": self.home.embedder.id,
            # the LLM reader's failures (extractor = "llm"; memos.extract.llm)
            "reader_failures": int(reader.value.get("count", 0)) if reader else 0,
        }
        if reader and reader.value.get("last_error"):
            out["reader_last_error"] = reader.value["last_error"]
        return out
