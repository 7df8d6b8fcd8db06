"""Commands on memories: add, search, list, show, history, update, delete, restore, purge.

Each one is one call of the SDK method of the same name (``MemOS.add``, ``MemOS.search``, …).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from memos.cli.app import (
    PANEL_MEMORIES,
    app,
    confirm,
    cubes_option,
    emit,
    get_state,
    note,
    open_memos,
    parse_pairs,
    resolve_cube,
)
from memos.cli.render import history_tables, hits_table, memories_table, memory_detail, print_all, short
from memos.types import MemoryState, MemoryType

if TYPE_CHECKING:
    from rich.console import Console

CubeOpt = Annotated[
    str | None,
    typer.Option(
        "--cube", "-c", help="Cube id or name. Default: your cube named 'default'.", show_default=False
    ),
]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="A tag (repeatable).", show_default=False)
]
MetaOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--meta",
        "-m",
        help="Metadata as key=value (repeatable); values that parse as JSON (3, true, [..]) are kept typed.",
        show_default=False,
    ),
]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        "-f",
        help="key=value, repeatable; keys: type, speaker, role, session_id, tags, metadata.<key>. "
        "A key given twice matches either value.",
        show_default=False,
    ),
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why (kept in the audit log).", show_default=False)
]
MemoryIdArg = Annotated[str, typer.Argument(help="The memory id.", show_default=False)]


def _filters(pairs: list[str] | None) -> dict[str, Any] | None:
    # metadata values may be numbers or booleans; type/speaker/role/session/tags are strings
    flt = parse_pairs(pairs, "--filter", json_values=lambda key: key.startswith("metadata."))
    return flt or None


@app.command(rich_help_panel=PANEL_MEMORIES)
def add(
    ctx: typer.Context,
    text: Annotated[
        str | None,
        typer.Argument(
            help="What to remember. Omit it, or give '-', to read it from stdin.", show_default=False
        ),
    ] = None,
    cube: CubeOpt = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role", help="Store the text as a chat message with this role (an episode).", show_default=False
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="The speaker of the message (implies a chat message).", show_default=False
        ),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Session id.", show_default=False)
    ] = None,
    tag: TagOpt = None,
    meta: MetaOpt = None,
    type_: Annotated[
        MemoryType | None,
        typer.Option(
            "--type",
            help="Memory type. Default: fact for text, episode for a chat message.",
            show_default=False,
        ),
    ] = None,
    importance: Annotated[float, typer.Option("--importance", min=0.0, max=1.0, help="0 to 1.")] = 0.5,
    at: Annotated[
        str | None,
        typer.Option("--at", help="When it happened (ISO 8601). Default: now.", show_default=False),
    ] = None,
) -> None:
    """Remember a text, or one chat message with --role/--name.

    Without --role/--name the text is stored as a fact (MemOS.add(text=…)); with them it
    is stored as a chat message (MemOS.add(messages=[…])), and the extractor derives facts.
    """
    state = get_state(ctx)
    if text is None or text == "-":
        if sys.stdin.isatty():
            raise typer.BadParameter("give the text to remember, or pipe it on stdin", param_hint="TEXT")
        text = sys.stdin.read()
    metadata = parse_pairs(meta, "--meta", json_values=True)
    with open_memos(state) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        common: dict[str, Any] = {
            "user_id": state.user,
            "cube_id": cube_id,
            "session_id": session,
            "metadata": metadata or None,
            "tags": tag,
            "type": type_,
            "importance": importance,
        }
        if role is not None or name is not None:
            message: dict[str, Any] = {"role": role or "user", "content": text}
            if name is not None:
                message["name"] = name
            if at is not None:
                message["timestamp"] = at
            result = mos.add([message], **common)
        else:
            result = mos.add(text=text, timestamp=at, **common)

    def render(console: Console) -> None:
        for m in result.memories:
            console.print(f"[green]added[/green] {m.type} [cyan]{m.id}[/cyan]")
        if not result.memories:
            console.print("nothing new (this message id is already in the cube)")
        for d in result.derived:
            console.print(f"  [dim]derived[/dim] {d.type} [cyan]{d.id}[/cyan]: {escape(short(d.text))}")
        if result.superseded:
            console.print(f"  superseded: {', '.join(result.superseded)}")
        if result.extraction_failures:
            console.print(f"  [yellow]extraction failed[/yellow] for {result.extraction_failures} message(s)")

    emit(state, result, render)


@app.command(rich_help_panel=PANEL_MEMORIES)
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.", show_default=False)],
    cube: Annotated[list[str] | None, cubes_option("every cube you can read")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="How many results.")] = 10,
    filter_: FilterOpt = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only memories from this time on (ISO 8601).", show_default=False),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Only memories up to this time (ISO 8601).", show_default=False),
    ] = None,
    include_archived: Annotated[
        bool, typer.Option("--include-archived", help="Archived memories too (never expired ones).")
    ] = False,
) -> None:
    """Hybrid search (dense + lexical + graph + time); each result says why it matched."""
    state = get_state(ctx)
    filters = _filters(filter_)
    time_range = (since, until) if since is not None or until is not None else None
    with open_memos(state) as mos:
        cube_ids = [mos.resolve_cube(state.user, c) for c in cube] if cube else None
        hits = mos.search(
            query,
            user_id=state.user,
            cube_ids=cube_ids,
            top_k=top_k,
            filters=filters,
            time_range=time_range,
            include_archived=include_archived,
        )
    emit(state, hits, lambda console: console.print(hits_table(hits, query)))


@app.command("list", rich_help_panel=PANEL_MEMORIES)
def list_(
    ctx: typer.Context,
    cube: CubeOpt = None,
    state_: Annotated[
        list[MemoryState] | None,
        typer.Option("--state", help="Lifecycle state (repeatable). Default: active.", show_default=False),
    ] = None,
    all_states: Annotated[
        bool, typer.Option("--all", help="Every state, deleted and superseded included.")
    ] = False,
    type_: Annotated[
        list[MemoryType] | None, typer.Option("--type", help="Memory type (repeatable).", show_default=False)
    ] = None,
    filter_: FilterOpt = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many.")] = 50,
) -> None:
    """List the memories of a cube, newest first."""
    state = get_state(ctx)
    filters = _filters(filter_) or {}
    if type_:
        filters["type"] = [str(t) for t in type_]
    states = None if all_states else [str(s) for s in state_] if state_ else ["active"]
    with open_memos(state) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        page = mos.list_memories(
            user_id=state.user,
            cube_id=cube_id,
            filters=filters or None,
            states=states,
            offset=offset,
            limit=limit,
        )

    def render(console: Console) -> None:
        last = page.offset + len(page.items)
        title = f"memories {page.offset + 1 if page.items else 0}–{last} of {page.total} in cube {cube_id}"
        console.print(memories_table(page.items, title=title))
        if last < page.total:
            console.print(f"[dim]more: --offset {last}[/dim]")

    emit(state, page, render)


@app.command(rich_help_panel=PANEL_MEMORIES)
def show(ctx: typer.Context, memory_id: MemoryIdArg) -> None:
    """Show one memory with its provenance and times."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        item = mos.get(memory_id, user_id=state.user)
    emit(state, item, lambda console: console.print(memory_detail(item)))


