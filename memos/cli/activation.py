"""``memos activation …``: compile a cube's memories into a KV prefix; list, show, drop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.cli.app import PANEL_MEMORIES, app, emit, get_state, open_memos, resolve_cube, settings_for

if TYPE_CHECKING:
    from rich.console import Console

    from memos import ActivationInfo

activation_app = typer.Typer(
    help="Activation memory: memories compiled into a KV-cache prefix for one model.", no_args_is_help=True
)
app.add_typer(activation_app, name="activation", rich_help_panel=PANEL_MEMORIES)

CubeOpt = Annotated[
    str | None,
    typer.Option("--cube", "-c", help="Cube id or name (default: your 'default' cube).", show_default=False),
]
IdArg = Annotated[str, typer.Argument(help="Activation memory id (a unique prefix of it is enough).")]


def _row(console: Console, info: ActivationInfo) -> None:
    colour = {"ready": "green", "stale": "yellow", "purged": "red"}[info.state]
    fp = info.fingerprint
    console.print(
        f"[cyan]{info.id[:16]}[/cyan] [{colour}]{info.state}[/{colour}] {info.name!r} "
        f"{fp.get('runtime')}:{fp.get('model_id')} ({fp.get('dtype')}) · {len(info.memories)} memories · "
        f"{info.n_tokens} tokens · {info.bytes / 1e6:.1f} MB ({info.bytes_per_token:.0f} B/token)"
        + (f" · {info.stale_reason}" if info.stale_reason else "")
    )


@activation_app.command("compile")
def compile_(
    ctx: typer.Context,
    cube: CubeOpt = None,
    memory: Annotated[
        list[str] | None, typer.Option("--memory", "-m", help="Compile exactly these memories (repeatable).")
    ] = None,
    top_n: Annotated[int, typer.Option(help="Selector: hot facts to take.")] = 32,
    tokens: Annotated[int, typer.Option("--tokens", help="Token budget of the prefix.")] = 1024,
    runtime: Annotated[str | None, typer.Option("--runtime", "-r", help="transformers | llama_cpp.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or path.")] = None,
    name: Annotated[
        str, typer.Option(help="Name; a new compile replaces the old one of that name.")
    ] = "default",
) -> None:
    """Compile memories (profile + top-N facts by importance, or --memory ids) into a KV prefix."""
    state = get_state(ctx)
    settings = settings_for(state)
    changes = {k: v for k, v in {"name": runtime, "model": model}.items() if v is not None}
    if changes:
        settings.runtime = settings.runtime.model_copy(update=changes)
    with open_memos(state, settings) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        info = mos.activation.compile(
            cube_id, user_id=state.user, memory_ids=memory, top_n=top_n, token_budget=tokens, name=name
        )

    def render(console: Console) -> None:
        _row(console, info)
        for seg in info.segments:
            console.print(
                f"  segment {seg.name}: tokens {seg.start}–{seg.end}, {len(seg.memory_ids)} memories"
            )
        console.print(f"  compiled in {info.compile_ms:.0f} ms")

    emit(state, info, render)


@activation_app.command("list")
def list_(ctx: typer.Context, cube: CubeOpt = None) -> None:
    """The cube's compiled prefixes (stale ones marked)."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        infos = mos.activation.list(resolve_cube(mos, state.user, cube), user_id=state.user)

    def render(console: Console) -> None:
        if not infos:
            console.print("no activation memory; `memos activation compile` makes one")
        for info in infos:
            _row(console, info)

    emit(state, infos, render)


@activation_app.command("show")
def show(ctx: typer.Context, kv_id: IdArg) -> None:
    """One compiled prefix: fingerprint, memories and versions, segments, size."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        info = mos.activation.show(kv_id, user_id=state.user)

    def render(console: Console) -> None:
        _row(console, info)
        for key, value in info.fingerprint.items():
            console.print(f"  {key}: {value}")
        for seg in info.segments:
            console.print(f"  segment {seg.name} (tokens {seg.start}–{seg.end}):")
            versions: dict[str, Any] = {m["id"]: m["version"] for m in info.memories}
            for mid in seg.memory_ids:
                console.print(f"    {mid} v{versions.get(mid)}")

    emit(state, info, render)


@activation_app.command("drop")
def drop(ctx: typer.Context, kv_id: IdArg) -> None:
    """Delete a compiled prefix and its blob file."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        mos.activation.drop(kv_id, user_id=state.user)
    emit(state, {"dropped": kv_id}, lambda console: console.print(f"dropped {kv_id}"))
