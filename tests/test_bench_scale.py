"""``memos bench scale`` on a tiny size: every reported key, sane counts, the concept vectors."""

from __future__ import annotations

import math
from typing import Any

from memos.bench.scale import (
    ConceptEmbedder,
    _warmup_queries,
    bench_size,
    iter_memories,
    synth_memories,
    synth_queries,
)

KEYS = {
    "add_per_s",
    "add_per_s_embedding",
    "index_build_s",
    "search_p50_ms",
    "search_p95_ms",
    "search_p50_ms_first",
    "search_p95_ms_first",
    "search_p95_ms_embedding",
    "filtered_p95_ms",
    "rss_mb",
    "disk_bytes_per_memory",
}


def test_bench_size_reports_every_key(embedder: Any) -> None:
    out = bench_size(240, embedder, n_queries=8, embed_sample=16, inline_sample=40, log=lambda _: None)
    assert set(out) >= KEYS
    assert all(isinstance(out[k], float | int) and out[k] > 0 for k in KEYS)
    # 240 bulk + 40 inline + 16 with the model, plus the facts derived from cube 0 and the inline sample
    assert out["memories_with_derived"] > 240 + 40 + 16


def test_streamed_memories_match_the_list_and_concept_vectors_are_unit(embedder: Any) -> None:
    assert list(iter_memories(50)) == synth_memories(50)
    concepts = ConceptEmbedder(embedder)
    a, b, c = concepts.embed(
        ["Mira: I moved to Lisbon last month", "Mira: I moved to Lisbon last month", "Chen: pottery class"]
    )
    assert a == b and a != c and len(a) == concepts.dim
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-4)
    # texts naming the same concepts are closer than texts naming others
    same = sum(x * y for x, y in zip(a, concepts.embed_query("Where did Mira move? Lisbon?"), strict=True))
    other = sum(x * y for x, y in zip(c, concepts.embed_query("Where did Mira move? Lisbon?"), strict=True))
    assert same > other


def test_warmup_queries_are_as_many_and_none_of_the_measured() -> None:
    measured = synth_queries(200)
    warmup = _warmup_queries(measured)
    assert len(warmup) == len(measured) and not set(warmup) & set(measured)
    assert len(set(warmup)) == len(warmup)  # each pages in its own part of the index
