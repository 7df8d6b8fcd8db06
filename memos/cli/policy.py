"""``memos policy …``: the scheduler's policies — their settings, a dry run, one run.

Without ``--user`` plan and apply act as the home's operator (every cube); with
``--user`` on the cubes that user owns. ``set`` and ``unset`` change one cube's
overrides and need its owner (``--user``, default ``default``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.cli.app import (
    PANEL_ADMIN,
    app,
    cubes_option,
    emit,
    get_state,
    open_memos,
    parse_pairs,
    resolve_cube,
)

if TYPE_CHECKING:
    from rich.console import Console

    from memos.cli.app import State
    from memos.core import MemOS

policy_app = typer.Typer(
    help="Policies of the scheduler (heat, ttl, dedup, decay, summaries, capacity, activation, parametric, erasure): settings, plan, apply.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy", rich_help_panel=PANEL_ADMIN)

CubeArg = Annotated[str, typer.Argument(help="Cube id or name.", show_default=False)]
COLOURS = {"archive": "yellow", "expire": "yellow", "purge": "red", "restore": "green"}


def _user(state: State) -> str | None:
    return state.user if state.user_given else None


def _cubes(mos: MemOS, state: State, refs: list[str] | None) -> list[str] | None:
    return [mos.resolve_cube(state.user, r) for r in refs] if refs else None


def _render_report(console: Console, report: dict[str, Any]) -> None:
    verb = "did" if report["applied"] else "would do"
    if not report["cubes"]:
        console.print("no cubes")
    for cube in report["cubes"]:
        console.print(f"[bold]cube {cube['cube_id']}[/bold] — what the policies {verb} at {report['now']}")
        for p in cube["policies"]:
            name = p["policy"]
            if not p["enabled"]:
                console.print(f"  [dim]{name}: off[/dim]")
                continue
            if p["error"]:
                console.print(f"  [red]{name}: failed[/red] {p['error']}")
            elif not p["actions"]:
                console.print(f"  {name}: nothing to do")
            failed = {(f["action"], f["memory_id"]): f["error"] for f in p["failed"]}
            for a in p["actions"]:
                colour = COLOURS.get(a["action"], "white")
                line = f"  {name}: [{colour}]{a['action']}[/{colour}] [cyan]{a['memory_id']}[/cyan] — {a['reason']}"
                if (a["action"], a["memory_id"]) in failed:
                    line += f" [red](failed: {failed[(a['action'], a['memory_id'])]})[/red]"
                console.print(line)
            for sk in p["skipped"]:
                console.print(f"  [dim]{name}: skipped {sk['action']} {sk['memory_id']}: {sk['why']}[/dim]")
    counts = {k: v for k, v in report["counts"].items() if v}
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()) or "no actions")


@policy_app.command("show")
def show(
    ctx: typer.Context,
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="With this cube's overrides (id or name).")
    ] = None,
) -> None:
    """Each policy's settings in effect: the defaults and config.toml, or a cube's."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube_id = mos.resolve_cube(state.user, cube) if cube else None
        effective = mos.policies.settings(cube_id, user_id=_user(state))
        overrides = mos.policies.overrides(cube_id, user_id=_user(state)) if cube_id else {}
    data = {"cube_id": cube_id, "settings": effective, "overrides": overrides}

    def render(console: Console) -> None:
        import json

        where = f"cube {cube_id}" if cube_id else "this home (defaults and config.toml)"
        console.print(f"[bold]policies of {where}[/bold]")
        for name, values in effective.items():
            mine = overrides.get(name)
            console.print(f"[bold]{name}[/bold]" + (" [dim](overridden here)[/dim]" if mine else ""))
            for key, value in values.items():
                console.print(f"  {key} = {json.dumps(value, ensure_ascii=False)}")

    emit(state, data, render)


@policy_app.command("set")
def set_(
    ctx: typer.Context,
    cube: CubeArg,
    pairs: Annotated[
        list[str],
        typer.Argument(
            help="policy.key=value (e.g. ttl.types.episode=90d, decay.after=null).", show_default=False
        ),
    ],
) -> None:
    """Override policy settings for one cube (its owner only); JSON values (3, true, null,
    ["fact"]) are taken as such, anything else as a string."""
    state = get_state(ctx)
    values = parse_pairs(pairs, "policy set", json_values=True)
    with open_memos(state) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        result = mos.policies.set_many(cube_id, values, user_id=state.user)
    emit(
        state,
        {"cube_id": cube_id, "settings": result},
        lambda c: c.print("\n".join(f"[green]set[/green] {k} on cube {cube_id}" for k in values)),
    )


@policy_app.command("unset")
def unset(
    ctx: typer.Context,
    cube: CubeArg,
    keys: Annotated[list[str], typer.Argument(help="policy.key, or a policy's name.", show_default=False)],
) -> None:
    """Drop a cube's overrides: the defaults and config.toml apply again."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube_id = resolve_cube(mos, state.user, cube)
        result = mos.policies.unset(cube_id, *keys, user_id=state.user)
    emit(
        state,
        {"cube_id": cube_id, "settings": result},
        lambda c: c.print("\n".join(f"[green]unset[/green] {k} on cube {cube_id}" for k in keys)),
    )


@policy_app.command("plan")
def plan(
    ctx: typer.Context,
    cube: Annotated[list[str] | None, cubes_option("every cube (yours with --user)")] = None,
) -> None:
    """A dry run: what each policy would do now, and why."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        report = mos.policies.plan(cube_ids=_cubes(mos, state, cube), user_id=_user(state)).as_dict()
    emit(state, report, lambda c: _render_report(c, report))


@policy_app.command("apply")
def apply(
    ctx: typer.Context,
    cube: Annotated[list[str] | None, cubes_option("every cube (yours with --user)")] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="Queue a policy.apply job per cube for the workers instead.")
    ] = False,
) -> None:
    """Run the policies once: carry out what `memos policy plan` shows."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        cube_ids = _cubes(mos, state, cube)
        if queue:
            jobs = mos.policies.enqueue(cube_ids=cube_ids, user_id=_user(state))
            emit(
                state,
                jobs,
                lambda c: c.print("\n".join(f"queued job {j.id} {j.kind} · cube {j.cube_id}" for j in jobs)),
            )
            return
        report = mos.policies.apply(cube_ids=cube_ids, user_id=_user(state)).as_dict()
    emit(state, report, lambda c: _render_report(c, report))
