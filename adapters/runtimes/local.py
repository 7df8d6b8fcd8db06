"""What the local runtimes share: identity, the prompt format, prompt checks, and
incremental detokenization (an implementation base, not a Protocol: those are in
:mod:`memos.protocols`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, cast

from memos.errors import FingerprintMismatch, InvalidInput
from memos.protocols import KVPrefix, capability_names
from memos.runtime import (
    PLAIN_STOPS,
    ChatMessage,
    Fingerprint,
    Generation,
    GenerationParams,
    plain_prompt,
    render_template,
    safetensors_metadata,
)


class RuntimeIdentity:
    """``fingerprint`` and ``context_length`` from ``_fingerprint`` and ``_context``; the
    capability attributes of :class:`memos.protocols.Runtime`, all off until a subclass
    says otherwise."""

    supports_tokens: ClassVar[bool] = False
    supports_grammar: ClassVar[bool] = False
    supports_kv_prefix: ClassVar[bool] = False
    supports_lora: ClassVar[bool] = False
    supports_kv_prefix_lora: ClassVar[bool] = False
    supports_training: ClassVar[bool] = False
    lora_format: ClassVar[str | None] = None

    _fingerprint: Fingerprint
    _context: int

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capability strings ``info().capabilities`` lists."""
        return capability_names(cls)

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def context_length(self) -> int:
        return self._context


