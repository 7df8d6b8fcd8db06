"""``memos bench lifecycle`` on a small self-made LoCoMo-format conversation.

The fixture is written for this test (an invented conversation over three sessions weeks
apart); the run is the real one — two homes, the bundled model chatting, the scheduler's
worker applying the default policies and the capacity cap — with the activation policy's
``min_hits`` lowered so that a prefix is compiled within three sessions, and without the
parametric phase (training takes minutes; ``tests/test_policies_artifacts.py`` covers the
policy's consolidation).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from memos.bench.lifecycle import SimClock, evidence_session, run, session_time, targets
from memos.bench.locomo import Question

SESSIONS = [
    (
        "10:00 am on 2 January, 2023",
        [
            ("Nora", "I adopted a grey kitten called Pepper last week."),
            ("Ivo", "Lovely! I started learning the cello in December."),
            ("Nora", "Pepper sleeps on my keyboard all day."),
            ("Ivo", "My cello teacher lives in Ghent."),
            ("Nora", "I work as a nurse at the city hospital."),
            ("Ivo", "Haha, nice."),
        ],
    ),
    (
        "6:30 pm on 20 January, 2023",
        [
            ("Nora", "Pepper learned to open the fridge door."),
            ("Ivo", "I played my first cello concert on Saturday."),
            ("Nora", "I moved to a flat near the river."),
            ("Ivo", "Ok, see you."),
            ("Nora", "My sister Lena visits us in March."),
            ("Ivo", "I bought a second-hand bow for the cello."),
        ],
    ),
    (
        "8:00 am on 14 February, 2023",
        [
            ("Nora", "Lena booked her train to come in March."),
            ("Ivo", "My teacher in Ghent wants me to join an orchestra."),
            ("Nora", "Pepper is scared of the vacuum cleaner."),
            ("Ivo", "Sounds good."),
            ("Nora", "The hospital gave me a night shift next month."),
            ("Ivo", "Our orchestra rehearses on Thursdays."),
        ],
    ),
]
QUESTIONS = [
    ("What is the name of Nora's kitten?", ["D1:1"]),
    ("Where does Ivo's cello teacher live?", ["D1:4"]),
    ("What does Nora do for work?", ["D1:5"]),
    ("What can Pepper open?", ["D2:1"]),
    ("Who visits Nora in March?", ["D2:5", "D3:1"]),
    ("When does Ivo's orchestra rehearse?", ["D3:6"]),
]


def _fixture(path: Path) -> Path:
    conv: dict[str, Any] = {"speaker_a": "Nora", "speaker_b": "Ivo"}
    for n, (when, turns) in enumerate(SESSIONS, start=1):
        conv[f"session_{n}_date_time"] = when
        conv[f"session_{n}"] = [
            {"dia_id": f"D{n}:{i}", "speaker": who, "text": text} for i, (who, text) in enumerate(turns, 1)
        ]
    qa = [{"question": q, "evidence": ev, "category": 1, "answer": "-"} for q, ev in QUESTIONS]
    path.write_text(json.dumps([{"sample_id": "conv-t", "conversation": conv, "qa": qa}]), encoding="utf-8")
    return path


def test_session_times_and_the_clock_only_move_forward() -> None:
    start = datetime(2023, 1, 1, tzinfo=UTC)
    assert session_time("1:56 pm on 8 May, 2023", start) == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    # missing, unreadable or earlier than the last session: a day after it
    assert session_time(None, start) == start + timedelta(days=1)
    assert session_time("yesterday-ish", start) == start + timedelta(days=1)
    assert session_time("9:00 am on 1 May, 2020", start) == start + timedelta(days=1)
    clock = SimClock(start)
    clock.set(start - timedelta(days=3))
    assert clock() == start
    clock.advance(timedelta(hours=2))
    assert clock() == start + timedelta(hours=2)
    assert evidence_session(Question("q", ("D2:4", "D11:1", "D3:9"), 1)) == 11


def test_lifecycle_bench_replays_with_the_scheduler_off_and_on(tmp_path: Path) -> None:
    data = _fixture(tmp_path / "conv.json")
    notes: list[str] = []
    r = run(
        data,
        max_tokens=2,
        policies={"activation": {"min_hits": 1}},
        consolidate=False,
        home=tmp_path / "homes",
        log=notes.append,
    )
    issue_keys = [
        "kv_served_fraction", "ttft_ms_median_off", "ttft_ms_median_on", "ttft_speedup",
        "active_memories_off", "active_memories_on", "archived_on", "recall_at_10_off",
        "recall_at_10_on", "recall_at_10_on_with_archive", "consolidated_facts", "parametric_recall",
        "parametric_ppl_ratio", "add_rate_ratio", "search_p95_ratio", "jobs_run", "jobs_failed",
    ]  # fmt: skip
    assert not set(issue_keys) - set(r)
    # every question was chatted on both homes, after the session of its last evidence
    assert r["chats"] == len(QUESTIONS) and r["questions"] == len(QUESTIONS)
    assert r["ttft_ms_median_off"] > 0 and r["ttft_ms_median_on"] > 0
    # the on home's prompts hold the prefix too; some retrieved memories were in it
    assert r["prompt_tokens_median_on"] >= r["prompt_tokens_median_off"] > 0
    assert 0 <= r["retrieved_in_prefix_fraction"] <= 1
    # the scheduler compiled a prefix (nobody else did) and later chats started from it
    assert 0 < r["kv_served_fraction"] <= 1
    assert r["jobs_by_kind"]["policy.apply"]["done"] >= len(SESSIONS) and r["jobs_failed"] == 0
    # the capacity cap: at most half of what the off home holds is active, the rest archived
    assert r["active_memories_off"] >= 18
    assert r["active_memories_on"] <= r["active_memories_off"] // 2 and r["archived_on"] > 0
    # archived memories leave default search and come back with include_archived
    assert 0 <= r["recall_at_10_on"] <= r["recall_at_10_on_with_archive"] <= 1
    assert r["recall_at_10_off"] > 0.5
    assert r["consolidated_facts"] == 0 and r["parametric_recall"] is None  # the phase was skipped
    assert r["add_rate_ratio"] > 0 and r["search_p95_ratio"] > 0
    rows = {key: met for key, _, _, met in targets(r)}
    assert rows["jobs_failed"] is True and rows["active_memories_on"] is True
    assert rows["parametric_recall"] is None  # not measured: no verdict
    assert any("session 3" in n for n in notes)
    assert (tmp_path / "homes" / "on").is_dir()  # a given home is kept for inspection


def test_without_chats_the_policies_see_the_retrieval_and_no_model_runs(tmp_path: Path) -> None:
    """``--no-chat``: each question's chat retrieval still counts as use (the prefix gets
    compiled from it), nothing is generated, and the TTFT figures are null, not zero —
    their targets have no verdict."""
    from memos.bench.lifecycle import run, targets

    data = _fixture(tmp_path / "locomo.json")
    r = run(
        data, chat=False, policies={"activation": {"min_hits": 1}}, consolidate=False,
        home=tmp_path / "homes", log=lambda _: None,
    )  # fmt: skip
    assert r["chats"] == 0 and r["questions"] == len(QUESTIONS)
    assert (
        r["kv_served_fraction"] is None and r["ttft_speedup"] is None and r["prompt_tokens_median_on"] is None
    )
    assert r["recall_at_10_off"] > 0.5 and r["active_memories_on"] <= r["active_memories_off"] // 2
    rows = {key: met for key, _, _, met in targets(r)}
    assert rows["ttft_speedup"] is None and rows["kv_served_fraction"] is None and rows["jobs_failed"] is True
    from memos.core import MemOS

    with MemOS(home=tmp_path / "homes" / "on") as mos:  # the retrieval made memories hot
        (cube,) = mos.list_cubes("bench")
        assert mos.activation.list(cube.id, user_id="bench")
