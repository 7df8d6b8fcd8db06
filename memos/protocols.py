"""The small Protocols that backends implement.

The kernel (``memos``) owns these; ``memos.storage`` and ``memos.adapters`` implement
them and are chosen by name from the configuration (see :mod:`memos.registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

# --------------------------------------------------------------------------- vectors


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse lexical vector: parallel lists of term ids and weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class IndexPoint:
    """One memory as the vector index sees it. ``id`` is the memory's UUID string."""

    id: str
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """Payload ``key`` equals any of ``any`` (for list payloads: contains any)."""

    key: str
    any: tuple[str | int | bool, ...]


@dataclass(frozen=True, slots=True)
class FieldRange:
    """Numeric payload ``key`` within ``[gte, lte]`` (either bound may be open)."""

    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class IndexFilter:
    """Conjunction of conditions; ``cube_ids`` is always applied (tenancy)."""

    cube_ids: tuple[str, ...]
    must: tuple[FieldMatch | FieldRange, ...] = field(default_factory=tuple)


class IndexHit(NamedTuple):
    """One search result of the index (a named tuple: searches build hundreds of them)."""

    id: str
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """A derived, rebuildable index of dense + sparse vectors with payload filters.

    Upserts are idempotent (keyed by memory id). Implementations must be safe to call
    from several threads of one process.
    """

    name: str

    def upsert(self, points: Sequence[IndexPoint]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[IndexHit]: ...

    def search_sparse(self, vector: SparseVector, flt: IndexFilter, limit: int) -> list[IndexHit]: ...

    def search_both(
        self, dense: Sequence[float] | None, sparse: SparseVector | None, flt: IndexFilter, limit: int
    ) -> tuple[list[IndexHit], list[IndexHit]]:
        """``search_dense`` and ``search_sparse`` of one query in one call (either may be
        ``None``: its list is then empty), so the engine can plan the two together."""
        ...

    def ids(self, cube_id: str) -> set[str]: ...

    def count(self, cube_id: str | None = None) -> int: ...

    def delete_cube(self, cube_id: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- embedders


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-normalised dense vectors."""

    #: stable identifier recorded in archives and index metadata (model + revision)
    id: str

    @property
    def dim(self) -> int:
        """Length of the vectors (may load the model to find out)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...
