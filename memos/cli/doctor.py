"""``memos doctor`` and ``memos reindex --check``: what in a home needs attention.

Both only read: the index is compared with the rows by :meth:`MemOS.check_index`, and
nothing is rebuilt or retried. A problem that needs action (rows that could not be indexed
and are quarantined, index points missing or extra, writes still pending) makes the exit
status 1, with a one-line hint naming the command that fixes it.

Without ``--user`` they look at the whole home, as its operator; with ``--user`` (or
``MEMOS_USER``) at the cubes that user can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from memos.cli.app import PANEL_ADMIN, State, app, emit, get_state, home_exists, open_memos, settings_for
from memos.cli.render import mapping_table, quarantine_table
from memos.errors import HomeLocked

if TYPE_CHECKING:
    from rich.console import Console

    from memos.core import MemOS


def scope(state: State) -> str | None:
    """The user whose cubes are checked; None (the whole home) unless a user was named."""
    return state.user if state.user_given else None


def index_problems(report: dict[str, Any]) -> list[str]:
    """One line per problem in a :meth:`MemOS.check_index` report, each with its remedy."""
    out = []
    quarantined = len(report["quarantined"])
    if quarantined:
        out.append(
            f"{quarantined} memor{'y' if quarantined == 1 else 'ies'} could not be indexed (quarantined, "
            "not searchable): fix them with `memos update ID` or remove them with `memos purge ID`, "
            "then run `memos reindex`"
        )
    if report["missing"] or report["extra"]:
        out.append(
            f"the index is out of step with the rows ({report['missing']} missing, {report['extra']} extra "
            "points): run `memos reindex`"
        )
    if report["pending"]:
        out.append(f"{report['pending']} index writes are still pending: run `memos reindex`")
    return out


def print_problems(console: Console, problems: list[str], notes: Sequence[str] = ()) -> None:
    for line in notes:
        console.print(f"[dim]note: {escape(line)}[/dim]")
    if not problems:
        console.print("[green]ok[/green]: nothing needs attention")
    for line in problems:
        console.print(f"[yellow]needs action[/yellow]: {escape(line)}")


def _diagnose(mos: MemOS, state: State) -> dict[str, Any]:
    user = scope(state)
    stats = mos.stats(user_id=user)
    report = mos.check_index(user_id=user)
    problems = index_problems(report)
    return {
        "relational": stats["relational"],
        "vector_index": stats["vector_index"],
        "embedder": stats["embedder"],
        "index": report,
        "extraction": {
            "pending": stats["extraction_pending"],
            "failures": stats["extraction_failures"],
            "reader_failures": stats.get("reader_failures", 0),
            "jobs_failed": stats["extraction_jobs_failed"],
        },
        "problems": problems
        + (
            [
                f"{stats['extraction_jobs_failed']} deferred extraction jobs failed: "
                "`memos scheduler jobs --state failed --kind extract.deferred` says why"
            ]
            if stats["extraction_jobs_failed"]
            else []
        ),
        "notes": [
            f"{stats['extraction_pending']} memories are queued for extraction: "
            "`memos extract` or a scheduler worker (`memos scheduler run`) runs it"
        ]
        if stats["extraction_pending"]
        else [],
    }


@app.command(rich_help_panel=PANEL_ADMIN)
def doctor(ctx: typer.Context) -> None:
    """Check the home without changing it: backends, lock, index health, quarantined rows,
    extraction. Exit status 1 when something needs action."""
    from memos import MemOS

    state = get_state(ctx)
    settings = settings_for(state)
    data: dict[str, Any] = {
        "home": str(settings.home),
        "scope": scope(state) or "the whole home",
        "relational_url": settings.public_dict()["relational_url"],
        "vector_url": settings.public_dict()["vector_url"],
        "locked_by": None,
        "problems": [],
        "notes": [],
    }
    if home_exists(settings):
        data["locked_by"] = MemOS.lock_holder(settings)
    if data["locked_by"] is not None:
        holder = data["locked_by"]
        data["problems"] = [
            f"the home is open in another process (pid {holder.get('pid', '?')}: {holder.get('cmd', '?')}); "
            "run `memos doctor` again when it has finished"
        ]
    else:
        try:
            with open_memos(state, settings) as mos:
                data.update(_diagnose(mos, state))
        except HomeLocked as exc:  # taken between the probe and the open
            data["problems"] = [str(exc)]
    data["ok"] = not data["problems"]

    def render(console: Console) -> None:
        rows = {k: v for k, v in data.items() if k not in ("problems", "notes", "ok", "index", "extraction")}
        rows["locked_by"] = rows["locked_by"] or "no other process"
        if "index" in data:
            index = data["index"]
            rows["index"] = {k: v for k, v in index.items() if k != "quarantined"}
            rows["index"]["quarantined"] = len(index["quarantined"])
            rows["extraction"] = data["extraction"]
        console.print(mapping_table(rows, title="memos doctor"))
        if data.get("index", {}).get("quarantined"):
            console.print(quarantine_table(data["index"]["quarantined"]))
        print_problems(console, data["problems"], data["notes"])

    emit(state, data, render)
    if data["problems"]:
        raise typer.Exit(1)


def check_index(state: State, cube_refs: list[str] | None) -> None:
    """``memos reindex --check``: the index report of the given cubes (or all), nothing rebuilt."""
    with open_memos(state) as mos:
        cube_ids = [mos.resolve_cube(state.user, c) for c in cube_refs] if cube_refs else None
        report = mos.check_index(user_id=scope(state) if cube_ids is None else state.user, cube_ids=cube_ids)
    problems = index_problems(report)
    data = {**report, "cube_ids": cube_ids, "problems": problems, "ok": not problems}

    def render(console: Console) -> None:
        rows = {k: v for k, v in report.items() if k != "quarantined"}
        rows["quarantined"] = len(report["quarantined"])
        console.print(mapping_table(rows, title="index check"))
        if report["quarantined"]:
            console.print(quarantine_table(report["quarantined"]))
        print_problems(console, problems)

    emit(state, data, render)
    if problems:
        raise typer.Exit(1)
