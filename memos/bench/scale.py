"""``memos bench scale``: add throughput, search latency, RSS and disk at growing sizes.

Synthetic but realistic memories: chat turns and facts about invented people, places,
jobs, pets and plans, of varied length, with metadata and tags, spread over several
cubes of one home. Each size runs in a fresh home. Timings:

- ``add_per_s``: memories per second through ``MemOS.add`` with embeddings precomputed
  (storage, extraction and indexing only); ``add_per_s_embedding``: the same with the
  embedding model in the loop (measured on a sample, since it is model-bound);
- ``search_p50_ms``/``search_p95_ms``: ``MemOS.search`` with the query vector
  precomputed; ``search_p95_ms_embedding``: with query embedding; ``filtered_p95_ms``:
  with a payload filter.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from memos.bench.common import PrecomputedEmbedder, disk_bytes, percentile, rss_mb
from memos.core import MemOS
from memos.protocols import Embedder

NAMES = [
    "Alice",
    "Bruno",
    "Chen",
    "Dara",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Mira",
    "Noor",
    "Oskar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Yara",
]
PLACES = [
    "Berlin",
    "Lisbon",
    "Tromsø",
    "Osaka",
    "Nairobi",
    "Lima",
    "Toronto",
    "Kraków",
    "Porto",
    "Hanoi",
    "Seville",
    "Bergen",
    "Austin",
    "Tbilisi",
    "Melbourne",
    "Dakar",
]
JOBS = ["nurse", "data engineer", "teacher", "carpenter", "pilot", "chef", "architect", "translator", "vet"]
HOBBIES = [
    "hiking",
    "jazz piano",
    "bouldering",
    "sourdough baking",
    "chess",
    "birdwatching",
    "salsa dancing",
    "pottery",
    "trail running",
    "astronomy",
    "knitting",
    "sailing",
]
PETS = ["dog", "cat", "parrot", "rabbit", "tortoise"]
TEMPLATES = [
    "I moved to {place} last month and I'm still unpacking boxes.",
    "My sister {name2} lives in {place} and works as a {job}.",
    "I started {hobby} again this week, it feels great to be back.",
    "We adopted a {pet} named {name2} in {month}.",
    "Honestly the best part of the trip to {place} was the food, especially the street stalls near the harbour.",
    "I got a new job as a {job}; the team is small but everyone is kind. I start on Monday.",
    "{name2} invited me to a {hobby} workshop next weekend in {place}.",
    "Reminder: dentist appointment on {day} {month} at 9am, bring the insurance card.",
    "I don't eat meat anymore, I became vegetarian after reading about the climate impact.",
    "Can you recommend a good book about {hobby}? I finished the last one in two days.",
    "My favourite band is playing in {place} in {month}, I already bought tickets for me and {name2}.",
    "The project deadline moved to {day} {month}, so the {job}s on our team are relieved.",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
QUERIES = [
    "Where did {name} move to?",
    "What does {name}'s sister do for work?",
    "Which pet did {name} adopt?",
    "When is the dentist appointment?",
    "What hobby did {name} start again?",
    "Is {name} vegetarian?",
    "Who is coming to the concert in {place}?",
    "What was the best part of the trip to {place}?",
]


def synth_memories(n: int, seed: int = 7, cubes: int = 8) -> list[tuple[int, dict[str, Any]]]:
    """``n`` (cube index, message) pairs; deterministic for a seed."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        text = rng.choice(TEMPLATES).format(
            place=rng.choice(PLACES),
            name2=rng.choice(NAMES),
            job=rng.choice(JOBS),
            hobby=rng.choice(HOBBIES),
            pet=rng.choice(PETS),
            month=rng.choice(MONTHS),
            day=rng.randint(1, 28),
        )
        if rng.random() < 0.3:  # varied lengths
            text += " " + rng.choice(TEMPLATES).format(
                place=rng.choice(PLACES),
                name2=rng.choice(NAMES),
                job=rng.choice(JOBS),
                hobby=rng.choice(HOBBIES),
                pet=rng.choice(PETS),
                month=rng.choice(MONTHS),
                day=rng.randint(1, 28),
            )
        speaker = rng.choice(NAMES)
        out.append(
            (
                i % cubes,
                {
                    "role": "user",
                    "name": speaker,
                    "content": f"{text} (note {i})",
                    "id": f"m{i}",
                    "timestamp": (start + timedelta(minutes=37 * i)).isoformat(),
                    "metadata": {"topic": rng.choice(["travel", "work", "family", "health", "hobby"])},
                },
            )
        )
    return out


