"""LoRA training and evaluation with peft on a transformers checkpoint (CPU or CUDA).

The training prompt is the chat prompt itself: the runtime's own template renders the
system prompt and the question exactly as ``MemOS.chat`` will, and the loss is taken on
the answer and its end-of-turn marker only (statements train on every token). The loop is
plain torch (AdamW, warm-up then cosine decay, seeded shuffles) so that progress,
cancellation and early stopping are in our hands.
"""

from __future__ import annotations

import math
import random
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memos.errors import Cancelled, InvalidInput
from memos.parametric.data import Example
from memos.protocols import Runtime, TrainableRuntime
from memos.runtime import ChatMessage

REPLAY_TEXT = Path(__file__).with_name("replay_text.txt")
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one consolidation (stored in the adapter's manifest)."""

    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = TARGET_MODULES
    lr: float = 2e-3
    weight_decay: float = 0.0
    epochs: int = 8
    batch_size: int = 16
    # a small set (a cube's twenty facts) is repeated within an epoch up to this many steps:
    # two steps an epoch would end training inside the warm-up, before the anchor pulls back
    min_steps: int = 16
    warmup_steps: int = 10
    seed: int = 0
    patience: int = 2  # epochs without a better held-out recall before stopping
    min_epochs: int = 2
    eval_every: int = 1
    max_new_tokens: int = 24
    probe_size: int = 48  # validation questions asked after each epoch for early stopping
    # anchoring: per step, this many windows of a general text (replay_text.txt, not the
    # gate's text) are pulled towards the base model's own predictions (KL divergence), so
    # the adapter changes what it must and little else
    replay: int = 4
    replay_weight: float = 1.0
    # an epoch whose perplexity on that text rose past this ratio (consolidation passes the
    # gate's 1 + max_ppl_increase; the gate measures another text) is no place to stop, and
    # of two epochs as good on the validation questions the one that moved it less is kept
    max_drift: float = 1.05
    statements: bool = True  # also train on each memory's text itself (language-model loss)
    max_shared: int = 6  # objects of one subject's predicate trained as one answer at most
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochReport:
    epoch: int
    loss: float
    valid_recall: float  # on the validation questions (-1: none asked)
    seconds: float
    drift: float = 1.0  # perplexity of the anchor text, adapter over base (1.0: no anchor)


@dataclass
class TrainResult:
    state: dict[str, Any]  # LoRA tensors, peft key names, on the CPU
    epochs: list[EpochReport] = field(default_factory=list)
    best_epoch: int = 0
    train_s: float = 0.0
    steps: int = 0


_LETTERS = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "ł": "l", "đ": "d", "ð": "d", "þ": "th"})


def normalize(text: str) -> str:
    """Case- and accent-insensitive form for exact-match checks ("Tromsø" ~ "tromso")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def contains(answer: str, expected: str) -> bool:
    return bool(expected) and normalize(expected) in normalize(answer)


def turn_end(runtime: TrainableRuntime) -> str:
    """What closes an assistant turn in this model's prompt format."""
    template = runtime.chat_template or ""
    for marker in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "</s>"):
        if marker in template:
            return marker
    return "\nUser:"  # the plain format: the next turn's label is the stop sequence


def encode(
    runtime: TrainableRuntime, ex: Example, system_prompt: str
) -> tuple[list[int], list[int], list[int]]:
    """(shared prefix ids, input ids, labels) of one example; labels are -100 where no loss is taken.

    Chat examples share one prefix (the rendered system prompt and the user turn's header),
    which training computes once per batch; statements have no prefix."""
    if ex.form == "statement":
        ids = runtime.tokenize(ex.answer)
        return [], ids, [-100, *ids[1:]]
    head = chat_head(runtime, system_prompt)
    prompt = runtime.render([ChatMessage("system", system_prompt), ChatMessage("user", ex.prompt)])
    p_ids = runtime.tokenize(prompt)
    a_ids = runtime.tokenize(ex.answer + turn_end(runtime))
    full = p_ids + a_ids
    n = len(head) if full[: len(head)] == head else 0
    return full[:n], full[n:], ([-100] * len(p_ids) + a_ids)[n:]


