"""Session summaries: one ``summary`` memory per session, linked to the episodes it summarises.

``summarize_session`` writes a memory of type ``summary`` whose provenance (``source_ids``)
is the session's episodes, so what they said survives them when the capacity or decay
policy archives them (:attr:`memos.policies.base.CubeView.covered`). A session has one
summary: asked again, it returns the summary it has; asked with ``refresh=True`` when
turns were added to the session since, it rewrites that summary from all of them as a
new version of the same memory (the history keeps the old text). Its metadata's
``version`` is the version this service wrote: a higher one is a person's edit, which
the summaries policy does not overwrite.

The text comes from the LLM (the configured runtime) when the home's extractor is
``"llm"``, and otherwise — or when the model fails, times out or copies the conversation
out — from the extractive fallback, which needs no model and gives the same text for the
same episodes (the LLM's failure is kept in the summary's metadata, ``llm_error``):

- the episodes are split into sentences; a sentence scores
  ``2 × (relations the rule extractor finds in it) + Σ ln(1 + n / df(w)) / √k`` over its
  ``k`` distinct content words ``w`` (``n`` sentences in the session, ``df(w)`` of them
  holding ``w``): what states a fact or says something the rest of the session does not
  repeat ranks first; a question counts half, a sentence of fewer than three content words
  not at all;
- the best sentences are taken until ``max_chars`` is reached and written in the order
  they were said, each after its speaker, behind the session's first date.
"""

from __future__ import annotations

import builtins
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from memos import acl
from memos.errors import InvalidInput, InvalidState
from memos.events import Event, EventKind
from memos.extract.rules import RuleExtractor
from memos.home import Home
from memos.plaintext.convert import memory_from_row, snapshot
from memos.protocols import Extractor, Runtime
from memos.runtime import ChatMessage, GenerationParams
from memos.storage.relational.models import MemoryRow, MessageRow
from memos.types import SUMMARY_DIGEST, MemoryItem, text_digest

log = logging.getLogger(__name__)

