"""``memos bench locomo``: evidence recall of retrieval on LoCoMo-format conversations.

Every conversation is ingested through the public SDK exactly as an application would
(one cube per conversation; ``MemOS.add`` with messages carrying ``id=dia_id``, the
speaker's name and the session's timestamp). Every question of categories 1–4 is then
asked through ``MemOS.search``; hits are mapped back to dia_ids through their provenance
(an episode's message id; a derived fact's source episodes). Nothing else is seen at
query time — no evidence, no category, no answer.

Metrics, averaged over questions: recall@k = |gold ∩ top-k dia_ids| / |gold| and
hit@k = 1 if any gold dia_id is in the top k, for k in 1, 5, 10, 25; per category too.
Search latency is reported end to end (query embedding included, ``search_p50_ms``) and
without the model (``search_p50_ms_excl_embedding``): the query is embedded first, timed
apart, and the search then finds its vector in the embedder's query cache (the bundled
embedder keeps one; an embedder without a cache makes the two numbers alike).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.bench.common import percentile
from memos.errors import InvalidInput
from memos.protocols import Embedder

KS = (1, 5, 10, 25)
_DIA = re.compile(r"D:?(\d+):0*(\d+)")
_SESSION = re.compile(r"session_(\d+)$")


@dataclass(frozen=True, slots=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    timestamp: str | None
    session: int


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    turns: list[Turn]
    questions: list[Question]


def parse_evidence(raw: Iterable[Any], known: set[str]) -> tuple[str, ...]:
    """Normalise evidence ids (some are malformed: ``"D8:6; D9:17"``, ``"D:11:26"``,
    ``"D30:05"``); keep those that exist in the conversation, in order, once."""
    out: list[str] = []
    for item in raw:
        for a, b in _DIA.findall(str(item)):
            dia = f"D{int(a)}:{int(b)}"
            if dia in known and dia not in out:
                out.append(dia)
    return tuple(out)


def turn_text(turn: dict[str, Any]) -> str:
    """A turn as an application would store it: the text, plus the caption of a shared image."""
    text = str(turn.get("text") or "").strip()
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares an image: {caption}]".strip()
    return text


def load_locomo(path: str | Path) -> list[Conversation]:
    """Parse a LoCoMo-format file (a list of samples with ``conversation`` and ``qa``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read LoCoMo data from {path}: {exc}") from exc
    if not isinstance(data, list):
        raise InvalidInput(f"{path}: expected a list of samples")
    convs = []
    for n, sample in enumerate(data):
        conv = sample.get("conversation") if isinstance(sample, dict) else None
        if not isinstance(conv, dict):
            raise InvalidInput(f"{path}: sample {n} has no 'conversation'")
        turns: list[Turn] = []
        sessions = sorted(
            (int(m.group(1)), key)
            for key in conv
            if (m := _SESSION.match(key)) and isinstance(conv[key], list)
        )
        for num, key in sessions:
            when = conv.get(f"{key}_date_time")
            for t in conv[key]:
                text = turn_text(t)
                if text and t.get("dia_id"):
                    turns.append(Turn(str(t["dia_id"]), str(t.get("speaker") or ""), text, when, num))
        known = {t.dia_id for t in turns}
        questions = [
            Question(str(q["question"]), parse_evidence(q.get("evidence") or [], known), int(q["category"]))
            for q in sample.get("qa", [])
            if int(q.get("category", 0)) in (1, 2, 3, 4)
        ]
        questions = [q for q in questions if q.evidence]
        convs.append(Conversation(str(sample.get("sample_id", n)), turns, questions))
    return convs


def ranked_dia_ids(hits: Sequence[Any], episode_dia: dict[str, str]) -> list[str]:
    """Map search hits to dia_ids in rank order, each once: an episode by its message id,
    a derived memory by the episodes it came from."""
    out: list[str] = []
    for h in hits:
        mem = h.memory
        ids = [mem.provenance.message_id] if mem.provenance.message_id else []
        ids += [episode_dia[s] for s in mem.provenance.source_ids if s in episode_dia]
        for d in ids:
            if d and d not in out:
                out.append(d)
    return out


def score(ranked: Sequence[str], gold: Sequence[str], ks: Sequence[int] = KS) -> dict[str, dict[int, float]]:
    """recall@k and hit@k of one question."""
    gold_set = set(gold)
    recall = {k: len(gold_set & set(ranked[:k])) / len(gold_set) for k in ks}
    hit = {k: 1.0 if gold_set & set(ranked[:k]) else 0.0 for k in ks}
    return {"recall": recall, "hit": hit}


def aggregate(
    rows: Sequence[tuple[int, dict[str, dict[int, float]]]], ks: Sequence[int] = KS
) -> dict[str, Any]:
    """Average per-question scores overall and per category."""

    def mean(items: Sequence[dict[str, dict[int, float]]], kind: str) -> dict[str, float]:
        return {str(k): round(sum(s[kind][k] for s in items) / max(1, len(items)), 4) for k in ks}

    scores = [s for _, s in rows]
    per_cat: dict[str, Any] = {}
    for cat in sorted({c for c, _ in rows}):
        items = [s for c, s in rows if c == cat]
        per_cat[str(cat)] = {
            "n": len(items),
            "recall_at": mean(items, "recall"),
            "hit_at": mean(items, "hit"),
        }
    return {
        "n_questions": len(rows),
        "recall_at": mean(scores, "recall"),
        "hit_at": mean(scores, "hit"),
        "per_category": per_cat,
    }


def run(
    path: str | Path,
    embedder: Embedder | None = None,
    *,
    top_k: int = 25,
    home: Path | None = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> dict[str, Any]:
    """Ingest every conversation, ask every question, return the metrics."""
    from memos.core import MemOS

    convs = load_locomo(path)
    own_home = home is None
    home = home or Path(tempfile.mkdtemp(prefix="memos-locomo-"))
    rows: list[tuple[int, dict[str, dict[int, float]]]] = []
    latencies: list[float] = []
    retrieval: list[float] = []
    ingest_s = 0.0
    try:
        mos = MemOS(home=home, embedder=embedder, **settings)
        try:
            mos.add_user("bench")
            for conv in convs:
                cube = mos.create_cube("bench", f"locomo-{conv.id}").id
                t0 = time.perf_counter()
                episode_dia: dict[str, str] = {}
                for session in sorted({t.session for t in conv.turns}):
                    turns = [t for t in conv.turns if t.session == session]
                    res = mos.add(
                        messages=[
                            {
                                "role": "user",
                                "name": t.speaker,
                                "content": t.text,
                                "id": t.dia_id,
                                **({"timestamp": t.timestamp} if t.timestamp else {}),
                            }
                            for t in turns
                        ],
                        user_id="bench",
                        cube_id=cube,
                        session_id=f"session_{session}",
                    )
                    for m in res.memories:
                        if m.provenance.message_id:
                            episode_dia[m.id] = m.provenance.message_id
                ingest_s += time.perf_counter() - t0
                for q in conv.questions:
                    t0 = time.perf_counter()
                    # the query vector first, timed apart (the embedder keeps it for the search)
                    mos.embedder.embed_query(q.text)
                    t1 = time.perf_counter()
                    hits = mos.search(q.text, user_id="bench", cube_ids=[cube], top_k=top_k)
                    t2 = time.perf_counter()
                    latencies.append((t2 - t0) * 1000)
                    retrieval.append((t2 - t1) * 1000)
                    rows.append((q.category, score(ranked_dia_ids(hits, episode_dia), q.evidence)))
                log(f"  {conv.id}: {len(conv.turns)} turns, {len(conv.questions)} questions")
        finally:
            mos.close()
    finally:
        if own_home:
            shutil.rmtree(home, ignore_errors=True)
    result = aggregate(rows)
    result.update(
        ingest_s=round(ingest_s, 2),
        search_p50_ms=round(percentile(latencies, 50), 2),
        search_p95_ms=round(percentile(latencies, 95), 2),
        search_p50_ms_excl_embedding=round(percentile(retrieval, 50), 2),
        search_p95_ms_excl_embedding=round(percentile(retrieval, 95), 2),
    )
    return result
