"""The guided tour behind ``make demo`` / ``memos demo``: the whole SDK on the bundled data.

It creates a user and a cube, ingests a multi-session conversation, searches it (hits
with scores, reasons and provenance), chats with memory, lets the scheduler's background
worker apply the cube's policies (a KV prefix the next chat starts from, an episode
archived and restored), trains a LoRA adapter, updates a memory and shows its history,
deletes and restores one, purges one, exports the cube to a ``.memcube`` archive, imports it
into a second home, and prints timings. Everything runs offline on the embedded default.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memos.archive.chatlog import load_chat
from memos.core import MemOS
from memos.demo_scheduler import scheduler_step
from memos.types import SearchHit

DATA = Path(__file__).resolve().parent.parent / "examples" / "data" / "conversation.json"

QUERIES = [
    "Where does Alice live now?",
    "What is the name of Alice's dog?",
    "Where does Alice's sister live?",
    "What music does Alice like?",
]


def hits_table(title: str, hits: list[SearchHit]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False, expand=True)
    table.add_column("#", justify="right", width=2)
    table.add_column("score", justify="right", width=6)
    table.add_column("memory", ratio=3)
    table.add_column("why", ratio=2)
    table.add_column("from", ratio=1)
    for i, h in enumerate(hits, start=1):
        p = h.memory.provenance
        when = p.timestamp.date().isoformat() if p.timestamp else ""
        source = " ".join(x for x in (p.session_id or "", p.message_id or "", when) if x)
        label = (
            f"[dim]{h.memory.type}[/] {p.speaker + ': ' if p.speaker and h.memory.type == 'episode' else ''}"
        )
        table.add_row(str(i), f"{h.score * 100:.2f}", label + h.memory.text, "; ".join(h.why), source)
    return table


def run_demo(
    home: str | Path | None = None, console: Console | None = None, data: Path = DATA
) -> dict[str, Any]:
    """Run the tour in ``home`` (a fresh temporary one by default); returns its timings."""
    console = console or Console()
    home = Path(home) if home else Path(tempfile.mkdtemp(prefix="memos-demo-"))
    timings: dict[str, float] = {}

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - t0

    console.rule("[bold]memos demo")
    console.print(f"home: {home}")
    with timed("open (load embedder)"):
        mos = MemOS(home=home, scheduler="background")  # a worker thread runs the jobs; close stops it
        mos.embedder.embed(["warm up"])
    try:
        if not any(u.id == "alice" for u in mos.list_users()):
            mos.add_user("alice", "Alice")
        cube = next((c for c in mos.list_cubes("alice") if c.name == "personal"), None) or mos.create_cube(
            "alice", "personal", description="Alice's conversations with Sam"
        )
        sessions = load_chat(data)
        n_msgs = sum(len(s.messages) for s in sessions)
        with timed("ingest"):
            added = derived = superseded = 0
            for sess in sessions:
                res = mos.add(messages=sess.messages, user_id="alice", cube_id=cube.id, session_id=sess.id)
                added += len(res.memories)
                derived += len(res.derived)
                superseded += len(res.superseded)
        console.print(
            f"ingested {n_msgs} messages in {len(sessions)} sessions: {added} episodes, "
            f"{derived} extracted facts, {superseded} older facts superseded "
            f"({timings['ingest']:.2f}s, {added / max(timings['ingest'], 1e-9):.0f} msgs/s)"
        )

        search_ms: list[float] = []
        for q in QUERIES:
            t0 = time.perf_counter()
            hits = mos.search(q, user_id="alice", cube_ids=[cube.id], top_k=4)
            search_ms.append((time.perf_counter() - t0) * 1000)
            console.print(hits_table(f"search: {q!r}  ({search_ms[-1]:.1f} ms)", hits))
        timings["search median (ms)"] = sorted(search_ms)[len(search_ms) // 2]

        facts = mos.list(user_id="alice", cube_id=cube.id, filters={"type": "fact"}, limit=100)
        console.rule("facts the rule extractor derived (active)")
        for m in facts.items[:10]:
            console.print(f"  • {m.text}  [dim](from {', '.join(m.provenance.source_ids)[:12]}…)[/]")
        retired = mos.list(user_id="alice", cube_id=cube.id, states=["superseded"], limit=100)
        for m in retired.items[:5]:
            console.print(
                f"  [strike]{m.text}[/] superseded (valid until {m.valid_to.date() if m.valid_to else '?'})"
            )

        chat_step(mos, cube.id, console, timings)
        scheduled = scheduler_step(mos, cube.id, console, timings)  # what the test checks
        parametric_step(mos, cube.id, console, timings)

        console.rule("update → history")
        note = mos.add(
            text="Alice's favourite coffee is a flat white",
            user_id="alice",
            cube_id=cube.id,
            tags=["preference"],
        ).memories[0]
        mos.update(
            note.id,
            user_id="alice",
            text="Alice's favourite coffee is a cortado",
            reason="she changed her order",
        )
        hist = mos.history(note.id, user_id="alice")
        for v in hist.versions:
            console.print(f"  v{v.version}: {v.text}  [dim]({v.actor}: {v.reason})[/]")
        for e in hist.events:
            console.print(f"  event {e.action} by {e.actor} at {e.ts:%Y-%m-%d %H:%M:%S}")

        console.rule("delete → restore → purge")
        victim = mos.search("northern lights", user_id="alice", cube_ids=[cube.id], top_k=1)[0].memory
        mos.delete(victim.id, user_id="alice", reason="demo")
        gone = all(h.memory.id != victim.id for h in mos.search("northern lights", user_id="alice", top_k=10))
        console.print(f"  deleted {victim.id[:8]}: hidden from search = {gone}")
        mos.restore(victim.id, user_id="alice")
        console.print(f"  restored: state = {mos.get(victim.id, user_id='alice').state}")
        purged = mos.purge(note.id, user_id="alice", reason="demo purge")
        console.print(f"  purged {len(purged)} memory(ies); history keeps only a tombstone")

        console.rule("export → import into a second home")
        archive = home / "alice-personal.memcube"
        with timed("export"):
            mos.export_cube(cube.id, archive, user_id="alice")
        console.print(f"  wrote {archive} ({archive.stat().st_size / 1024:.0f} KiB)")
        stats = mos.stats(user_id="alice")
    finally:
        mos.close()

    second = home / "second-home"
    with timed("import"):
        other = MemOS(home=second, embedder=mos.embedder)
        try:
            other.add_user("alice", "Alice")
            imported = other.import_cube(archive, user_id="alice")
            check = other.search(QUERIES[0], user_id="alice", top_k=1)
            n_imported = other.list(user_id="alice", cube_id=imported.id, states=None, limit=1).total
        finally:
            other.close()
    console.print(f"  imported cube {imported.name!r} with {n_imported} memories into {second}")
    if check:
        console.print(f"  same answer there: {check[0].memory.text!r}")

    console.rule("stats and timings")
    console.print(
        f"  {stats['memories']} memories ({stats['by_type']}), {stats['entities']} entities, "
        f"{stats['edges']} edges, index points {stats['index_points']}"
    )
    for name, secs in timings.items():
        console.print(f"  {name:<24} {secs:8.3f}" + ("" if "ms" in name else " s"))
    return {"timings": timings, "stats": stats, "scheduler": scheduled}


def chat_step(mos: MemOS, cube_id: str, console: Console, timings: dict[str, float]) -> None:
    """Chat with memory on the default runtime: a fact told in one session is used in the next."""
    rt_name = f"{mos.settings.runtime.model} on {mos.settings.runtime.name}"
    console.rule(f"chat with memory ({rt_name})")
    t0 = time.perf_counter()
    mos.runtime()  # the first run converts the bundled GGUF once (about a minute), then caches it
    timings["load chat model"] = time.perf_counter() - t0
    told = mos.chat(
        "Please remember: my new dentist is Dr. Okafor on Oranienstrasse.",
        user_id="alice", cube_ids=[cube_id], max_tokens=32,
    )  # fmt: skip
    console.print(
        f"  [dim]session {told.session_id}[/] alice: Please remember: my new dentist is Dr. Okafor on Oranienstrasse."
    )
    console.print(f"  [dim]session {told.session_id}[/] model: {told.answer}")
    question = "Who is my dentist?"
    for label, k in (("without memory", 0), ("with memory", None)):
        res = mos.chat(
            question, user_id="alice", cube_ids=[cube_id], memories=k, max_tokens=32, write_back=k is None
        )
        console.print(f"  [bold]{label}[/] [dim](new session {res.session_id})[/] alice: {question}")
        console.print(f"    model: {res.answer}")
        earlier = [m for m in res.memories if m.id in told.written]
        console.print(
            f"    [dim]{len(res.memories)} memories in the prompt"
            + (f", incl. the turn from session {told.session_id}" if earlier else "")
            + f"; retrieval {res.timings.retrieval_ms:.0f} ms, first token {res.timings.ttft_ms:.0f} ms, "
            f"{res.timings.tokens_per_s:.1f} tok/s[/]"
        )
        timings[f"chat {label} TTFT (ms)"] = res.timings.ttft_ms
    res = mos.chat(
        "Where does my sister Mira live?",
        user_id="alice",
        cube_ids=[cube_id],
        max_tokens=32,
        write_back=False,
    )
    console.print(f"  alice: Where does my sister Mira live?\n    model: {res.answer}")
    for m in res.memories[:3]:
        console.print(f"    [dim]memory {m.id[:8]} ({m.score:.2f}): {m.text[:90]}[/]")


DEMO_TRAINING = {"epochs": 3, "batch_size": 8, "rank": 16, "alpha": 32, "probe_size": 8}


def parametric_step(mos: MemOS, cube_id: str, console: Console, timings: dict[str, float]) -> None:
    """Consolidate a handful of the cube's facts into a LoRA adapter; chat with retrieval off."""
    from memos.parametric.data import parse_fact

    console.rule("parametric memory: facts consolidated into a LoRA adapter")
    facts = mos.list(user_id="alice", cube_id=cube_id, filters={"type": "fact"}, limit=200).items
    chosen = [m for m in facts if parse_fact(m.text, "Alice").relation][:6]
    t0 = time.perf_counter()
    info = mos.parametric.consolidate(
        cube_id, user_id="alice", memory_ids=[m.id for m in chosen], config=DEMO_TRAINING
    )
    timings["consolidate (s)"] = time.perf_counter() - t0
    ev = info.evaluation
    for m in chosen:
        console.print(f"  • {m.text}")
    if ev is not None:
        console.print(
            f"  adapter {info.id[:12]} ({info.bytes / 1e6:.1f} MB) trained in {info.train_s:.0f} s: held-out recall "
            f"{ev.recall_adapter:.0%} (base model {ev.recall_base:.0%}), general-text perplexity ×{ev.ppl_ratio:.3f} "
            f"→ [bold]{info.state}[/]" + (f" ({info.reason})" if info.reason else "")
        )
    sample = next(
        (m for m in chosen if parse_fact(m.text, "Alice").relation == "lives_in"),
        chosen[0] if chosen else None,
    )
    if sample is None:
        return
    fact = parse_fact(sample.text, "Alice")
    who = f"my {fact.rest}" if fact.about_user and fact.rest else fact.subject
    question = (
        f"Where does {who} live?" if fact.relation == "lives_in" else f"What do you remember about {who}?"
    )
    for label, parametric in (("base model", False), ("with the adapter", True)):
        res = mos.chat(question, user_id="alice", cube_ids=[cube_id], memories=0, max_tokens=32, write_back=False,
                       parametric=parametric, activation=False)  # fmt: skip
        applied = f"adapter {res.parametric[0]['id'][:12]}" if res.parametric else "no adapter"
        console.print(
            f"  [bold]{label}[/] [dim](retrieval off, {applied})[/] alice: {question}\n    model: {res.answer}"
        )


def main() -> None:  # pragma: no cover - exercised through the CLI
    run_demo()
