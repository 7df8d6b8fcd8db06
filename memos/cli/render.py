"""Rich renderings of the SDK's types, for people (``--json`` bypasses all of this).

Tables must stay readable in an 80-column terminal: ids and times never wrap (an id is
copied whole into the next command), short columns are cut with an ellipsis, and the text
columns take what is left, with a minimum width so that they wrap between words, not
letter by letter. Details of a memory go on a dim line under its text rather than in
columns of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich import box
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


def grid(title: str | None = None, *, leading: int = 0) -> Table:
    """A table without vertical rules, two spaces between columns (a ruled table spends
    three columns of an 80-column terminal on each)."""
    return Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        leading=leading,
    )


def text_column(table: Table, header: str, *, ratio: int = 1, min_width: int = 20) -> None:
    """A column of prose: takes the room left, wraps between words ("fold" only cuts a word
    longer than the whole column)."""
    table.add_column(header, ratio=ratio, min_width=min_width, overflow="fold")


def short_column(table: Table, header: str, max_width: int, **kw: Any) -> None:
    """A column of short values (names, roles): one line, cut with an ellipsis if long."""
    table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=max_width, **kw)


def details(m: MemoryItem, *extra: str) -> str:
    """The dim line under a memory's text: type, state, speaker, date, origin, and ``extra``."""
    parts = [str(m.type)]
    if str(m.state) != "active":
        parts.append(str(m.state))
    if m.provenance.speaker:
        parts.append(m.provenance.speaker)
    parts.append(when(occurred(m)))
    if origin(m) != "-":
        parts.append(origin(m))
    return f"[dim]{escape(' · '.join([*parts, *extra]))}[/dim]"


def memories_table(items: Sequence[MemoryItem], title: str | None = None) -> Table:
    table = grid(title)
    table.add_column("id", no_wrap=True, style="cyan")
    text_column(table, "memory")
    for m in items:
        table.add_row(m.id, f"{escape(short(m.text))}\n{details(m)}")
    return table


def memory_detail(item: MemoryItem) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    text_column(table, "")
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
    """Each hit: rank, score, id, then its text, a dim line of details and why it matched."""
    table = grid(f"{len(hits)} result(s) for {escape(repr(query))}", leading=1)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("id", style="cyan", no_wrap=True)
    text_column(table, "memory (details, why it matched)")
    for rank, hit in enumerate(hits, start=1):
        m = hit.memory
        why = f"[dim italic]{escape('; '.join(hit.why))}[/dim italic]" if hit.why else ""
        table.add_row(
            str(rank),
            f"{hit.score:.3f}",
            m.id,
            "\n".join(x for x in (escape(short(m.text)), details(m), why) if x),
        )
    return table


def history_tables(history: History) -> tuple[Table, Table]:
    versions = grid(f"versions of {history.memory_id}", leading=1)
    versions.add_column("v", justify="right", no_wrap=True)
    versions.add_column("recorded", no_wrap=True)
    short_column(versions, "by", 12)
    text_column(versions, "text · importance, tags, reason")
    for v in history.versions:
        about = [f"importance {v.importance:g}"]
        if v.tags:
            about.append("tags " + ", ".join(v.tags))
        if v.reason:
            about.append(v.reason)
        versions.add_row(
            str(v.version),
            when(v.recorded_at, seconds=True),
            escape(v.actor or "-"),
            f"{escape(short(v.text))}\n[dim]{escape(' · '.join(about))}[/dim]",
        )
    return versions, events_table(history.events, title="events")


def events_table(events: Sequence[AuditEvent], title: str | None = None) -> Table:
    table = grid(title)
    table.add_column("when", no_wrap=True)
    short_column(table, "who", 12)
    short_column(table, "action", 12)
    text_column(table, "reason", ratio=1, min_width=10)
    text_column(table, "details", ratio=2, min_width=16)
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
    table = grid("users")
    table.add_column("id", style="cyan", no_wrap=True)
    text_column(table, "name", min_width=10)
    table.add_column("created", no_wrap=True)
    for u in users:
        table.add_row(escape(u.id), escape(u.name), when(u.created_at))
    return table


def cubes_table(cubes: Sequence[Cube], user_id: str) -> Table:
    table = grid(f"cubes visible to {escape(user_id)}")
    short_column(table, "name", 16, style="bold")
    table.add_column("id", style="cyan", no_wrap=True)
    short_column(table, "owner", 12)
    short_column(table, "role", 6)
    text_column(table, "description", min_width=12)
    for c in cubes:
        table.add_row(
            escape(c.name),
            c.id,
            escape(c.owner_id),
            str(c.role or "-"),
            escape(c.description or "-"),
        )
    return table


def shares_table(shares: Sequence[Share]) -> Table:
    table = grid("access")
    short_column(table, "user", 24, style="cyan")
    short_column(table, "role", 8)
    table.add_column("granted", no_wrap=True)
    short_column(table, "by", 24)
    for s in shares:
        table.add_row(escape(s.user_id), str(s.role), when(s.granted_at), escape(s.granted_by or "-"))
    return table


def quarantine_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Memories that could not be indexed (``MemOS.check_index()["quarantined"]``): the
    error, and under it the cube and since when."""
    table = grid("quarantined: not indexed, not searchable", leading=1)
    table.add_column("memory id", style="cyan", no_wrap=True)
    text_column(table, "error · cube, since")
    for r in rows:
        since = str(r.get("since") or "-")[:16].replace("T", " ")
        where = f"cube {r['cube_id']} · since {since}"
        table.add_row(r["memory_id"], f"{escape(r.get('error') or '-')}\n[dim]{escape(where)}[/dim]")
    return table


def mapping_table(data: Mapping[str, Any], title: str | None = None) -> Table:
    """A nested mapping as ``key  value`` rows; nested keys are dotted (``search.rrf_k``)."""
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    text_column(table, "")
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
