"""The embedded vector index: one Qdrant Edge shard in a directory.

Qdrant Edge (``qdrant-edge-py``) is Qdrant's engine as an in-process library: no server,
data in ``path`` (segments, a write-ahead log and ``edge_config.json``). The shard holds
every cube; each point is one memory, keyed by its UUID, with

- ``dense``: the embedder's vector, cosine distance;
- ``lexical``: the BM25 term-frequency vector from :mod:`memos.plaintext.retrieval.lexical`, with Qdrant's
  ``IDF`` modifier so inverse document frequencies are computed by the engine at search
  time over the points present;
- a payload with at least ``cube_id``; keyword indexes on ``cube_id`` (tenant),
  ``type``, ``speaker``, ``role``, ``session_id``, ``tags``, a float index on ``ts``, and
  keyword/integer indexes on ``metadata.<key>`` fields, created when a key is first
  upserted (see :func:`~memos.storage.vector._common.metadata_index_fields`).

Facts about qdrant-edge-py 0.9.0 this module depends on (checked, not assumed):

- ``EdgeShard.create(path, config)`` refuses a directory that holds segments;
  ``EdgeShard.load(path, config)`` checks ``config`` against the segments (a different
  dimension raises) and rewrites the stored config, so we always pass the full config.
- A second ``load`` of an open shard fails on the WAL lock ("WouldBlock"): one process
  at a time.
- Updates go to the WAL and are durable when ``update`` returns; ``flush`` persists
  segments, ``close`` flushes and releases the shard (later calls raise).
- HNSW graphs are built only by ``optimize()``; there is no background optimizer. Until
  then filtered searches scan the points the payload index selects, which is fast for
  one cube. :meth:`QdrantEdgeIndex.optimize` is run by maintenance jobs, and by
  :class:`~memos.home.Home` in rounds as points arrive
  (``Settings.index_optimize_every``; :attr:`QdrantEdgeIndex.unoptimized_points` counts
  them).
- Without a size cap every ``optimize()`` merges all segments into one, so its peak
  memory is the old and the new copy of the whole shard (300k points optimized at once:
  2,960 MiB peak). With ``EdgeOptimizersConfig(max_segment_size=…)`` (KB of dense
  vectors) a merge stops at the cap, and optimizing in rounds of 100k points then keeps
  the peak to about one round's worth (engine alone, cap ~130k points' worth, 300k
  points in three rounds: 1,451 MiB peak, 4 segments, recall@10 against exact search
  1.0; ``memos bench scale`` at 1M with this module's cap of :data:`SEGMENT_POINTS`:
  3,622 MiB peak for the whole process). Loading an existing shard with the cap is
  accepted.
- The segments an ``optimize()`` replaced stay on disk and mapped into the process until
  the shard is closed (measured at 50k points: the old segment's 80 MB stayed on disk and
  its vectors resident beside the new segment's), so :meth:`QdrantEdgeIndex.optimize`
  reopens the shard.
- Dotted payload keys (``metadata.topic``) work in filters and payload indexes.
- A Python ``bool`` in ``MatchValue``/``MatchAny`` is converted to an *integer*, so it
  never matches a boolean payload. We therefore store booleans as 0/1 in this index's
  payload (the index is derived; rows hold the real values), and ``FieldMatch(k, (True,))``
  then matches.
- Calls hold the GIL, so a lock around them costs no parallelism; we take one anyway so
  that ``close`` cannot race an in-flight call.
- A filter is checked on every point the HNSW search visits, even one every point
  matches: at 100k points in 8 cubes, a dense query for 100 hits took 3.4 ms with the
  8-cube condition and 1.6 ms without. A search whose cubes include every cube with
  points in the shard (the usual embedded case: one user searching all their cubes)
  therefore runs without the cube condition. The shard is this process's alone (the WAL
  lock above), so the set of cubes with points is known exactly: read once with a facet,
  then kept up to date by our own upserts and cube deletions (a plain point delete leaves
  it a superset, which only makes the shortcut rarer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from pydantic import BaseModel, ConfigDict

from memos.errors import ConfigError, InvalidFilter, InvalidInput, MemosError, StorageError
from memos.protocols import FieldMatch, FieldRange, IndexFilter, IndexHit, IndexPoint, SparseVector
from memos.storage.vector._common import (
    DENSE,
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    LEXICAL,
    SCROLL_PAGE,
    check_key,
    check_sparse,
    metadata_index_fields,
    point_id,
)

logger = logging.getLogger(__name__)


class QdrantEdgeSettings(BaseModel):
    """The embedded index takes no settings: it lives in the home's ``index`` folder
    (``vector_url`` unset)."""

    model_config = ConfigDict(extra="forbid")


class QdrantEdgeIndex:
    """A :class:`~memos.protocols.VectorIndex` on an embedded Qdrant Edge shard at ``path``.

    The shard is created when ``path`` holds none and loaded otherwise; loading a shard
    built with another dimension raises :class:`~memos.errors.ConfigError`.
    """

    name = "qdrant_edge"
    Settings = QdrantEdgeSettings

    @classmethod
    def from_settings(cls, settings: QdrantEdgeSettings, dim: int, home: Path) -> QdrantEdgeIndex:
        return cls(home / "index", dim)

    def __init__(self, path: str | Path, dim: int) -> None:
        if dim <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dim}")
        self.path = Path(path)
        self.dim = dim
        #: points upserted since the last optimize (in this process): what it would index
        self.unoptimized_points = 0
        self._lock = threading.RLock()
        self._indexed: set[str] = set()  # payload fields with an index
        # cubes that may have points here (None: not read yet, or too many to track)
        self._cubes: set[str] | None = None
        self._cubes_read = False
        self._shard: qe.EdgeShard | None = self._open()

    # ------------------------------------------------------------------ lifecycle

    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            optimizers=qe.EdgeOptimizersConfig(
                max_segment_size=max(1, SEGMENT_POINTS * self.dim * 4 // 1024)
            ),
        )

    def _open(self) -> qe.EdgeShard:
        exists = (self.path / "edge_config.json").exists() or (self.path / "segments").exists()
        try:
            if exists:
                shard = qe.EdgeShard.load(str(self.path), self._config())
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                shard = qe.EdgeShard.create(str(self.path), self._config())
        except Exception as exc:
            message = str(exc)
            if "incompatible" in message.lower():
                raise ConfigError(
                    f"the vector index at {self.path} was built with another configuration "
                    f"than dense dim={self.dim} + sparse '{LEXICAL}' ({message}); rebuild it "
                    "into a new path with `memos reindex`, or configure the matching embedder"
                ) from exc
            if "wouldblock" in message.lower():
                raise StorageError(
                    f"the vector index at {self.path} is open in another process or object; "
                    "Qdrant Edge allows one at a time (use a Qdrant server for several)"
                ) from exc
            raise StorageError(f"cannot open the vector index at {self.path}: {message}") from exc
        try:
            self._ensure_payload_indexes(shard)
        except BaseException:
            shard.close()  # release the WAL lock before reporting
            raise
        logger.debug("%s vector index at %s (dim=%d)", "loaded" if exists else "created", self.path, self.dim)
        return shard

    def _ensure_payload_indexes(self, shard: qe.EdgeShard) -> None:
        # Creating an index that exists replaces it (params too), so only add missing ones.
        wanted: dict[str, Any] = {"cube_id": qe.KeywordIndexParams(is_tenant=True)}
        wanted.update({key: qe.PayloadSchemaType.Keyword for key in KEYWORD_FIELDS})
        wanted.update({key: qe.PayloadSchemaType.Float for key in FLOAT_FIELDS})
        try:
            present = set(shard.info().payload_schema)
            for key, schema in wanted.items():
                if key not in present:
                    shard.update(qe.UpdateOperation.create_field_index(key, schema))
                    present.add(key)
        except Exception as exc:
            raise StorageError(f"cannot create payload indexes in {self.path}: {exc}") from exc
        self._indexed = present

    @contextmanager
    def _engine(self, action: str) -> Iterator[qe.EdgeShard]:
        """Hold the lock, hand out the open shard, and wrap engine errors."""
        with self._lock:
            if self._shard is None:
                raise StorageError(f"the vector index at {self.path} is closed")
            try:
                yield self._shard
            except MemosError:
                raise
            except Exception as exc:
                raise StorageError(f"vector index {action} failed ({self.path}): {exc}") from exc

    def flush(self) -> None:
        """Persist all segments (updates are already durable in the WAL)."""
        with self._engine("flush") as shard:
            shard.flush()

    def close(self) -> None:
        """Flush and release the shard; further calls raise. Closing twice is harmless."""
        with self._lock:
            if self._shard is None:
                return
            shard, self._shard = self._shard, None
            try:
                shard.close()
            except Exception as exc:
                raise StorageError(f"closing the vector index at {self.path} failed: {exc}") from exc

    def optimize(self) -> bool:
        """Merge segments and build HNSW graphs, blocking until done (minutes at 100k points).

        A maintenance step (:meth:`memos.protocols.VectorIndex.optimize`), run in rounds as
        the index grows and by ``memos reindex``. Returns whether anything was optimized.
        """
        with self._engine("optimize") as shard:
            changed = bool(shard.optimize())
            self.unoptimized_points = 0
            if changed:
                # The engine keeps the segments it replaced open (on disk and mapped into
                # this process) until the shard is closed; reopening drops them at once.
                self._shard = None
                shard.close()
                self._shard = self._open()
            return changed

    # ------------------------------------------------------------------ writes

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points (vectors and whole payload) by memory id."""
        if not points:
            return
        converted = [self._point(p) for p in points]
        with self._engine("upsert") as shard:
            # metadata fields get a payload index when first seen, so filters on them
            # select points through the index instead of reading every payload
            for key, kind in metadata_index_fields((p.payload for p in points), self._indexed).items():
                schema = qe.PayloadSchemaType.Keyword if kind == "keyword" else qe.PayloadSchemaType.Integer
                shard.update(qe.UpdateOperation.create_field_index(key, schema))
                self._indexed.add(key)
            shard.update(qe.UpdateOperation.upsert_points(converted))
            self.unoptimized_points += len(converted)
            if self._cubes is not None:
                self._cubes.update(p.payload["cube_id"] for p in points)
                if len(self._cubes) > _MAX_TRACKED_CUBES:
                    self._cubes = None

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by memory id; unknown ids are ignored."""
        if not ids:
            return
        point_ids: list[qe.PointId] = [point_id(i) for i in ids]
        with self._engine("delete") as shard:
            shard.update(qe.UpdateOperation.delete_points(point_ids))

    def delete_cube(self, cube_id: str) -> None:
        """Delete every point of ``cube_id``."""
        with self._engine("delete_cube") as shard:
            shard.update(qe.UpdateOperation.delete_points_by_filter(_cube_filter((cube_id,))))
            if self._cubes is not None:
                self._cubes.discard(cube_id)

    def _point(self, point: IndexPoint) -> qe.Point:
        if len(point.dense) != self.dim:
            raise InvalidInput(
                f"memory {point.id}: dense vector has {len(point.dense)} dimensions, the index has {self.dim}"
            )
        if not isinstance(point.payload.get("cube_id"), str):
            raise InvalidInput(f"memory {point.id}: payload needs a string 'cube_id'")
        check_sparse(point.sparse, f"memory {point.id}")
        dense = point.dense
        vectors: dict[str, qe.NamedVector] = {
            # embedders hand out lists of floats; anything else (numpy, ints) is converted
            DENSE: dense if type(dense) is list else [float(x) for x in dense],
            LEXICAL: qe.SparseVector(list(point.sparse.indices), list(point.sparse.values)),
        }
        try:
            return qe.Point(point_id(point.id), vectors, _bools_to_ints(point.payload))
        except (TypeError, ValueError) as exc:  # a payload value JSON cannot hold
            raise InvalidInput(f"memory {point.id}: payload cannot be indexed: {exc}") from exc

    # ------------------------------------------------------------------ reads

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[IndexHit]:
        """Nearest points by cosine similarity among those matching ``flt``."""
        return self.search_both(vector, None, flt, limit)[0]

    def search_sparse(self, vector: SparseVector, flt: IndexFilter, limit: int) -> list[IndexHit]:
        """Best BM25 matches (IDF computed by the engine) among points matching ``flt``."""
        return self.search_both(None, vector, flt, limit)[1]

    def search_both(
        self, dense: Sequence[float] | None, sparse: SparseVector | None, flt: IndexFilter, limit: int
    ) -> tuple[list[IndexHit], list[IndexHit]]:
        """Both searches of one query, planned by the engine as one batch."""
        queries: list[qe.Query] = []
        if dense is not None:
            if len(dense) != self.dim:
                raise InvalidInput(f"query vector has {len(dense)} dimensions, the index has {self.dim}")
            queries.append(qe.Query.Nearest([float(x) for x in dense], using=DENSE))
        if sparse is not None and not sparse.indices:
            sparse = None  # no term to ask for: nothing found
        if sparse is not None:
            check_sparse(sparse, "query")
            query = qe.SparseVector(list(sparse.indices), list(sparse.values))
            queries.append(qe.Query.Nearest(query, using=LEXICAL))
        found = self._query(queries, flt, limit)
        dense_hits = found[0] if dense is not None else []
        sparse_hits = found[-1] if sparse is not None else []
        return dense_hits, sparse_hits

    def _query(self, queries: list[qe.Query], flt: IndexFilter, limit: int) -> list[list[IndexHit]]:
        engine_filter = _filter(flt)
        if not queries or engine_filter is None or limit <= 0:
            return [[] for _ in queries]
        with self._engine("search") as shard:
            if not flt.must and self._covers_all(shard, flt.cube_ids):
                engine_filter = None  # every point matches: skip the per-point check
            requests = [
                qe.QueryRequest(
                    limit=limit, query=q, filter=engine_filter, with_payload=False, with_vector=False
                )
                for q in queries
            ]
            if len(requests) == 1:
                results = [shard.query(requests[0])]
            else:  # one planned pass over the segments for both
                results = shard.query_batch(qe.QueryBatchRequest(requests))
        return [[IndexHit(str(p.id), p.score) for p in points] for points in results]

    def _covers_all(self, shard: qe.EdgeShard, cube_ids: Sequence[str]) -> bool:
        """Whether every point in the shard belongs to one of ``cube_ids`` (lock held)."""
        if not self._cubes_read:
            self._cubes_read = True
            hits = shard.facet(qe.FacetRequest("cube_id", limit=_MAX_TRACKED_CUBES + 1, exact=True)).hits
            self._cubes = {str(h.value) for h in hits} if len(hits) <= _MAX_TRACKED_CUBES else None
        cubes = self._cubes
        return cubes is not None and len(cubes) <= len(cube_ids) and cubes.issubset(cube_ids)

    def ids(self, cube_id: str) -> set[str]:
        """All memory ids indexed for ``cube_id``."""
        found: set[str] = set()
        offset: qe.PointId | None = None
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=SCROLL_PAGE,
                filter=_cube_filter((cube_id,)),
                with_payload=False,
                with_vector=False,
            )
            with self._engine("scroll") as shard:
                records, offset = shard.scroll(request)
            found.update(str(r.id) for r in records)
            if offset is None:
                return found

    def count(self, cube_id: str | None = None) -> int:
        """Exact number of points, in one cube or in all."""
        flt = _cube_filter((cube_id,)) if cube_id is not None else None
        with self._engine("count") as shard:
            return int(shard.count(qe.CountRequest(exact=True, filter=flt)))


# --------------------------------------------------------------------------- helpers

#: a merge stops at this many points' worth of dense vectors (see the module doc)
SEGMENT_POINTS = 200_000

# Past this many cubes in one shard the set is not tracked (and the shortcut not taken):
# a search naming thousands of cubes is not the case it is for.
_MAX_TRACKED_CUBES = 1024


def _bools_to_ints(value: Any) -> Any:
    """``value`` with every bool (at any depth) as 0/1; plain values pass untouched."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return {k: _bools_to_ints(v) if isinstance(v, _NESTED) else v for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bools_to_ints(v) if isinstance(v, _NESTED) else v for v in value]
    return value


