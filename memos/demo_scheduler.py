"""The tour's scheduler step (:mod:`memos.demo`): a policy plan, the background worker
carrying it out — a KV prefix compiled that the next chat starts from, an episode
archived over a capacity cap — and the archived episode restored.

The tour runs on the real clock in a cube a minute old, so it lowers, for this cube only,
what the activation policy waits for (3 search hits and an hour unchanged by default) and
caps the cube's episodes one below what it holds; it says so, and unsets both at the end.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from memos.core import MemOS
from memos.policies.base import ArtifactAction, CompileActivation
from memos.runtime import GenerationParams
from memos.scheduler.jobs import CANCELLED, DONE, FAILED, Job
from memos.scheduler.policies import PolicyReport
from memos.types import MemoryType

#: how long the tour waits for the scheduler's job (a compile takes seconds on a laptop CPU)
JOB_TIMEOUT_S = 600.0
USER = "alice"


def plan_table(report: PolicyReport, texts: dict[str, str]) -> Table:
    """Each policy's actions (and what it skipped or failed at) with its reason."""
    table = Table(title=f"memos policy plan at {report.now:%H:%M:%S}", title_justify="left", expand=True)
    table.add_column("policy", width=10)
    table.add_column("action", width=18)
    table.add_column("on", ratio=2)
    table.add_column("why", ratio=3)
    for cube in report.cubes:
        for o in cube.outcomes:
            if o.error is not None:
                table.add_row(o.policy, "[red]failed[/]", "", o.error)
            rows = [(a, "") for a in o.actions] + [(a, f" [dim](skipped: {why})[/]") for a, why in o.skipped]
            for a, note in rows:
                if isinstance(a, CompileActivation):
                    on = f"{len(a.memory_ids)} memories → KV prefix {a.name!r}"
                elif isinstance(a, ArtifactAction):
                    on = f"{len(a.memory_ids)} memories"
                else:
                    on = f"{a.memory_id[:8]} {texts.get(a.memory_id, '')[:60]}"
                table.add_row(o.policy, a.verb, on, a.reason + note)
    return table


