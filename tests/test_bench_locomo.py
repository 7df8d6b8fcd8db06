"""``memos bench locomo``: the metric code on a small self-made LoCoMo-format fixture.

The fixture below is written for these tests (two short invented conversations); it
imitates the format's quirks — malformed evidence ids, image captions, sessions whose
numbers sort wrongly as text, a category-5 question — and not any real data.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from memos.bench.locomo import aggregate, load_locomo, parse_evidence, ranked_dia_ids, run, score
from memos.errors import InvalidInput
from memos.types import Provenance


def _turn(dia: str, speaker: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"dia_id": dia, "speaker": speaker, "text": text, **extra}


FIXTURE: list[dict[str, Any]] = [
    {
        "sample_id": "conv-a",
        "conversation": {
            "speaker_a": "Nora",
            "speaker_b": "Ivo",
            "session_1_date_time": "9:15 am on 3 March, 2023",
            "session_1": [
                _turn("D1:1", "Nora", "Morning Ivo! I adopted a grey kitten called Pepper yesterday."),
                _turn("D1:2", "Ivo", "Congratulations! How is Pepper settling in?"),
                _turn(
                    "D1:3",
                    "Nora",
                    "She sleeps on my keyboard all day.",
                    blip_caption="a photo of a kitten on a laptop",
                ),
            ],
            "session_2_date_time": "6:40 pm on 20 March, 2023",
            "session_2": [
                _turn("D2:1", "Ivo", "I finally finished building my wooden canoe."),
                _turn("D2:2", "Nora", "Amazing! Will you take it to the lake?"),
                _turn("D2:3", "Ivo", "Yes, we paddle across Lake Bled next weekend."),
            ],
            "session_10_date_time": "8:00 pm on 2 May, 2023",
            "session_10": [
                _turn("D10:1", "Nora", "Pepper learned to open the fridge door."),
                _turn("D10:2", "Ivo", "Ha! The canoe trip was wonderful, by the way."),
            ],
        },
        "qa": [
            {
                "question": "What is the name of Nora's kitten?",
                "answer": "Pepper",
                "evidence": ["D1:1"],
                "category": 4,
            },
            {
                "question": "What did Ivo build and where did he take it?",
                "answer": "a canoe, to Lake Bled",
                "evidence": ["D2:1; D2:3"],  # two ids in one string
                "category": 1,
            },
            {
                "question": "When did Nora adopt her kitten?",
                "answer": "2 March 2023",
                "evidence": ["D:1:1"],
                "category": 2,
            },
            {
                "question": "What can Pepper open?",
                "answer": "the fridge",
                "evidence": ["D10:01"],
                "category": 4,
            },
            {"question": "Would Nora like a dog?", "answer": "unknown", "evidence": ["D1:1"], "category": 5},
            {"question": "What colour is the canoe?", "answer": "n/a", "evidence": ["D7:3"], "category": 3},
        ],
    },
    {
        "sample_id": "conv-b",
        "conversation": {
            "speaker_a": "Ada",
            "speaker_b": "Ben",
            "session_1_date_time": "1:00 pm on 5 June, 2023",
            "session_1": [
                _turn("D1:1", "Ada", "I started learning the cello last month."),
                _turn("D1:2", "Ben", "Lovely. I am training for a marathon in Berlin."),
            ],
        },
        "qa": [
            {
                "question": "Which instrument does Ada play?",
                "answer": "cello",
                "evidence": ["D1:1"],
                "category": 4,
            },
        ],
    },
]


@pytest.fixture
def fixture_path(tmp_path: Path) -> Path:
    path = tmp_path / "locomo_tiny.json"
    path.write_text(json.dumps(FIXTURE), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- parsing


def test_parse_evidence_normalises_malformed_ids() -> None:
    known = {"D1:1", "D1:3", "D2:1", "D2:3", "D10:1", "D30:5"}
    assert parse_evidence(["D2:1; D2:3"], known) == ("D2:1", "D2:3")
    assert parse_evidence(["D:1:3"], known) == ("D1:3",)
    assert parse_evidence(["D30:05", "D10:01"], known) == ("D30:5", "D10:1")
    # unknown turns are dropped, repeats kept once, order preserved
    assert parse_evidence(["D9:9", "D1:1", "D1:1", "D1:3"], known) == ("D1:1", "D1:3")
    assert parse_evidence(["nonsense", 17, None], known) == ()


def test_load_locomo_reads_turns_sessions_and_questions(fixture_path: Path) -> None:
    conv_a, conv_b = load_locomo(fixture_path)
    assert conv_a.id == "conv-a" and conv_b.id == "conv-b"
    # session 10 comes after session 2 (numeric, not text order)
    assert [t.dia_id for t in conv_a.turns] == [
        "D1:1",
        "D1:2",
        "D1:3",
        "D2:1",
        "D2:2",
        "D2:3",
        "D10:1",
        "D10:2",
    ]
    assert (
        conv_a.turns[2].text
        == "She sleeps on my keyboard all day. [shares an image: a photo of a kitten on a laptop]"
    )
    assert conv_a.turns[3].timestamp == "6:40 pm on 20 March, 2023" and conv_a.turns[3].session == 2
    # category 5 is left out, and so is a question whose evidence names no real turn
    assert [(q.category, q.evidence) for q in conv_a.questions] == [
        (4, ("D1:1",)),
        (1, ("D2:1", "D2:3")),
        (2, ("D1:1",)),
        (4, ("D10:1",)),
    ]


def test_load_locomo_rejects_what_is_not_locomo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"conversation": {}}', encoding="utf-8")
    with pytest.raises(InvalidInput, match="expected a list"):
        load_locomo(bad)
    bad.write_text('[{"qa": []}]', encoding="utf-8")
    with pytest.raises(InvalidInput, match="no 'conversation'"):
        load_locomo(bad)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_locomo(tmp_path / "missing.json")


# ---------------------------------------------------------------------------- metrics


def test_score_is_recall_and_hit_at_k() -> None:
    ranked = ["D1:2", "D1:1", "D3:4", "D2:1", "D2:2", "D5:5"]
    out = score(ranked, ["D1:1", "D2:2", "D9:9"], ks=(1, 2, 5, 25))
    assert out["recall"] == pytest.approx({1: 0.0, 2: 1 / 3, 5: 2 / 3, 25: 2 / 3})
    assert out["hit"] == {1: 0.0, 2: 1.0, 5: 1.0, 25: 1.0}
    assert score([], ["D1:1"], ks=(1,)) == {"recall": {1: 0.0}, "hit": {1: 0.0}}


def test_aggregate_averages_overall_and_per_category() -> None:
    rows = [
        (1, score(["a", "b"], ["a", "c"], ks=(1, 5))),  # R@1 .5, R@5 .5
        (1, score(["c", "a"], ["a"], ks=(1, 5))),  # R@1 0, R@5 1
        (4, score(["x"], ["x"], ks=(1, 5))),  # R@1 1, R@5 1
    ]
    out = aggregate(rows, ks=(1, 5))
    assert out["n_questions"] == 3
    assert out["recall_at"] == {"1": 0.5, "5": round(2.5 / 3, 4)}
    assert out["hit_at"] == {"1": round(2 / 3, 4), "5": 1.0}
    assert out["per_category"]["1"] == {
        "n": 2,
        "recall_at": {"1": 0.25, "5": 0.75},
        "hit_at": {"1": 0.5, "5": 1.0},
    }
    assert out["per_category"]["4"]["recall_at"] == {"1": 1.0, "5": 1.0}


def _hit(message_id: str | None = None, sources: tuple[str, ...] = ()) -> Any:
    return SimpleNamespace(
        memory=SimpleNamespace(provenance=Provenance(message_id=message_id, source_ids=list(sources)))
    )


def test_ranked_dia_ids_maps_facts_to_their_source_turns() -> None:
    episode_dia = {"ep-1": "D1:1", "ep-2": "D1:2", "ep-3": "D2:1"}
    hits = [
        _hit(sources=("ep-2", "ep-3")),  # a fact from two turns
        _hit("D1:1"),  # an episode
        _hit(sources=("ep-1",)),  # a fact from a turn already listed
        _hit(sources=("elsewhere",)),  # a memory derived from something that is not a turn
        _hit("D2:1"),
    ]
    assert ranked_dia_ids(hits, episode_dia) == ["D1:2", "D2:1", "D1:1"]


# ---------------------------------------------------------------------------- end to end


def test_run_ingests_through_the_sdk_and_reports_every_metric(
    fixture_path: Path, tmp_path: Path, embedder: Any
) -> None:
    lines: list[str] = []
    result = run(fixture_path, embedder=embedder, home=tmp_path / "bench-home", log=lines.append)
    assert result["n_questions"] == 5
    for key in ("recall_at", "hit_at"):
        assert set(result[key]) == {"1", "5", "10", "25"}
        values = [result[key][k] for k in ("1", "5", "10", "25")]
        assert all(0 <= v <= 1 for v in values) and values == sorted(values)
    assert set(result["per_category"]) == {"1", "2", "4"}
    assert result["per_category"]["4"]["n"] == 3
    # ten turns in all, so the top 25 holds every turn: full recall
    assert result["recall_at"]["25"] == 1.0
    # the questions are easy: the right turn is near the top
    assert result["hit_at"]["5"] == 1.0
    assert result["ingest_s"] > 0 and 0 < result["search_p50_ms"] <= result["search_p95_ms"]
    assert 0 < result["search_p50_ms_excl_embedding"] <= result["search_p50_ms"]
    assert len(lines) == 2 and lines[0].startswith("  conv-a: 8 turns, 4 questions")
    # the bench never writes outside the home it was given
    assert (tmp_path / "bench-home").is_dir()
