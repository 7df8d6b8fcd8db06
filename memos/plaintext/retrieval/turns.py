"""Where a turn sits in its conversation.

An episode made from a message knows its session and, through the ``messages`` log, its
place in it. Two things use that place:

* indexing: a reply is lexically indexed together with the turn it answers
  (:func:`previous_turns`), because a question is often worded like the turn that
  prompted the answer ("Have you looked into adoption?" / "Yes, three agencies!");
* retrieval: turns near a strongly matching turn of the same session are lifted a little
  (:func:`positions`), because a conversation stays on a topic for a while.

Message ids are assigned in insertion order, so within a session they order the turns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memos.storage.relational.models import MessageRow

__all__ = ["CONTEXT_MAX_CHARS", "Position", "positions", "previous_turns", "texts_before"]

#: the previous turn is cut to this many characters before it is indexed with a reply
CONTEXT_MAX_CHARS = 1000

_CHUNK = 500  # ids per IN (...) list, well below every backend's parameter limit


@dataclass(frozen=True, slots=True)
class Position:
    """A turn's place: its cube, its session and its message's sequence number."""

    cube_id: str
    session_id: str
    seq: int


def positions(s: Session, memory_ids: Iterable[str]) -> dict[str, Position]:
    """The session and sequence number of each memory that holds a message in a session.

    Memories without a message (facts, documents) or without a session are left out.
    """
    out: dict[str, Position] = {}
    ids = list(dict.fromkeys(memory_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = s.execute(
            select(MessageRow.memory_id, MessageRow.cube_id, MessageRow.session_id, func.min(MessageRow.id))
            .where(MessageRow.memory_id.in_(chunk), MessageRow.session_id.is_not(None))
            .group_by(MessageRow.memory_id, MessageRow.cube_id, MessageRow.session_id)
        )
        for memory_id, cube_id, session_id, seq in rows:
            out[memory_id] = Position(cube_id, str(session_id), seq)  # NULL sessions are filtered out
    return out


def previous_turns(s: Session, memory_ids: Iterable[str]) -> dict[str, str]:
    """The text of the turn before each memory's message in the same session.

    Every memory that is a turn of a session gets an entry; the first turn of a session
    gets ``""`` (it is still a turn: see :func:`memos.plaintext.retrieval.lexical.encode_document`).

    Messages of one ``add`` call are stored with consecutive ids, so the previous turn is
    almost always the message just before; one batched lookup finds those, and only a
    turn whose predecessor was stored apart (sessions written interleaved) costs a query
    of its own.
    """
    return texts_before(s, positions(s, memory_ids))


def texts_before(s: Session, pos: Mapping[str, Position]) -> dict[str, str]:
    """:func:`previous_turns` for memories whose places are already known."""
    if not pos:
        return {}
    before = {p.seq - 1 for p in pos.values() if p.seq > 1}
    found: dict[int, tuple[str, str | None, str]] = {}
    ordered = sorted(before)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        for mid, cube_id, session_id, content in s.execute(
            select(MessageRow.id, MessageRow.cube_id, MessageRow.session_id, MessageRow.content).where(
                MessageRow.id.in_(chunk)
            )
        ):
            found[mid] = (cube_id, session_id, content)
    out: dict[str, str] = {}
    for memory_id, p in pos.items():
        hit = found.get(p.seq - 1)
        if hit is not None and hit[0] == p.cube_id and hit[1] == p.session_id:
            text: str | None = hit[2]
        else:
            text = s.scalar(
                select(MessageRow.content)
                .where(
                    MessageRow.cube_id == p.cube_id,
                    MessageRow.session_id == p.session_id,
                    MessageRow.id < p.seq,
                )
                .order_by(MessageRow.id.desc())
                .limit(1)
            )
        out[memory_id] = (text or "")[:CONTEXT_MAX_CHARS]
    return out