def synth_queries(k: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(QUERIES).format(name=rng.choice(NAMES), place=rng.choice(PLACES)) for _ in range(k)]


def _timed_searches(mos: MemOS, queries: list[str], **kw: Any) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        mos.search(q, user_id="bench", top_k=10, **kw)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bench_size(
    n: int,
    embedder: Embedder,
    *,
    relational_url: str | None = None,
    vector_url: str | None = None,
    batch: int = 500,
    n_queries: int = 200,
    embed_sample: int = 512,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one size in a fresh temporary home; returns the metrics for that size."""
    home = Path(tempfile.mkdtemp(prefix=f"memos-bench-{n}-"))
    items = synth_memories(n)
    pre = PrecomputedEmbedder(embedder)
    t0 = time.perf_counter()
    pre.preload([f"{m['name']}: {m['content']}" for _, m in items])
    embed_s = time.perf_counter() - t0
    queries = synth_queries(n_queries)
    pre.preload(queries)
    try:
        mos = MemOS(
            home=home, embedder=pre, relational_url=relational_url, vector_url=vector_url, extractor="rules"
        )
        mos.add_user("bench")
        cube_ids = [mos.create_cube("bench", f"cube-{c}").id for c in range(8)]
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            chunk = items[start : start + batch]
            by_cube: dict[int, list[dict[str, Any]]] = {}
            for c, m in chunk:
                by_cube.setdefault(c, []).append(m)
            for c, msgs in by_cube.items():
                mos.add(messages=msgs, user_id="bench", cube_id=cube_ids[c])
            if (start // batch) % 20 == 0:
                log(f"  n={n}: added {min(start + batch, n):,}")
        # derived facts are not known in advance; their embedding time is taken out
        add_s = time.perf_counter() - t0 - pre.model_seconds
        stats = mos.stats()
        t0 = time.perf_counter()
        mos.index.flush()
        mos.optimize_index()
        optimize_s = time.perf_counter() - t0
        _timed_searches(mos, queries[:10])  # warm caches
        plain = _timed_searches(mos, queries)
        filtered = _timed_searches(mos, queries, filters={"metadata.topic": "travel"})
        # query embedding in the loop: a real embedder, unseen query strings
        mos.embedder = embedder
        mos.retriever.embedder = embedder
        with_embed = _timed_searches(mos, [q + " please" for q in queries[: max(20, n_queries // 4)]])
        # add with the embedding model in the loop, on a sample
        sample = synth_memories(embed_sample, seed=99)
        mos.indexer.embedder = embedder
        t0 = time.perf_counter()
        for start in range(0, len(sample), batch):
            mos.add(
                messages=[{**m, "id": f"e{m['id']}"} for _, m in sample[start : start + batch]],
                user_id="bench",
                cube_id=cube_ids[0],
            )
        add_embed_s = time.perf_counter() - t0
        total = stats["memories"]
        mos.close()
        disk = disk_bytes(home)
        return {
            "memories_with_derived": total,
            "add_per_s": round(n / add_s, 1),
            "add_per_s_embedding": round(embed_sample / add_embed_s, 1),
            "embed_per_s": round(n / embed_s, 1),
            "index_build_s": round(add_s + optimize_s, 2),
            "optimize_s": round(optimize_s, 2),
            "search_p50_ms": round(percentile(plain, 50), 2),
            "search_p95_ms": round(percentile(plain, 95), 2),
            "search_p95_ms_embedding": round(percentile(with_embed, 95), 2),
            "filtered_p95_ms": round(percentile(filtered, 95), 2),
            "rss_mb": round(rss_mb(), 1),
            "disk_bytes_per_memory": round(disk / max(total, 1), 1),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)