#: the longest summary by default (characters)
MAX_CHARS = 600
#: the most transcript the LLM is shown (characters, the latest turns kept)
MAX_TRANSCRIPT = 6000
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
_WORD = re.compile(r"[a-z0-9][a-z0-9'’-]*")
_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    both but by can could did do does doing done down during each few for from further get got had
    has have having he her here hers him his how i if in into is it its just let like me more most
    my no nor not now of off on once only or other our ours out over own really same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we well were what when where which while who whom why will with would
    yeah yes you your yours oh ok okay""".split()  # noqa: SIM905 - a word list reads better as text
)

#: the instruction comes after the conversation: small models asked before it copy it out
SYSTEM = (
    "You write short third-person summaries of conversations that keep the names, dates, "
    "places, plans, events and preferences they mention."
)
ASK = "Write a summary of at most {words} words of what {who} said."


@dataclass(frozen=True, slots=True)
class Turn:
    """One episode of the session, as the summary reads it."""

    id: str
    speaker: str | None
    text: str
    at: datetime | None


class Summaries:
    """``MemOS.summarize_session``; the summary policy's actions run here."""

    def __init__(self, home: Home, *, runtimes: Callable[[], Runtime] | None = None) -> None:
        self.home = home
        self.runtimes = runtimes

    def summarize_session(
        self,
        cube_id: str,
        session_id: str,
        *,
        user_id: str,
        episode_ids: Sequence[str] | None = None,
        max_chars: int = MAX_CHARS,
        refresh: bool = False,
        if_version: int | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> MemoryItem:
        """The summary of ``session_id`` in ``cube_id``, written now if it has none.

        ``episode_ids`` (default: the session's active and archived episodes) are what it
        summarises and links to. By default a session is summarised once: asked again, it
        returns the summary it has, even when turns were added since. ``refresh=True``
        rewrites a summary that does not link to every one of those episodes from all of
        them, as a new version of the same memory (text, provenance, metadata; its tags,
        importance and state stay), and returns one that does as it is; a deleted or
        expired summary must be restored first (InvalidState). ``if_version``: refresh only
        while the summary is at that version (InvalidState otherwise: it changed since it
        was read — the summaries policy's guard against overwriting a person's edit).
        ``actor`` names who decided (``policy:summaries``) in the audit log when it is not
        ``user_id``."""
        if not isinstance(max_chars, int) or max_chars < 80:
            raise InvalidInput("max_chars must be an integer of at least 80")
        with self.home.store.read_session() as s:
            acl.require(s, cube_id, user_id, acl.WRITE)
            existing = self._existing(s, cube_id, session_id)
            if existing is not None:
                if not refresh:
                    return memory_from_row(existing)
                _check_refreshable(existing, if_version)
            turns = self._turns(s, cube_id, session_id, episode_ids)
            if existing is not None and _covers(existing, turns):
                return memory_from_row(existing)
            read_version = existing.version if existing is not None else None
        # the model runs outside the write lock: adds and searches go on meanwhile
        text, method, error = self._compose(turns, max_chars)
        now = self.home.clock()
        with self.home.recording() as rec, self.home.write_lock:
            with self.home.store.session() as s:
                acl.require(s, cube_id, user_id, acl.WRITE)
                existing = self._existing(s, cube_id, session_id)
                if existing is not None and (read_version is None or _covers(existing, turns)):
                    return memory_from_row(existing)  # another worker got there first
                meta: dict[str, object] = {
                    "summary_of": session_id, "episodes": len(turns), "method": method, SUMMARY_DIGEST: text_digest(text),
                }  # fmt: skip
                if error is not None:
                    meta["llm_error"] = error[:300]
                if existing is not None:
                    _check_refreshable(existing, read_version)
                    row = existing
                    details = self._rewrite(row, turns, text, method, meta, now)
                    why = reason or f"summary of session {session_id} refreshed with {details['added']} more"
                    event = Event(
                        EventKind.memory_updated, now, actor or user_id, cube_id, (row.id,), reason, details
                    )
                else:
                    when = [t.at for t in turns if t.at is not None]
                    row = MemoryRow(
                        id=str(uuid.uuid4()),
                        cube_id=cube_id,
                        kind="plaintext",
                        type="summary",
                        text=text,
                        meta={**meta, "version": 1},
                        tags=[],
                        importance=0.5,
                        session_id=session_id,
                        source_ids=[t.id for t in turns],
                        extractor=method,
                        occurred_at=min(when) if when else None,
                        valid_from=min(when) if when else None,
                        recorded_at=now,
                        version=1,
                        state="active",
                        hits=0,
                        updated_at=now,
                        index_state="pending",
                    )
                    s.add(row)
                    s.flush()
                    why = reason or f"summary of session {session_id}"
                    details = {"session": session_id, "extractor": method, "sources": len(turns)}
                    event = Event(
                        EventKind.memory_extracted, now, actor or user_id, cube_id, (row.id,), reason, details
                    )
                s.add(snapshot(row, actor or user_id, why))
                rec.record(s, event)
                item = memory_from_row(row)
            self.home.indexer.sync([item.id])
        return item

    @staticmethod
    def _rewrite(
        row: MemoryRow, turns: list[Turn], text: str, method: str, meta: dict[str, object], now: datetime
    ) -> dict[str, object]:
        """``row`` rewritten from ``turns`` as its next version; the details of its event."""
        added = len({t.id for t in turns} - set(row.source_ids or ()))
        changed = ["text"] if text != row.text else []
        kept = {k: v for k, v in (row.meta or {}).items() if k != "llm_error"}  # a person's keys stay
        new_meta = {**kept, **meta, "version": row.version + 1}
        if new_meta != row.meta:
            changed.append("metadata")
        when = [t.at for t in turns if t.at is not None]
        row.text = text
        row.meta = new_meta
        row.source_ids = [t.id for t in turns]
        row.extractor = method
        row.occurred_at = row.valid_from = min(when) if when else None
        row.version += 1
        row.updated_at = now
        row.index_state = "pending"
        return {
            "version": row.version,
            "changed": [*changed, "provenance"],
            "session": row.session_id,
            "sources": len(turns),
            "added": added,
        }

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _existing(s: Session, cube_id: str, session_id: str) -> MemoryRow | None:
        return s.scalars(
            select(MemoryRow)
            .where(
                MemoryRow.cube_id == cube_id, MemoryRow.type == "summary", MemoryRow.session_id == session_id
            )
            .order_by(MemoryRow.recorded_at, MemoryRow.id)
            .limit(1)
        ).first()

    @staticmethod
    def _turns(s: Session, cube_id: str, session_id: str, episode_ids: Sequence[str] | None) -> list[Turn]:
        # a deleted, expired or superseded turn is not summarised (nor a purged one)
        q = select(MemoryRow).where(
            MemoryRow.cube_id == cube_id,
            MemoryRow.session_id == session_id,
            MemoryRow.type == "episode",
            MemoryRow.state.in_(("active", "archived")),
        )
        rows = {r.id: r for r in s.scalars(q)}
        if episode_ids is not None:
            wanted = list(dict.fromkeys(episode_ids))
            missing = [x for x in wanted if x not in rows]
            if missing:
                raise InvalidInput(
                    f"not active or archived episodes of session {session_id!r} in cube {cube_id}: {missing[:5]}"
                )
            rows = {x: rows[x] for x in wanted}
        if not rows:
            raise InvalidInput(f"session {session_id!r} of cube {cube_id} has no episodes to summarise")
        seq = dict(
            s.execute(select(MessageRow.memory_id, MessageRow.id).where(MessageRow.memory_id.in_(list(rows))))
            .tuples()
            .all()
        )
        ordered = sorted(
            rows.values(),
            key=lambda r: (r.occurred_at or r.recorded_at, seq.get(r.id, 0), r.recorded_at, r.id),
        )
        return [Turn(r.id, r.speaker, r.text, r.occurred_at or r.recorded_at) for r in ordered]

    # ------------------------------------------------------------------ writing
    def _compose(self, turns: list[Turn], max_chars: int) -> tuple[str, str, str | None]:
        """The summary text, the method that wrote it, and why the LLM failed (if it did)."""
        error = None
        if self.home.settings.extractor == "llm" and self.runtimes is not None:
            try:
                runtime = self.runtimes()
                text = llm_summary(runtime, turns, max_chars, timeout_s=self.home.settings.runtime.timeout_s)
                if text:
                    return text, f"llm:{runtime.fingerprint.model_id}", None
                error = "the model answered with nothing"
            except Exception as exc:  # noqa: BLE001 - a failing model falls back, never loses the summary
                log.warning("LLM summary failed, using the extractive one: %s", exc)
                error = f"{type(exc).__name__}: {exc}"
        extractor = self.home.extractor if isinstance(self.home.extractor, RuleExtractor) else RuleExtractor()
        return extractive_summary(turns, max_chars, extractor), "extractive", error


def _covers(summary: MemoryRow, turns: Sequence[Turn]) -> bool:
    """Whether ``summary`` already links to every one of ``turns``."""
    return {t.id for t in turns} <= set(summary.source_ids or ())


def _check_refreshable(summary: MemoryRow, version: int | None) -> None:
    if summary.state not in ("active", "archived"):
        raise InvalidState(
            f"the summary {summary.id} of session {summary.session_id!r} is {summary.state}; "
            "restore it before refreshing it"
        )
    if version is not None and summary.version != version:
        raise InvalidState(
            f"the summary {summary.id} of session {summary.session_id!r} is at version {summary.version}, "
            f"not {version}: it changed since it was read"
        )


def llm_summary(runtime: Runtime, turns: Sequence[Turn], max_chars: int, *, timeout_s: float) -> str:
    """The model's summary of ``turns``, cut to ``max_chars`` at a sentence end where it can."""
    lines = [f"{t.speaker or 'someone'}: {t.text}" for t in turns]
    transcript = "\n".join(lines)[-MAX_TRANSCRIPT:]
    speakers = list(dict.fromkeys(t.speaker for t in turns if t.speaker)) or ["the speakers"]
    who = " and ".join([", ".join(speakers[:-1]), speakers[-1]] if len(speakers) > 1 else speakers)
    ask = ASK.format(words=max(20, max_chars // 7), who=who)
    messages = [ChatMessage("system", SYSTEM), ChatMessage("user", f"Conversation:\n{transcript}\n\n{ask}")]
    gen = runtime.chat(messages, GenerationParams(max_tokens=max(32, max_chars // 3)))
    deadline = _deadline(timeout_s)
    for _ in gen:
        if deadline():
            raise TimeoutError(f"the summary took longer than {timeout_s:.0f} s")
    text = " ".join(gen.text.split())
    if text and _fold(text) in _fold(transcript):
        raise ValueError("the model copied the conversation out instead of summarising it")
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
        text = cut[: end + 1] if end > max_chars // 3 else cut.rstrip() + "…"
    return text


def extractive_summary(turns: Sequence[Turn], max_chars: int, extractor: Extractor) -> str:
    """The session's most informative sentences, in the order they were said (module doc)."""
    sentences: list[tuple[int, str | None, str, builtins.list[str]]] = []
    for i, t in enumerate(turns):
        for m in _SENTENCE.finditer(t.text):
            text = " ".join(m.group(0).split())
            words = list(
                dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2)
            )
            if text:
                sentences.append((i, t.speaker, text, words))
    n = len(sentences)
    df: dict[str, int] = {}
    for *_, words in sentences:
        for w in words:
            df[w] = df.get(w, 0) + 1
    scored = []
    for k, (i, speaker, text, words) in enumerate(sentences):
        if len(words) < 3:
            continue
        lexical = sum(math.log(1 + n / df[w]) for w in words) / math.sqrt(len(words))
        found = extractor.extract(text, speaker=speaker, reference_time=turns[i].at)
        score = 2.0 * len(found.relations) + lexical
        if text.endswith("?"):
            score /= 2
        scored.append((-score, k))
    head = f"Session of {turns[0].at:%Y-%m-%d}: " if turns and turns[0].at is not None else ""
    budget = max_chars - len(head)
    chosen: list[int] = []
    for _, k in sorted(scored):
        _, speaker, text, _ = sentences[k]
        piece = len(f"{speaker}: {text} " if speaker else f"{text} ")
        if piece <= budget:
            chosen.append(k)
            budget -= piece
    if not chosen:  # nothing long enough to score: the session's first words
        body = " ".join(f"{s}: {t}" if s else t for _, s, t, _ in sentences)
        return (head + body)[:max_chars].rstrip()
    parts = [
        f"{sentences[k][1]}: {sentences[k][2]}" if sentences[k][1] else sentences[k][2]
        for k in sorted(chosen)
    ]
    return head + " ".join(parts)


def _fold(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _deadline(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end
