"""``memos parametric …``: consolidate memories into a LoRA adapter; list, show, activate,
deactivate, drop, retrain."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.cli.app import (
    PANEL_MEMORIES,
    app,
    emit,
    get_state,
    open_memos,
    resolve_cube,
    settings_for,
    stderr_console,
)

if TYPE_CHECKING:
    from rich.console import Console

    from memos import LoraInfo

parametric_app = typer.Typer(
    help="Parametric memory: memories consolidated into a gated LoRA adapter for one base model.",
    no_args_is_help=True,
)
app.add_typer(parametric_app, name="parametric", rich_help_panel=PANEL_MEMORIES)

CubeOpt = Annotated[
    str | None,
    typer.Option("--cube", "-c", help="Cube id or name (default: your 'default' cube).", show_default=False),
]
IdArg = Annotated[str, typer.Argument(help="Adapter id (a unique prefix of it is enough).")]
COLOURS = {"active": "green", "inactive": "white", "rejected": "red", "stale": "yellow", "retired": "red"}


def _row(console: Console, info: LoraInfo) -> None:
    colour = COLOURS[info.state]
    ev = info.evaluation
    scores = (
        f"recall {ev.recall_adapter:.0%} (base {ev.recall_base:.0%}) · ppl ×{ev.ppl_ratio:.3f}"
        if ev
        else "not evaluated"
    )
    console.print(
        f"[cyan]{info.id[:16]}[/cyan] [{colour}]{info.state}[/{colour}] {info.name!r} "
        f"{info.base.get('model_id')} · {len(info.memories)} memories · {scores} · "
        f"{info.bytes / 1e6:.1f} MB · trained {info.train_s:.0f} s"
        + (f" · {info.reason}" if info.reason else "")
        + (" · retrain queued" if info.retrain else "")
    )


@parametric_app.command("consolidate")
def consolidate(
    ctx: typer.Context,
    cube: CubeOpt = None,
    memory: Annotated[
        list[str] | None,
        typer.Option("--memory", "-m", help="Consolidate exactly these memories (repeatable)."),
    ] = None,
    top_n: Annotated[int, typer.Option(help="Selector: facts, profile and preferences to take.")] = 200,
    model: Annotated[str | None, typer.Option("--model", help="Base model name or path.")] = None,
    epochs: Annotated[int | None, typer.Option(help="At most this many epochs (early stopping).")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    name: Annotated[str, typer.Option(help="Adapter name.")] = "default",
    no_activate: Annotated[
        bool, typer.Option("--no-activate", help="Keep a passing adapter inactive.")
    ] = False,
) -> None:
    """Train a LoRA adapter on the cube's memories, gate it, store it (Ctrl-C cancels cleanly)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    state = get_state(ctx)
    settings = settings_for(state)
    config = {k: v for k, v in {"epochs": epochs, "rank": rank, "lr": lr}.items() if v is not None}
    if rank is not None:
        config["alpha"] = 2 * rank
    cancel = threading.Event()
    with open_memos(state, settings) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        err = stderr_console()
        quiet = state.json or not err.is_terminal
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err, disable=quiet, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("training", total=None, loss=0.0)

            def progress(step: int, total: int, loss: float) -> None:
                bar.update(task, completed=step, total=total, loss=loss)

            try:
                info = mos.parametric.consolidate(
                    cube_id, user_id=state.user, memory_ids=memory, top_n=top_n, model=model, config=config,
                    name=name, activate=not no_activate, progress=progress, cancel=cancel,
                )  # fmt: skip
            except KeyboardInterrupt:
                cancel.set()
                raise

    def render(console: Console) -> None:
        _row(console, info)
        ev = info.evaluation
        if ev:
            console.print(
                f"  held-out recall {ev.recall_adapter:.0%} vs base {ev.recall_base:.0%} ({ev.n_heldout} questions); "
                f"seen phrasings {ev.recall_seen_adapter:.0%}; general-text perplexity {ev.ppl_base:.2f} → "
                f"{ev.ppl_adapter:.2f} (×{ev.ppl_ratio:.3f})"
            )
            console.print("  gate: " + ("passed" if ev.passed else "failed: " + "; ".join(ev.reasons)))

    emit(state, info, render)


@parametric_app.command("list")
def list_(ctx: typer.Context, cube: CubeOpt = None) -> None:
    """The cube's adapters, every state."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        infos = mos.parametric.list(resolve_cube(mos, state.user, cube), user_id=state.user)

    def render(console: Console) -> None:
        if not infos:
            console.print("no parametric memory; `memos parametric consolidate` makes one")
        for info in infos:
            _row(console, info)

    emit(state, infos, render)


@parametric_app.command("show")
def show(ctx: typer.Context, adapter_id: IdArg) -> None:
    """One adapter: base model, memories and versions, hyper-parameters, evaluation."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        info = mos.parametric.show(adapter_id, user_id=state.user)

    def render(console: Console) -> None:
        _row(console, info)
        for key, value in info.base.items():
            console.print(f"  base {key}: {value}")
        console.print("  hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in info.hyper.items()))
        console.print(f"  data {info.data_hash[:16]} · examples {info.n_examples}")
        if info.evaluation:
            console.print(
                "  evaluation: " + ", ".join(f"{k}={v}" for k, v in info.evaluation.model_dump().items())
            )
        for e in info.epochs:
            recall = e.get("valid_recall", e.get("heldout_recall", -1))  # adapters before validation
            drift = f", anchor-text perplexity x{e['drift']:.3f}" if "drift" in e else ""
            console.print(
                f"  epoch {e['epoch']}: loss {e['loss']:.3f}, validation recall {recall:.0%}{drift}"
            )
        for m in info.memories:
            console.print(f"    {m['id']} v{m['version']}")

    emit(state, info, render)


def _simple(ctx: typer.Context, adapter_id: str, action: str) -> None:
    state = get_state(ctx)
    with open_memos(state) as mos:
        result: Any = getattr(mos.parametric, action)(adapter_id, user_id=state.user)
    if result is None:
        emit(state, {action: adapter_id}, lambda console: console.print(f"{action} {adapter_id}: done"))
    else:
        emit(state, result, lambda console: _row(console, result))


@parametric_app.command("activate")
def activate(ctx: typer.Context, adapter_id: IdArg) -> None:
    """Make a passing adapter the cube's active one (the previous one becomes inactive)."""
    _simple(ctx, adapter_id, "activate")


@parametric_app.command("deactivate")
def deactivate(ctx: typer.Context, adapter_id: IdArg) -> None:
    """Stop applying an adapter in chat (it stays stored)."""
    _simple(ctx, adapter_id, "deactivate")


@parametric_app.command("drop")
def drop(ctx: typer.Context, adapter_id: IdArg) -> None:
    """Delete an adapter and its blob files."""
    _simple(ctx, adapter_id, "drop")


@parametric_app.command("retrain")
def retrain(ctx: typer.Context, cube: CubeOpt = None) -> None:
    """Run the cube's queued retrains (after a purge retired an adapter, or its memories changed)."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        done: list[dict[str, Any]] = []
        for info in mos.parametric.pending(cube_id, user_id=state.user):
            new = mos.parametric.retrain(info.id, user_id=state.user)
            done.append(
                {"retired": info.id, "new": new.id if new else None, "state": new.state if new else None}
            )

    def render(console: Console) -> None:
        if not done:
            console.print("no retrain queued")
        for d in done:
            console.print(
                f"{d['retired'][:16]} → "
                + (f"{d['new'][:16]} {d['state']}" if d["new"] else "nothing left to train on")
            )

    emit(state, done, render)
