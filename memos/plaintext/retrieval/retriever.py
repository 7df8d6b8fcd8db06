"""Hybrid retrieval: dense + lexical (+ optional graph) paths, fused, then query-aware boosts.

1. Each path ranks candidates on its own: dense (cosine of the embedder's vectors),
   lexical (BM25; a conversation turn is indexed with the turn it answers, see
   :mod:`memos.plaintext.retrieval.turns`) and, when enabled, the entity graph.
2. Fusion (:mod:`memos.plaintext.retrieval.fusion`): by default each path's scores are rescaled onto [0, 1]
   — from the best candidate down to the worst, to 0 for a lexical path that listed
   every match (the score of no shared term), and over at most ``dense_window`` of
   cosine — and summed with the path weights; weighted reciprocal rank fusion is the
   alternative (``fusion = "rrf"``).
3. Boosts that read the query: a memory spoken by someone the query names, and one from
   the time a query names ("in May 2023", resolved against now), gain a share.
4. Session context: a turn gains a share of the best score among the turns of its
   session at most ``context_window`` turns away, itself included — conversations stay
   on a topic, and the answer often sits next to the turn that matches the words. A
   memory outside any session (a fact, a document) is its own passage and gains the
   same share of its own score, so a fact is not ranked below the turns for lack of
   neighbours.
5. A small recency and importance factor.

Every hit carries its per-path scores and ranks, each boost it received, and a list of
human-readable reasons. Rows are the truth: a candidate whose row is missing or no
longer searchable is dropped, so the index can never surface a deleted or purged memory.
Ranking reads a few columns of each candidate in one query; whole rows are loaded only
for the hits returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection, Dialect, Row
from sqlalchemy.orm import Session

from memos.config import SearchSettings
from memos.errors import InvalidFilter
from memos.extract.timeparse import query_time_range
from memos.plaintext.convert import memory_from_row
from memos.plaintext.graph import GraphCache
from memos.plaintext.retrieval import fusion, lexical, turns
from memos.plaintext.validation import check_unicode
from memos.protocols import Embedder, FieldMatch, FieldRange, IndexFilter, VectorIndex
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import (
    MemoryEntityRow,
    MemoryRow,
    MessageRow,
    UTCDateTime,
)
from memos.storage.relational.queries import memory_states_sql
from memos.types import SEARCHABLE_STATES, MemoryType, SearchHit

FILTER_KEYS = ("type", "speaker", "role", "session_id", "tags")
_SEARCHABLE = frozenset(str(x) for x in SEARCHABLE_STATES)


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    cube_ids: tuple[str, ...]
    top_k: int
    filters: Mapping[str, Any]
    time_range: tuple[datetime | None, datetime | None] | None
    #: the states a hit may be in (``include_archived`` adds ``archived``)
    states: frozenset[str] = _SEARCHABLE


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
        for v in (key, *values):
            if isinstance(v, str):
                check_unicode(v, f"filter {key!r}")
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


def row_matches(row: MemoryRow | Row[Any], flt: IndexFilter) -> bool:
    """The same filter, evaluated on a row (for candidates that did not come from the index):
    a ``MemoryRow`` or a result row of :data:`_FILTERED_COLUMNS`."""
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


#: what :func:`row_matches` reads of a memory (and its id)
_FILTERED_COLUMNS = (
    MemoryRow.id,
    MemoryRow.type,
    MemoryRow.speaker,
    MemoryRow.role,
    MemoryRow.session_id,
    MemoryRow.tags,
    MemoryRow.meta.label("meta"),
    MemoryRow.occurred_at,
    MemoryRow.valid_from,
    MemoryRow.recorded_at,
)


#: the memories a search returns, whole (built once: every search runs it)
_ROWS_BY_ID = select(MemoryRow).where(MemoryRow.id.in_(bindparam("ids", expanding=True)))


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
        self._fixed: dict[str, _Fixed] = {}

    def clear_cache(self) -> None:
        """Forget the cached fixed facts of memories (benchmarks measure cold searches with it)."""
        self._fixed = {}

    def search(self, q: Query, now: datetime) -> list[SearchHit]:
        cfg = self.cfg
        flt = build_filter(q.cube_ids, q.filters, q.time_range)
        depth = max(cfg.candidates, q.top_k * 2)
        ranked: dict[str, Sequence[tuple[str, float]]] = {}
        dense = self.embedder.embed_query(q.text) if cfg.weight_dense > 0 else None
        sparse = lexical.encode_query(q.text) if cfg.weight_lexical > 0 else None
        if sparse is not None and not sparse.indices:
            sparse = None
        if dense is not None or sparse is not None:
            # one call: the engine plans both searches as one batch (hits are (id, score) tuples)
            dense_hits, sparse_hits = self.index.search_both(dense, sparse, flt, depth)
            if dense is not None:
                ranked["dense"] = dense_hits
            if sparse is not None:
                ranked["lexical"] = sparse_hits
        graph_names: dict[str, list[str]] = {}
        if cfg.graph_expansion and cfg.weight_graph > 0:
            ranked["graph"], graph_names = self._graph_candidates(q, depth)

        weights = {"dense": cfg.weight_dense, "lexical": cfg.weight_lexical, "graph": cfg.weight_graph}
        if cfg.fusion == "rrf":
            fused = fusion.fuse_rrf(ranked, weights, cfg.rrf_k, strength={"graph": True})
        else:
            # a lexical path that listed all it matched (a small cube) leaves the rest at 0,
            # its floor; cosines far below the best are no evidence (the dense window)
            fused = fusion.fuse(
                ranked,
                weights,
                absolute=("graph",),
                depth=depth,
                floors={"lexical": 0.0},
                windows={"dense": cfg.dense_window},
            )
        if not fused:
            return []
        # graph candidates come from rows, not the index: the filter is checked on their rows
        unfiltered = {mid for mid, _ in ranked.get("graph", [])} - {
            mid for path in ("dense", "lexical") for mid, _ in ranked.get(path, [])
        }
        # one read session for the candidates and the rows returned
        with self.store.read_session() as s:
            cands = self._candidates(
                s, list(fused), q.cube_ids, flt if flt.must else None, unfiltered, q.states
            )

            # query-aware boosts: who is asked about, and when
            speakers = fusion.SpeakerMatcher(q.text) if cfg.speaker_boost > 0 else None
            asked_when = query_time_range(q.text, now) if cfg.time_boost > 0 else None
            slack = timedelta(days=cfg.time_slack_days)
            boosted: dict[str, float] = {}
            for mid, c in cands.items():
                value = fused[mid]
                if speakers is not None and speakers.named(c.speaker):
                    value *= 1 + cfg.speaker_boost
                    c.speaker_named = True
                if asked_when is not None and asked_when[0] <= c.when < asked_when[1] + slack:
                    value *= 1 + cfg.time_boost
                    c.in_time = True
                boosted[mid] = value

            # session context: a turn near a strongly matching turn is lifted with it
            if cfg.context_weight > 0 and cfg.context_window > 0:
                places = {
                    mid: (c.place, c.seq)
                    for mid, c in cands.items()
                    if c.place is not None and c.seq is not None
                }
                lifted = fusion.context_lift(boosted, places, cfg.context_window)
                for mid, c in cands.items():
                    # a memory outside any session (a fact, a document) is its own passage:
                    # it gains the same share of its own score that a turn at least gains
                    best, who = lifted.get(mid, (boosted[mid], mid))
                    c.context = cfg.context_weight * best
                    if who != mid:
                        c.near = places[who][1] - places[mid][1]
                    boosted[mid] += c.context

            scored: list[tuple[float, str]] = []
            for mid, c in cands.items():
                age_days = max(0.0, (now - c.when).total_seconds() / 86400)
                c.recency = math.pow(0.5, age_days / cfg.recency_half_life_days)
                c.age_days = age_days
                boost = 1 + cfg.weight_recency * c.recency + cfg.weight_importance * (c.importance - 0.5)
                scored.append((boosted[mid] * boost, mid))
            scored.sort(key=lambda t: (-t[0], t[1]))
            top = scored[: q.top_k]
            # full rows and explanations only for what is returned (same read session)
            rows = {r.id: r for r in s.scalars(_ROWS_BY_ID, {"ids": [m for _, m in top]})}
            query_terms = set(lexical.tokenize(q.text))
            own_terms = {mid: _terms(_own_text(row)) for mid, row in rows.items()}
            lexical_ids = {mid for mid, _ in ranked.get("lexical", [])}
            # a turn is lexically indexed with the turn it answers: show that turn's words too
            answered = [mid for mid in own_terms if mid in lexical_ids and cands[mid].seq is not None]
            context_text = turns.texts_before(s, {mid: cands[mid].position() for mid in answered})
        scores: dict[str, dict[str, float]] = {}
        ranks: dict[str, dict[str, int]] = {}
        wanted = {mid for _, mid in top}
        for path, items in ranked.items():
            for rank, (mid, score) in enumerate(items, start=1):
                if mid in wanted:
                    scores.setdefault(mid, {})[path] = round(score, 6)
                    ranks.setdefault(mid, {})[path] = rank
        out: list[SearchHit] = []
        for score, mid in top:
            row = rows.get(mid)
            if row is None:  # purged between the two reads
                continue
            c = cands[mid]
            per = scores.get(mid, {})
            per["fused"] = round(fused[mid], 6)
            if c.speaker_named:
                per["speaker"] = round(1 + cfg.speaker_boost, 6)
            if c.in_time:
                per["time"] = round(1 + cfg.time_boost, 6)
            if c.context:
                per["context"] = round(c.context, 6)
            per["recency"] = round(c.recency, 6)
            per["importance"] = row.importance
            out.append(
                SearchHit(
                    memory=memory_from_row(row),
                    score=score,
                    scores=per,
                    ranks=ranks.get(mid, {}),
                    why=_reasons(
                        row,
                        c,
                        per,
                        ranks.get(mid, {}),
                        query_terms,
                        own_terms[mid],
                        graph_names.get(mid, []),
                        asked_when,
                        context_text.get(mid, ""),
                    ),
                )
            )
        return out

    def _candidates(
        self,
        s: Session,
        ids: list[str],
        cube_ids: Sequence[str],
        flt: IndexFilter | None,
        unfiltered: set[str],
        states: frozenset[str] = _SEARCHABLE,
    ) -> dict[str, _Candidate]:
        """What ranking needs of each candidate: one light query by primary key per search.

        Rows are the truth: a candidate whose row is missing or no longer searchable is
        dropped, so state (and importance, which ``update`` may change) is read for every
        candidate on every search. What never changes once a memory exists — its cube,
        speaker, time and place in its session — is read once, with the message log, and
        kept in a bounded in-process cache.
        """
        fixed = self._fixed
        missing = [mid for mid in ids if mid not in fixed]
        live: dict[str, tuple[str, float]] = {}
        conn = s.connection()
        if missing:
            # Only the primary key in WHERE: with cube_id/state there too, SQLite's planner
            # prefers the (cube_id, state) index and scans every memory of the cubes. A plain
            # driver statement, like the hot path below (SQLAlchemy's compilation of a
            # 200-value IN list costs as much as the lookups themselves).
            m, g = MemoryRow.__tablename__, MessageRow.__tablename__
            sql = (
                f"SELECT m.id, m.cube_id, m.state, m.speaker, "
                f"COALESCE(m.occurred_at, m.valid_from, m.recorded_at), m.importance, g.session_id, g.id "
                f"FROM {m} m LEFT OUTER JOIN {g} g ON g.memory_id = m.id WHERE m.id IN ({_marks(conn, len(missing))})"
            )
            to_when = _when_processor(conn.dialect)
            if len(fixed) + len(missing) > _FIXED_CACHE:
                self._fixed = fixed = {}  # a new dict: a concurrent search keeps reading the old one
            for mid, cube_id, state, speaker, when, importance, session_id, seq in conn.exec_driver_sql(
                sql, tuple(missing)
            ).all():
                live[mid] = (str(state), float(importance))
                known = fixed.get(mid)
                if known is not None:  # a memory holding several messages sits at its first
                    if seq is not None and known.seq is not None and seq < known.seq:
                        fixed[mid] = known._replace(seq=seq)
                    continue
                # a turn outside any session has no neighbours to speak of: not a positioned turn
                positioned = session_id is not None and seq is not None
                fixed[mid] = _Fixed(
                    cube_id,
                    speaker,
                    to_when(when) if to_when is not None else when,
                    (cube_id, str(session_id)) if positioned else None,
                    seq if positioned else None,
                )
        cached = [mid for mid in ids if mid not in live and mid in fixed]
        if cached:
            # the hot path of every search: answered from the covering index alone
            sql = memory_states_sql(conn.dialect, len(cached))
            for mid, state, importance in conn.exec_driver_sql(sql, tuple(cached)).all():
                live[mid] = (str(state), float(importance))
        cubes = set(cube_ids)
        out: dict[str, _Candidate] = {}
        for mid in ids:
            current = live.get(mid)
            info = fixed.get(mid)
            if current is None or info is None or current[0] not in states or info.cube_id not in cubes:
                continue
            out[mid] = _Candidate(
                speaker=info.speaker, when=info.when, importance=current[1], place=info.place, seq=info.seq
            )
        if flt is not None and unfiltered:
            check = [mid for mid in unfiltered if mid in out]
            if check:
                # the columns a filter reads, not whole ORM rows (a graph brings up to
                # ``candidates`` of them)
                for row in s.execute(select(*_FILTERED_COLUMNS).where(MemoryRow.id.in_(check))):
                    if not row_matches(row, flt):
                        out.pop(row.id, None)
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
        with self.store.read_session() as s:
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


def _marks(conn: Connection, n: int) -> str:
    """``n`` bound-parameter placeholders for a driver-level ``IN (…)`` list."""
    return ", ".join(["?" if conn.dialect.paramstyle == "qmark" else "%s"] * n)


@lru_cache(maxsize=4)
def _when_processor(dialect: Dialect) -> Callable[[Any], Any] | None:
    """How SQLAlchemy turns a stored time into an aware UTC datetime on ``dialect``."""
    return UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)


class _Fixed(NamedTuple):
    """What never changes about a memory once it exists (cached by the retriever)."""

    cube_id: str
    speaker: str | None
    when: datetime
    place: tuple[str, str] | None
    seq: int | None


#: memories whose fixed facts the retriever keeps (about 200 bytes each)
_FIXED_CACHE = 200_000


@dataclass(slots=True)
class _Candidate:
    """What ranking needs to know of one candidate, and what lifted it (for ``why``)."""

    speaker: str | None
    when: datetime
    importance: float
    #: (cube id, session id) of a turn; None for memories that are not turns
    place: tuple[str, str] | None = None
    seq: int | None = None
    speaker_named: bool = False
    in_time: bool = False
    context: float = 0.0
    #: how many turns away the turn that lifted this one is (negative: before it)
    near: int | None = None
    recency: float = 0.0
    age_days: float = 0.0

    def position(self) -> turns.Position:
        assert self.place is not None and self.seq is not None
        return turns.Position(self.place[0], self.place[1], self.seq)


def _own_text(row: MemoryRow) -> str:
    return row.text + " " + (row.speaker or "")


@lru_cache(maxsize=8192)
def _terms(text: str) -> frozenset[str]:
    """Index terms of a text; cached, since the same memories are returned again and again."""
    return frozenset(lexical.tokenize(text))


def _reasons(
    row: MemoryRow,
    c: _Candidate,
    per: dict[str, float],
    ranks: dict[str, int],
    query_terms: set[str],
    own_terms: frozenset[str],
    entities: list[str],
    asked_when: tuple[datetime, datetime] | None,
    context: str,
) -> list[str]:
    why: list[str] = []
    if "dense" in per:
        why.append(f"similar meaning (cosine {per['dense']:.2f}, rank {ranks['dense']})")
    if "lexical" in per:
        shared = sorted(query_terms & own_terms)
        in_context = sorted((query_terms & _terms(context)) - own_terms) if context else []
        parts = []
        if shared:
            parts.append(f"shares words: {', '.join(shared[:6])}")
        if in_context:
            parts.append(f"answers a turn with: {', '.join(in_context[:6])}")
        why.append(f"{'; '.join(parts) or 'shares rare terms'} (rank {ranks['lexical']})")
    if entities:
        why.append("mentions " + ", ".join(sorted(set(entities))[:5]))
    if c.speaker_named:
        why.append(f"spoken by {row.speaker}, whom the query names")
    if c.in_time and asked_when is not None:
        why.append(f"from the time the query asks about ({_interval(asked_when)})")
    if c.near is not None:
        steps = abs(c.near)
        where = f"{steps} turn{'s' if steps != 1 else ''} {'after' if c.near < 0 else 'before'}"
        why.append(f"{where} a closely matching turn of session {row.session_id}")
    if c.age_days < 30:
        why.append(f"recent ({c.age_days:.0f} days old)")
    return why


def _interval(span: tuple[datetime, datetime]) -> str:
    first = span[0].date()
    last = (span[1] - timedelta(microseconds=1)).date()
    return first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
