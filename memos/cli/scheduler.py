"""``memos scheduler …``: run a worker; see the jobs, their status; cancel one; prune the history.

Without ``--user`` the commands act as the home's operator (every job); with ``--user``
they show and cancel the jobs of the cubes that user owns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from memos.cli.app import PANEL_ADMIN, app, emit, get_state, open_memos, parse_pairs, stderr_console

if TYPE_CHECKING:
    from rich.console import Console

    from memos import Job
    from memos.cli.app import State
    from memos.core import MemOS

scheduler_app = typer.Typer(
    help="The job scheduler: run a worker, list jobs, see the status, cancel a job.", no_args_is_help=True
)
app.add_typer(scheduler_app, name="scheduler", rich_help_panel=PANEL_ADMIN)

COLOURS = {"queued": "white", "running": "cyan", "done": "green", "failed": "red", "cancelled": "yellow"}


def _user(state: State) -> str | None:
    return state.user if state.user_given else None


def _cube(mos: MemOS, state: State, ref: str | None) -> str | None:
    if ref is None or not state.user_given:
        return ref
    return mos.resolve_cube(state.user, ref)


def _line(job: Job) -> str:
    colour = COLOURS.get(job.state, "white")
    done = f" {job.progress:.0%}" if job.progress is not None and job.state == "running" else ""
    tail = job.message if job.state == "running" and job.message else (job.error or "")
    if job.state == "running" and job.lease_owner:
        tail = f"{job.lease_owner} · {tail}" if tail else job.lease_owner
    if job.cancel_requested and job.state == "running":
        tail += " · cancel requested"
    return (
        f"[bold]{job.id}[/bold] {job.kind} [{colour}]{job.state}[/{colour}]{done} "
        f"attempt {job.attempts}/{job.max_attempts}"
        + (f" · cube {job.cube_id}" if job.cube_id else "")
        + (f" · {tail}" if tail else "")
    )


@scheduler_app.command("run")
def run(
    ctx: typer.Context,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", "-k", help="Run only jobs of these kinds (repeatable).")
    ] = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Stop when no job is due.")] = False,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", help="Stop after this many jobs.")] = None,
    worker_id: Annotated[str | None, typer.Option("--worker-id", help="Name of this worker.")] = None,
    handler: Annotated[
        list[str] | None,
        typer.Option("--handler", hidden=True, help="kind=module:function (tests, development)."),
    ] = None,
) -> None:
    """Run a worker: claim due jobs and run them until SIGTERM or Ctrl-C (the current
    job finishes its step or goes back to the queue). Long jobs show their progress."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    state = get_state(ctx)
    handlers = {k: str(v) for k, v in parse_pairs(handler, "--handler", json_values=False).items()}
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% {task.fields[message]}"),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
        disable=state.json,
    )
    tasks: dict[int, TaskID] = {}

    def progressed(job: Job) -> None:
        bars.start()  # at the first job: an error before it prints one line, nothing else
        if job.id not in tasks:
            tasks[job.id] = bars.add_task(f"job {job.id} {job.kind}", total=1.0, message="")
        bars.update(tasks[job.id], completed=job.progress or 0.0, message=job.message or "")

    def ended(job: Job) -> None:
        if job.id in tasks:
            bars.remove_task(tasks.pop(job.id))
        if not state.json:
            bars.console.print(_line(job))

    try:
        with open_memos(state) as mos:
            n = mos.scheduler.run_worker(
                handlers=handlers,
                kinds=kind,
                worker_id=worker_id,
                until_idle=until_idle,
                max_jobs=max_jobs,
                stop_on_signals=True,
                on_job=ended,
                on_progress=progressed,
            )
    finally:
        if bars.live.is_started:
            bars.stop()
    emit(state, {"jobs_run": n}, lambda c: c.print(f"ran {n} job{'s' if n != 1 else ''}"))


@scheduler_app.command("status")
def status(ctx: typer.Context) -> None:
    """Jobs per state and kind, and what is running now."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        st = mos.scheduler.status(user_id=_user(state))

    def render(console: Console) -> None:
        from rich.table import Table

        console.print(
            f"scheduler {st.mode}"
            + (" (background worker running)" if st.background else "")
            + " · "
            + " · ".join(f"{st.totals[s]} {s}" for s in st.totals)
        )
        if st.kinds:
            table = Table("kind", *st.totals)
            for kind, counts in sorted(st.kinds.items()):
                table.add_row(kind, *(str(counts[s]) for s in st.totals))
            console.print(table)
        for job in st.running:
            console.print(_line(job))

    emit(state, st, render)


@scheduler_app.command("jobs")
def jobs(
    ctx: typer.Context,
    state_: Annotated[
        str | None,
        typer.Option(
            "--state", "-s", help="queued | running | done | failed | cancelled.", show_default=False
        ),
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only jobs of this kind.")] = None,
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="Only jobs of this cube (id or name).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many, newest first.")] = 50,
) -> None:
    """List jobs, newest first."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        found = mos.scheduler.jobs(
            user_id=_user(state), state=state_, kind=kind, cube_id=_cube(mos, state, cube), limit=limit
        )

    def render(console: Console) -> None:
        if not found:
            console.print("no jobs")
        for job in found:
            console.print(_line(job))

    emit(state, found, render)


@scheduler_app.command("cancel")
def cancel(ctx: typer.Context, job_id: Annotated[int, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a queued job; ask a running one to stop at its next step."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        job = mos.scheduler.cancel(job_id, user_id=_user(state))
    said = "cancelled" if job.state == "cancelled" else "cancel requested (it stops at its next step)"
    emit(state, job, lambda c: c.print(f"job {job.id} ({job.kind}): {said}"))


@scheduler_app.command("prune")
def prune(
    ctx: typer.Context,
    days: Annotated[
        float, typer.Option("--days", help="Keep jobs that finished within this many days.")
    ] = 7.0,
) -> None:
    """Delete the records of finished jobs (done, failed, cancelled) older than --days."""
    state = get_state(ctx)
    with open_memos(state) as mos:
        n = mos.scheduler.prune(older_than_days=days, user_id=_user(state))
    emit(state, {"pruned": n}, lambda c: c.print(f"pruned {n} finished job{'s' if n != 1 else ''}"))
