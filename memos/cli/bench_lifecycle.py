"""``memos bench lifecycle``: the scheduler and its policies on a replayed LoCoMo workload."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from memos.cli.app import emit, get_state, note
from memos.cli.bench import _write, bench_app


@bench_app.command("lifecycle")
def lifecycle(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="A LoCoMo-format JSON file.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="The first conversation only, one training epoch (a few minutes).")
    ] = False,
    conversations: Annotated[
        int | None, typer.Option("--conversations", min=1, help="Replay only the first N conversations.")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Tokens each chat answers.")] = 8,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat/--no-chat",
            help="Ask the questions through MemOS.chat (default), or only run the retrieval a chat does "
            "(no model: minutes, no TTFT or KV figures).",
        ),
    ] = True,
) -> None:
    """Replay LoCoMo with the scheduler off and on: KV prefixes served, TTFT, active and
    archived memories, recall, consolidation, the cost on add and search, jobs."""
    from memos.bench import lifecycle as bench
    from memos.bench.common import machine

    state = get_state(ctx)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result = bench.run(
        data, quick=quick, conversations=conversations, max_tokens=max_tokens, chat=chat, log=note
    )
    command = "memos bench lifecycle" + (" --quick" if quick else "") + ("" if chat else " --no-chat")
    meta = {"date": started, "machine": machine(), "command": command, "data": str(data)}
    _write(json_out, {**result, "_meta": meta})
    emit(state, result, lambda console: _table(console, result, bench.targets(result)))


def _table(console: Any, result: dict[str, Any], rows: list[tuple[str, Any, str, bool | None]]) -> None:
    from rich.table import Table

    table = Table(
        title=f"memos bench lifecycle — {result['conversations']} conversations, {result['chats']} chats"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("met")
    for key, value, target, met in rows:
        table.add_row(key, str(value), target, "—" if met is None else ("yes" if met else "[red]no[/]"))
    console.print(table)
    ttft = (
        f"ttft off {result['ttft_ms_median_off']} ms, on {result['ttft_ms_median_on']} ms "
        f"(prompt tokens {result['prompt_tokens_median_off']} / {result['prompt_tokens_median_on']}, "
        f"{result['retrieved_in_prefix_fraction'] or 0:.0%} of retrieved memories in the prefix); "
        if result["chats"]
        else "no chats (--no-chat); "
    )
    console.print(
        f"{ttft}active {result['active_memories_off']} → {result['active_memories_on']} "
        f"({result['archived_on']} archived); jobs {result['jobs_by_kind']}; {result['seconds']} s"
    )
