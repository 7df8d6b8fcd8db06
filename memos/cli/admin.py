"""Commands on the home itself: init, config, users, cubes and sharing, stats, reindex, demo."""

from __future__ import annotations

import tempfile
import typing
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import TypeAdapter
from rich.markup import escape

from memos.cli.app import (
    DEFAULT_CUBE,
    PANEL_ADMIN,
    app,
    confirm,
    cubes_option,
    emit,
    get_state,
    open_memos,
    settings_for,
    stderr_console,
    stdout_console,
)
from memos.cli.doctor import check_index
from memos.cli.render import cubes_table, mapping_table, shares_table, users_table
from memos.config import Duration
from memos.errors import NotFound
from memos.types import Role

if TYPE_CHECKING:
    from rich.console import Console

user_app = typer.Typer(help="Add and list users.", no_args_is_help=True)
cube_app = typer.Typer(help="Create, list, share and delete cubes.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(user_app, name="user", rich_help_panel=PANEL_ADMIN)
app.add_typer(cube_app, name="cube", rich_help_panel=PANEL_ADMIN)
app.add_typer(config_app, name="config", rich_help_panel=PANEL_ADMIN)

CubeArg = Annotated[str, typer.Argument(help="Cube id or name.", show_default=False)]


# ---------------------------------------------------------------------------- init / config
def config_template() -> str:
    """A ``config.toml`` listing every setting at its default, all commented out."""
    from pydantic import BaseModel

    from memos.config import (
        ChatSettings,
        ParametricSettings,
        RuntimeSettings,
        SchedulerSettings,
        SearchSettings,
        Settings,
    )

    lines = [
        "# memos configuration. Every line is commented out, so the defaults apply.",
        "# Precedence: command options > MEMOS_* environment variables (MEMOS_SEARCH__RRF_K for",
        "# [search] rrf_k) > this file > defaults. `memos config show` prints the result.",
        "",
    ]
    tables: dict[str, type[BaseModel]] = {
        "search": SearchSettings, "runtime": RuntimeSettings, "chat": ChatSettings, "parametric": ParametricSettings,
        "scheduler": SchedulerSettings,
    }  # fmt: skip
    for name, field in Settings.model_fields.items():
        if name not in ("home", "policies") and name not in tables:
            lines += _setting_lines(name, field)
    for table, model in tables.items():
        lines.append(f"# [{table}]")
        for name, field in model.model_fields.items():
            lines += _setting_lines(name, field)
    lines += [
        "# [policies.<name>]: the scheduler's policies (heat, ttl, dedup, decay, summaries,",
        "# capacity, activation, parametric, erasure); `memos policy show` lists their settings",
        "# and defaults. Episodes expire after 90 days with:",
        "#   [policies.ttl]",
        '#   types = { episode = "90d" }',
        "",
    ]
    return "\n".join(lines)


def _setting_lines(name: str, field: Any) -> list[str]:
    out = []
    if field.description:
        out.append(f"# {field.description}")
    if typing.get_origin(field.annotation) is typing.Literal:
        out.append("# one of: " + ", ".join(str(a) for a in typing.get_args(field.annotation)))
    default = field.get_default(call_default_factory=True)
    out.append(f"# {name} = {_toml_value(default)}" if default is not None else f"# {name} =   (not set)")
    out.append("")
    return out


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, timedelta):  # as a setting is written: "1d", "90m"
        return json.dumps(TypeAdapter(Duration).dump_python(value))
    return json.dumps(str(value))


