"""Pure pieces of ranking: fusing the paths' scores and the query-aware boosts.

Kept apart from :mod:`memos.plaintext.retrieval.retriever` (which fetches candidates and rows) so each step
can be read and tested on plain numbers.

* :func:`fuse` — score fusion: each path's scores are rescaled onto [0, 1] (:func:`rescale`),
  then summed with the path weights. Unlike reciprocal rank fusion it keeps *how much*
  better the first hit is than the tenth, which on LoCoMo was worth about seven points
  of recall@10 over RRF (:func:`fuse_rrf`, still offered).
* :class:`SpeakerMatcher` — which speakers a query names.
* :func:`context_lift` — within a session, the best score among the turns at most
  ``window`` turns away (itself included), so a turn in a passage that matches well is
  lifted along with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from memos.plaintext.retrieval import lexical

__all__ = ["SpeakerMatcher", "context_lift", "fuse", "fuse_rrf", "minmax", "rescale"]

K = TypeVar("K")
G = TypeVar("G")


def minmax(items: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores mapped onto [0, 1] by the best and worst of the list; all 1.0 when they tie."""
    return rescale(items)


def rescale(
    items: Sequence[tuple[str, float]], *, floor: float | None = None, window: float | None = None
) -> dict[str, float]:
    """Scores mapped onto [0, 1]: the best to 1.0, the bottom of the range to 0.0.

    The bottom is the worst score of the list, unless ``floor`` says what a memory the
    path did not list scores (a lexical path that listed every match: 0, no shared term)
    — then a weak match stays apart from no match. ``window`` bounds the range: scores
    more than ``window`` below the best all map to 0.0. Both keep tiny differences tiny:
    plain min-max blows the spread of five memories that share only a name, or of the
    few memories of a small cube, up to the whole range. All 1.0 when the scores tie.
    """
    if not items:
        return {}
    values = [v for _, v in items]
    hi = max(values)
    lo = min(values) if floor is None else min(floor, *values)
    if window is not None:
        lo = max(lo, hi - window)
    if hi - lo <= 1e-12:
        return {mid: 1.0 for mid, _ in items}
    return {mid: max(0.0, (v - lo) / (hi - lo)) for mid, v in items}


def fuse(
    ranked: Mapping[str, Sequence[tuple[str, float]]],
    weights: Mapping[str, float],
    *,
    absolute: Iterable[str] = (),
    depth: int | None = None,
    floors: Mapping[str, float] | None = None,
    windows: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Weighted sum of rescaled path scores (:func:`rescale`).

    ``ranked`` maps a path name to its ``(id, score)`` candidates. Paths named in
    ``absolute`` already score on a fixed [0, 1] scale (clipped, not re-normalised): the
    graph path's informativeness, where a weak match must stay weak even if it is the
    best there is. ``floors`` gives a path's score for a memory it does not list, used
    when the path listed fewer than ``depth`` candidates (everything it matched; a full
    list was cut, and what it left out may score up to its last); ``windows`` bounds a
    path's range.
    """
    fixed = set(absolute)
    floors = floors or {}
    windows = windows or {}
    out: dict[str, float] = {}
    for path, items in ranked.items():
        w = weights.get(path, 0.0)
        if w <= 0 or not items:
            continue
        if path in fixed:
            norm = {mid: min(1.0, max(0.0, v)) for mid, v in items}
        else:
            whole = depth is None or len(items) < depth
            norm = rescale(items, floor=floors.get(path) if whole else None, window=windows.get(path))
        for mid, v in norm.items():
            out[mid] = out.get(mid, 0.0) + w * v
    return out


def fuse_rrf(
    ranked: Mapping[str, Sequence[tuple[str, float]]],
    weights: Mapping[str, float],
    k: float,
    *,
    strength: Mapping[str, bool] | None = None,
) -> dict[str, float]:
    """Weighted reciprocal rank fusion: ``w / (k + rank)`` summed over paths.

    For paths flagged in ``strength`` the term is also multiplied by the (clipped) score,
    so a graph hit through a name that is everywhere counts less than one through a
    rare name.
    """
    strength = strength or {}
    out: dict[str, float] = {}
    for path, items in ranked.items():
        w = weights.get(path, 0.0)
        if w <= 0:
            continue
        for rank, (mid, score) in enumerate(items, start=1):
            scale = min(1.0, score) if strength.get(path) else 1.0
            out[mid] = out.get(mid, 0.0) + w * scale / (k + rank)
    return out


class SpeakerMatcher:
    """Tells whether a query names a speaker, by the words of the speaker's name.

    Names are compared as index terms (:func:`memos.plaintext.retrieval.lexical.tokenize`), so "Caroline's"
    in a query names "Caroline", and "Mira Lopez" is named by "Mira" or "Lopez". A name
    made only of stop words ("I", "Me") never matches.
    """

    def __init__(self, query: str) -> None:
        self._terms = set(lexical.tokenize(query))
        self._seen: dict[str, bool] = {}

    def named(self, speaker: str | None) -> bool:
        if not speaker or not self._terms:
            return False
        hit = self._seen.get(speaker)
        if hit is None:
            hit = bool(self._terms & set(lexical.tokenize(_NAME_SPLIT.sub(" ", speaker))))
            self._seen[speaker] = hit
        return hit


_NAME_SPLIT = re.compile(r"[_.@]+")


def context_lift(
    scores: Mapping[K, float], place: Mapping[K, tuple[G, int]], window: int
) -> dict[K, tuple[float, K]]:
    """For each id with a place ``(group, seq)``: the best score among the ids of the same
    group whose ``seq`` is at most ``window`` away (itself included), and whose it is.

    Ids without a place are left out. Runs in O(n * window) per group after sorting.
    """
    groups: dict[G, list[tuple[int, K]]] = {}
    for key, (group, seq) in place.items():
        if key in scores:
            groups.setdefault(group, []).append((seq, key))
    out: dict[K, tuple[float, K]] = {}
    for members in groups.values():
        members.sort(key=lambda t: t[0])
        n = len(members)
        lo = 0
        for seq, key in members:
            while members[lo][0] < seq - window:
                lo += 1
            best, who = scores[key], key
            j = lo
            while j < n and members[j][0] <= seq + window:
                other = members[j][1]
                if scores[other] > best:
                    best, who = scores[other], other
                j += 1
            out[key] = (best, who)
    return out
