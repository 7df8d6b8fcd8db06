"""The gate an adapter passes before chat applies it, and the evaluation it reads.

An adapter is kept ``active`` only if, on held-out questions training never saw, its
exact-match recall beats the base model's, and its perplexity on a fixed general text
(``general_text.txt``, shipped with the package) is at most ``1 + max_ppl_increase``
times the base model's. Recall reads the greedy answer, long enough to hold the longest
trained answer (several objects of one predicate share one answer, each checked in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos.parametric.data import Example
from memos.parametric.lora import Evaluation
from memos.parametric.train import TrainConfig

GENERAL_TEXT = Path(__file__).with_name("general_text.txt")


def gate(
    recall_base: float, recall_adapter: float, n_heldout: int, ppl_ratio: float, max_ppl_increase: float
) -> list[str]:
    """Why an adapter fails the gate (empty: it passes)."""
    reasons = []
    if n_heldout == 0:
        reasons.append("no held-out questions: none of the memories reads as a fact the gate can check")
    elif recall_adapter <= recall_base:
        reasons.append(f"held-out recall did not improve ({recall_adapter:.2f} vs base {recall_base:.2f})")
    if not ppl_ratio <= 1 + max_ppl_increase:
        reasons.append(
            f"general-text perplexity rose {100 * (ppl_ratio - 1):.1f}% (limit {100 * max_ppl_increase:.0f}%)"
        )
    return reasons


def evaluate(rt: Any, model: Any, state: dict[str, Any], examples: Sequence[Example], system_prompt: str,
             cfg: TrainConfig, max_ppl_increase: float) -> Evaluation:  # fmt: skip
    """Recall and perplexity with the trained ``state`` on ``model`` and without it, gated."""
    from peft import set_peft_model_state_dict

    from memos.parametric.train import answer_budget, contains, generate, perplexity

    device = next(model.parameters()).device.type
    set_peft_model_state_dict(model, state)
    heldout = [e for e in examples if e.split == "heldout" and e.obj]
    seen: dict[str, Example] = {}
    for e in examples:
        if e.split == "train" and e.form == "question" and e.obj:
            seen.setdefault(e.memory_id, e)
    text = GENERAL_TEXT.read_text(encoding="utf-8")

    def recall(items: Sequence[Example]) -> float:
        if not items:
            return 0.0
        budget = answer_budget(rt, items, cfg.max_new_tokens)
        answers = generate(model, rt, [e.prompt for e in items], system_prompt, budget, device)
        return sum(contains(a, e.obj) for a, e in zip(answers, items, strict=True)) / len(items)

    r_adapter, r_seen = recall(heldout), recall(list(seen.values()))
    p_adapter = perplexity(model, rt, text, device)
    with model.disable_adapter():
        r_base = recall(heldout)
        p_base = perplexity(model, rt, text, device)
    ratio = p_adapter / p_base
    reasons = gate(r_base, r_adapter, len(heldout), ratio, max_ppl_increase)
    return Evaluation(
        recall_base=round(r_base, 4), recall_adapter=round(r_adapter, 4), recall_seen_adapter=round(r_seen, 4), ppl_base=round(p_base, 4), ppl_adapter=round(p_adapter, 4),
        ppl_ratio=round(ratio, 4), n_heldout=len(heldout), passed=not reasons, reasons=reasons,
    )  # fmt: skip