@app.command(rich_help_panel=PANEL_ADMIN)
def init(ctx: typer.Context) -> None:
    """Create the home, a commented config.toml, the acting user and its cube named "default".

    Safe to run again: it only creates what is missing.
    """
    state = get_state(ctx)
    settings = settings_for(state)
    settings.home.mkdir(parents=True, exist_ok=True)
    config_path = settings.home / "config.toml"
    config_written = not config_path.exists()
    if config_written:
        config_path.write_text(config_template(), encoding="utf-8")
    with open_memos(state, settings, create=True) as mos:
        try:
            user = mos.get_user(state.user)
            user_created = False
        except NotFound:
            user = mos.add_user(state.user)
            user_created = True
        owned = [c for c in mos.list_cubes(state.user) if c.owner_id == state.user and c.name == DEFAULT_CUBE]
        cube = owned[0] if owned else mos.create_cube(state.user, DEFAULT_CUBE, description="default cube")
    data = {
        "home": str(settings.home),
        "config": str(config_path),
        "config_written": config_written,
        "user": user,
        "user_created": user_created,
        "cube": cube,
        "cube_created": not owned,
    }

    def render(console: Console) -> None:
        def did(created: bool) -> str:
            return "[green]created[/green]" if created else "[dim]exists[/dim] "

        console.print(f"[bold]home[/bold]    {escape(str(settings.home))}")
        console.print(f"{did(config_written)} {escape(str(config_path))}")
        console.print(f"{did(user_created)} user {escape(user.id)}")
        console.print(f"{did(not owned)} cube {DEFAULT_CUBE} ({cube.id})")
        console.print('Next: memos add "…"  ·  memos search "…"  ·  memos --help')

    emit(state, data, render)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the resolved configuration (secrets masked) and where it came from."""
    state = get_state(ctx)
    settings = settings_for(state)
    config_path = settings.home / "config.toml"
    data = settings.public_dict()

    def render(console: Console) -> None:
        source = str(config_path) if config_path.is_file() else f"{config_path} (absent: defaults)"
        console.print(mapping_table(data, title=f"configuration — {escape(source)}"))

    emit(state, data, render)


# ---------------------------------------------------------------------------- users
@user_app.command("add")
def user_add(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The new user's id.", show_default=False)],
    name: Annotated[
        str | None, typer.Option("--name", help="Display name. Default: the id.", show_default=False)
    ] = None,
) -> None:
    """Add a user."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        user = mos.add_user(user_id, name=name)
    emit(state, user, lambda console: console.print(f"[green]added[/green] user {escape(user.id)}"))


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List the users of this home."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        users = mos.list_users()
    emit(state, users, lambda console: console.print(users_table(users)))


# ---------------------------------------------------------------------------- cubes
@cube_app.command("create")
def cube_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Cube name, unique among your cubes.", show_default=False)],
    description: Annotated[str | None, typer.Option("--description", "-d", show_default=False)] = None,
    cube_id: Annotated[
        str | None, typer.Option("--id", help="Cube id. Default: a new UUID.", show_default=False)
    ] = None,
) -> None:
    """Create a cube owned by the acting user."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube = mos.create_cube(state.user, name, cube_id=cube_id, description=description)
    emit(
        state,
        cube,
        lambda console: console.print(f"[green]created[/green] cube {escape(cube.name)} ({cube.id})"),
    )


@cube_app.command("list")
def cube_list(ctx: typer.Context) -> None:
    """List the cubes the acting user can read, with the user's role on each."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cubes = mos.list_cubes(state.user)
    emit(state, cubes, lambda console: console.print(cubes_table(cubes, state.user)))


@cube_app.command("shares")
def cube_shares(ctx: typer.Context, cube: CubeArg) -> None:
    """List who has access to a cube."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        shares = mos.shares(mos.resolve_cube(state.user, cube), state.user)
    emit(state, shares, lambda console: console.print(shares_table(shares)))


@cube_app.command("share")
def cube_share(
    ctx: typer.Context,
    cube: CubeArg,
    target: Annotated[str, typer.Argument(help="The user to share with.", show_default=False)],
    role: Annotated[Role, typer.Option("--role", "-r", help="reader or writer.")] = Role.reader,
) -> None:
    """Give another user reader or writer access to your cube."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        share = mos.share_cube(mos.resolve_cube(state.user, cube), state.user, target, role)
    emit(
        state,
        share,
        lambda console: console.print(
            f"[green]shared[/green] {share.cube_id} with {escape(target)} as {share.role}"
        ),
    )


@cube_app.command("unshare")
def cube_unshare(
    ctx: typer.Context,
    cube: CubeArg,
    target: Annotated[str, typer.Argument(help="The user to take access from.", show_default=False)],
) -> None:
    """Take back another user's access to your cube."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube_id = mos.resolve_cube(state.user, cube)
        mos.unshare_cube(cube_id, state.user, target)
    emit(
        state,
        {"cube_id": cube_id, "user_id": target, "unshared": True},
        lambda console: console.print(f"[yellow]unshared[/yellow] {cube_id} from {escape(target)}"),
    )


@cube_app.command("delete")
def cube_delete(
    ctx: typer.Context,
    cube: CubeArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a cube and every memory in it (owner only; no undo)."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube_id = mos.resolve_cube(state.user, cube)
        info = mos.get_cube(cube_id, state.user)
        confirm(
            f"Delete cube {info.name!r} ({cube_id}) and all its memories? This cannot be undone.", yes=yes
        )
        removed = mos.delete_cube(cube_id, state.user)
    emit(
        state,
        {"cube_id": cube_id, "deleted": True, "memories": removed},
        lambda console: console.print(f"[red]deleted[/red] cube {cube_id} with {removed} memories"),
    )


# ---------------------------------------------------------------------------- maintenance
@app.command(rich_help_panel=PANEL_ADMIN)
def stats(
    ctx: typer.Context,
    all_cubes: Annotated[bool, typer.Option("--all", help="Every cube of the home, not only yours.")] = False,
) -> None:
    """Counts by state and type, index health and extraction failures."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        data = mos.stats(user_id=None if all_cubes else state.user)
    title = "the whole home" if all_cubes else f"cubes visible to {state.user}"
    emit(state, data, lambda console: console.print(mapping_table(data, title=f"stats — {escape(title)}")))


