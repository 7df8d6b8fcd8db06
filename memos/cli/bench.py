"""``memos bench …``: the reproducible benchmarks whose results go to BENCHMARKS.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from memos.cli.app import app, emit, get_state, note, settings_for
from memos.errors import InvalidInput

bench_app = typer.Typer(help="Reproducible benchmarks (results: BENCHMARKS.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench", rich_help_panel="Benchmarks")


def _ints(raw: str, option: str, example: str, minimum: int) -> list[int]:
    """A comma-separated option of integers, each at least ``minimum``."""
    try:
        values = [int(x.replace("_", "")) for x in raw.split(",") if x.strip()]
    except ValueError as exc:
        raise InvalidInput(f"{option} takes comma-separated integers such as {example}; got {raw!r}") from exc
    if not values or any(n < minimum for n in values):
        raise InvalidInput(f"{option} values must be at least {minimum}")
    return values


def _write(out: Path | None, data: dict[str, Any]) -> None:
    if out is not None:
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        note(f"wrote {out}")


@bench_app.command("scale")
def scale(
    ctx: typer.Context,
    n: Annotated[str, typer.Option("--n", help="Comma-separated cube sizes.")] = "1000,10000",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
    queries: Annotated[int, typer.Option(help="Searches timed per size.")] = 200,
    embed_sample: Annotated[int, typer.Option(help="Memories added with the model in the loop.")] = 512,
    relational_url: Annotated[
        str | None, typer.Option(help="Measure a PostgreSQL (or other) deployment.")
    ] = None,
    vector_url: Annotated[
        str | None, typer.Option(help="Measure a Qdrant server, e.g. qdrant://host:6333.")
    ] = None,
) -> None:
    """Add throughput, index build, search latency, RSS and disk per memory at each size.

    The embedding model is the configured one (``MEMOS_EMBEDDER``/``MEMOS_EMBEDDER_BACKEND``)."""
    from memos.bench.common import configured_embedder, machine
    from memos.bench.scale import bench_size

    state = get_state(ctx)
    embedder = configured_embedder(settings_for(state))
    results: dict[str, Any] = {}
    for size in _ints(n, "--n", "1000,10000", 10):
        note(f"scale: n={size:,}")
        results[str(size)] = bench_size(
            size,
            embedder,
            relational_url=relational_url,
            vector_url=vector_url,
            n_queries=queries,
            embed_sample=embed_sample,
            log=note,
        )
    meta = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "memos bench scale --n " + n,
        "embedder": embedder.id,
        "relational": "sqlite" if relational_url is None else relational_url.split(":", 1)[0],
        "vector": "qdrant_edge" if vector_url is None else vector_url.split(":", 1)[0],
    }
    _write(json_out, {**results, "_meta": meta})
    emit(state, results, lambda console: _table(console, results))


def _table(console: Any, results: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    keys = list(next(iter(results.values())).keys())
    table = Table(title="memos bench scale")
    table.add_column("metric")
    for size in results:
        table.add_column(f"n={int(size):,}", justify="right")
    for key in keys:
        table.add_row(key, *(str(results[s][key]) for s in results))
    console.print(table)


@bench_app.command("embed")
def embed(
    ctx: typer.Context,
    backends: Annotated[
        str, typer.Option(help="Comma-separated: torch, onnx, onnx-int8.")
    ] = "torch,onnx-int8",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "8,16,32,64",
    texts: Annotated[int, typer.Option(help="Texts embedded per variant and round.")] = 1024,
    call: Annotated[
        int, typer.Option(help="Texts per embed() call (64: one cube's share of a bulk add).")
    ] = 64,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 3,
    queries: Annotated[int, typer.Option(help="Queries timed per backend.")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
) -> None:
    """Texts/s of each embedder backend at each batch size, side by side; query latency."""
    from memos.bench import embed as bench
    from memos.bench.common import machine

    state = get_state(ctx)
    result = bench.run(
        bench.make_from_settings(settings_for(state)),
        backends=[b.strip() for b in backends.split(",") if b.strip()],
        batch_sizes=_ints(batch_sizes, "--batch-sizes", "8,16", 1),
        n_texts=texts,
        call=call,
        rounds=rounds,
        n_queries=queries,
        log=note,
    )
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "command": "memos bench embed"}
    _write(json_out, {**result, "_meta": meta})
    emit(state, result, lambda console: _embed_table(console, result))


def _embed_table(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    rates = result["texts_per_s"]
    sizes = list(next(iter(rates.values())))
    table = Table(
        title=f"memos bench embed — texts/s, calls of {result['call']} texts, median of {result['rounds']}"
    )
    table.add_column("backend")
    for size in sizes:
        table.add_column(f"batch {size}", justify="right")
    table.add_column("query p50 / p95 ms", justify="right")
    for backend, row in rates.items():
        lat = result["query_latency"][backend]
        table.add_row(
            backend, *(f"{row[s]['median']:.0f}" for s in sizes), f"{lat['p50_ms']} / {lat['p95_ms']}"
        )
    console.print(table)


@bench_app.command("locomo")
def locomo(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="A LoCoMo-format JSON file.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this file.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Hits asked of each search.")] = 25,
) -> None:
    """Evidence recall@1/5/10/25 of retrieval on LoCoMo-format conversations."""
    from memos.bench import locomo as bench

    state = get_state(ctx)
    result = bench.run(data, top_k=top_k, log=note)
    _write(json_out, {**result, "_meta": {"date": time.strftime("%Y-%m-%d"), "data": str(data)}})
    emit(state, result, lambda console: _locomo_table(console, result))


def _locomo_table(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"memos bench locomo — {result['n_questions']} questions")
    table.add_column("")
    for k in ("1", "5", "10", "25"):
        table.add_column(f"R@{k}", justify="right")
        table.add_column(f"hit@{k}", justify="right")
    table.add_row(
        "all", *(f"{result[m][k]:.3f}" for k in ("1", "5", "10", "25") for m in ("recall_at", "hit_at"))
    )
    for cat, row in result["per_category"].items():
        table.add_row(
            f"category {cat} (n={row['n']})",
            *(f"{row[m][k]:.3f}" for k in ("1", "5", "10", "25") for m in ("recall_at", "hit_at")),
        )
    console.print(table)
    console.print(
        f"ingest {result['ingest_s']} s; search p50 {result['search_p50_ms']} ms, p95 {result['search_p95_ms']} ms"
    )
