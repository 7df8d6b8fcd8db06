"""The vector index never holds a memory's words in clear.

The index keeps, per point, the fields searches filter on: speaker, role, session,
tags, metadata. A purge deletes the point, but an engine forgets lazily: Qdrant Edge
kept a purged memory's tags and metadata in its write-ahead log (``index/wal``) and its
segment and payload-index files after close, reopen, 300 more adds, a reindex and an
optimize (issue 19). Rather than chase every copy an engine may keep, the index is never
given them: :class:`SealedIndex` replaces each of those values — and each metadata key —
by a keyed BLAKE2b digest before it reaches the engine, and seals the values of a
filter the same way, so the equality filters the kernel uses match exactly as before.
The key is random per home and lives in the relational store (``meta['index']``), the
truth that a purge does erase; an index file alone cannot be tested for a guessed tag.

What the engine still keeps of a purged point until it vacuums its segment: its dense
vector and its lexical term ids (31-bit hashes of words, :mod:`memos.plaintext.retrieval.lexical`), no text.

A home whose index was built before sealing (no key recorded) is read unsealed until a
full ``reindex`` seals it (:meth:`memos.memories.maintenance.Maintenance.reindex`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import update

from memos.protocols import (
    FieldMatch,
    FieldRange,
    IndexFilter,
    IndexHit,
    IndexPoint,
    SparseVector,
    VectorIndex,
)
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import MemoryRow, MetaRow

#: payload fields whose values are sealed (``metadata`` keys and values too); ``cube_id``,
#: ``type`` and ``ts`` are ids, an enum and a time, and stay readable
SEALED_FIELDS = frozenset({"speaker", "role", "session_id", "tags"})
_METADATA = "metadata"


def new_key() -> str:
    """A fresh sealing key (hex), for a new index."""
    return secrets.token_hex(32)


class Sealer:
    """Keyed digests of payload values and keys."""

    def __init__(self, key_hex: str) -> None:
        self._key = bytes.fromhex(key_hex)

    def _digest(self, text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8"), key=self._key, digest_size=16).hexdigest()

    def value(self, value: Any) -> str | None:
        """The sealed form of a value a filter can name (str, int, bool — bools equal to
        their ints, as in Python and in :func:`memos.plaintext.retrieval.retriever.row_matches`); ``None`` for
        values no filter can match (floats that are not whole, objects, null)."""
        if isinstance(value, str):
            return self._digest("s:" + value)
        if isinstance(value, bool | int):
            return self._digest(f"n:{int(value)}")
        if isinstance(value, float) and value.is_integer():
            return self._digest(f"n:{int(value)}")
        return None

    def values(self, value: Any) -> list[str] | str | None:
        if isinstance(value, list | tuple):
            sealed = [v for v in (self.value(x) for x in value) if v is not None]
            return sealed or None
        return self.value(value)

    def metadata_key(self, key: str) -> str:
        return "k" + self._digest("k:" + key)[:24]

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in payload.items():
            if field == _METADATA and isinstance(value, dict):
                meta = {}
                for k, v in value.items():
                    sealed = self.values(v)
                    if sealed is not None:
                        meta[self.metadata_key(str(k))] = sealed
                if meta:
                    out[_METADATA] = meta
            elif field in SEALED_FIELDS:
                sealed = self.values(value)
                if sealed is not None:
                    out[field] = sealed
            else:
                out[field] = value
        return out

    def filter(self, flt: IndexFilter) -> IndexFilter:
        must: list[FieldMatch | FieldRange] = []
        for cond in flt.must:
            if isinstance(cond, FieldMatch):
                key = cond.key
                if key.startswith(_METADATA + "."):
                    key = f"{_METADATA}.{self.metadata_key(key.split('.', 1)[1])}"
                elif key not in SEALED_FIELDS:
                    must.append(cond)
                    continue
                # a value no payload can hold matches nothing, as before
                sealed = tuple(v for v in (self.value(x) for x in cond.any) if v is not None)
                must.append(FieldMatch(key=key, any=sealed))
            else:
                must.append(cond)
        return IndexFilter(cube_ids=flt.cube_ids, must=tuple(must))


class SealedIndex:
    """A :class:`~memos.protocols.VectorIndex` that seals payloads and filters on their way
    to ``inner``; everything else is the inner index's."""

    def __init__(self, inner: VectorIndex, key_hex: str | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.sealer = Sealer(key_hex) if key_hex else None

    def seal(self, store: RelationalStore) -> bool:
        """Seal an index built before sealing (``False`` if it is sealed already).

        The key is recorded in the same transaction that marks every row pending, so a
        crash before the points are rebuilt leaves them to the repair on open, which
        writes them sealed. The caller rebuilds (:meth:`Maintenance.reindex`)."""
        if self.sealer is not None:
            return False
        key = new_key()
        with store.session() as s:
            meta = s.get(MetaRow, "index")
            value = dict(meta.value) if meta is not None else {}
            s.merge(MetaRow(key="index", value={**value, "payload_key": key}))
            s.execute(update(MemoryRow).values(index_state="pending"))
        self.sealer = Sealer(key)
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _filter(self, flt: IndexFilter) -> IndexFilter:
        return self.sealer.filter(flt) if self.sealer is not None else flt

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        if self.sealer is not None:
            seal = self.sealer.payload
            points = [IndexPoint(p.id, p.dense, p.sparse, seal(p.payload)) for p in points]
        self.inner.upsert(points)

    def delete(self, ids: Sequence[str]) -> None:
        self.inner.delete(ids)

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[IndexHit]:
        return self.inner.search_dense(vector, self._filter(flt), limit)

    def search_sparse(self, vector: SparseVector, flt: IndexFilter, limit: int) -> list[IndexHit]:
        return self.inner.search_sparse(vector, self._filter(flt), limit)

    def search_both(
        self, dense: Sequence[float] | None, sparse: SparseVector | None, flt: IndexFilter, limit: int
    ) -> tuple[list[IndexHit], list[IndexHit]]:
        return self.inner.search_both(dense, sparse, self._filter(flt), limit)

    def ids(self, cube_id: str) -> set[str]:
        return self.inner.ids(cube_id)

    @property
    def unoptimized_points(self) -> int:
        return self.inner.unoptimized_points

    @unoptimized_points.setter
    def unoptimized_points(self, value: int) -> None:
        self.inner.unoptimized_points = value

    def optimize(self) -> bool:
        return self.inner.optimize()

    def count(self, cube_id: str | None = None) -> int:
        return self.inner.count(cube_id)

    def delete_cube(self, cube_id: str) -> None:
        self.inner.delete_cube(cube_id)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
