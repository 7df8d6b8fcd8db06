"""Moving memories in and out: chat logs (``import-chat``) and ``.memcube`` archives.

Both are the facade's: :meth:`MemOS.read_chat` reads a chat log (a JSON list of messages,
JSONL, or the session format ``{"sessions": [{"id", "date", "messages": […]}, …]}``) and
checks it whole before anything is written (a bad message names its place in the file and
stores nothing); :meth:`MemOS.import_chat` then adds each session in batches, one ``add``
call per batch; message ids make a re-import a no-op. Archives are checked by
:meth:`MemOS.verify_archive` and moved by ``export_cube`` / ``import_cube``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from memos.cli.app import (
    PANEL_TRANSFER,
    app,
    emit,
    get_state,
    home_exists,
    note,
    open_memos,
    resolve_cube,
    settings_for,
    stderr_console,
)
from memos.errors import AlreadyExists, Conflict

if TYPE_CHECKING:
    from rich.console import Console


@app.command("import-chat", rich_help_panel=PANEL_TRANSFER)
def import_chat(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="A JSON or JSONL chat log.", show_default=False),
    ],
    cube: Annotated[
        str | None,
        typer.Option(
            "--cube", "-c", help="Cube id or name. Default: your cube named 'default'.", show_default=False
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session", "-s", help="Session id for messages outside any session.", show_default=False
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Messages per add call.")] = 100,
    defer_extraction: Annotated[
        bool,
        typer.Option(
            "--defer-extraction",
            help="Bulk import: store and index the messages now, queue their extraction for `memos extract`.",
        ),
    ] = False,
) -> None:
    """Import a chat log (JSON list, JSONL, or {"sessions": […]}) as episodes, session by session.

    Every message becomes an episode with its speaker, time and id, and the extractor derives
    facts from it. Message ids make a second import of the same log add nothing.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from memos import MemOS

    state = get_state(ctx)
    settings = settings_for(state)
    # read and check the whole file before opening the home (and loading a model): fail fast
    log = MemOS.read_chat(file, settings, session_id=session)
    with open_memos(state, settings) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr_console(),
        )
        with progress:
            task = progress.add_task("importing", total=log.messages)

            def advance(session_id: str | None, n: int) -> None:
                progress.update(task, description=f"session {escape(session_id or '-')}", advance=n)

            summary = mos.import_chat(
                log,
                user_id=state.user,
                cube_id=cube_id,
                batch_size=batch_size,
                extract="defer" if defer_extraction else True,
                progress=advance,
            )

    def render(console: Console) -> None:
        console.print(
            f"[green]imported[/green] {summary.messages} messages in {summary.sessions} session(s) "
            f"into cube {cube_id}: {summary.added} new, {summary.skipped} already there, "
            f"{summary.derived} facts derived"
        )
        if summary.extraction_failures:
            console.print(f"[yellow]extraction failed[/yellow] for {summary.extraction_failures} message(s)")

    emit(state, summary, render)


#: how a conflict's advice names these commands' options (the SDK names its keywords)
_OPTIONS = {"overwrite": "--force", "copy": "--copy", "name": "--name NAME", "cube_id": "--cube-id ID"}


@contextmanager
def _in_cli_terms() -> Iterator[None]:
    try:
        yield
    except Conflict as exc:
        raise AlreadyExists(exc.advice(_OPTIONS)) from exc


@app.command("export", rich_help_panel=PANEL_TRANSFER)
def export(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="Cube id or name.", show_default=False)],
    path: Annotated[Path, typer.Argument(help="The .memcube archive to write.", show_default=False)],
    force: Annotated[
        bool,
        typer.Option("--force", "-f", help="Replace an existing file (never a directory, device or FIFO)."),
    ] = False,
) -> None:
    """Write a cube to a portable .memcube archive (checksummed; no pickle)."""
    state = get_state(ctx)
    with open_memos(state) as mos, _in_cli_terms():
        cube_id = mos.resolve_cube(state.user, cube)
        written = mos.export_cube(cube_id, path, user_id=state.user, overwrite=force)
    data = {"cube_id": cube_id, "path": str(written), "bytes": written.stat().st_size}
    emit(
        state,
        data,
        lambda console: console.print(
            f"[green]exported[/green] cube {cube_id} to {escape(str(written))} ({data['bytes']:,} bytes)"
        ),
    )


@app.command("import", rich_help_panel=PANEL_TRANSFER)
def import_(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A .memcube archive.", show_default=False)
    ],
    cube_id: Annotated[
        str | None,
        typer.Option(
            "--cube-id",
            help="Id of the new cube. Default: the archived id (a new one with --copy).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Name of the new cube. Default: the archived name.", show_default=False),
    ] = None,
    copy: Annotated[
        bool,
        typer.Option("--copy", help="Import an archive this home holds already again, with new memory ids."),
    ] = False,
) -> None:
    """Load a .memcube archive as a new cube owned by the acting user (validated first).

    Into a home that does not exist yet, the import creates the home and the acting user
    (the archive is checked first, so a bad one leaves nothing behind).
    """
    from memos import MemOS

    state = get_state(ctx)
    settings = settings_for(state)
    fresh = not home_exists(settings)
    if fresh:
        MemOS.verify_archive(path, settings)
    with open_memos(state, settings, create=fresh) as mos, _in_cli_terms():
        if fresh:
            mos.add_user(state.user)
        cube = mos.import_cube(path, user_id=state.user, cube_id=cube_id, name=name, copy=copy)
    if fresh:
        note(f"created the home {escape(str(settings.home))} and its user {escape(state.user)}")
    emit(
        state,
        cube,
        lambda console: console.print(f"[green]imported[/green] cube {escape(cube.name)} ({cube.id})"),
    )
