"""Shared pieces of the benchmarks: percentiles, RSS, disk usage, precomputed embeddings."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.protocols import Embedder

if TYPE_CHECKING:
    from memos.config import Settings


def configured_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` configure, built as a home builds it: what the benchmarks measure."""
    from memos.factories import make_embedder

    return make_embedder(settings)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


class PrecomputedEmbedder:
    """Serves vectors computed up front, so storage and search can be timed without the
    model in the loop. Unknown texts fall through to the real embedder."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.id = inner.id
        self.dim = inner.dim
        self.table: dict[str, list[float]] = {}
        #: seconds spent in the real model for texts that were not preloaded
        self.model_seconds = 0.0

    def preload(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.table]
        for start in range(0, len(todo), 512):
            chunk = todo[start : start + 512]
            for t, v in zip(chunk, self.inner.embed(chunk), strict=True):
                self.table[t] = v

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.table]
        if missing:
            t0 = time.perf_counter()
            self.preload(missing)
            self.model_seconds += time.perf_counter() - t0
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]