class LocalRuntime(RuntimeIdentity):
    """What the local runtimes share: the prompt format (the model's chat template, or the
    plain format with ``_bos``), prompt checks, and incremental detokenization.

    A subclass sets ``_template``, ``_bos``, ``_eos_text``, ``_eos`` (end-of-turn token
    ids) and ``_prefix_type``, and implements ``tokenize``, ``detokenize`` and
    ``_tokens`` — the stream of generated token ids (sampling as ``params`` say, taking
    ``prefix``'s KV instead of computing those tokens)."""

    _template: str | None
    _bos: str
    _eos_text: str
    _eos: set[int]
    _prefix_type: type
    _adapter_type: type = type(None)
    supports_tokens = True

    @property
    def chat_template(self) -> str | None:
        """The model's Jinja chat template; ``None``: the plain prompt format."""
        return self._template

    @property
    def end_of_turn_ids(self) -> frozenset[int]:
        """Token ids that end the assistant's turn (generation stops at them)."""
        return frozenset(self._eos)

    def load_adapter(self, path: Path) -> Any:
        raise InvalidInput(f"the {getattr(self, 'name', '?')} runtime cannot apply LoRA adapters")

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def _tokens(
        self, ids: list[int], params: GenerationParams, prefix: Any | None, adapters: Sequence[Any]
    ) -> Iterator[int]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def render(self, messages: Sequence[ChatMessage]) -> str:
        if self._template is not None:
            return render_template(self._template, messages, bos=self._bos, eos=self._eos_text)
        return plain_prompt(messages, bos=self._bos)

    def default_stops(self) -> tuple[str, ...]:
        return () if self._template is not None else PLAIN_STOPS

    def chat(
        self, messages: Sequence[ChatMessage], params: GenerationParams, adapters: Sequence[Any] = ()
    ) -> Generation:
        stops = tuple(dict.fromkeys((*params.stop, *self.default_stops())))
        return self.complete(self.render(messages), replace(params, stop=stops), adapters=adapters)

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams,
        prefix: Any | None = None,
        adapters: Sequence[Any] = (),
    ) -> Generation:
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(x) for x in prompt]
        if not ids:
            raise InvalidInput("the prompt is empty")
        if len(ids) + params.max_tokens > self._context:
            raise InvalidInput(
                f"prompt of {len(ids)} tokens + {params.max_tokens} new tokens exceeds the "
                f"context of {self._context} tokens"
            )
        adapters = self._check_adapters(adapters)
        if prefix is not None:
            if not isinstance(prefix, self._prefix_type):
                raise InvalidInput(f"this prefix was not loaded by the {getattr(self, 'name', '?')} runtime")
            check_prefix(ids, cast(KVPrefix, prefix))
            check_prefix_adapters(cast(KVPrefix, prefix), adapters)
        return Generation(
            lambda: self._pieces(self._tokens(ids, params, prefix, adapters), params.max_tokens),
            stop=params.stop,
            prompt_tokens=len(ids),
            max_tokens=params.max_tokens,
        )

    def _check_adapters(self, adapters: Sequence[Any]) -> tuple[Any, ...]:
        """``adapters`` as a tuple, after checking this runtime loaded each of them."""
        adapters = tuple(adapters)
        for adapter in adapters:
            if not isinstance(adapter, self._adapter_type):
                raise InvalidInput(f"this adapter was not loaded by the {getattr(self, 'name', '?')} runtime")
        return adapters

    def _prefix_adapters(self, adapters: Sequence[Any]) -> tuple[Any, ...]:
        """The adapters a prefix is built under, checked (``supports_kv_prefix_lora``)."""
        adapters = self._check_adapters(adapters)
        if adapters and not self.supports_kv_prefix_lora:
            raise InvalidInput(
                f"the {getattr(self, 'name', '?')} runtime computes a KV prefix without adapters only"
            )
        return adapters

    def _kv_metadata(self, data: bytes, fmt: str) -> dict[str, str]:
        """The metadata of a KV prefix blob, after checking it is this runtime's format and
        was built under this runtime's fingerprint."""
        meta = safetensors_metadata(data)
        if meta.get("format") != fmt:
            raise InvalidInput(
                f"not a {getattr(self, 'name', '?')} KV prefix (format {meta.get('format')!r})"
            )
        if meta.get("fingerprint") != self._fingerprint.key:
            raise FingerprintMismatch(
                "this KV prefix was built for another model, runtime or dtype "
                f"(fingerprint {meta.get('fingerprint')}, this runtime {self._fingerprint.key})"
            )
        return meta

    def _pieces(self, tokens: Iterator[int], max_tokens: int) -> Iterator[tuple[str, int]]:
        """Text pieces of a token stream, ending at an end-of-turn token or ``max_tokens``.

        The whole answer is decoded each step and the new part emitted: right for
        tokenizers that merge spaces or bytes across tokens; an incomplete UTF-8 sequence
        waits for the next token. The stream is not advanced past the last token used."""
        produced: list[int] = []
        text = ""
        try:
            for token in tokens:
                if token in self._eos:
                    return
                produced.append(int(token))
                full = self.detokenize(produced)
                piece = ""
                if not full.endswith("\ufffd"):
                    piece, text = full[len(text) :], full
                yield piece, 1
                if len(produced) >= max_tokens:
                    return
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()


def check_prefix_adapters(prefix: KVPrefix, adapters: Sequence[Any]) -> None:
    """Refuse a prefix computed under other adapters than the generation applies: its keys
    and values would be another model's. The order does not matter (the deltas add up)."""
    built = tuple(getattr(prefix, "adapters", ()))
    given = tuple(str(a.key) for a in adapters)
    if sorted(built) == sorted(given):
        return

    def under(keys: Sequence[str]) -> str:
        return "with adapters " + ", ".join(k[:12] for k in keys) if keys else "without adapters"

    raise InvalidInput(
        f"this KV prefix was computed {under(built)} but the generation applies "
        f"{'adapters ' + ', '.join(k[:12] for k in given) if given else 'none'}: build the prefix "
        "under the same adapters (build_prefix(token_ids, adapters=...)) or generate without it"
    )


def check_prefix(ids: Sequence[int], prefix: KVPrefix) -> int:
    """The prefix length, after checking ``ids`` start with the prefix's tokens and go beyond."""
    n = len(prefix.token_ids)
    if tuple(ids[:n]) != prefix.token_ids:
        raise InvalidInput("the prompt does not start with the KV prefix's tokens")
    if len(ids) <= n:
        raise InvalidInput("the prompt must go on after the KV prefix (at least one token)")
    return n
