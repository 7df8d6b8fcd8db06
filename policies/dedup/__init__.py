"""dedup: near-duplicate statements are merged into one, keeping the history of both.

Two active memories of the same statement type (``types``: facts, preferences, profiles,
procedures — never episodes, chunks or summaries, which are records, not claims) are
duplicates when

- ``same_text``: their texts are equal once case, punctuation and spacing are folded;
- ``same_relation``: they state the same, non-empty set of subject–predicate–object
  triples in the knowledge graph (the rule the extractor applies when it writes a fact:
  the same relation told twice is one fact, whatever the wording or date note);
- ``similarity`` (off by default): the token sets of their folded texts have a Jaccard
  index of at least this (|A ∩ B| / |A ∪ B|) and, when ``vector_similarity`` is set too,
  the cosine of their vectors (the home's embedder over their texts) is at least that.

The vectors confirm the token overlap; they do not replace it. Each signal alone merges
claims that differ: shared words ("Alice works at Feedzai in Lisbon" / "… at Google in
Lisbon": Jaccard 0.71) and a close embedding ("Alice was born in 1990" / "… in 1985":
cosine 0.90 with the bundled MiniLM). Together, a looser ``similarity`` catches rewordings
("Mira, the sister of Alice, lives in Tromso" for "Alice's sister Mira lives in Tromso":
Jaccard 0.67, cosine 0.97) while a high ``vector_similarity`` vetoes the lexical
look-alikes (Google for Feedzai: cosine 0.81); and the Jaccard's prefix filter keeps the
pairs to compare near linear, where cosine alone would compare every pair of a type.
Neither near-duplicate rule merges two statements when a negation (not, no, never, n't, …)
is in one only: "Alice is vegetarian" and "Alice is not vegetarian" share three tokens of
four and have a cosine of 0.97, and say opposite things.

Duplicates group transitively; each group is merged into its oldest memory
(:meth:`MemOS.merge`): that one gets a new version with the union of their provenance and
tags, the others become ``superseded`` by it, with their rows and history, and ``restore``
brings them back (one restored from a merge is not merged again: someone said it differs).
The view carries each statement's folded text and its triples, and its vector only when
``vector_similarity`` is set (:meth:`needs_vectors`: the kernel embeds the statements then,
once per version); a statement without one is not merged by that rule. On by default for
exact duplicates (``same_text`` and ``same_relation``), which say nothing the kept memory
does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field, model_validator

from memos.policies.base import Action, CubeView, MemoryView, Merge, Policy, PolicySettings
from memos.types import AuditEvent, MemoryType

STATEMENTS = [MemoryType.fact, MemoryType.preference, MemoryType.profile, MemoryType.procedure]
#: folded tokens that negate a statement ("n't" folds to "t"): in one of two texts only,
#: they make the two contrary, however much else they share
NEGATIONS = frozenset({"not", "no", "never", "nor", "neither", "none", "nothing", "nobody", "cannot", "t"})


class DedupSettings(PolicySettings):
    types: list[MemoryType] = Field(
        default_factory=lambda: list(STATEMENTS), description="the statement types it merges"
    )
    same_text: bool = Field(True, description="merge statements whose folded texts are equal")
    same_relation: bool = Field(True, description="merge statements of the same subject–predicate–object")
    similarity: float | None = Field(
        None, gt=0, le=1, description="merge at this token-set Jaccard or more (null: off)"
    )
    vector_similarity: float | None = Field(
        None, gt=0, le=1, description="and their vectors' cosine at this or more (null: off)"
    )

    @model_validator(mode="after")
    def _vectors_confirm_tokens(self) -> DedupSettings:
        if self.vector_similarity is not None and self.similarity is None:
            raise ValueError(
                "vector_similarity confirms the token overlap of similarity: set similarity too (e.g. 0.5)"
            )
        return self


class DedupPolicy(Policy):
    name: ClassVar[str] = "dedup"
    Settings: ClassVar[type[PolicySettings]] = DedupSettings
    # after ttl, before decay and capacity: what is merged is not also archived
    order: ClassVar[int] = 15

    def needs_vectors(self, settings: Any) -> bool:
        return isinstance(settings, DedupSettings) and settings.vector_similarity is not None

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, DedupSettings)
        types = {str(t) for t in settings.types}
        pool = [m for m in view.active if m.type in types and m.text_key is not None]
        parent = {m.id: m.id for m in pool}
        why: dict[str, set[str]] = {}

        def union(a: str, b: str, rule: str) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
            why.setdefault(a, set()).add(rule)
            why.setdefault(b, set()).add(rule)

        def find(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def link(key_of: Any, rule: Any) -> None:
            first: dict[Any, MemoryView] = {}
            for m in pool:
                key = key_of(m)
                if key is None:
                    continue
                if key in first:
                    union(first[key].id, m.id, rule(key))
                else:
                    first[key] = m

        if settings.same_text:
            link(lambda m: (m.type, m.text_key), lambda _: "the same text")
        if settings.same_relation:
            link(
                lambda m: (m.type, m.relations) if m.relations else None,
                lambda k: "the same " + ", ".join(sorted(r.split("|")[1] for r in k[1])),
            )
        if settings.similarity is not None:
            cos_min = settings.vector_similarity
            for a, b, j, cos in similar(pool, settings.similarity, cos_min):
                rule = f"token overlap {j:.2f} ≥ {settings.similarity:g}"
                union(a, b, rule if cos is None else f"{rule} and cosine {cos:.2f} ≥ {cos_min:g}")
        groups: dict[str, list[MemoryView]] = {}
        for m in pool:
            groups.setdefault(find(m.id), []).append(m)
        out: list[Action] = []
        for members in groups.values():
            if len(members) < 2:
                continue
            members.sort(key=lambda m: (m.recorded_at, m.id))
            keep, merged = members[0], members[1:]
            rules = sorted({r for m in members for r in why.get(m.id, ())})
            out.append(
                Merge(
                    memory_id=keep.id,
                    reason=f"{len(merged)} duplicate {keep.type}(s): {'; '.join(rules)}",
                    merged_ids=tuple(m.id for m in merged),
                )
            )
        out.sort(key=lambda a: a.memory_id)
        return out


def similar(
    pool: Sequence[MemoryView], threshold: float, vector_threshold: float | None = None
) -> list[tuple[str, str, float, float | None]]:
    """Pairs of the same type whose token sets have a Jaccard index ≥ ``threshold`` and,
    with ``vector_threshold``, vectors whose cosine is ≥ it (a memory without a vector
    pairs with none), with neither having a negation the other lacks: (a, b, Jaccard,
    cosine or None).

    Prefix filtering keeps it near linear: with each set's tokens ordered rarest first, two
    sets can reach the threshold only if they share a token among the first
    ``|A| − ⌈t·|A|⌉ + 1`` of either."""
    tokens = {m.id: frozenset((m.text_key or "").split()) for m in pool}
    freq: dict[str, int] = {}
    for toks in tokens.values():
        for t in toks:
            freq[t] = freq.get(t, 0) + 1
    postings: dict[tuple[str, str], list[MemoryView]] = {}
    found: dict[tuple[str, str], tuple[float, float | None]] = {}
    for m in pool:
        toks = tokens[m.id]
        if not toks:
            continue
        ordered = sorted(toks, key=lambda t: (freq[t], t))
        prefix = ordered[: len(toks) - math.ceil(threshold * len(toks)) + 1]
        for t in prefix:
            for other in postings.get((m.type, t), []):
                pair = (other.id, m.id)
                if pair in found:
                    continue
                o = tokens[other.id]
                j = len(toks & o) / len(toks | o)
                if j < threshold or (toks ^ o) & NEGATIONS:
                    continue
                if vector_threshold is None:
                    found[pair] = (j, None)
                elif (cos := cosine(m.vector, other.vector)) is not None and cos >= vector_threshold:
                    found[pair] = (j, cos)
            postings.setdefault((m.type, t), []).append(m)
    return [(a, b, j, cos) for (a, b), (j, cos) in found.items()]


def cosine(a: Sequence[float] | None, b: Sequence[float] | None) -> float | None:
    """The cosine of two vectors; None when either is missing or zero."""
    if a is None or b is None:
        return None
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return dot / norm if norm else None
