"""``memos bench activation``: time to first token with a compiled KV prefix vs plain prefill.

For each local runtime and bundled model, at each prefix length: the same token sequence
(prefix of memory lines + a question) is answered for one token, side by side in one run,

- plain: the whole sequence prefilled from scratch (llama.cpp's own prompt cache is
  cleared before each run, so it cannot help);
- with activation memory: the prefix's safetensors blob is read from disk and loaded into
  the runtime (``load_ms``), then only the question is computed; ``ttft_kv_ms`` includes
  the load.

Medians over ``repeats`` runs; ``speedup = ttft_prefill_ms / ttft_kv_ms``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memos import registry
from memos.protocols import Runtime
from memos.runtime import GenerationParams

SIZES = (512, 1024, 2048, 4096)
QUESTION = (
    "\nQuestion: which friend lives in the city with the highest number, and what do they like?\nAnswer:"
)


def _text(rt: Runtime, tokens: int) -> list[int]:
    lines, i = [], 0
    ids: list[int] = []
    while len(ids) < tokens:
        chunk = [
            f"- Memory {j}: the user's friend number {j} lives in city {j * 7} and likes "
            f"{['jazz', 'hiking', 'chess', 'tea', 'sailing'][j % 5]}."
            for j in range(i, i + 50)
        ]
        lines += chunk
        i += 50
        ids = rt.tokenize("Memories:\n" + "\n".join(lines))
    return ids[:tokens]


def _runtime(name: str, model: str, context: int, threads: int | None) -> Runtime:
    runtime: Runtime = registry.load("memos.runtimes", name)(model, context_tokens=context, threads=threads)
    return runtime


def bench_activation(
    *,
    runtimes: Sequence[str] = ("transformers", "llama_cpp"),
    models: Sequence[str] = ("smollm2-135m-instruct",),
    sizes: Sequence[int] = SIZES,
    repeats: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    context = max(sizes) + 256
    one = GenerationParams(max_tokens=1)
    with tempfile.TemporaryDirectory(prefix="memos-bench-kv-") as tmp:
        for model in models:
            for name in runtimes:
                rt = _runtime(name, model, context, threads)
                key = name if model == models[0] else f"{name}:{rt.fingerprint.model_id}"
                reset = getattr(rt, "reset", None)
                question = rt.tokenize(QUESTION)
                rt.complete(question, one).read()  # warm-up
                out: dict[str, Any] = {}
                for size in sizes:
                    prefix_ids = _text(rt, size)
                    full = prefix_ids + question
                    t0 = time.perf_counter()
                    data = rt.build_prefix(prefix_ids)
                    build_ms = (time.perf_counter() - t0) * 1000
                    blob = Path(tmp) / f"{name}-{size}.safetensors"
                    blob.write_bytes(data)
                    del data
                    plain, kv, load = [], [], []
                    for _ in range(repeats):
                        if reset is not None:
                            reset()
                        g = rt.complete(full, one)
                        g.read()
                        plain.append(g.stats.ttft_ms)
                        if reset is not None:
                            reset()
                        t0 = time.perf_counter()
                        prefix = rt.load_prefix(blob, prefix_ids)  # from the file, as chat does
                        loaded = (time.perf_counter() - t0) * 1000
                        g = rt.complete(full, one, prefix=prefix)
                        g.read()
                        load.append(loaded)
                        kv.append(loaded + g.stats.ttft_ms)
                        del prefix
                    p, k = statistics.median(plain), statistics.median(kv)
                    out[str(size)] = {
                        "ttft_prefill_ms": round(p, 1),
                        "ttft_kv_ms": round(k, 1),
                        "speedup": round(p / k, 1) if k else 0.0,
                        "load_ms": round(statistics.median(load), 1),
                        "bytes_per_token": round(blob.stat().st_size / size, 1),
                        "build_ms": round(build_ms, 1),
                    }
                    blob.unlink()
                    progress(f"{key} {size}: {out[str(size)]}")
                out["model"] = rt.fingerprint.model_id
                out["dtype"] = rt.fingerprint.dtype
                results[key] = out
                rt.close()
    return results
