"""Rich renderings of the SDK's types, for people (``--json`` bypasses all of this)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from memos.types import AuditEvent, Cube, History, MemoryItem, SearchHit, Share, User

TEXT_WIDTH = 120


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A timestamp, compact: ``2023-05-08 13:56``."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def short(text: str, width: int = TEXT_WIDTH) -> str:
    """One line of at most ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def occurred(item: MemoryItem) -> datetime | None:
    """When the memory happened (the message time), else when it became valid."""
    return item.provenance.timestamp or item.valid_from


def origin(item: MemoryItem) -> str:
    """Where a memory came from: ``session/message`` of a chat turn, and for a derived fact the
    (short) ids of the memories it was derived from."""
    p = item.provenance
    parts = []
    if p.session_id or p.message_id:
        parts.append(f"{p.session_id or '-'}/{p.message_id}" if p.message_id else f"{p.session_id}")
    if p.source_ids:
        parts.append("from " + ", ".join(s[:8] for s in p.source_ids))
    return " ".join(parts) or "-"


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def memories_table(items: Sequence[MemoryItem], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("type")
    table.add_column("state")
    table.add_column("speaker")
    table.add_column("date", no_wrap=True)
    table.add_column("text", overflow="fold")
    for m in items:
        table.add_row(
            m.id,
            str(m.type),
            str(m.state),
            escape(m.provenance.speaker or "-"),
            when(occurred(m)),
            escape(short(m.text)),
        )
    return table


def memory_detail(item: MemoryItem) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    p = item.provenance
    rows: list[tuple[str, str]] = [
        ("id", item.id),
        ("cube", item.cube_id),
        ("kind / type", f"{item.kind} / {item.type}"),
        ("state", str(item.state) + (f" (by {item.superseded_by})" if item.superseded_by else "")),
        ("version", str(item.version)),
        ("importance", f"{item.importance:g}"),
        ("tags", ", ".join(item.tags) or "-"),
        ("metadata", compact_json(item.metadata) if item.metadata else "-"),
        ("speaker / role", f"{p.speaker or '-'} / {p.role or '-'}"),
        ("session / message", f"{p.session_id or '-'} / {p.message_id or '-'}"),
        ("occurred", when(p.timestamp, seconds=True)),
        ("valid", f"{when(item.valid_from, seconds=True)} → {when(item.valid_to, seconds=True)}"),
        ("recorded", when(item.recorded_at, seconds=True)),
        ("updated", when(item.updated_at, seconds=True)),
        ("hits", f"{item.hits} (last {when(item.last_accessed, seconds=True)})"),
    ]
    if p.source_ids:
        rows.append(("derived from", ", ".join(p.source_ids)))
    if p.extractor:
        conf = f" (confidence {p.confidence:.2f})" if p.confidence is not None else ""
        rows.append(("extractor", p.extractor + conf))
    rows.append(("text", item.text))
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def hits_table(hits: Sequence[SearchHit], query: str) -> Table:
    table = Table(title=f"{len(hits)} result(s) for {escape(repr(query))}")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("type")
    table.add_column("speaker")
    table.add_column("date", no_wrap=True)
    table.add_column("text", overflow="fold", ratio=3)
    table.add_column("why", overflow="fold", ratio=2)
    table.add_column("from", overflow="fold")
    table.add_column("id", style="cyan", overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        m = hit.memory
        table.add_row(
            str(rank),
            f"{hit.score:.3f}",
            str(m.type),
            escape(m.provenance.speaker or "-"),
            when(occurred(m)),
            escape(short(m.text)),
            escape("; ".join(hit.why) or "-"),
            escape(origin(m)),
            m.id,
        )
    return table


def history_tables(history: History) -> tuple[Table, Table]:
    versions = Table(title=f"versions of {history.memory_id}")
    versions.add_column("v", justify="right")
    versions.add_column("recorded", no_wrap=True)
    versions.add_column("by")
    versions.add_column("reason")
    versions.add_column("importance", justify="right")
    versions.add_column("tags")
    versions.add_column("text", overflow="fold")
    for v in history.versions:
        versions.add_row(
            str(v.version),
            when(v.recorded_at, seconds=True),
            escape(v.actor or "-"),
            escape(v.reason or "-"),
            f"{v.importance:g}",
            escape(", ".join(v.tags) or "-"),
            escape(short(v.text)),
        )
    return versions, events_table(history.events, title="events")


def events_table(events: Sequence[AuditEvent], title: str | None = None) -> Table:
    table = Table(title=title)
    table.add_column("when", no_wrap=True)
    table.add_column("who")
    table.add_column("action")
    table.add_column("reason")
    table.add_column("details", overflow="fold")
    for e in events:
        table.add_row(
            when(e.ts, seconds=True),
            escape(e.actor or "-"),
            e.action,
            escape(e.reason or "-"),
            escape(compact_json(e.details) if e.details else "-"),
        )
    return table


def users_table(users: Sequence[User]) -> Table:
    table = Table(title="users")
    table.add_column("id", style="cyan")
    table.add_column("name")
    table.add_column("created", no_wrap=True)
    for u in users:
        table.add_row(escape(u.id), escape(u.name), when(u.created_at))
    return table


def cubes_table(cubes: Sequence[Cube], user_id: str) -> Table:
    table = Table(title=f"cubes visible to {escape(user_id)}")
    table.add_column("name", style="bold")
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("owner")
    table.add_column("your role")
    table.add_column("created", no_wrap=True)
    table.add_column("description", overflow="fold")
    for c in cubes:
        table.add_row(
            escape(c.name),
            c.id,
            escape(c.owner_id),
            str(c.role or "-"),
            when(c.created_at),
            escape(c.description or "-"),
        )
    return table


def shares_table(shares: Sequence[Share]) -> Table:
    table = Table(title="access")
    table.add_column("user", style="cyan")
    table.add_column("role")
    table.add_column("granted", no_wrap=True)
    table.add_column("by")
    for s in shares:
        table.add_row(escape(s.user_id), str(s.role), when(s.granted_at), escape(s.granted_by or "-"))
    return table


def mapping_table(data: Mapping[str, Any], title: str | None = None) -> Table:
    """A nested mapping as ``key  value`` rows; nested keys are dotted (``search.rrf_k``)."""
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in flatten(data):
        table.add_row(escape(key), escape("-" if value is None else str(value)))
    return table


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def print_all(console: Console, *renderables: Any) -> None:
    for r in renderables:
        console.print(r)
