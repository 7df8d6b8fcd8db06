"""A home, as the services see it: built once when a home opens, then handed to each.

:class:`~memos.core.MemOS` opens the stores and builds a :class:`Home`; the services
(adding, reading, lifecycle, maintenance of plaintext memories — :mod:`memos.memories` —
and chat, activation, parametric memory, archive) each receive it and call one another
only through public methods. What is in it:

- ``settings`` and ``clock`` (injectable: tests and the scheduler move time themselves);
- ``store`` (relational, the truth) and ``index`` (vector, derived), the ``embedder`` and
  the ``indexer`` that keeps the index in step with the rows;
- ``graphs`` (entity graphs per cube, cached) and the ``retriever`` (hybrid search);
- ``access`` (hit statistics, written in batches), the ``extractor`` (or ``None``);
- ``write_lock`` (one writer at a time in this process) and ``events`` (the bus); a
  change is recorded with :meth:`Home.recording` (audited in its transaction, published
  after the commit: :mod:`memos.audit`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from memos import audit
from memos.config import Settings
from memos.events import EventBus
from memos.protocols import Embedder, VectorIndex
from memos.storage.relational.engine import RelationalStore

if TYPE_CHECKING:
    from memos.plaintext.graph import GraphCache
    from memos.plaintext.hits import AccessStats
    from memos.plaintext.indexer import Indexer
    from memos.plaintext.retrieval.retriever import Retriever
    from memos.protocols import Extractor


@dataclass(eq=False)
class Home:
    settings: Settings
    clock: Callable[[], datetime]
    store: RelationalStore
    index: VectorIndex
    embedder: Embedder
    indexer: Indexer
    graphs: GraphCache
    retriever: Retriever
    access: AccessStats
    extractor: Extractor | None
    write_lock: threading.RLock
    events: EventBus

    def recording(self) -> AbstractContextManager[audit.Recording]:
        """A unit of work: ``rec.record(session, *events)`` audits them in that session;
        they are published once the ``with`` ends, if that session committed."""
        return audit.recording(self.events)

    def optimize_index(self) -> bool:
        """Build the index's search structures now (HNSW graphs, merged segments).

        The embedded Qdrant Edge does this only when asked; until then dense search
        scans (an engine that needs no such step does nothing). Worth running after a bulk
        import; ``reindex`` runs it. Returns whether the backend had anything to do."""
        with self.write_lock:
            return self.index.optimize()

    def optimize_in_rounds(self) -> None:
        """Optimize once enough points arrived since the last time (the caller holds the
        write lock): search stays on HNSW graphs as a home grows, and no single optimize
        has more than a round of points to index (:mod:`memos.storage.vector.qdrant_edge`)."""
        every = self.settings.index_optimize_every
        if every > 0 and self.index.unoptimized_points >= every:
            self.optimize_index()
