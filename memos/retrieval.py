"""Hybrid retrieval: dense + lexical + graph expansion, fused, with recency and importance.

Each path ranks candidates on its own; the ranks are fused with weighted reciprocal rank
fusion (``w / (k + rank)``), then multiplied by a small recency and importance boost.
Every hit carries its per-path scores and ranks and a list of human-readable reasons.
Rows are the truth: a candidate whose row is missing or no longer searchable is dropped,
so the index can never surface a deleted or purged memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from memos import lexical
from memos.config import SearchSettings
from memos.convert import memory_from_row
from memos.errors import InvalidFilter
from memos.graph import GraphCache
from memos.protocols import Embedder, FieldMatch, FieldRange, IndexFilter, VectorIndex
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import MemoryEntityRow, MemoryRow
from memos.types import SEARCHABLE_STATES, MemoryType, SearchHit

FILTER_KEYS = ("type", "speaker", "role", "session_id", "tags")


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    cube_ids: tuple[str, ...]
    top_k: int
    filters: Mapping[str, Any]
    time_range: tuple[datetime | None, datetime | None] | None


def build_filter(
    cube_ids: Sequence[str],
    filters: Mapping[str, Any] | None,
    time_range: tuple[datetime | None, datetime | None] | None,
) -> IndexFilter:
    """Translate user filters into an index filter; reject what we do not understand."""
    must: list[FieldMatch | FieldRange] = []
    for key, value in (filters or {}).items():
        if not isinstance(key, str):
            raise InvalidFilter(f"filter keys must be strings, got {key!r}")
        if key not in FILTER_KEYS and not key.startswith("metadata."):
            raise InvalidFilter(
                f"unknown filter {key!r}; use one of {', '.join(FILTER_KEYS)} or metadata.<key>"
            )
        values = tuple(value) if isinstance(value, list | tuple | set) else (value,)
        if not values or not all(isinstance(v, str | int | bool) for v in values):
            raise InvalidFilter(f"filter {key!r} needs a string/number/bool or a list of them, got {value!r}")
        if key == "type":
            bad = [v for v in values if v not in MemoryType.__members__]
            if bad:
                raise InvalidFilter(
                    f"unknown memory type(s) {bad}; known: {', '.join(MemoryType.__members__)}"
                )
        must.append(FieldMatch(key=key, any=values))
    if time_range is not None:
        start, end = time_range
        if start is not None and end is not None and start > end:
            raise InvalidFilter("time_range starts after it ends")
        must.append(
            FieldRange(
                key="ts",
                gte=start.timestamp() if start is not None else None,
                lte=end.timestamp() if end is not None else None,
            )
        )
    return IndexFilter(cube_ids=tuple(cube_ids), must=tuple(must))


def _row_matches(row: MemoryRow, flt: IndexFilter) -> bool:
    """The same filter, evaluated on a row (for candidates that did not come from the index)."""
    for cond in flt.must:
        if isinstance(cond, FieldRange):
            when = row.occurred_at or row.valid_from or row.recorded_at
            ts = when.timestamp()
            if (cond.gte is not None and ts < cond.gte) or (cond.lte is not None and ts > cond.lte):
                return False
            continue
        if cond.key.startswith("metadata."):
            value: Any = (row.meta or {}).get(cond.key.split(".", 1)[1])
        else:
            value = getattr(row, cond.key)
        if isinstance(value, list):
            if not set(value) & set(cond.any):
                return False
        elif value not in cond.any:
            return False
    return True


class Retriever:
    def __init__(
        self,
        store: RelationalStore,
        index: VectorIndex,
        embedder: Embedder,
        graphs: GraphCache,
        settings: SearchSettings,
    ) -> None:
        self.store = store
        self.index = index
        self.embedder = embedder
        self.graphs = graphs
        self.cfg = settings

    def search(self, q: Query, now: datetime) -> list[SearchHit]:
        flt = build_filter(q.cube_ids, q.filters, q.time_range)
        depth = max(self.cfg.candidates, q.top_k * 2)
        ranked: dict[str, list[tuple[str, float]]] = {}
        if self.cfg.weight_dense > 0:
            hits = self.index.search_dense(self.embedder.embed_query(q.text), flt, depth)
            ranked["dense"] = [(h.id, h.score) for h in hits]
        if self.cfg.weight_lexical > 0:
            sparse = lexical.encode_query(q.text)
            if sparse.indices:
                hits = self.index.search_sparse(sparse, flt, depth)
                ranked["lexical"] = [(h.id, h.score) for h in hits]
        graph_names: dict[str, list[str]] = {}
        if self.cfg.graph_expansion and self.cfg.weight_graph > 0:
            ranked["graph"], graph_names = self._graph_candidates(q, depth)

        fused: dict[str, float] = {}
        scores: dict[str, dict[str, float]] = {}
        ranks: dict[str, dict[str, int]] = {}
        weights = {
            "dense": self.cfg.weight_dense,
            "lexical": self.cfg.weight_lexical,
            "graph": self.cfg.weight_graph,
        }
        for path, items in ranked.items():
            for rank, (mid, score) in enumerate(items, start=1):
                # graph scores are informativeness in [0, 1]: a hit through a name that is
                # everywhere should not count as much as one through a rare one
                strength = min(1.0, score) if path == "graph" else 1.0
                fused[mid] = fused.get(mid, 0.0) + weights[path] * strength / (self.cfg.rrf_k + rank)
                scores.setdefault(mid, {})[path] = round(score, 6)
                ranks.setdefault(mid, {})[path] = rank
        if not fused:
            return []
        with self.store.session() as s:
            rows = {
                r.id: r
                for r in s.scalars(
                    select(MemoryRow).where(
                        MemoryRow.id.in_(list(fused)),
                        MemoryRow.cube_id.in_(q.cube_ids),
                        MemoryRow.state.in_([str(x) for x in SEARCHABLE_STATES]),
                    )
                )
            }
        scored: list[tuple[float, float, float, MemoryRow]] = []
        for mid, base in fused.items():
            row = rows.get(mid)
            if row is None or not _row_matches(row, flt):
                continue
            when = row.occurred_at or row.valid_from or row.recorded_at
            age_days = max(0.0, (now - when).total_seconds() / 86400)
            recency = math.pow(0.5, age_days / self.cfg.recency_half_life_days)
            boost = (
                1 + self.cfg.weight_recency * recency + self.cfg.weight_importance * (row.importance - 0.5)
            )
            scored.append((base * boost, base, recency, row))
        scored.sort(key=lambda t: t[0], reverse=True)
        # explanations are built only for what is returned
        query_terms = set(lexical.tokenize(q.text))
        out: list[SearchHit] = []
        for score, base, recency, row in scored[: q.top_k]:
            per = scores[row.id]
            per["recency"] = round(recency, 6)
            per["importance"] = row.importance
            per["rrf"] = round(base, 6)
            when = row.occurred_at or row.valid_from or row.recorded_at
            age_days = max(0.0, (now - when).total_seconds() / 86400)
            out.append(
                SearchHit(
                    memory=memory_from_row(row),
                    score=score,
                    scores=per,
                    ranks=ranks[row.id],
                    why=_reasons(row, per, ranks[row.id], query_terms, graph_names.get(row.id, []), age_days),
                )
            )
        return out

    def _graph_candidates(self, q: Query, depth: int) -> tuple[list[tuple[str, float]], dict[str, list[str]]]:
        """Memories mentioning an entity the query names (or a neighbour of one).

        Entities are weighted like terms, by inverse document frequency: a name in every
        turn (the speaker of a two-person chat) says little; a rare place says a lot.
        Neighbours one hop away count half.
        """
        weight: dict[int, float] = {}
        names: dict[int, str] = {}
        for cube_id in q.cube_ids:
            g = self.graphs.get(cube_id)
            direct = g.match(q.text)
            for eid in direct:
                weight[eid] = 1.0
                names[eid] = g.graph.nodes[eid].get("name", "")
            for eid in g.neighbours(direct):
                weight.setdefault(eid, 0.5)
                names.setdefault(eid, g.graph.nodes[eid].get("name", ""))
        if not weight:
            return [], {}
        with self.store.session() as s:
            df = dict(
                s.execute(
                    select(MemoryEntityRow.entity_id, func.count())
                    .where(MemoryEntityRow.entity_id.in_(list(weight)))
                    .group_by(MemoryEntityRow.entity_id)
                ).all()
            )
            total = (
                s.scalar(select(func.count()).select_from(MemoryRow).where(MemoryRow.cube_id.in_(q.cube_ids)))
                or 1
            )
            # the rarest entities first, so the candidate cap keeps the informative ones
            ordered = sorted(weight, key=lambda e: df.get(e, 0))
            idf = {e: weight[e] * math.log(1 + total / max(1, df.get(e, 1))) for e in ordered}
            score: dict[str, float] = {}
            why: dict[str, list[str]] = {}
            budget = depth * 20
            for eid in ordered:
                if budget <= 0:
                    break
                mids = list(
                    s.scalars(
                        select(MemoryEntityRow.memory_id)
                        .where(MemoryEntityRow.entity_id == eid)
                        .limit(budget)
                    )
                )
                budget -= len(mids)
                for mid in mids:
                    score[mid] = score.get(mid, 0.0) + idf[eid]
                    why.setdefault(mid, []).append(names[eid])
        # normalise: 1.0 is one entity mentioned by a single memory of the searched cubes
        top = math.log(1 + total)
        best = sorted(((m, v / top) for m, v in score.items()), key=lambda kv: -kv[1])[:depth]
        return best, why


def _reasons(
    row: MemoryRow,
    per: dict[str, float],
    ranks: dict[str, int],
    query_terms: set[str],
    entities: list[str],
    age_days: float,
) -> list[str]:
    why: list[str] = []
    if "dense" in per:
        why.append(f"similar meaning (cosine {per['dense']:.2f}, rank {ranks['dense']})")
    if "lexical" in per:
        shared = sorted(query_terms & set(lexical.tokenize(row.text + " " + (row.speaker or ""))))
        words = ", ".join(shared[:6]) if shared else "rare terms"
        why.append(f"shares words: {words} (rank {ranks['lexical']})")
    if entities:
        why.append("mentions " + ", ".join(sorted(set(entities))[:5]))
    if age_days < 30:
        why.append(f"recent ({age_days:.0f} days old)")
    return why
