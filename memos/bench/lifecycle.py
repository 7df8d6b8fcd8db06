"""``memos bench lifecycle``: what the scheduler and its policies buy, and what they cost.

The LoCoMo-format conversations are replayed session by session on a simulated clock (each
session at its own date) into two homes side by side in one process:

- **off**: the scheduler off, no policy ever runs (memos before issue 21);
- **on**: the default policies, plus a capacity cap of half of each cube's memories (set
  through the SDK, ``capacity.max_active``, as half the off cube's count after each
  session). Its scheduler is a worker (``scheduler.policy_interval = 1h``) run until idle
  at the start of each session — the idle gap since the last one, when a ``memos scheduler
  run`` worker or the background thread would have done the same work. Nothing in the
  bench calls ``activation.compile`` or ``parametric.consolidate``.

In each session both homes receive the session's turns (``MemOS.add``, the order of the two
alternating per session; each add timed), then, half an hour later, the chat workload:
every question whose evidence ends in this session is asked through ``MemOS.chat`` on the
transformers runtime with the bundled model (a new chat session each, no write-back: the
questions must not become memories that recall then finds), on both homes alternately.
``kv_served_fraction`` is the share of the on home's chats that started from a valid KV
prefix (``ChatResult.activation["used"]``: only the activation policy compiles one there).

``--no-chat`` replaces each chat by the retrieval it does (its searches count as use, as a
chat's do): the policies see the same workload, the model is never loaded, and the run takes
minutes; ``kv_served_fraction`` and the TTFT keys are then null.

After the replay every question is searched in both homes (top 25, the query embedded
first and timed apart, the two searches of a question back to back, alternating) and
recall@10 is scored over the first ten *distinct source turns* reached by walking the hits
in order (an episode by its message id, a fact or summary through its provenance): a
summary naming twenty turns uses up the budget, it does not widen it.

Parametric consolidation is off by default (training takes minutes on a CPU). After the
replay the bench turns it on for the on home's cubes (``parametric.enabled``, a per-cube
override), lets an idle day pass and runs the worker again: the policy consolidates the
stable, used facts, the gate evaluates the adapter, and ``consolidated_facts`` (the facts
trained; ``consolidated_left_out``: those an adapter lists but left out, as no question
checks them), ``parametric_recall`` (held-out recall from the gate, the mean over the
adapters) and ``parametric_ppl_ratio`` (the worst adapter's) come from what it trained.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from memos.bench.common import percentile
from memos.bench.locomo import Conversation, Question, load_locomo, ranked_dia_ids, score
from memos.chat.prompt import chat_memories
from memos.runtime import GenerationParams

USER = "bench"
#: the on home's scheduler: policies every hour of simulated time, run by the bench's worker
SCHEDULER = {"policy_interval": "1h"}
#: ``--quick``: the first conversation only, trained for one epoch
QUICK_TRAIN = {"epochs": 1}


class SimClock:
    """The homes' clock: the bench moves it, never backwards."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = max(self.now, when)

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def session_time(raw: str | None, previous: datetime) -> datetime:
    """A LoCoMo session date (``"1:56 pm on 8 May, 2023"``); a day after ``previous`` when
    it is missing, unreadable or earlier."""
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            when = datetime.strptime((raw or "").strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        if when > previous:
            return when
    return previous + timedelta(days=1)


def evidence_session(q: Question) -> int:
    """The session of the question's last evidence turn (``D7:3`` → 7)."""
    return max(int(d.split(":")[0][1:]) for d in q.evidence)


@dataclass
class Side:
    """One home of the comparison and what was measured on it."""

    name: str
    mos: Any
    cubes: dict[str, str] = field(default_factory=dict)
    #: memory id → LoCoMo dia_id, per conversation
    dia: dict[str, dict[str, str]] = field(default_factory=dict)
    add_s: float = 0.0
    added: int = 0
    ttft: list[float] = field(default_factory=list)
    served: int = 0
    #: of the memories the served chats retrieved, how many the prefix held / in all
    in_prefix: int = 0
    retrieved: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    recall_archive: list[float] = field(default_factory=list)

    def add_session(self, conv: Conversation, session: int) -> int:
        turns = [t for t in conv.turns if t.session == session]
        t0 = time.perf_counter()
        res = self.mos.add(
            messages=[
                {"role": "user", "name": t.speaker, "content": t.text, "id": t.dia_id,
                 **({"timestamp": t.timestamp} if t.timestamp else {})}
                for t in turns
            ],
            user_id=USER,
            cube_id=self.cubes[conv.id],
            session_id=f"session_{session}",
        )  # fmt: skip
        self.add_s += time.perf_counter() - t0
        self.added += len(turns)
        dia = self.dia.setdefault(conv.id, {})
        for m in res.memories:
            if m.provenance.message_id:
                dia[m.id] = m.provenance.message_id
        return len(res.memories) + len(res.derived)

    def chat(self, conv: Conversation, q: Question, max_tokens: int) -> None:
        if max_tokens == 0:  # no model: the retrieval a chat does, which counts as use
            chat_memories(self.mos.search, self.mos.settings.chat, q.text, user_id=USER,
                          cube_ids=[self.cubes[conv.id]], k=self.mos.settings.chat.memories)  # fmt: skip
            return
        res = self.mos.chat(
            q.text, user_id=USER, cube_ids=[self.cubes[conv.id]], max_tokens=max_tokens, write_back=False
        )
        self.ttft.append(res.timings.ttft_ms)
        self.prompt_tokens.append(res.prompt_tokens)
        if res.activation and res.activation.get("used"):
            self.served += 1
            held = len(res.activation.get("retrieved_in_prefix") or ())
            self.in_prefix += held
            self.retrieved += held + len(res.memories)

    def search(self, conv: Conversation, q: Question, *, include_archived: bool = False) -> float:
        """recall@10 of ``q`` over distinct source turns; the search timed (default states)."""
        self.mos.embedder.embed_query(q.text)  # the query vector first: the search finds it cached
        t0 = time.perf_counter()
        hits = self.mos.search(
            q.text, user_id=USER, cube_ids=[self.cubes[conv.id]], top_k=25, include_archived=include_archived
        )
        if not include_archived:
            self.search_ms.append((time.perf_counter() - t0) * 1000)
        return score(ranked_dia_ids(hits, self.dia[conv.id]), q.evidence, (10,))["recall"][10]

    def active(self) -> int:
        return sum(self.count(c, ["active"]) for c in self.cubes.values())

    def count(self, cube_id: str, states: Sequence[str]) -> int:
        return int(self.mos.list(user_id=USER, cube_id=cube_id, states=list(states), limit=1).total)


def run(
    path: str | Path,
    *,
    quick: bool = False,
    conversations: int | None = None,
    max_tokens: int = 8,
    chat: bool = True,
    policies: dict[str, dict[str, Any]] | None = None,
    consolidate: bool = True,
    home: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Replay, measure, return the metrics (the keys of ``memos bench lifecycle --json``).
    ``policies``: ``[policies.<name>]`` settings of the on home over the defaults;
    ``consolidate=False`` skips the parametric phase; ``chat=False`` replaces each chat by
    the retrieval it does (its searches count as use, as a chat's do) and leaves the model
    out: minutes instead of most of an hour, without ``kv_served_fraction`` and TTFT."""
    from memos.core import MemOS

    convs = load_locomo(path)
    convs = convs[: conversations or (1 if quick else len(convs))]
    train = QUICK_TRAIN if quick else {}
    own = home is None
    root = home or Path(tempfile.mkdtemp(prefix="memos-bench-lifecycle-"))
    clock = SimClock(datetime(2000, 1, 1, tzinfo=UTC))
    started = time.perf_counter()
    off = Side("off", MemOS(home=root / "off", clock=clock))
    on = Side("on", MemOS(home=root / "on", clock=clock, scheduler=SCHEDULER, policies=policies or {}))
    sides = (off, on)
    try:
        for side in sides:
            side.mos.add_user(USER)
            for conv in convs:
                side.cubes[conv.id] = side.mos.create_cube(USER, f"locomo-{conv.id}").id
            # each home's model loaded and run once: the first chat measured is not a cold start
            rt = side.mos.runtime()
            rt.complete(rt.tokenize("Hello"), GenerationParams(max_tokens=1)).read()
            side.mos.embedder.embed(["warm up"])
        for ci, conv in enumerate(convs):
            numbers = sorted({t.session for t in conv.turns})
            schedule: dict[int, list[Question]] = {}
            for q in conv.questions:
                schedule.setdefault(evidence_session(q), []).append(q)
            for i, s in enumerate(numbers):
                first = next(t for t in conv.turns if t.session == s)
                clock.set(session_time(first.timestamp, clock.now))
                # the idle gap since the last session: the on home's worker catches up
                on.mos.scheduler.run_worker(until_idle=True)
                order = sides if i % 2 == 0 else sides[::-1]
                for side in order:
                    side.add_session(conv, s)
                cube = on.cubes[conv.id]
                total = off.count(off.cubes[conv.id], ["active"])
                on.mos.policies.set(cube, "capacity.max_active", max(1, total // 2), user_id=USER)
                clock.advance(timedelta(minutes=30))
                todo = schedule.get(s, [])
                for j, q in enumerate(todo):
                    for side in order if j % 2 == 0 else order[::-1]:
                        side.chat(conv, q, max_tokens if chat else 0)
                log(
                    f"  {conv.id} session {s}: {len(todo)} chats "
                    f"(kv served {on.served}/{len(on.ttft)}, ttft off {_med(off.ttft):.0f} ms, "
                    f"on {_med(on.ttft):.0f} ms)"
                    if chat
                    else f"  {conv.id} session {s}: {len(todo)} questions retrieved (no chat)"
                )
            # the conversation is over: its last policies run an idle hour later
            clock.advance(timedelta(hours=1))
            on.mos.scheduler.run_worker(until_idle=True)
            log(f"  {conv.id}: {ci + 1}/{len(convs)} replayed in {time.perf_counter() - started:.0f} s")

        for conv in convs:
            for j, q in enumerate(conv.questions):
                for side in sides if j % 2 == 0 else sides[::-1]:
                    side.recall.append(side.search(conv, q))
                on.recall_archive.append(on.search(conv, q, include_archived=True))

        jobs_before = _jobs(on.mos)["done"]
        consolidated, evaluation = _consolidate(on, clock, train, log) if consolidate else (0, {})
        jobs = _jobs(on.mos)
        archived = sum(on.count(c, ["archived"]) for c in on.cubes.values())
        result = {
            "kv_served_fraction": round(on.served / len(on.ttft), 4) if on.ttft else None,
            "ttft_ms_median_off": round(_med(off.ttft), 1) if off.ttft else None,
            "ttft_ms_median_on": round(_med(on.ttft), 1) if on.ttft else None,
            "ttft_speedup": round(_med(off.ttft) / _med(on.ttft), 3) if on.ttft else None,
            # why: the share of retrieved memories a served chat found in its prefix (not
            # prefilled again), and the prompt tokens (prefix included on the on home)
            "retrieved_in_prefix_fraction": round(on.in_prefix / on.retrieved, 4) if on.retrieved else None,
            "prompt_tokens_median_off": _med(off.prompt_tokens) if off.prompt_tokens else None,
            "prompt_tokens_median_on": _med(on.prompt_tokens) if on.prompt_tokens else None,
            "active_memories_off": off.active(),
            "active_memories_on": on.active(),
            "archived_on": archived,
            "recall_at_10_off": _mean(off.recall),
            "recall_at_10_on": _mean(on.recall),
            "recall_at_10_on_with_archive": _mean(on.recall_archive),
            "consolidated_facts": consolidated,
            "consolidated_left_out": evaluation.get("left_out"),
            "parametric_recall": evaluation.get("recall_adapter"),
            "parametric_ppl_ratio": evaluation.get("ppl_ratio"),
            "parametric_recall_base": evaluation.get("recall_base"),
            "parametric_state": evaluation.get("state"),
            "add_rate_ratio": round((on.added / on.add_s) / (off.added / off.add_s), 4) if off.add_s else 0.0,
            "add_rate_off": round(off.added / off.add_s, 1) if off.add_s else 0.0,
            "add_rate_on": round(on.added / on.add_s, 1) if on.add_s else 0.0,
            "search_p95_ms_off": round(percentile(off.search_ms, 95), 2),
            "search_p95_ms_on": round(percentile(on.search_ms, 95), 2),
            "search_p95_ratio": round(percentile(on.search_ms, 95) / percentile(off.search_ms, 95), 4)
            if off.search_ms
            else 0.0,
            "jobs_run": jobs["done"] + jobs["failed"],
            "jobs_run_replay": jobs_before,
            "jobs_failed": jobs["failed"],
            "jobs_by_kind": jobs["kinds"],
            "conversations": len(convs),
            "chats": len(on.ttft),
            "questions": len(on.recall),
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        for side in sides:
            side.mos.close()
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _consolidate(
    on: Side, clock: SimClock, train: dict[str, Any], log: Callable[[str], None]
) -> tuple[int, dict[str, Any]]:
    """Turn the parametric policy on for the on home's cubes, let an idle day pass, run the
    worker: the facts it consolidated and the gate's evaluation of the best adapter."""
    for cube in on.cubes.values():
        values: dict[str, Any] = {"parametric.enabled": True}
        if train:
            values["parametric.train"] = train
        on.mos.policies.set_many(cube, values, user_id=USER)
    clock.advance(timedelta(days=1))
    t0 = time.perf_counter()
    on.mos.scheduler.run_worker(until_idle=True)
    log(f"  parametric consolidation by the policy: {time.perf_counter() - t0:.0f} s")
    adapters = [a for c in on.cubes.values() for a in on.mos.parametric.list(c, user_id=USER)]
    # the facts trained: an adapter's memories less those it left out (no question checks
    # them; they stay listed so that the policy does not offer them again)
    left = {m for a in adapters for m in a.left_out}
    facts = len({m for a in adapters for m in a.memory_ids} - left)
    scored = [a for a in adapters if a.evaluation is not None]
    if not scored:
        return facts, {"left_out": len(left)}
    recall = statistics.mean(a.evaluation.recall_adapter for a in scored if a.evaluation)
    return facts, {
        "recall_adapter": round(recall, 4),
        "recall_base": round(statistics.mean(a.evaluation.recall_base for a in scored if a.evaluation), 4),
        "ppl_ratio": round(max(a.evaluation.ppl_ratio for a in scored if a.evaluation), 4),
        "state": {a.id[:12]: a.state for a in adapters},
        "left_out": len(left),
    }


def _jobs(mos: Any) -> dict[str, Any]:
    status = mos.scheduler.status()
    return {"done": status.totals.get("done", 0), "failed": status.totals.get("failed", 0),
            "kinds": {k: {s: n for s, n in v.items() if n} for k, v in status.kinds.items()}}  # fmt: skip


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def targets(r: dict[str, Any]) -> list[tuple[str, Any, str, bool | None]]:
    """Each target of issue 21 against ``r``: key, value, target, met (None: not measured)."""

    def at_least(key: str, floor: float, text: str) -> tuple[str, Any, str, bool | None]:
        v = r.get(key)
        return key, v, text, None if v is None else v >= floor

    def at_most(key: str, ceiling: float, text: str) -> tuple[str, Any, str, bool | None]:
        v = r.get(key)
        return key, v, text, None if v is None else v <= ceiling

    off = r["recall_at_10_off"]
    return [
        at_least("kv_served_fraction", 0.8, "≥ 0.8"),
        at_least("ttft_speedup", 3.0, "≥ 3"),
        at_most("active_memories_on", 0.5 * r["active_memories_off"], "≤ 0.5 × active_memories_off"),
        at_least("recall_at_10_on", off - 0.05, "≥ recall_at_10_off − 0.05"),
        at_least("recall_at_10_on_with_archive", off - 0.01, "≥ recall_at_10_off − 0.01"),
        at_least("parametric_recall", 0.8, "≥ 0.8"),
        at_most("parametric_ppl_ratio", 1.05, "≤ 1.05"),
        at_least("add_rate_ratio", 0.9, "≥ 0.9"),
        at_most("search_p95_ratio", 1.1, "≤ 1.1"),
        at_most("jobs_failed", 0, "= 0"),
    ]