@app.command(rich_help_panel=PANEL_ADMIN)
def reindex(
    ctx: typer.Context,
    cube: Annotated[list[str] | None, cubes_option("every cube of the home")] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only compare the index with the rows and report; rebuild nothing (exit 1 if off).",
        ),
    ] = False,
) -> None:
    """Rebuild the vector index from the relational rows (the source of truth).

    Without --cube: every cube of the home, or the cubes a user named by --user may write.
    """
    state = get_state(ctx)
    if check:
        check_index(state, cube)
        return
    with open_memos(state) as mos:
        cube_ids = [mos.resolve_cube(state.user, c) for c in cube] if cube else None
        user = state.user if state.user_given or cube_ids else None
        with stderr_console().status("re-embedding memories…"):
            count = mos.reindex(user_id=user, cube_ids=cube_ids)
    emit(
        state,
        {"reindexed": count, "cube_ids": cube_ids},
        lambda console: console.print(f"[green]reindexed[/green] {count} memories"),
    )


@app.command(rich_help_panel=PANEL_ADMIN)
def extract(
    ctx: typer.Context,
    cube: Annotated[list[str] | None, cubes_option("every cube you may write")] = None,
    all_cubes: Annotated[
        bool, typer.Option("--all", help="Every cube of the home (the home's operator).")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Memories per transaction.")] = 2000,
) -> None:
    """Run the extraction queued by bulk imports (``import-chat --defer-extraction``).

    Entities, relations and facts are derived in the order the memories were added; memories
    deleted or purged meanwhile are skipped. Safe to interrupt: what is done stays done and
    the rest stays queued."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        user = None if all_cubes else state.user
        cube_ids = [mos.resolve_cube(state.user, c) for c in cube] if cube else None
        with stderr_console().status("extracting…"):
            done = mos.run_deferred_extraction(user_id=user, cube_ids=cube_ids, batch=batch_size)
        left = mos.stats(user_id=user).get("extraction_pending", 0)
    emit(
        state,
        {"extracted": done, "pending": left, "cube_ids": cube_ids},
        lambda console: console.print(f"[green]extracted[/green] {done} memories; {left} still queued"),
    )


@app.command("sweep-blobs", rich_help_panel=PANEL_ADMIN)
def sweep_blobs(
    ctx: typer.Context,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            min=0,
            help="Only files at least this many seconds old (default: scheduler.blob_sweep_grace). "
            "0 only while nothing else writes to the home.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Remove the KV-prefix and adapter files no row names, and abandoned temporary files.

    A crash between a row's delete and its file's leaves such a file (for a purged memory,
    tensors derived from erased text). The scheduler's workers sweep daily
    (scheduler.blob_sweep_interval); the home's operator only."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        removed = mos.sweep_blobs(grace=grace, user_id=state.user if state.user_given else None)
    emit(
        state,
        {"removed": len(removed), "files": removed},
        lambda c: c.print(f"removed {len(removed)} blob file{'s' if len(removed) != 1 else ''}"),
    )


@app.command(rich_help_panel=PANEL_ADMIN)
def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Home for the demo (kept). Default: a temporary one, removed afterwards.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """A guided tour on a throwaway home: ingest a conversation, search, update, purge, export."""
    state = get_state(ctx)
    from memos.demo import run_demo

    # with --json the tour's narration goes to stderr and its timings to stdout
    console = stderr_console() if state.json else stdout_console()
    if directory is not None:
        result = run_demo(home=directory.expanduser(), console=console)
    else:
        with tempfile.TemporaryDirectory(prefix="memos-demo-") as tmp:
            result = run_demo(home=Path(tmp), console=console)
    if state.json:
        emit(state, result, lambda _console: None)
