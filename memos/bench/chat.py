"""``memos bench chat``: the memory-augmented forward pass, timed per runtime.

One cube with ``n`` synthetic memories (the generator of ``bench scale``, with the real
embedder); the same questions are asked through ``MemOS.chat`` on each runtime, greedy,
with retrieval on and write-back off (so every runtime sees the same cube). Reported per
runtime, as medians over the questions after one warm-up: time to first token (prompt
processing included), tokens/s after the first token, retrieval time, and retrieval's
share of the latency to the first token (retrieval + assembly + TTFT).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memos.bench.scale import iter_memories, synth_queries
from memos.config import Settings

RUNTIMES = ("transformers", "llama_cpp")


def bench_chat(
    settings: Settings,
    *,
    runtimes: Sequence[str] = RUNTIMES,
    n: int = 1000,
    questions: int = 8,
    max_tokens: int = 48,
    server_url: str | None = None,
    server_model: str = "default",
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    from memos.core import MemOS

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memos-bench-chat-") as tmp:
        cfg = settings.model_copy(update={"home": Path(tmp), "relational_url": None, "vector_url": None})
        mos = MemOS(settings=cfg)
        try:
            mos.add_user("bench", "Robin")
            cube = mos.create_cube("bench", "memories").id
            t0 = time.perf_counter()
            batch: list[dict[str, Any]] = []
            for _, msg in iter_memories(n, cubes=1):
                batch.append(msg)
                if len(batch) == 250:
                    mos.add(batch, user_id="bench", cube_id=cube, extract=False)
                    batch = []
            if batch:
                mos.add(batch, user_id="bench", cube_id=cube, extract=False)
            progress(f"{n} memories added in {time.perf_counter() - t0:.1f} s")
            asks = synth_queries(questions + 1)
            names = list(runtimes) + (["openai"] if server_url else [])
            for name in names:
                overrides: dict[str, Any] = {}
                if name == "openai":
                    overrides = {"base_url": server_url, "model": server_model}
                t0 = time.perf_counter()
                rt = mos.runtime(name, **overrides)
                load_s = time.perf_counter() - t0
                progress(f"{name}: loaded in {load_s:.1f} s")
                rows = []
                for i, q in enumerate(asks):
                    res = mos.chat(
                        q,
                        user_id="bench",
                        cube_ids=[cube],
                        runtime=rt,
                        max_tokens=max_tokens,
                        write_back=False,
                    )
                    if i == 0:
                        continue  # warm-up
                    t = res.timings
                    first = t.retrieval_ms + t.assemble_ms + t.ttft_ms
                    rows.append((t.ttft_ms, t.tokens_per_s, t.retrieval_ms, t.retrieval_ms / first if first else 0.0,
                                 res.prompt_tokens, res.completion_tokens, t.total_ms))  # fmt: skip
                med = [statistics.median(col) for col in zip(*rows, strict=True)]
                results[name] = {
                    "ttft_ms": round(med[0], 1),
                    "tokens_per_s": round(med[1], 1),
                    "retrieval_ms": round(med[2], 1),
                    "retrieval_share": round(med[3], 3),
                    "prompt_tokens": int(med[4]),
                    "completion_tokens": int(med[5]),
                    "total_ms": round(med[6], 1),
                    "load_s": round(load_s, 2),
                    "model": rt.fingerprint.model_id,
                    "dtype": rt.fingerprint.dtype,
                }
                progress(f"{name}: {results[name]}")
        finally:
            mos.close()
    return results
