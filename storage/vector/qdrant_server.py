"""The scale-out vector index: one collection on a Qdrant server or cluster.

Every cube shares one collection; ``cube_id`` is a keyword payload index marked
``is_tenant`` so the server keeps each cube's points together and every search carries
a ``cube_id`` filter. Vectors and payload are laid out exactly as in the embedded index
(:mod:`memos.storage.vector.qdrant_edge`): a cosine ``dense`` vector and a ``lexical``
sparse vector with the ``IDF`` modifier, fed by :mod:`memos.plaintext.retrieval.lexical`, so an index can
move between the two and score the same.

qdrant-client's in-process mode (``location=":memory:"`` or ``path=...``) runs the same
code without a server and is what the tests use. What we checked in qdrant-client 1.20
local mode:

- named dense + sparse vectors, the ``IDF`` modifier and sparse search work (exact
  brute-force scoring, same IDF formula as the server);
- payload indexes have no effect there and creating one only warns, so we skip them;
- ``path=`` mode stores points in SQLite with pickled values, takes an exclusive file
  lock (one client per directory) and is not thread-safe: in local mode every call is
  serialised by a lock. Use it for tests and development, never as a deployment.

Qdrant's ``MatchAny`` takes only strings or only integers (no booleans), so a
:class:`~memos.protocols.FieldMatch` with booleans or mixed types becomes a disjunction
of ``MatchValue`` conditions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from qdrant_client import QdrantClient, models

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


class QdrantServerSettings(BaseModel):
    """``vector_url`` (a server's, or qdrant-client's in-process mode), ``vector_api_key``
    and ``vector_collection``."""

    model_config = ConfigDict(extra="forbid")

    url: str
    api_key: str | None = None
    collection: str = "memos"


class QdrantServerIndex:
    """A :class:`~memos.protocols.VectorIndex` on one collection of a Qdrant server.

    Give ``url`` (and ``api_key``) for a server, or ``location=":memory:"`` / ``path=``
    for qdrant-client's in-process mode; with none of them qdrant-client connects to
    ``localhost:6333``. The collection is created when missing; one that exists with
    another vector layout raises :class:`~memos.errors.ConfigError`.
    """

    name = "qdrant"
    Settings = QdrantServerSettings
    #: a server builds its HNSW graphs itself, in the background; local mode scans
    unoptimized_points = 0

    def __init__(
        self,
        dim: int,
        url: str | None = None,
        *,
        location: str | None = None,
        path: str | None = None,
        collection: str = "memos",
        api_key: str | None = None,
    ) -> None:
        if dim <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dim}")
        self.dim = dim
        self.collection = collection
        self._local = location == ":memory:" or path is not None
        where = url or location or path or "localhost:6333"
        self._where = f"{where}/{collection}"
        # Local mode is plain Python over numpy and SQLite; a remote client is thread-safe.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._local else contextlib.nullcontext()
        )
        self._closed = False
        self._indexed: set[str] = set()  # payload fields with an index (server mode)
        try:
            self._client = QdrantClient(
                url=url,
                location=location,
                path=str(path) if path is not None else None,
                api_key=api_key,
                # We serialise local-mode calls ourselves, so SQLite may be used from any thread.
                force_disable_check_same_thread=self._local,
            )
        except (ValueError, RuntimeError) as exc:  # bad arguments; a locked local path
            raise StorageError(f"cannot open the Qdrant index at {where}: {exc}") from exc
        try:
            with self._engine("open"):
                self._ensure_collection()
        except BaseException:
            self._client.close()  # release a local path's lock before reporting
            raise

    @classmethod
    def from_settings(cls, settings: QdrantServerSettings, dim: int, home: Path) -> QdrantServerIndex:
        """The index ``vector_url`` names: ``qdrant://host:port`` or ``http(s)://…`` for a
        server, ``:memory:`` or ``qdrant-local:PATH`` for qdrant-client's in-process mode."""
        url, collection = settings.url, settings.collection
        if url == ":memory:":
            return cls(dim, location=":memory:", collection=collection)
        if url.startswith("qdrant-local:"):
            return cls(
                dim, path=str(Path(url.removeprefix("qdrant-local:")).expanduser()), collection=collection
            )
        if url.startswith("qdrant://"):
            url = "http://" + url.removeprefix("qdrant://")
        return cls(dim, url=url, api_key=settings.api_key, collection=collection)

    # ------------------------------------------------------------------ lifecycle

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self.collection):
            try:
                self._client.create_collection(
                    self.collection,
                    vectors_config={
                        DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                )
                logger.info("created Qdrant collection %s (dim=%d)", self._where, self.dim)
            except Exception:
                # Another process may have created it meanwhile; validate what is there.
                if not self._client.collection_exists(self.collection):
                    raise
        self._check_layout()
        if not self._local:
            self._ensure_payload_indexes()

    def _check_layout(self) -> None:
        params = self._client.get_collection(self.collection).config.params
        dense = params.vectors.get(DENSE) if isinstance(params.vectors, dict) else None
        sparse = (params.sparse_vectors or {}).get(LEXICAL)
        problems = []
        if dense is None:
            problems.append(f"no dense vector named '{DENSE}'")
        elif dense.size != self.dim:
            problems.append(f"dense vectors have {dense.size} dimensions, not {self.dim}")
        elif dense.distance != models.Distance.COSINE:
            problems.append(f"dense distance is {dense.distance.value}, not Cosine")
        if sparse is None or sparse.modifier != models.Modifier.IDF:
            problems.append(f"no sparse vector '{LEXICAL}' with the IDF modifier")
        if problems:
            raise ConfigError(
                f"Qdrant collection {self._where} does not match this configuration: "
                f"{'; '.join(problems)}. Use another collection name, or rebuild it with `memos reindex`"
            )

    def _ensure_payload_indexes(self) -> None:
        present = set(self._client.get_collection(self.collection).payload_schema)
        wanted: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
            "cube_id": models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
        }
        wanted.update({key: models.PayloadSchemaType.KEYWORD for key in KEYWORD_FIELDS})
        wanted.update({key: models.PayloadSchemaType.FLOAT for key in FLOAT_FIELDS})
        for key, schema in wanted.items():
            if key not in present:
                self._client.create_payload_index(self.collection, key, field_schema=schema, wait=True)
                present.add(key)
        self._indexed = present

    @contextlib.contextmanager
    def _engine(self, action: str) -> Iterator[QdrantClient]:
        """Serialise (local mode), hand out the client and wrap backend errors."""
        with self._lock:
            if self._closed:
                raise StorageError(f"the vector index {self._where} is closed")
            try:
                yield self._client
            except MemosError:
                raise
            except Exception as exc:
                raise StorageError(f"vector index {action} failed ({self._where}): {exc}") from exc

    def flush(self) -> None:
        """Nothing to do: the server's WAL (or local mode's SQLite) persists every write."""

    def optimize(self) -> bool:
        """Nothing to do: the server optimizes its segments itself, and qdrant-client's local
        mode has no search structures to build."""
        return False

    def close(self) -> None:
        """Close the client (and release a local ``path``); closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._client.close()
            except Exception as exc:
                raise StorageError(f"closing the vector index {self._where} failed: {exc}") from exc

    # ------------------------------------------------------------------ writes

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points (vectors and whole payload) by memory id."""
        if not points:
            return
        structs = [self._point(p) for p in points]
        with self._engine("upsert") as client:
            if not self._local:  # the in-process mode has no payload indexes
                fields = metadata_index_fields((p.payload for p in points), self._indexed)
                for key, kind in fields.items():
                    schema = (
                        models.PayloadSchemaType.KEYWORD
                        if kind == "keyword"
                        else models.PayloadSchemaType.INTEGER
                    )
                    client.create_payload_index(self.collection, key, field_schema=schema, wait=True)
                    self._indexed.add(key)
            client.upsert(self.collection, points=structs, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by memory id; unknown ids are ignored."""
        if not ids:
            return
        selector = models.PointIdsList(points=[point_id(i) for i in ids])
        with self._engine("delete") as client:
            client.delete(self.collection, points_selector=selector, wait=True)

    def delete_cube(self, cube_id: str) -> None:
        """Delete every point of ``cube_id``."""
        selector = models.FilterSelector(filter=_cube_filter((cube_id,)))
        with self._engine("delete_cube") as client:
            client.delete(self.collection, points_selector=selector, wait=True)

    def _point(self, point: IndexPoint) -> models.PointStruct:
        if len(point.dense) != self.dim:
            raise InvalidInput(
                f"memory {point.id}: dense vector has {len(point.dense)} dimensions, the index has {self.dim}"
            )
        if not isinstance(point.payload.get("cube_id"), str):
            raise InvalidInput(f"memory {point.id}: payload needs a string 'cube_id'")
        check_sparse(point.sparse, f"memory {point.id}")
        sparse = models.SparseVector(indices=list(point.sparse.indices), values=list(point.sparse.values))
        vector: dict[str, Any] = {DENSE: [float(x) for x in point.dense], LEXICAL: sparse}
        return models.PointStruct(id=point_id(point.id), vector=vector, payload=dict(point.payload))

    # ------------------------------------------------------------------ reads

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[IndexHit]:
        """Nearest points by cosine similarity among those matching ``flt``."""
        return self.search_both(vector, None, flt, limit)[0]

    def search_sparse(self, vector: SparseVector, flt: IndexFilter, limit: int) -> list[IndexHit]:
        """Best BM25 matches (IDF computed by Qdrant) among points matching ``flt``."""
        return self.search_both(None, vector, flt, limit)[1]

    def search_both(
        self, dense: Sequence[float] | None, sparse: SparseVector | None, flt: IndexFilter, limit: int
    ) -> tuple[list[IndexHit], list[IndexHit]]:
        """Both searches of one query in one request to the server."""
        queries: list[tuple[list[float] | models.SparseVector, str]] = []
        if dense is not None:
            if len(dense) != self.dim:
                raise InvalidInput(f"query vector has {len(dense)} dimensions, the index has {self.dim}")
            queries.append(([float(x) for x in dense], DENSE))
        if sparse is not None and not sparse.indices:
            sparse = None  # no term to ask for: nothing found
        if sparse is not None:
            check_sparse(sparse, "query")
            queries.append(
                (models.SparseVector(indices=list(sparse.indices), values=list(sparse.values)), LEXICAL)
            )
        found = self._query(queries, flt, limit)
        return (found[0] if dense is not None else []), (found[-1] if sparse is not None else [])

    def _query(
        self, queries: list[tuple[list[float] | models.SparseVector, str]], flt: IndexFilter, limit: int
    ) -> list[list[IndexHit]]:
        query_filter = _filter(flt)
        if not queries or query_filter is None or limit <= 0:
            return [[] for _ in queries]
        requests = [
            models.QueryRequest(
                query=query,
                using=using,
                filter=query_filter,
                limit=limit,
                with_payload=False,
                with_vector=False,
            )
            for query, using in queries
        ]
        with self._engine("search") as client:
            responses = client.query_batch_points(self.collection, requests=requests)
        return [[IndexHit(str(p.id), float(p.score)) for p in r.points] for r in responses]

    def ids(self, cube_id: str) -> set[str]:
        """All memory ids indexed for ``cube_id``."""
        found: set[str] = set()
        offset: models.ExtendedPointId | None = None
        while True:
            with self._engine("scroll") as client:
                records, offset = client.scroll(
                    self.collection,
                    scroll_filter=_cube_filter((cube_id,)),
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
            found.update(str(r.id) for r in records)
            if offset is None:
                return found

    def count(self, cube_id: str | None = None) -> int:
        """Exact number of points, in one cube or in all."""
        flt = _cube_filter((cube_id,)) if cube_id is not None else None
        with self._engine("count") as client:
            return int(client.count(self.collection, count_filter=flt, exact=True).count)


# --------------------------------------------------------------------------- helpers


def _cube_filter(cube_ids: Sequence[str]) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="cube_id", match=models.MatchAny(any=list(cube_ids)))]
    )


def _filter(flt: IndexFilter) -> models.Filter | None:
    """The Qdrant filter for ``flt``, or ``None`` when nothing can match."""
    if not flt.cube_ids:
        return None
    conditions: list[models.Condition] = [
        models.FieldCondition(key="cube_id", match=models.MatchAny(any=list(flt.cube_ids)))
    ]
    for cond in flt.must:
        if not isinstance(cond, FieldMatch | FieldRange):
            raise InvalidFilter(f"unsupported filter condition {cond!r}")
        check_key(cond.key)
        if isinstance(cond, FieldMatch):
            if not cond.any:
                return None  # "equals any of nothing" is false
            conditions.append(_match(cond))
        elif cond.gte is not None or cond.lte is not None:  # both open: no constraint
            rng = models.Range(gte=cond.gte, lte=cond.lte)
            conditions.append(models.FieldCondition(key=cond.key, range=rng))
    return models.Filter(must=conditions)


def _match(cond: FieldMatch) -> models.Condition:
    values = list(cond.any)
    if all(isinstance(v, str) for v in values):
        return models.FieldCondition(key=cond.key, match=models.MatchAny(any=[str(v) for v in values]))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return models.FieldCondition(key=cond.key, match=models.MatchAny(any=[int(v) for v in values]))
    # Booleans or mixed types: MatchAny cannot hold them, MatchValue can (one at a time).
    return models.Filter(
        should=[models.FieldCondition(key=cond.key, match=models.MatchValue(value=v)) for v in values]
    )
