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
        typer.Option(
            "--runtime", "-r", help="Runtime to measure (repeatable). Default: transformers and llama_cpp."
        ),
    ] = None,
    server_url: Annotated[
        str | None,
        typer.Option(
            help="Also measure the openai runtime against this server, e.g. http://127.0.0.1:8000/v1."
        ),
    ] = None,
    server_model: Annotated[str, typer.Option(help="Model name to ask the server for.")] = "default",
    n: Annotated[int, typer.Option("--n", min=10, help="Memories in the cube.")] = 1000,
    questions: Annotated[
        int, typer.Option(min=1, help="Questions timed per runtime (after one warm-up).")
    ] = 8,
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
        for col in (
            "runtime",
            "model",
            "TTFT ms",
            "tokens/s",
            "retrieval ms",
            "retrieval share",
            "prompt tok",
        ):
            table.add_column(col, justify="right" if col not in ("runtime", "model") else "left")
        for name, r in results.items():
            table.add_row(name, f"{r['model']} ({r['dtype']})", f"{r['ttft_ms']:.0f}", f"{r['tokens_per_s']:.1f}",
                          f"{r['retrieval_ms']:.0f}", f"{r['retrieval_share']:.0%}", str(r["prompt_tokens"]))  # fmt: skip
        console.print(table)

    emit(state, data, render)


@bench_app.command("activation")
def activation(
    ctx: typer.Context,
    runtime: Annotated[
        list[str] | None, typer.Option("--runtime", "-r", help="transformers and/or llama_cpp (repeatable).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Bundled model or path (repeatable). Default: smollm2-135m-instruct."),
    ] = None,
    sizes: Annotated[
        str, typer.Option(help="Comma-separated prefix lengths in tokens.")
    ] = "512,1024,2048,4096",
    repeats: Annotated[int, typer.Option(min=1, help="Runs per measurement (median).")] = 3,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
) -> None:
    """Time to first token with a compiled KV prefix (loaded from disk) vs plain prefill."""
    from memos.bench.activation import bench_activation
    from memos.bench.common import machine

    state = get_state(ctx)
    names = runtime or ["transformers", "llama_cpp"]
    if any(r not in ("transformers", "llama_cpp") for r in names):
        raise InvalidInput("activation memory runs on transformers and llama_cpp")
    try:
        lengths = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError as exc:
        raise InvalidInput(f"--sizes takes comma-separated integers, got {sizes!r}") from exc
    if not lengths or any(n < 8 for n in lengths):
        raise InvalidInput("--sizes must be at least 8 tokens each")
    results = bench_activation(
        runtimes=names, models=model or ["smollm2-135m-instruct"], sizes=lengths, repeats=repeats,
        threads=threads, progress=note,
    )  # fmt: skip
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        note(f"wrote {json_out}")

    def render(console: Any) -> None:
        from rich.table import Table

        table = Table(title="memos bench activation — TTFT with a compiled KV prefix vs plain prefill")
        for col in (
            "runtime",
            "prefix tokens",
            "prefill ms",
            "KV ms (incl. load)",
            "speedup",
            "load ms",
            "bytes/token",
        ):
            table.add_column(col, justify="left" if col == "runtime" else "right")
        for key, per in results.items():
            for size, r in per.items():
                if isinstance(r, dict):
                    table.add_row(f"{key} ({per['dtype']})", size, f"{r['ttft_prefill_ms']:.0f}", f"{r['ttft_kv_ms']:.0f}",
                                  f"{r['speedup']:.1f}×", f"{r['load_ms']:.0f}", f"{r['bytes_per_token']:.0f}")  # fmt: skip
        console.print(table)

    emit(state, {"results": results, "machine": machine(), "date": datetime.now(UTC).isoformat()}, render)


@bench_app.command("parametric")
def parametric(
    ctx: typer.Context,
    facts: Annotated[int, typer.Option(min=4, max=1000, help="Synthetic facts to consolidate.")] = 100,
    model: Annotated[
        str, typer.Option("--model", help="Base model (bundled name or path).")
    ] = "smollm2-135m-instruct",
    epochs: Annotated[int | None, typer.Option(help="At most this many epochs.")] = None,
    retrieval_questions: Annotated[
        int | None, typer.Option(help="Facts asked through MemOS.chat for the retrieval rows (default: all).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
) -> None:
    """Recall of facts from a consolidated LoRA adapter vs retrieval, both, neither."""
    from memos.bench.parametric import bench_parametric

    state = get_state(ctx)
    config = {"epochs": epochs} if epochs else None
    results = bench_parametric(
        n_facts=facts, model=model, config=config, retrieval_questions=retrieval_questions, log=note
    )
    results["date"] = datetime.now(UTC).isoformat()
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        note(f"wrote {json_out}")

    def render(console: Any) -> None:
        from rich.table import Table

        table = Table(
            title=f"memos bench parametric — {facts} facts, exact-match recall (held-out phrasings)"
        )
        for col in (
            "adapter",
            "adapter (seen)",
            "retrieval",
            "both",
            "base",
            "ppl ratio",
            "train s",
            "adapter MB",
        ):
            table.add_column(col, justify="right")
        r = results
        table.add_row(f"{r['recall_adapter']:.0%}", f"{r['recall_adapter_seen']:.0%}", f"{r['recall_retrieval']:.0%}",
                      f"{r['recall_both']:.0%}", f"{r['recall_base']:.0%}", f"{r['ppl_ratio']:.3f}",
                      f"{r['train_s']:.0f}", f"{r['adapter_bytes'] / 1e6:.1f}")  # fmt: skip
        console.print(table)
        console.print(f"gate: {r['state']}")

    emit(state, results, render)