def chat_head(runtime: TrainableRuntime, system_prompt: str) -> list[int]:
    """The tokens every chat example starts with: the system turn up to the user's words."""
    a = runtime.tokenize(runtime.render([ChatMessage("system", system_prompt), ChatMessage("user", "A")]))
    b = runtime.tokenize(runtime.render([ChatMessage("system", system_prompt), ChatMessage("user", "B")]))
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class Trainer:
    """Trains one LoRA adapter; ``cancel()`` from another thread stops it between steps."""

    def __init__(
        self, runtime: Runtime, config: TrainConfig, system_prompt: str, cancel: threading.Event | None = None
    ) -> None:
        if not runtime.supports_training or not isinstance(runtime, TrainableRuntime):
            raise InvalidInput(f"the {runtime.name} runtime cannot train LoRA adapters (use transformers)")
        self.runtime = runtime  # its checkpoint, prompt format and batched generation
        self.config = config
        self.system_prompt = system_prompt
        self._cancel = cancel or threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    # ------------------------------------------------------------------ model
    def _model(self) -> Any:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        cfg = self.config
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(cfg.seed)
        base: Any = AutoModelForCausalLM.from_pretrained(str(self.runtime.path), dtype=torch.float32)
        base = base.to(device)
        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(base, lora)
        return model, device

    # ------------------------------------------------------------------ training
    def train(
        self,
        examples: Sequence[Example],
        progress: Callable[[int, int, float], None] | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
    ) -> tuple[TrainResult, Any]:
        """Train on the ``train`` split; after each epoch ask the validation questions and
        measure the drift on the anchor text; keep the best epoch: within ``max_drift``
        first, then by validation recall, then by the least drift (without validation
        questions, the latest within ``max_drift``). Stop once the validation questions are
        all answered within ``max_drift``, or when ``patience`` epochs did not improve."""
        import torch

        cfg = self.config
        model, device = self._model()
        train = [
            encode(self.runtime, e, self.system_prompt)
            for e in examples
            if e.split == "train" and (cfg.statements or e.form != "statement")
        ]
        valid = [e for e in examples if e.split == "valid" and e.obj]
        # early stopping and the choice of epoch watch a sample of the validation questions,
        # never the held-out ones the gate asks: the adapter is not picked by its test
        probe = random.Random(cfg.seed).sample(valid, min(len(valid), cfg.probe_size))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        passes = max(1, math.ceil(cfg.min_steps * cfg.batch_size / max(1, len(train))))
        steps_per_epoch = math.ceil(passes * len(train) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs

        def lr_at(step: int) -> float:
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        rng = random.Random(cfg.seed)
        result = TrainResult(state={})
        anchor = REPLAY_TEXT.read_text(encoding="utf-8")
        replay = _windows(self.runtime, anchor, 48) if cfg.replay else []
        if replay:
            with model.disable_adapter():
                anchor_base = perplexity(model, self.runtime, anchor, device)
        best: tuple[float, ...] = ()
        stale, step = 0, 0
        started = time.perf_counter()
        pad = self.runtime.pad_token_id or 0
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = []
            for _ in range(passes):
                again = list(range(len(train)))
                rng.shuffle(again)
                order += again
            # batches of similar length waste less compute on padding
            batches = [order[i : i + cfg.batch_size * 4] for i in range(0, len(order), cfg.batch_size * 4)]
            losses: list[float] = []
            for chunk in batches:
                chunk.sort(key=lambda i: (len(train[i][0]), len(train[i][1])))
                for j in range(0, len(chunk), cfg.batch_size):
                    if self._cancel.is_set():
                        raise Cancelled("consolidation cancelled; nothing was stored")
                    idx = chunk[j : j + cfg.batch_size]
                    for group in _by_prefix(train, idx):
                        losses.append(self._step(model, train, group, pad, device))
                    if replay:
                        self._anchor(
                            model, [replay[rng.randrange(len(replay))] for _ in range(cfg.replay)], device
                        )
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    if progress:
                        progress(step, total, losses[-1])
            recall = -1.0
            if probe and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                budget = answer_budget(self.runtime, probe, 16)
                answers = generate(
                    model, self.runtime, [e.prompt for e in probe], self.system_prompt, budget, device
                )
                recall = sum(contains(a, e.obj) for a, e in zip(answers, probe, strict=True)) / len(probe)
            # how far general text moved: the early, fast epochs can leave the adapter in a
            # state that recalls every fact and has drifted; the anchor pulls it back later
            drift = perplexity(model, self.runtime, anchor, device) / anchor_base if replay else 1.0
            report = EpochReport(
                epoch, sum(losses) / max(1, len(losses)), recall, time.perf_counter() - t0, drift
            )
            result.epochs.append(report)
            if on_epoch:
                on_epoch(report)
            within = drift <= cfg.max_drift
            score = (within, recall, -drift) if probe else (within, epoch)
            if score > best:
                result.best_epoch, result.state = epoch, lora_state(model)
                best, stale = score, 0
            else:
                stale += 1
                if epoch >= cfg.min_epochs and stale >= cfg.patience:
                    break
            if probe and recall >= 1.0 and within and epoch >= cfg.min_epochs:
                break
        result.train_s = time.perf_counter() - started
        result.steps = step
        return result, model

    def _anchor(self, model: Any, windows: list[list[int]], device: str) -> None:
        """KL(base || adapter) on general-text windows, back-propagated into the adapter."""
        import torch

        ids = torch.tensor(windows, device=device)
        with torch.no_grad(), model.disable_adapter():
            ref = model(input_ids=ids).logits.float().log_softmax(-1)
        cur = model(input_ids=ids).logits.float().log_softmax(-1)
        kl = (ref.exp() * (ref - cur)).sum(-1).mean()
        (kl * self.config.replay_weight).backward()

    def _step(self, model: Any, train: list[Any], idx: list[int], pad: int, device: str) -> float:
        """Forward and backward of one group sharing a prefix; the prefix runs once, without grad."""
        import torch

        prefix = train[idx[0]][0]
        width = max(len(train[i][1]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        mask = torch.zeros((len(idx), len(prefix) + width), dtype=torch.long)
        mask[:, : len(prefix)] = 1
        for r, i in enumerate(idx):
            _, x, y = train[i]
            ids[r, : len(x)] = torch.tensor(x)
            labels[r, : len(y)] = torch.tensor(y)
            mask[r, len(prefix) : len(prefix) + len(x)] = 1
        cache = None
        if prefix:
            with torch.no_grad():
                cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True).past_key_values
            for layer in cache.layers:
                layer.keys = layer.keys.expand(len(idx), -1, -1, -1)
                layer.values = layer.values.expand(len(idx), -1, -1, -1)
        # hidden states of the decoder, then the vocabulary projection only where a label is
        # (the projection of a 49k vocabulary at every position costs a third of a step)
        inner, head = _decoder_and_head(model)
        out = inner(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                    use_cache=cache is not None)  # fmt: skip
        hidden = out.last_hidden_state[:, :-1]
        target = labels[:, 1:].to(device)
        keep = target != -100
        logits = head(hidden[keep]).float()
        loss = torch.nn.functional.cross_entropy(logits, target[keep])
        loss.backward()
        return float(loss.detach())


def _windows(runtime: Any, text: str, size: int, stride: int = 8) -> list[list[int]]:
    """Overlapping windows of ``text``: many different contexts to anchor, not a few."""
    ids = runtime.tokenize(text)
    return [ids[i : i + size] for i in range(0, len(ids) - size + 1, stride)]


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The decoder stack and the output projection under peft's wrappers."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal.model, causal.lm_head


def _by_prefix(train: list[Any], idx: list[int]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in idx:
        groups.setdefault(tuple(train[i][0]), []).append(i)
    return list(groups.values())


def lora_state(model: Any) -> dict[str, Any]:
    """The adapter's tensors (CPU copies), keyed as peft saves them."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu").clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def answer_budget(runtime: TrainableRuntime, examples: Sequence[Example], floor: int) -> int:
    """Tokens a greedy answer may take: at least ``floor``, and room for the longest trained
    answer ("Alice likes jazz, hiking and …" names every object a check looks for)."""
    longest = max((len(runtime.tokenize(e.answer)) for e in examples), default=0)
    return max(floor, longest + 4)


def generate(model: Any, runtime: TrainableRuntime, prompts: Sequence[str], system_prompt: str,
             max_new_tokens: int, device: str, batch_size: int = 32) -> list[str]:  # fmt: skip
    """Greedy answers of ``model`` (on ``device``) to ``prompts`` asked as chat turns under
    ``system_prompt``, batched by the runtime."""
    rendered = [
        runtime.render([ChatMessage("system", system_prompt), ChatMessage("user", p)]) for p in prompts
    ]
    ids = [runtime.tokenize(r) for r in rendered]
    return runtime.generate_ids(ids, max_new_tokens, model=model, batch_size=batch_size)


def perplexity(model: Any, runtime: TrainableRuntime, text: str, device: str, window: int = 256) -> float:
    """Perplexity of ``text`` in non-overlapping windows (the gate's general-text check)."""
    import torch

    ids = runtime.tokenize(text)
    nll, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(ids) - 1, window):
            chunk = ids[i : i + window + 1]
            if len(chunk) < 2:
                break
            x = torch.tensor([chunk], device=device)
            out = model(input_ids=x, labels=x)
            n = len(chunk) - 1
            nll += float(out.loss) * n
            count += n
    return math.exp(nll / max(1, count))
