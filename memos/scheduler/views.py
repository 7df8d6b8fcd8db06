"""The read-only view of a cube that the policies decide on (:class:`~memos.policies.base.CubeView`).

Built from the cube's rows (no texts but summaries', whose digest tells a person's edit
apart), its access statistics (flushed first: the hits a policy reads are the ones
searches made), its KV prefixes and adapters (:mod:`memos.scheduler.artifacts`), the
knowledge-graph keys of its statements and its audit events since the last apply; the
statements' dense vectors only when a policy asks for them (:meth:`CubeViews.statement_vectors`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from memos.errors import NotFound
from memos.home import Home
from memos.memories.lifecycle import statement_keys
from memos.plaintext.convert import event_from_row
from memos.policies.base import CubeView, MemoryView
from memos.scheduler.artifacts import Artifacts
from memos.storage.relational.models import AuditRow, CubeRow, MemoryRow
from memos.types import AuditEvent, text_digest

#: the audit events a policy is shown at most (the newest since the last apply)
MAX_EVENTS = 1000
#: the cube setting that says when its policies were last applied (the events start after it)
APPLIED_AT = "policies_applied_at"
#: ids per IN (…) query
_CHUNK = 500


class CubeViews:
    """Builds the views; keeps, per cube, its statements' vectors by memory and version."""

    def __init__(self, home: Home, artifacts: Artifacts) -> None:
        self.home = home
        self.artifacts = artifacts
        #: per cube, its statements' vectors by memory id, with the version embedded
        self._vectors: dict[str, dict[str, tuple[int, tuple[float, ...]]]] = {}

    def view(self, cube_id: str) -> tuple[CubeView, list[AuditEvent]]:
        self.home.access.flush()  # the hits a policy reads are the ones searches made
        m = MemoryRow
        columns = (
            m.id, m.type, m.state, m.importance, m.tags, m.meta, m.recorded_at, m.updated_at,
            m.retired_at, m.hits, m.last_accessed, m.session_id, m.source_ids, func.length(m.text),
            m.version,
        )  # fmt: skip
        with self.home.store.read_session() as s:
            cube = s.get(CubeRow, cube_id)
            if cube is None:
                raise NotFound(f"unknown cube {cube_id!r}")
            rows = s.execute(select(*columns).where(m.cube_id == cube_id).order_by(m.recorded_at, m.id)).all()
            since = (cube.settings or {}).get(APPLIED_AT)
            q = select(AuditRow).where(AuditRow.cube_id == cube_id)
            if since is not None:
                q = q.where(AuditRow.ts > datetime.fromisoformat(since))
            events = [event_from_row(e) for e in s.scalars(q.order_by(AuditRow.id.desc()).limit(MAX_EVENTS))]
            owner = cube.owner_id
            keys = statement_keys(s, cube_id)
            artifacts = self.artifacts.views(s, cube_id, {r[0]: (r[2], r[14]) for r in rows})
            # summaries' texts, few and short: whether a person rewrote one (the summaries policy)
            texts = s.execute(select(m.id, m.text).where(m.cube_id == cube_id, m.type == "summary"))
            digests = {str(mid): text_digest(str(text)) for mid, text in texts}
        memories = tuple(
            MemoryView(
                id=r[0],
                type=r[1],
                state=r[2],
                importance=float(r[3]),
                tags=tuple(str(t) for t in r[4] or ()),
                metadata=dict(r[5] or {}),
                recorded_at=r[6],
                updated_at=r[7],
                retired_at=r[8],
                hits=int(r[9] or 0),
                last_accessed=r[10],
                session_id=r[11],
                source_ids=tuple(r[12] or ()),
                chars=int(r[13] or 0),
                text_key=keys[r[0]][0] if r[0] in keys else None,
                relations=keys[r[0]][1] if r[0] in keys else frozenset(),
                version=int(r[14]),
                digest=digests.get(r[0]),
            )
            for r in rows
        )
        runtime = self.home.settings.runtime.name
        view = CubeView(cube_id, owner, memories, artifacts, runtime, self.artifacts.lora_format())
        return view, events[::-1]

    def statement_vectors(self, view: CubeView) -> dict[str, tuple[float, ...]]:
        """The dense vectors of the cube's live statements (those with a text key).

        Embedded with the home's embedder from the rows' texts: for a statement the very
        text and model its index point was embedded from (:func:`memos.plaintext.indexer.index_text`),
        but the index cannot be read back by id (:class:`memos.protocols.VectorIndex`
        searches, it does not return vectors) and is derived: a statement still pending in
        its outbox, or quarantined, has no point there, and the newest duplicate is the one
        most likely not indexed yet. Kept in this process per memory and version, so each
        statement is embedded once per version, not at every apply."""
        wanted = [m.id for m in view.memories if m.text_key is not None]
        known = self._vectors.get(view.cube_id, {})
        with self.home.store.read_session() as s:
            versions: dict[str, int] = {}
            for i in range(0, len(wanted), _CHUNK):
                ids = MemoryRow.id.in_(wanted[i : i + _CHUNK])
                versions.update(
                    (mid, int(v)) for mid, v in s.execute(select(MemoryRow.id, MemoryRow.version).where(ids))
                )
            missing = [mid for mid, v in versions.items() if mid not in known or known[mid][0] != v]
            rows: list[tuple[str, int, str]] = []
            for i in range(0, len(missing), _CHUNK):
                ids = MemoryRow.id.in_(missing[i : i + _CHUNK])
                q = select(MemoryRow.id, MemoryRow.version, MemoryRow.text).where(ids)
                rows += [(mid, int(v), str(t)) for mid, v, t in s.execute(q)]
        embedded = self.home.embedder.embed([t for _, _, t in rows]) if rows else []
        fresh = {mid: known[mid] for mid in versions if mid in known and known[mid][0] == versions[mid]}
        fresh.update(
            {mid: (v, tuple(map(float, vec))) for (mid, v, _), vec in zip(rows, embedded, strict=True)}
        )
        self._vectors[view.cube_id] = fresh  # only the cube's live statements stay cached
        return {mid: vec for mid, (_, vec) in fresh.items()}
