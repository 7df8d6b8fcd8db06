"""``memos bench chat``: TTFT, tokens/s and retrieval's share of latency, per runtime."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from memos.cli.app import emit, get_state, note, settings_for
from memos.cli.bench import bench_app
from memos.errors import InvalidInput


@bench_app.command("chat")
def chat(
    ctx: typer.Context,
    runtime: Annotated[
        list[str] | None,
        typer.Option("--runtime", "-r", help="Runtime to measure (repeatable). Default: transformers and llama_cpp."),
    ] = None,
    server_url: Annotated[
        str | None, typer.Option(help="Also measure the openai runtime against this server, e.g. http://127.0.0.1:8000/v1.")
    ] = None,
    server_model: Annotated[str, typer.Option(help="Model name to ask the server for.")] = "default",
    n: Annotated[int, typer.Option("--n", min=10, help="Memories in the cube.")] = 1000,
    questions: Annotated[int, typer.Option(min=1, help="Questions timed per runtime (after one warm-up).")] = 8,
    max_tokens: Annotated[int, typer.Option(min=1, help="Answer length.")] = 48,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
) -> None:
    """Chat latency with memory retrieval on, per runtime, on a cube of N memories."""
    from memos.bench.chat import RUNTIMES, bench_chat
    from memos.bench.common import machine

    state = get_state(ctx)
    names = runtime or list(RUNTIMES)
    unknown = [r for r in names if r not in ("transformers", "llama_cpp", "openai")]
    if unknown:
        raise InvalidInput(f"unknown runtime {unknown[0]!r}; use transformers, llama_cpp or openai")
    if "openai" in names:
        if not server_url:
            raise InvalidInput("the openai runtime needs --server-url")
        names.remove("openai")
    results = bench_chat(
        settings_for(state), runtimes=names, n=n, questions=questions, max_tokens=max_tokens,
        server_url=server_url, server_model=server_model, progress=note,
    )  # fmt: skip
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        note(f"wrote {json_out}")
    data: dict[str, Any] = {"results": results, "machine": machine(), "date": datetime.now(UTC).isoformat()}

    def render(console: Any) -> None:
        from rich.table import Table

        table = Table(title=f"memos bench chat — {n:,} memories, {questions} questions, {max_tokens} tokens")
        for col in ("runtime", "model", "TTFT ms", "tokens/s", "retrieval ms", "retrieval share", "prompt tok"):
            table.add_column(col, justify="right" if col not in ("runtime", "model") else "left")
        for name, r in results.items():
            table.add_row(name, f"{r['model']} ({r['dtype']})", f"{r['ttft_ms']:.0f}", f"{r['tokens_per_s']:.1f}",
                          f"{r['retrieval_ms']:.0f}", f"{r['retrieval_share']:.0%}", str(r["prompt_tokens"]))  # fmt: skip
        console.print(table)

    emit(state, data, render)
