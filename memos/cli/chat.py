"""``memos chat``: talk to the configured model with memory — one-shot or an interactive REPL.

The answer streams to stdout; what memory was used and the timings go to stderr, so a
pipe gets only the answers. In the REPL, lines starting with ``/`` are commands:
``/memories`` (what the last answer used), ``/forget ID``, ``/session new``, ``/session``,
``/help``, ``/exit`` (or end of input).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.cli.app import (
    PANEL_MEMORIES,
    State,
    app,
    emit,
    get_state,
    note,
    open_memos,
    resolve_cube,
    settings_for,
)
from memos.errors import MemosError

if TYPE_CHECKING:
    from rich.console import Console

    from memos import ChatResult
    from memos.core import MemOS

HELP = """commands: /memories  what the last answer used
          /forget ID  delete a memory (restorable with `memos restore`)
          /session new  start a new session;  /session  show the current one
          /help  this text;  /exit  leave (or Ctrl-D)"""


def _footer(result: ChatResult) -> str:
    t = result.timings
    return (
        f"[dim]{len(result.memories)} memories · {result.history_turns} history turns · "
        f"{result.prompt_tokens}/{result.context_budget} prompt tokens · retrieval {t.retrieval_ms:.0f} ms · "
        f"first token {t.ttft_ms:.0f} ms · {t.tokens_per_s:.1f} tok/s[/dim]"
    )


def _ask(
    mos: MemOS, state: State, message: str, cube_id: str, session: str | None, opts: dict[str, Any]
) -> ChatResult:
    """Stream one answer to stdout; return its result."""
    stream = mos.chat(
        message, user_id=state.user, cube_ids=[cube_id], session_id=session, stream=True, **opts
    )
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    assert stream.result is not None
    return stream.result


def _show_memories(console: Console, result: ChatResult | None) -> None:
    if result is None or not result.memories:
        console.print("no memories were used" if result else "nothing asked yet")
        return
    from rich.markup import escape

    for m in result.memories:
        console.print(f"[cyan]{m.id}[/cyan] [dim]{m.score:.3f}[/dim] {escape(m.text)}")


@app.command(rich_help_panel=PANEL_MEMORIES)
def chat(
    ctx: typer.Context,
    message: Annotated[
        str | None,
        typer.Option(
            "--message", "-m", help="Ask one question and exit (default: interactive).", show_default=False
        ),
    ] = None,
    cube: Annotated[
        str | None,
        typer.Option(
            "--cube", "-c", help="Cube id or name (default: your 'default' cube).", show_default=False
        ),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Continue this session.", show_default=False)
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime", "-r", help="transformers | llama_cpp | openai (default: config).", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name or path (default: config).", show_default=False)
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Answer length limit.", show_default=False)
    ] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory", help="Do not retrieve memories.")] = False,
    no_write: Annotated[bool, typer.Option("--no-write", help="Do not remember this exchange.")] = False,
) -> None:
    """Chat with memory: retrieved memories and the session's history go into the prompt,
    and the exchange is remembered."""
    state = get_state(ctx)
    settings = settings_for(state)
    changes = {k: v for k, v in {"name": runtime, "model": model}.items() if v is not None}
    if changes:
        settings.runtime = settings.runtime.model_copy(update=changes)
    opts: dict[str, Any] = {"max_tokens": max_tokens, "write_back": False if no_write else None}
    if no_memory:
        opts["memories"] = 0
    err = _stderr()
    with open_memos(state, settings) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        with err.status(f"loading {settings.runtime.model} ({settings.runtime.name})…"):
            mos.runtime()
            mos.embedder.embed_query("warm up")  # so the first answer's timings are the answer's
        if message is not None:
            if state.json:
                result = mos.chat(message, user_id=state.user, cube_ids=[cube_id], session_id=session, **opts)
                emit(state, result, lambda console: None)
                return
            result = _ask(mos, state, message, cube_id, session, opts)
            err.print(_footer(result), soft_wrap=True)
            return
        _repl(mos, state, cube_id, session, opts, err)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _repl(
    mos: MemOS, state: State, cube_id: str, session: str | None, opts: dict[str, Any], err: Console
) -> None:
    last: ChatResult | None = None
    interactive = sys.stdin.isatty()
    err.print(f"[dim]memos chat — user {state.user}; /help for commands, /exit to leave[/dim]")
    while True:
        if interactive:
            err.print("[bold green]you>[/bold green] ", end="")
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd, _, arg = text.partition(" ")
            arg = arg.strip()
            if cmd in ("/exit", "/quit"):
                break
            if cmd == "/help":
                err.print(HELP)
            elif cmd == "/memories":
                _show_memories(err, last)
            elif cmd == "/forget":
                if not arg:
                    err.print("[red]error:[/red] /forget takes a memory id")
                    continue
                try:
                    mos.delete(arg, user_id=state.user, reason="forgotten in memos chat")
                    err.print(f"forgot {arg}")
                except MemosError as exc:
                    err.print(f"[red]error:[/red] {exc}")
            elif cmd == "/session":
                if arg == "new":
                    session = None
                    err.print("new session")
                else:
                    err.print(f"session {session or '(new)'}")
            else:
                err.print(f"[red]error:[/red] unknown command {cmd}; /help lists them")
            continue
        if interactive:
            err.print("[bold blue]memos>[/bold blue] ", end="")
        try:
            last = _ask(mos, state, text, cube_id, session, opts)
        except MemosError as exc:
            err.print(f"[red]error:[/red] {exc}")
            continue
        session = last.session_id
        err.print(_footer(last), soft_wrap=True)
    note("bye")
