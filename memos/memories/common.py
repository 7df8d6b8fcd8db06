"""What the memory services share: the extractor run inside a write and the shape of a
new memory row."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy.orm import Session

from memos.audit import Recording
from memos.errors import InvalidInput
from memos.events import Event, EventKind
from memos.home import Home
from memos.plaintext.knowledge import Applied, KnowledgeWriter
from memos.storage.relational.models import MemoryRow, MetaRow
from memos.types import MemoryType

log = logging.getLogger(__name__)


def run_extractor(
    home: Home,
    s: Session,
    rec: Recording,
    cube_id: str,
    rows: Sequence[MemoryRow],
    now: datetime,
    actor: str,
    *,
    new: bool,
) -> tuple[Applied, int]:
    """Run the extractor on each memory and write what it found, in this transaction
    (recording its events in ``rec``); returns what was applied and how many memories the
    extractor failed on.

    An extractor failure on one memory is counted and audited, never raised: the memory
    itself is stored either way."""
    extractor = home.extractor
    assert extractor is not None
    failed: builtins.list[Event] = []
    items = []
    for row in rows:
        try:
            extraction = extractor.extract(
                row.text, speaker=row.speaker, reference_time=row.occurred_at or now
            )
        except Exception as exc:  # noqa: BLE001 - any extractor failure must not lose the memory
            log.warning("extraction failed for memory %s: %s", row.id, exc)
            failed.append(
                Event(
                    EventKind.extraction_failed,
                    now,
                    actor,
                    row.cube_id,
                    (row.id,),
                    details={"extractor": extractor.name, "error": f"{type(exc).__name__}: {exc}"[:500]},
                )
            )
            continue
        items.append((row, extraction))
    rec.record(s, *failed)
    if failed:
        counter = s.get(MetaRow, "extraction_failures")
        if counter is None:
            s.add(MetaRow(key="extraction_failures", value={"count": len(failed)}))
        else:
            counter.value = {"count": int(counter.value.get("count", 0)) + len(failed)}
    writer = KnowledgeWriter(s, rec, cube_id, now=now, actor=actor, extractor=extractor.name)
    if new:
        for row in rows:
            writer.mark_new(row.id)
    with s.no_autoflush:
        return writer.apply(items), len(failed)


@dataclass(slots=True)
class NewMemory:
    """The values of a memory row about to be inserted, with :class:`MemoryRow`'s attribute names."""

    id: str
    cube_id: str
    kind: str
    type: str
    text: str
    meta: dict[str, Any]
    tags: builtins.list[Any]
    importance: float
    message_id: str | None
    session_id: str | None
    speaker: str | None
    role: str | None
    source_ids: builtins.list[Any]
    extractor: str | None
    confidence: float | None
    occurred_at: datetime | None
    valid_from: datetime | None
    valid_to: datetime | None
    recorded_at: datetime
    retired_at: datetime | None
    version: int
    state: str
    superseded_by: str | None
    hits: int
    last_accessed: datetime | None
    updated_at: datetime
    index_state: str


_MEMORY_COLUMNS = [(attr.key, attr.columns[0].name) for attr in MemoryRow.__mapper__.column_attrs]


def row_values(row: MemoryRow) -> dict[str, Any]:
    """A memory row as ``{column name: value}`` for a Core insert."""
    return {column: getattr(row, key) for key, column in _MEMORY_COLUMNS}


def memory_type(value: str | MemoryType | None, default: MemoryType) -> MemoryType:
    if value is None:
        return default
    try:
        return MemoryType(value)
    except ValueError:
        raise InvalidInput(f"unknown memory type {value!r}; known: {', '.join(MemoryType)}") from None


def new_row(**values: Any) -> MemoryRow:
    """A memory row's values, read like a row by the extractor, the indexer and
    ``memory_from_row``, and written with one Core insert (a mapped instance would cost
    as much as the insert)."""
    return cast(MemoryRow, NewMemory(**values))
