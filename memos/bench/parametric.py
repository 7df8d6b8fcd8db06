"""``memos bench parametric``: facts the base model cannot know, recalled from a LoRA adapter.

1. ``n`` synthetic personal facts (:mod:`memos.bench.parametric_facts`) are added to a
   fresh cube as memories, through the SDK.
2. ``mos.parametric.consolidate`` trains, evaluates and gates an adapter on them
   (``train_s`` is the whole consolidation: data, training with early stopping, gate).
3. Each fact is asked as a question, exact-match (case- and accent-insensitive) on its
   answer, in four configurations:

   - ``recall_adapter``: the adapter alone, retrieval off;
   - ``recall_retrieval``: plaintext retrieval alone (``MemOS.chat``, adapters off);
   - ``recall_both``: retrieval and the adapter (``MemOS.chat``);
   - ``recall_base``: neither.

   ``recall_*`` use the held-out phrasings (two per fact, written for the benchmark and
   never produced by the training-data generator); ``recall_adapter_seen`` asks one
   phrasing per fact that training used. The adapter-alone and base rows are answered in
   batches (the same prompt and forward pass as a chat with ``memories=0``); the
   retrieval rows go through ``MemOS.chat`` one question at a time, on the first held-out
   phrasing of each fact.
4. ``ppl_ratio``: perplexity of the gate's general text with / without the adapter.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memos.bench.common import machine
from memos.bench.parametric_facts import synthetic_facts
from memos.parametric.train import contains
from memos.runtime import ChatMessage


def bench_parametric(
    *,
    n_facts: int = 100,
    model: str = "smollm2-135m-instruct",
    config: dict[str, Any] | None = None,
    retrieval_questions: int | None = None,
    home: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    from memos.config import Settings
    from memos.core import MemOS

    facts = synthetic_facts(n_facts)
    tmp = tempfile.TemporaryDirectory(prefix="memos-bench-parametric-") if home is None else None
    root = Path(tmp.name) if tmp else Path(home)  # type: ignore[arg-type]
    settings = Settings(home=root)
    settings.runtime = settings.runtime.model_copy(update={"name": "transformers", "model": model})
    try:
        with MemOS(settings=settings) as mos:
            mos.add_user("sam", name="Sam")
            cube = mos.create_cube("sam", "facts")
            ids = []
            for f in facts:
                added = mos.add(text=f.text, user_id="sam", cube_id=cube.id, type="fact", importance=0.8)
                ids.append(added.memories[0].id)
            log(f"{len(ids)} facts added; consolidating")
            t0 = time.perf_counter()
            last = [time.perf_counter()]

            def progress(step: int, total: int, loss: float) -> None:
                if time.perf_counter() - last[0] > 30:
                    last[0] = time.perf_counter()
                    log(f"  step {step}/{total} loss {loss:.3f}")

            info = mos.parametric.consolidate(
                cube.id, user_id="sam", memory_ids=ids, model=model, config=config, progress=progress,
                on_epoch=lambda e: log(f"  epoch {e.epoch}: loss {e.loss:.3f}, validation recall {e.valid_recall:.0%}, drift x{e.drift:.3f}"),
            )  # fmt: skip
            train_s = time.perf_counter() - t0
            log(f"adapter {info.id[:12]} {info.state} in {train_s:.0f} s; asking")
            rt: Any = mos.runtime()
            path = mos.parametric.blob_path(info.id)
            adapter = rt.load_adapter(path)
            system = mos.settings.chat.system_prompt.replace("{user}", "Sam")

            def ask(questions: list[str], adapters: tuple[Any, ...]) -> list[str]:
                prompts = [
                    rt.render([ChatMessage("system", system), ChatMessage("user", q)]) for q in questions
                ]
                return list(rt.generate_batch(prompts, 24, adapters))

            def score(answers: list[str], expected: list[str]) -> float:
                return sum(contains(a, e) for a, e in zip(answers, expected, strict=True)) / max(
                    1, len(expected)
                )

            held_q = [q for f in facts for q in f.heldout]
            held_a = [f.answer for f in facts for _ in f.heldout]
            seen = _seen_questions(mos, info, ids)
            seen_q = [seen[i] for i in ids if i in seen]
            seen_a = [f.answer for i, f in zip(ids, facts, strict=True) if i in seen]
            out: dict[str, Any] = {"n_facts": n_facts}
            adapter_answers = ask(held_q, (adapter,))
            out["recall_adapter"] = score(adapter_answers, held_a)
            out["recall_adapter_seen"] = score(ask(seen_q, (adapter,)), seen_a)
            out["recall_base"] = score(ask(held_q, ()), held_a)
            k = n_facts if retrieval_questions is None else min(n_facts, retrieval_questions)
            rows = {"retrieval": [], "both": []}  # type: dict[str, list[bool]]
            for f in facts[:k]:
                for key, parametric in (("retrieval", False), ("both", True)):
                    r = mos.chat(f.heldout[0], user_id="sam", cube_ids=[cube.id], write_back=False,
                                 max_tokens=24, parametric=parametric, activation=False)  # fmt: skip
                    rows[key].append(contains(r.answer, f.answer))
            out["recall_retrieval"] = sum(rows["retrieval"]) / max(1, k)
            out["recall_both"] = sum(rows["both"]) / max(1, k)
            ev = info.evaluation
            out["ppl_ratio"] = ev.ppl_ratio if ev else None
            out["train_s"] = round(train_s, 1)
            out["adapter_bytes"] = info.bytes
            out["gguf_bytes"] = (info.gguf or {}).get("bytes")
            out["state"] = info.state
            out["gate"] = ev.model_dump() if ev else None
            out["epochs"] = info.epochs
            out["hyper"] = info.hyper
            out["retrieval_questions"] = k
            out["examples"] = [
                {"q": q, "expected": a, "adapter": ans}
                for q, a, ans in list(zip(held_q, held_a, adapter_answers, strict=True))[:6]
            ]
            out["machine"] = machine()
            return out
    finally:
        if tmp:
            tmp.cleanup()


def _seen_questions(mos: Any, info: Any, ids: list[str]) -> dict[str, str]:
    """One question phrasing per fact that training used (the generator's train split)."""
    from memos.parametric.data import examples_for

    texts = {}
    with mos.store.session() as s:
        from memos.storage.relational.models import MemoryRow

        for mid in ids:
            row = s.get(MemoryRow, mid)
            if row is not None:
                texts[mid] = row.text
    out = {}
    for mid, text in texts.items():
        for ex in examples_for(mid, text, "Sam", seed=int(info.hyper.get("seed", 0))):
            if ex.form == "question" and ex.split == "train":
                out[mid] = ex.prompt
                break
    return out
