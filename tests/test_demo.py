"""`make demo` runs memos.demo.run_demo: the whole tour must run and show what it claims."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

pytestmark = pytest.mark.slow


def test_demo_tour(tmp_path: Path) -> None:
    from memos.demo import run_demo

    out = io.StringIO()
    result = run_demo(tmp_path / "demo", console=Console(file=out, width=200))
    text = out.getvalue()
    # the chat uses the turn told in an earlier chat session
    assert "incl. the turn from session chat-" in text
    # activation memory: the same prompt asked with and without the compiled prefix
    assert "compiled" in text and "with activation memory" in text and "prefix not used" not in text
    timings = result["timings"]
    assert timings["chat TTFT activation memory (ms)"] > 0 and timings["chat TTFT plain prefill (ms)"] > 0
    # parametric memory: a handful of facts consolidated, then asked with retrieval off
    assert "facts consolidated into a LoRA adapter" in text and "held-out recall" in text
    assert "with the adapter" in text and timings["consolidate (s)"] > 0
    assert "imported cube 'personal'" in text
    assert result["stats"]["memories"] > 50
