"""Batched greedy generation on a transformers model: many short prompts at once, for
evaluations that ask hundreds of questions (the runtime's ``generate_ids``, on its own
model or on a LoRA being trained over the same checkpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def greedy_batches(model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop: set[int],
                   device: Any, batch_size: int = 32) -> list[list[int]]:  # fmt: skip
    """Greedy continuations (token ids) of token-id prompts, batched, cut at a ``stop`` token.

    The prompts' longest common prefix (a chat's system turn) is computed once per batch
    and shared; each prompt's own tokens follow it, padded in the middle, with explicit
    positions so every row sees exactly the positions it would see alone."""
    import torch

    model.eval()
    out: list[list[int]] = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            group = [list(g) for g in prompts[i : i + batch_size]]
            n = _common_prefix(group)
            head, rows = group[0][:n], [g[n:] for g in group]
            out.extend(_greedy(model, head, rows, max_new_tokens, stop, device))
    return out


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    n = min(len(r) for r in rows) - 1  # every row keeps at least one token of its own
    for k in range(max(0, n)):
        if any(r[k] != rows[0][k] for r in rows):
            return k
    return max(0, n)


def _greedy(
    model: Any, head: list[int], rows: list[list[int]], max_new: int, stop: set[int], device: str
) -> list[list[int]]:
    import torch

    b = len(rows)
    cache = None
    if head:
        cache = model(input_ids=torch.tensor([head], device=device), use_cache=True).past_key_values
        for layer in cache.layers:
            layer.keys = layer.keys.expand(b, -1, -1, -1).contiguous()
            layer.values = layer.values.expand(b, -1, -1, -1).contiguous()
    width = max(len(r) for r in rows)
    ids = torch.zeros((b, width), dtype=torch.long)
    own = torch.zeros((b, width), dtype=torch.long)
    for r, row in enumerate(rows):  # left-padded within the rows' own part
        ids[r, width - len(row) :] = torch.tensor(row)
        own[r, width - len(row) :] = 1
    mask = torch.cat([torch.ones((b, len(head)), dtype=torch.long), own], dim=1).to(device)
    pos = (len(head) + own.cumsum(1) - 1).clamp(min=len(head)).to(device)
    out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1)  # fmt: skip
    nxt = pos[:, -1:]
    done = torch.zeros(b, dtype=torch.bool)
    answers: list[list[int]] = [[] for _ in range(b)]
    for _ in range(max_new):
        tok = out.logits[:, -1].argmax(-1).cpu()
        for r in range(b):
            if not done[r]:
                if int(tok[r]) in stop:
                    done[r] = True
                else:
                    answers[r].append(int(tok[r]))
        if bool(done.all()):
            break
        nxt = nxt + 1
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long, device=device)], dim=1)
        out = model(input_ids=tok.view(b, 1).to(device), attention_mask=mask, position_ids=nxt,
                    past_key_values=out.past_key_values, use_cache=True)  # fmt: skip
    return answers
