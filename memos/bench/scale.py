"""``memos bench scale``: add throughput, search latency, RSS and disk at growing sizes.

Synthetic but realistic memories: chat turns about invented people, places, jobs, pets
and plans, of varied length, with metadata, spread over eight cubes of one home, generated
and added in streamed batches (a size of a million never sits in memory at once). Each
size runs in a fresh home. Timings:

- ``add_per_s``: memories per second through ``MemOS.add`` on the bulk-import path
  (``extract="defer"``), embedding excluded (the time spent producing vectors is taken
  out); ``extract_per_s``: the deferred extraction afterwards
  (``MemOS.run_deferred_extraction``) of the first cube's queue (an eighth of the
  memories; the other cubes keep theirs queued), embedding of the derived facts excluded;
  ``add_per_s_inline``: the default ``add`` (extraction inline) on a sample;
- ``add_per_s_embedding``: the bulk path with the real embedding model in the loop, on a
  sample of ``embed_sample`` memories (model-bound, so a sample suffices);
- ``index_build_s``: bulk add plus ``optimize_index`` (HNSW build: the rounds the adds
  ran as the home grew, ``Settings.index_optimize_every``, and a last one at the end;
  ``optimize_s`` and ``optimize_rounds`` give that part), embedding excluded;
- ``search_p50_ms``/``search_p95_ms``: ``MemOS.search`` over all eight cubes with the
  query vector precomputed (``search_p95_ms_cold``: the same with the retriever's cache
  of each candidate's fixed facts emptied before every query — the bench's queries
  repeat themes, so its candidates are mostly cached); ``search_p95_ms_embedding``: with
  the model embedding the query; ``filtered_p95_ms``: with a ``metadata.topic`` filter (query vector precomputed);
- ``rss_mb``: peak resident memory of the process (the embedding model included);
  ``disk_bytes_per_memory``: the home's size over the memories stored (derived facts
  included).

Embedding every text with the model would take hours at a million memories, so where the
model is excluded from the timing the vectors come from :class:`ConceptEmbedder`: a
text's vector is the sum of the model's own vectors of the names, places, jobs, hobbies
and topics it mentions, plus a small text-seeded perturbation — vectors in the model's
space with the model's neighbourhood structure, at a few microseconds each.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

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


KEYWORDS = [
    "moved",
    "unpacking",
    "sister",
    "works",
    "started",
    "adopted",
    "trip",
    "food",
    "street stalls",
    "harbour",
    "new job",
    "team",
    "workshop",
    "dentist",
    "insurance",
    "vegetarian",
    "meat",
    "climate",
    "book",
    "band",
    "tickets",
    "project deadline",
    "relieved",
    "concert",
    "pet",
    "hobby",
]


def iter_memories(n: int, seed: int = 7, cubes: int = 8) -> Iterator[tuple[int, dict[str, Any]]]:
    """``n`` (cube index, message) pairs, generated one at a time; deterministic for a seed."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)

    def sentence() -> str:
        return rng.choice(TEMPLATES).format(
            place=rng.choice(PLACES),
            name2=rng.choice(NAMES),
            job=rng.choice(JOBS),
            hobby=rng.choice(HOBBIES),
            pet=rng.choice(PETS),
            month=rng.choice(MONTHS),
            day=rng.randint(1, 28),
        )

    for i in range(n):
        text = sentence()
        if rng.random() < 0.3:  # varied lengths
            text += " " + sentence()
        speaker = rng.choice(NAMES)
        yield (
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


def synth_memories(n: int, seed: int = 7, cubes: int = 8) -> list[tuple[int, dict[str, Any]]]:
    """``n`` (cube index, message) pairs; deterministic for a seed."""
    return list(iter_memories(n, seed, cubes))


def synth_queries(k: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(QUERIES).format(name=rng.choice(NAMES), place=rng.choice(PLACES)) for _ in range(k)]


def _warmup_queries(measured: Sequence[str]) -> list[str]:
    """As many warm-up queries as ``measured``, none of them among ``measured``: texts of
    memories (another seed than the home's), which reach across the whole index (the
    question templates allow only ~160 distinct questions)."""
    taken = set(measured)
    texts = (m["content"] for _, m in iter_memories(4 * len(measured) + 10, seed=97))
    return list(itertools.islice((t for t in texts if t not in taken), len(measured)))


class ConceptEmbedder:
    """Cheap vectors in the model's space for texts of this benchmark (see the module doc).

    ``seconds`` accumulates the time spent here, so callers can take it out of a timing.
    """

    def __init__(self, model: Embedder, noise: float = 0.35) -> None:
        concepts = [*NAMES, *PLACES, *JOBS, *HOBBIES, *PETS, *MONTHS, *KEYWORDS]
        vectors = np.asarray(model.embed(concepts), dtype=np.float32)
        self._concepts = [(c.lower(), v) for c, v in zip(concepts, vectors, strict=True)]
        self.id = f"concepts+{model.id}"
        self.dim = int(vectors.shape[1])
        self.noise = noise
        self.seconds = 0.0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        t0 = time.perf_counter()
        out = []
        for text in texts:
            low = text.lower()
            v = np.zeros(self.dim, dtype=np.float32)
            for word, cv in self._concepts:
                if word in low:
                    v += cv
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
            jitter = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            v += jitter * (self.noise * max(1.0, float(np.linalg.norm(v))) / np.sqrt(self.dim))
            v /= float(np.linalg.norm(v)) or 1.0
            out.append(v.tolist())
        self.seconds += time.perf_counter() - t0
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]