def wait_for(mos: MemOS, job: Job, timeout: float = JOB_TIMEOUT_S) -> Job:
    """Poll the job until it ends (done, failed or cancelled) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while job.state not in (DONE, FAILED, CANCELLED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler's job {job.id} is still {job.state} after {timeout:.0f} s")
        time.sleep(0.1)
        job = mos.scheduler.get(job.id, user_id=USER)
    return job


def scheduler_step(mos: MemOS, cube_id: str, console: Console, timings: dict[str, float]) -> dict[str, Any]:
    """Plan, apply in the background worker, chat from the prefix it compiled, archive, restore."""
    console.rule("scheduler and policies: a plan, the background worker applies it, an archive and a restore")
    episodes = mos.list(user_id=USER, cube_id=cube_id, filters={"type": "episode"}, limit=1).total
    keep = [str(t) for t in MemoryType if t != MemoryType.episode]
    overrides: dict[str, Any] = {
        "activation.min_hits": 1,
        "activation.stable_for": "1s",
        "capacity.max_active": episodes - 1,
        "capacity.keep_types": keep,
    }
    mos.policies.set_many(cube_id, overrides, user_id=USER)
    console.print(
        f"  [dim]for the demo (a new cube, the real clock): activation.min_hits=1, activation.stable_for=1s "
        f"(defaults 3 and 1h); capacity.max_active={episodes - 1} episodes (default: no cap), other types kept[/]"
    )
    report = mos.policies.plan(cube_ids=[cube_id], user_id=USER)
    planned = [a for c in report.cubes for o in c.outcomes for a in o.actions]
    texts = {a.memory_id: mos.get(a.memory_id, user_id=USER).text for a in planned if a.memory_id}
    console.print(plan_table(report, texts))

    t0 = time.perf_counter()
    background = mos.scheduler.status(user_id=USER).background
    before = [i.id for i in mos.activation.list(cube_id, user_id=USER)]
    (job,) = mos.policies.enqueue(cube_ids=[cube_id], user_id=USER)
    job = wait_for(mos, job)
    timings["scheduler job (s)"] = time.perf_counter() - t0
    counts = (job.result or {}).get("counts") or {}
    done = ", ".join(f"{verb} {n}" for verb, n in counts.items()) if job.state == DONE else job.error
    took = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else 0.0
    console.print(
        f"  job {job.id} {job.kind} on cube {str(job.cube_id)[:8]}, run by the "
        f"{'background worker of this process' if background else 'scheduler'}: [bold]{job.state}[/] "
        f"in {took:.1f} s (attempt {job.attempts}) — {done}"
    )
    compiled = next((a for a in planned if isinstance(a, CompileActivation)), None)
    prefix = next(
        (
            i
            for i in mos.activation.list(cube_id, user_id=USER)
            if compiled is not None and i.name == compiled.name and i.state == "ready"
        ),
        None,
    )
    out: dict[str, Any] = {
        "planned": [a.verb for a in planned],
        "job_id": job.id,
        "job_state": job.state,
        "prefixes_before_job": before,
    }
    if prefix is not None:
        console.print(
            f"  the worker compiled {len(prefix.memories)} hot memories into KV prefix {prefix.name!r} "
            f"({prefix.n_tokens} tokens for {prefix.fingerprint['runtime']}:{prefix.fingerprint['model_id']}, "
            f"{prefix.compile_ms / 1000:.1f} s, {prefix.bytes / 1e6:.1f} MB), id {prefix.id[:12]}"
        )
        out["prefix_id"] = prefix.id
        out.update(ttft_step(mos, cube_id, console, timings, prefix.n_tokens))

    archived = [a.memory_id for a in planned if a.verb == "archive"]
    if archived:
        out.update(archive_step(mos, cube_id, archived[0], console))
    mos.policies.unset(cube_id, *overrides, user_id=USER)
    console.print(f"  unset the demo's overrides: {', '.join(overrides)}")
    out["overrides_left"] = mos.policies.overrides(cube_id, user_id=USER)
    return out


def ttft_step(
    mos: MemOS, cube_id: str, console: Console, timings: dict[str, float], n_prefix: int
) -> dict[str, Any]:
    """The next chat starts from the scheduler's prefix; the same prompt prefilled plain beside it."""
    question = "What is the name of my dog?"
    res = mos.chat(question, user_id=USER, cube_ids=[cube_id], max_tokens=32, write_back=False, memories=0,
                   explain=True)  # fmt: skip
    report = res.activation or {}
    used = bool(report.get("used"))
    rt = mos.runtime()
    if hasattr(rt, "reset"):
        rt.reset()  # llama.cpp: no cached tokens, a real prefill
    plain = rt.complete(res.prompt or "", GenerationParams(max_tokens=32, stop=rt.default_stops()))
    plain.read()
    console.print(
        f"  the next chat (retrieval off) alice: {question} — the same {res.prompt_tokens}-token prompt "
        f"({n_prefix} of them compiled), asked twice:"
    )
    console.print(
        f"  [bold]plain prefill[/]: first token {plain.stats.ttft_ms:.0f} ms — {plain.text.strip()}"
    )
    console.print(
        f"  [bold]with activation memory[/] (prefix {str(report.get('id', ''))[:12]}, used: {used}): first token "
        f"{res.timings.ttft_ms:.0f} ms{'' if used else ' (prefix not used: ' + str(report.get('reason')) + ')'}"
        f" — {res.answer}"
    )
    timings["chat TTFT plain prefill (ms)"] = plain.stats.ttft_ms
    timings["chat TTFT activation memory (ms)"] = res.timings.ttft_ms
    return {"chat_prefix_id": report.get("id"), "chat_prefix_used": used}


def archive_step(mos: MemOS, cube_id: str, memory_id: str, console: Console) -> dict[str, Any]:
    """The episode the capacity policy archived: out of default search, found with the
    archive, then restored."""
    m = mos.get(memory_id, user_id=USER)
    by = mos.history(memory_id, user_id=USER).events[-1]
    console.print(
        f"  archived {m.id[:8]} by {by.actor} ({by.reason}): {m.text[:90]!r} → state [bold]{m.state}[/]"
    )
    query = m.text[:200]
    default = [h.memory.id for h in mos.search(query, user_id=USER, cube_ids=[cube_id], top_k=5)]
    wider = [
        h.memory.id
        for h in mos.search(query, user_id=USER, cube_ids=[cube_id], top_k=5, include_archived=True)
    ]
    console.print(
        f"  search for its text: in default search = {m.id in default}, "
        f"with include_archived=True = {m.id in wider}"
        + (f" (hit #{wider.index(m.id) + 1})" if m.id in wider else "")
    )
    back = mos.restore(m.id, user_id=USER, reason="demo: bring it back")
    console.print(f"  mos.restore({m.id[:8]}) → state [bold]{back.state}[/]")
    return {
        "archived_id": m.id,
        "archived_state": str(m.state),
        "archived_in_default_search": m.id in default,
        "archived_in_archive_search": m.id in wider,
        "restored_state": str(back.state),
    }
