"""Prompt assembly: which memories and turns a chat's prompt holds, within its budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from memos.activation import memories_block, memory_text
from memos.config import ChatSettings
from memos.errors import ContextOverflow
from memos.extract import Entity
from memos.extract.rules import RuleExtractor, asks_only
from memos.protocols import Runtime
from memos.runtime import ChatMessage
from memos.types import SearchHit


@dataclass
class Assembled:
    messages: list[ChatMessage]
    memories: list[SearchHit]
    history: list[ChatMessage]
    prompt_tokens: int
    budget: int


def assistant_turn(hit: SearchHit) -> bool:
    """An answer of the assistant's, stored as an episode of the chat."""
    m = hit.memory
    return m.type == "episode" and m.provenance.role == "assistant"


def tells_nothing(hit: SearchHit) -> bool:
    """A user's turn made only of questions that name nothing but their speaker.

    "And what does she do?" or "Where does my sister live?" asks; it holds nothing to
    remember, yet it matches a new question better than any fact does (it is worded like
    one). A question that names someone or something ("Should I take my dog Rex to the
    vet?") carries a fact and is not one of these, nor is a turn that also states
    something ("Is it serious? He keeps scratching.").
    """
    m = hit.memory
    if m.type != "episode" or m.provenance.role != "user":
        return False
    if not asks_only(m.text):
        return False
    speaker = m.provenance.speaker
    own = Entity(speaker, "person").key if speaker and speaker.strip() else None
    return all(e.key == own for e in RuleExtractor().extract(m.text, speaker=speaker).entities)


def chat_memories(
    search: Callable[..., list[SearchHit]],
    cfg: ChatSettings,
    message: str,
    *,
    user_id: str,
    cube_ids: Sequence[str],
    k: int,
    skip: Set[str] = frozenset(),
) -> list[SearchHit]:
    """The memories ``chat`` offers the model for ``message``: the best ``k`` hits that
    ``search`` (``MemOS.search``) finds in ``cube_ids``, less those in ``skip``, those
    under ``cfg.min_score``, the assistant's own turns (unless
    ``cfg.recall_assistant_turns``) and the user's questions that tell nothing
    (:func:`tells_nothing`), so that facts are not crowded out."""
    found = search(message, user_id=user_id, cube_ids=cube_ids, top_k=2 * k + len(skip))
    return [
        h
        for h in found
        if h.memory.id not in skip
        and h.score >= cfg.min_score
        and (cfg.recall_assistant_turns or not assistant_turn(h))
        and not tells_nothing(h)
    ][:k]


def memory_line(hit: SearchHit) -> str:
    return memory_text(hit.memory)


def system_text(prompt: str, hits: Sequence[SearchHit], fixed: Sequence[str] = ()) -> str:
    """The system message: the prompt, the compiled (prefix) memory lines, then the retrieved."""
    return memories_block(prompt, [*fixed, *(memory_line(h) for h in hits)])


def assemble(
    runtime: Runtime,
    *,
    system_prompt: str,
    message: str,
    hits: Sequence[SearchHit],
    history: Sequence[ChatMessage],
    max_tokens: int,
    fixed_lines: Sequence[str] = (),
    slack: int = 0,
) -> Assembled:
    """Fit system prompt, memories, history and the message into the context budget.

    The message and the system prompt must fit, or :class:`ContextOverflow`. Then, by
    priority: memories in rank order up to half of what is left, recent turns newest
    first, then the remaining memories — each kept only if the whole rendered prompt
    still fits (counted by the runtime's own tokenizer), so the budget always holds.
    """
    budget = runtime.context_length - max_tokens - slack
    user = ChatMessage("user", message)

    def count(mem: Sequence[SearchHit], hist: Sequence[ChatMessage]) -> int:
        msgs = [ChatMessage("system", system_text(system_prompt, mem, fixed_lines)), *hist, user]
        return runtime.count_tokens(runtime.render(msgs))

    base = count([], [])
    if base > budget:
        raise ContextOverflow(
            f"the message needs {base} tokens with the system prompt, but the context budget is "
            f"{budget} ({runtime.context_length} minus {max_tokens} for the answer); shorten it"
        )
    kept: list[SearchHit] = []
    pending = list(hits)
    half = base + (budget - base) // 2
    while pending and count([*kept, pending[0]], []) <= half:
        kept.append(pending.pop(0))
    hist: list[ChatMessage] = []
    for turn in reversed(history):
        if count(kept, [turn, *hist]) > budget:
            break
        hist.insert(0, turn)
    while pending and count([*kept, pending[0]], hist) <= budget:
        kept.append(pending.pop(0))
    # a template may start the history with a user turn only; drop a dangling assistant turn
    while hist and hist[0].role == "assistant":
        hist.pop(0)
    messages = [ChatMessage("system", system_text(system_prompt, kept, fixed_lines)), *hist, user]
    total = runtime.count_tokens(runtime.render(messages))
    assert total <= budget, (total, budget)
    return Assembled(messages, kept, hist, total, budget)