def _timed_searches(
    mos: MemOS, user: str, queries: list[str], *, cold: bool = False, **kw: Any
) -> list[float]:
    out = []
    for q in queries:
        if cold:
            mos.retriever.clear_cache()
        t0 = time.perf_counter()
        mos.search(q, user_id=user, top_k=10, **kw)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _add_stream(
    mos: MemOS,
    user: str,
    items: Iterator[tuple[int, dict[str, Any]]],
    cube_ids: list[str],
    batch: int,
    extract: bool | Literal["defer"],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Add ``items`` in batches of about ``batch`` messages (one ``add`` per cube per batch)."""
    done = 0
    while True:
        chunk = list(itertools.islice(items, batch))
        if not chunk:
            return done
        by_cube: dict[int, list[dict[str, Any]]] = {}
        for c, m in chunk:
            by_cube.setdefault(c, []).append(m)
        for c, msgs in by_cube.items():
            mos.add(messages=msgs, user_id=user, cube_id=cube_ids[c], extract=extract)
        done += len(chunk)
        if progress is not None:
            progress(done)


def bench_size(
    n: int,
    embedder: Embedder,
    *,
    relational_url: str | None = None,
    vector_url: str | None = None,
    batch: int = 4000,
    n_queries: int = 200,
    embed_sample: int = 512,
    inline_sample: int = 2000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one size in a fresh temporary home; returns the metrics for that size.

    With ``relational_url``/``vector_url`` (a deployment's PostgreSQL and Qdrant) the
    run works as its own user ``bench-<random>`` and deletes its cubes at the end;
    ``disk_bytes_per_memory`` is then ``None`` (the stores are not in the home)."""
    home = Path(tempfile.mkdtemp(prefix=f"memos-bench-{n}-"))
    external = relational_url is not None or vector_url is not None
    user = f"bench-{uuid.uuid4().hex[:8]}" if external else "bench"
    concepts = ConceptEmbedder(embedder)
    queries = synth_queries(n_queries)
    try:
        mos = MemOS(
            home=home,
            embedder=concepts,
            relational_url=relational_url,
            vector_url=vector_url,
            extractor="rules",
        )
        mos.add_user(user)
        cube_ids = [mos.create_cube(user, f"cube-{c}").id for c in range(8)]
        step = max(batch, n // 10)

        def progress(done: int) -> None:
            if done % step < batch or done == n:
                log(f"  n={n:,}: added {done:,} ({rss_mb():,.0f} MiB peak RSS)")

        # bulk import: stored and searchable at once, extraction queued; the index is
        # optimized in rounds on the way (Settings.index_optimize_every), timed apart
        rounds = _OptimizeTimer(mos)
        concepts.seconds = 0.0
        t0 = time.perf_counter()
        _add_stream(mos, user, iter_memories(n), cube_ids, batch, "defer", progress)
        add_s = time.perf_counter() - t0 - concepts.seconds - rounds.seconds
        mos.index.flush()
        mos.optimize_index()
        optimize_s = rounds.seconds
        log(
            f"  n={n:,}: bulk add {add_s:.1f} s, optimize {optimize_s:.1f} s in {rounds.calls} rounds; "
            "running deferred extraction"
        )
        rounds.stop()
        # the queued extraction of one cube (an eighth of n): its throughput, without
        # spending an hour on it at a million
        concepts.seconds = 0.0
        t0 = time.perf_counter()
        extracted = mos.run_deferred_extraction(user_id=user, cube_ids=cube_ids[:1])
        extract_s = time.perf_counter() - t0 - concepts.seconds
        stats = mos.stats(user_id=user)
        log(f"  n={n:,}: extraction {extract_s:.1f} s; {stats['memories']:,} memories; searching")

        # the query vectors are computed up front: search timings exclude the model
        pre = PrecomputedEmbedder(concepts)
        pre.preload(queries)
        mos.retriever.embedder = pre
        # The first searches of a freshly built home page its index and database in from
        # disk: timed on their own, over other queries than the ones measured next, which
        # are then searched for the first time by a process in its steady state.
        warmup = _warmup_queries(queries)
        pre.preload(warmup)
        first = _timed_searches(mos, user, warmup)
        plain = _timed_searches(mos, user, queries)
        cold = _timed_searches(mos, user, queries, cold=True)
        filtered = _timed_searches(mos, user, queries, filters={"metadata.topic": "travel"})
        # query embedding in the loop: the real model, unseen query strings
        mos.retriever.embedder = embedder
        with_embed = _timed_searches(mos, user, [q + " please" for q in queries[: max(20, n_queries // 4)]])

        # the default add (extraction inline) on a sample, embedding excluded
        concepts.seconds = 0.0
        t0 = time.perf_counter()
        _add_stream(mos, user, _renamed(iter_memories(inline_sample, seed=98), "i"), cube_ids, 500, True)
        inline_s = time.perf_counter() - t0 - concepts.seconds
        # the bulk path with the embedding model in the loop, on a sample
        mos.indexer.embedder = embedder
        t0 = time.perf_counter()
        _add_stream(mos, user, _renamed(iter_memories(embed_sample, seed=99), "e"), cube_ids, batch, "defer")
        add_embed_s = time.perf_counter() - t0
        total = mos.stats(user_id=user)["memories"]
        if external:
            for cube_id in cube_ids:
                mos.delete_cube(cube_id, user)
        mos.close()
        disk = None if external else disk_bytes(home) / max(total, 1)
        return {
            "memories_with_derived": total,
            "add_per_s": round(n / add_s, 1),
            "add_per_s_inline": round(inline_sample / inline_s, 1),
            "extract_per_s": round(extracted / max(extract_s, 1e-9), 1),
            "add_per_s_embedding": round(embed_sample / add_embed_s, 1),
            "index_build_s": round(add_s + optimize_s, 2),
            "optimize_s": round(optimize_s, 2),
            "optimize_rounds": rounds.calls,
            "search_p50_ms": round(percentile(plain, 50), 2),
            "search_p95_ms": round(percentile(plain, 95), 2),
            "search_p50_ms_first": round(percentile(first, 50), 2),
            "search_p95_ms_first": round(percentile(first, 95), 2),
            "search_p95_ms_cold": round(percentile(cold, 95), 2),
            "search_p95_ms_embedding": round(percentile(with_embed, 95), 2),
            "filtered_p50_ms": round(percentile(filtered, 50), 2),
            "filtered_p95_ms": round(percentile(filtered, 95), 2),
            "rss_mb": round(rss_mb(), 1),
            "disk_bytes_per_memory": round(disk, 1) if disk is not None else None,
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


class _OptimizeTimer:
    """Times every optimize of ``mos``'s home (the rounds inside ``add`` included) until
    :meth:`stop`, so the bulk add's rate can leave the index build out."""

    def __init__(self, mos: MemOS) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._home = mos.home
        inner = self._home.optimize_index

        def timed() -> bool:
            t0 = time.perf_counter()
            try:
                return inner()
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        self._home.optimize_index = timed  # type: ignore[method-assign]

    def stop(self) -> None:
        del self._home.optimize_index  # the method again


def _renamed(
    items: Iterator[tuple[int, dict[str, Any]]], prefix: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The same messages under other ids (so they are new to the cubes)."""
    for c, m in items:
        yield c, {**m, "id": prefix + m["id"]}