#: what :func:`_bools_to_ints` has to look into
_NESTED = (bool, dict, list, tuple)


def _cube_filter(cube_ids: Sequence[str]) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition("cube_id", match=qe.MatchAny(list(cube_ids)))])


def _filter(flt: IndexFilter) -> qe.Filter | None:
    """The engine filter for ``flt``, or ``None`` when nothing can match."""
    if not flt.cube_ids:
        return None
    conditions: list[qe.ConditionType] = [qe.FieldCondition("cube_id", match=qe.MatchAny(list(flt.cube_ids)))]
    for cond in flt.must:
        if not isinstance(cond, FieldMatch | FieldRange):
            raise InvalidFilter(f"unsupported filter condition {cond!r}")
        check_key(cond.key)
        try:
            if isinstance(cond, FieldMatch):
                if not cond.any:
                    return None  # "equals any of nothing" is false
                conditions.append(_match(cond))
            elif cond.gte is not None or cond.lte is not None:  # both open: no constraint
                rng = qe.RangeFloat(gte=cond.gte, lte=cond.lte)
                conditions.append(qe.FieldCondition(cond.key, range=rng))
        except ValueError as exc:  # the engine's JSON-path parser, should our check miss
            raise InvalidFilter(f"invalid payload key {cond.key!r}: {exc}") from exc
    return qe.Filter(must=conditions)


def _match(cond: FieldMatch) -> qe.ConditionType:
    values = list(cond.any)
    if all(isinstance(v, str) for v in values):
        return qe.FieldCondition(cond.key, match=qe.MatchAny([str(v) for v in values]))
    if all(isinstance(v, int) for v in values):  # bools included: stored as 0/1 here
        return qe.FieldCondition(cond.key, match=qe.MatchAny([int(v) for v in values]))
    # MatchAny takes one type; a mixed list becomes a disjunction of exact matches.
    return qe.Filter(should=[qe.FieldCondition(cond.key, match=qe.MatchValue(v)) for v in values])