@app.command(rich_help_panel=PANEL_MEMORIES)
def history(ctx: typer.Context, memory_id: MemoryIdArg) -> None:
    """Every version of a memory, then every lifecycle event (who, when, why)."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        hist = mos.history(memory_id, user_id=state.user)
    emit(state, hist, lambda console: print_all(console, *history_tables(hist)))


@app.command(rich_help_panel=PANEL_MEMORIES)
def update(
    ctx: typer.Context,
    memory_id: MemoryIdArg,
    text: Annotated[str | None, typer.Option("--text", help="The new text.", show_default=False)] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Replace the tags with these (repeatable).", show_default=False),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta",
            "-m",
            help="Replace the metadata with these key=value pairs (repeatable).",
            show_default=False,
        ),
    ] = None,
    importance: Annotated[
        float | None, typer.Option("--importance", min=0.0, max=1.0, help="0 to 1.", show_default=False)
    ] = None,
    reason: ReasonOpt = None,
) -> None:
    """Write a new version of a memory; the old one stays in its history."""
    state = get_state(ctx)
    metadata = parse_pairs(meta, "--meta", json_values=True) if meta else None
    with open_memos(state) as mos:
        item = mos.update(
            memory_id,
            user_id=state.user,
            text=text,
            metadata=metadata,
            tags=tag,
            importance=importance,
            reason=reason,
        )
    emit(
        state,
        item,
        lambda console: console.print(f"[green]updated[/green] {item.id}, now version {item.version}"),
    )


@app.command(rich_help_panel=PANEL_MEMORIES)
def delete(ctx: typer.Context, memory_id: MemoryIdArg, reason: ReasonOpt = None) -> None:
    """Soft-delete a memory: it leaves search and lists; `memos restore` brings it back."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        item = mos.delete(memory_id, user_id=state.user, reason=reason)
    emit(state, item, lambda console: console.print(f"[yellow]deleted[/yellow] {item.id} (restorable)"))


@app.command(rich_help_panel=PANEL_MEMORIES)
def archive(ctx: typer.Context, memory_id: MemoryIdArg, reason: ReasonOpt = None) -> None:
    """Archive a memory: out of default search (`memos search --include-archived` finds it),
    kept with its history; `memos restore` brings it back."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        item = mos.archive(memory_id, user_id=state.user, reason=reason)
    emit(state, item, lambda console: console.print(f"[yellow]archived[/yellow] {item.id} (restorable)"))


@app.command(rich_help_panel=PANEL_MEMORIES)
def expire(ctx: typer.Context, memory_id: MemoryIdArg, reason: ReasonOpt = None) -> None:
    """Expire a memory: out of every search (even --include-archived), kept with its
    history until a purge (the ttl policy purges after its grace); `memos restore` brings it back."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        item = mos.expire(memory_id, user_id=state.user, reason=reason)
    emit(state, item, lambda console: console.print(f"[yellow]expired[/yellow] {item.id} (restorable)"))


@app.command(rich_help_panel=PANEL_MEMORIES)
def restore(ctx: typer.Context, memory_id: MemoryIdArg, reason: ReasonOpt = None) -> None:
    """Bring back a deleted, archived or expired memory."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        item = mos.restore(memory_id, user_id=state.user, reason=reason)
    emit(state, item, lambda console: console.print(f"[green]restored[/green] {item.id}"))


@app.command(rich_help_panel=PANEL_MEMORIES)
def purge(
    ctx: typer.Context,
    memory_id: MemoryIdArg,
    reason: ReasonOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a memory for good, with the facts derived only from it (no undo).

    Rows, versions, messages, graph edges and vector points go; the audit log keeps a
    tombstone with the id, who and why, but no content.
    """
    state = get_state(ctx)
    confirm(f"Purge memory {memory_id} and what was derived only from it? This cannot be undone.", yes=yes)
    with open_memos(state) as mos:
        ids = mos.purge(memory_id, user_id=state.user, reason=reason)
    if not state.json:
        note(f"[red]purged[/red] {len(ids)} memor{'y' if len(ids) == 1 else 'ies'}")
    emit(state, {"purged": ids}, lambda console: console.print("\n".join(ids)))
