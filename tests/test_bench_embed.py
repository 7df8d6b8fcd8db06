"""``memos bench embed``: the interleaving and medians, a real run on tiny sizes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memos.bench.embed import bench_texts, make_from_settings, rounds_order, run, summarise
from memos.cli import app
from memos.config import Settings
from memos.errors import InvalidInput


def test_rounds_alternate_and_medians_are_per_variant() -> None:
    variants = [("torch", 8), ("torch", 16), ("onnx-int8", 8)]
    assert rounds_order(variants, 0) == variants
    assert rounds_order(variants, 1) == variants[::-1]
    assert rounds_order(variants, 2) == variants
    out = summarise({("torch", 8): [100.0, 300.0, 200.0], ("onnx-int8", 8): [50.0, 70.0]})
    assert out[("torch", 8)] == {"median": 200.0, "rounds": [100.0, 300.0, 200.0]}
    assert out[("onnx-int8", 8)]["median"] == 60.0


def test_texts_are_speaker_prefixed_turns_and_deterministic() -> None:
    texts = bench_texts(20)
    assert texts == bench_texts(20) and texts != bench_texts(20, seed=7)
    assert len(texts) == 20 and all(": " in t for t in texts)


@pytest.mark.slow  # loads the ONNX model (exports it once per environment)
def test_a_tiny_run_reports_every_variant() -> None:
    out = run(
        make_from_settings(Settings()),
        backends=["onnx-int8"],
        batch_sizes=[2, 8],
        n_texts=24,
        call=8,
        rounds=2,
        n_queries=3,
        log=lambda _: None,
    )
    rates = out["texts_per_s"]["onnx-int8"]
    assert set(rates) == {"2", "8"}
    for row in rates.values():
        assert len(row["rounds"]) == 2 and all(r > 0 for r in row["rounds"]) and row["median"] > 0
    lat = out["query_latency"]["onnx-int8"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"]
    assert out["embedders"] == {"onnx-int8": "onnx-int8:all-MiniLM-L6-v2"}


def test_bad_arguments_are_refused_before_any_model_loads() -> None:
    def never(backend: str, size: int):  # type: ignore[no-untyped-def]
        raise AssertionError("no embedder may be built for bad input")

    with pytest.raises(InvalidInput, match="unknown embedder backend"):
        run(never, backends=["tensorflow"])
    with pytest.raises(InvalidInput, match="batch sizes"):
        run(never, batch_sizes=[0, 8])
    with pytest.raises(InvalidInput):
        run(never, call=0)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"MEMOS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    res = runner.invoke(app, ["bench", "embed", "--backends", "tensorflow"], env=env)
    assert res.exit_code != 0 and "unknown embedder backend" in res.stderr
    res = runner.invoke(app, ["bench", "embed", "--batch-sizes", "8,x"], env=env)
    assert res.exit_code != 0 and "--batch-sizes" in res.stderr


@pytest.mark.slow
def test_cli_writes_the_json_it_prints(tmp_path: Path) -> None:
    env = {"MEMOS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "embed.json"
    args = ["bench", "embed", "--backends", "onnx-int8", "--batch-sizes", "4", "--texts", "8", "--call", "4"]
    res = CliRunner().invoke(app, [*args, "--rounds", "1", "--queries", "2", "--json", str(out)], env=env)
    assert res.exit_code == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["texts_per_s"]["onnx-int8"]["4"]["median"] > 0
    assert data["_meta"]["command"] == "memos bench embed" and data["call"] == 4
