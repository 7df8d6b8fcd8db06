"""`make demo` runs memos.demo.run_demo: the whole tour must run and show what it claims."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from rich.console import Console

pytestmark = pytest.mark.slow


def test_demo_tour(tmp_path: Path) -> None:
    from memos.demo import run_demo

    workers = {t for t in threading.enumerate() if t.name.startswith("memos-worker-")}
    out = io.StringIO()
    result = run_demo(tmp_path / "demo", console=Console(file=out, width=200))
    text = out.getvalue()
    # the chat uses the turn told in an earlier chat session
    assert "incl. the turn from session chat-" in text
    # the scheduler: a plan with the activation policy's compile, the background worker's
    # policy.apply job done, and the next chat starting from the prefix that job compiled
    assert "scheduler and policies" in text and "for the demo" in text
    assert "compile_activation" in text and "no 'auto' prefix for transformers yet" in text
    sched = result["scheduler"]
    assert "compile_activation" in sched["planned"] and "archive" in sched["planned"]
    assert sched["job_state"] == "done" and "background worker of this process" in text
    assert sched["prefix_id"] and sched["prefix_id"] not in sched["prefixes_before_job"]
    assert sched["chat_prefix_id"] == sched["prefix_id"] and sched["chat_prefix_used"]
    assert "with activation memory" in text and "prefix not used" not in text
    # the capacity policy archived an episode: out of default search, found with the archive, restored
    assert sched["archived_state"] == "archived" and "policy:capacity" in text
    assert not sched["archived_in_default_search"] and sched["archived_in_archive_search"]
    assert sched["restored_state"] == "active" and sched["overrides_left"] == {}
    # closing the tour's MemOS stopped its background worker
    assert {t for t in threading.enumerate() if t.name.startswith("memos-worker-")} <= workers
    timings = result["timings"]
    assert timings["chat TTFT activation memory (ms)"] > 0 and timings["chat TTFT plain prefill (ms)"] > 0
    # parametric memory: a handful of facts consolidated, then asked with retrieval off
    assert "facts consolidated into a LoRA adapter" in text and "held-out recall" in text
    assert "with the adapter" in text and timings["consolidate (s)"] > 0
    assert "imported cube 'personal'" in text
    assert result["stats"]["memories"] > 50
