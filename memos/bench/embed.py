"""``memos bench embed``: texts per second of each embedder backend at each batch size.

The texts are ``memos bench scale``'s synthetic chat turns as the indexer embeds them
(``"<speaker>: <text>"``), handed to ``Embedder.embed`` in calls of ``call`` texts — 64
is what one cube's share of a bulk add looks like, 1,024 a large import. Every
(backend, batch size) variant runs once per round, in an order that alternates between
rounds, and the report gives each variant's median over the rounds: on a shared machine
only numbers measured side by side in one process compare. Query latency
(``embed_query`` of texts not embedded before, so the query cache never answers) is
timed per backend.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from memos.bench.common import percentile
from memos.bench.scale import iter_memories
from memos.config import Settings
from memos.errors import InvalidInput
from memos.protocols import Embedder

BACKENDS = ("torch", "onnx", "onnx-int8")


def bench_texts(n: int, seed: int = 99) -> list[str]:
    """``n`` synthetic chat turns, speaker-prefixed like the indexer's text of a turn."""
    out = []
    for _, m in iter_memories(n, seed=seed):
        name = m.get("name")
        out.append(f"{name}: {m['content']}" if name else str(m["content"]))
    return out


def rounds_order(variants: Sequence[Any], round_no: int) -> list[Any]:
    """The variants in the order round ``round_no`` runs them: forwards, then backwards."""
    return list(variants) if round_no % 2 == 0 else list(reversed(variants))


def summarise(rates: dict[Any, list[float]]) -> dict[Any, dict[str, Any]]:
    """Per variant: the median rate over the rounds, and the rounds' rates."""
    return {
        k: {"median": round(statistics.median(v), 1), "rounds": [round(x, 1) for x in v]}
        for k, v in rates.items()
    }


def run(
    make: Callable[[str, int], Embedder],
    *,
    backends: Sequence[str] = BACKENDS,
    batch_sizes: Sequence[int] = (8, 16, 32, 64),
    n_texts: int = 1024,
    call: int = 64,
    rounds: int = 3,
    n_queries: int = 100,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure; ``make(backend, batch_size)`` builds an embedder (loaded lazily)."""
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise InvalidInput(f"unknown embedder backend(s) {bad}; use some of {', '.join(BACKENDS)}")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InvalidInput("batch sizes must be positive integers")
    if n_texts < 1 or call < 1 or rounds < 1 or n_queries < 1:
        raise InvalidInput("--texts, --call, --rounds and --queries must be at least 1")
    texts = bench_texts(n_texts)
    variants = [(backend, size) for backend in backends for size in batch_sizes]
    embedders = {v: make(*v) for v in variants}
    for v, e in embedders.items():  # load and warm each model outside the timings
        log(f"  loading {v[0]} (batch {v[1]})")
        e.embed(texts[: min(len(texts), 2 * v[1])])
    rates: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in rounds_order(variants, r):
            e = embedders[v]
            t0 = time.perf_counter()
            for start in range(0, len(texts), call):
                e.embed(texts[start : start + call])
            rates[v].append(len(texts) / (time.perf_counter() - t0))
        log(f"  round {r + 1}/{rounds} done")
    queries = bench_texts(n_queries, seed=1234)
    latency: dict[str, dict[str, float]] = {}
    for backend in backends:
        e = embedders[(backend, batch_sizes[0])]
        times = []
        for q in queries:
            t0 = time.perf_counter()
            e.embed_query(f"{q} ?")
            times.append((time.perf_counter() - t0) * 1000)
        latency[backend] = {
            "p50_ms": round(percentile(times, 50), 2),
            "p95_ms": round(percentile(times, 95), 2),
        }
    summary = summarise(rates)
    return {
        "texts": n_texts,
        "call": call,
        "rounds": rounds,
        "texts_per_s": {
            backend: {str(size): summary[(backend, size)] for size in batch_sizes} for backend in backends
        },
        "query_latency": latency,
        "embedders": {backend: embedders[(backend, batch_sizes[0])].id for backend in backends},
    }


def make_from_settings(settings: Settings) -> Callable[[str, int], Embedder]:
    """Embedders for the bench from the configured model, device, threads and cache."""
    from memos.factories import make_embedder

    def make(backend: str, batch_size: int) -> Embedder:
        cfg = settings.model_copy(update={"embedder_backend": backend, "embed_batch_size": batch_size})
        return make_embedder(cfg)

    return make
