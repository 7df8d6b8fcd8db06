"""The small Protocols that backends implement, all in one place.

The kernel (``memos``) owns these; ``memos.storage`` and ``memos.adapters`` implement
them and are chosen by name from the configuration (see :mod:`memos.registry`):
:class:`VectorIndex`, :class:`Embedder`, :class:`Runtime` (and :class:`TrainableRuntime`,
what LoRA training needs of one), :class:`KVPrefix` and :class:`Extractor`.

What a runtime can do is said by class attributes (``supports_kv_prefix``, …), which
the kernel asks instead of a backend's name; ``info().capabilities`` lists the same as
strings (:func:`capability_names`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from memos.runtime import ChatMessage, Fingerprint, Generation, GenerationParams, RuntimeInfo

if TYPE_CHECKING:
    from datetime import datetime

    from memos.extract import Extraction

# --------------------------------------------------------------------------- vectors


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse lexical vector: parallel lists of term ids and weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class IndexPoint:
    """One memory as the vector index sees it. ``id`` is the memory's UUID string."""

    id: str
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """Payload ``key`` equals any of ``any`` (for list payloads: contains any)."""

    key: str
    any: tuple[str | int | bool, ...]


@dataclass(frozen=True, slots=True)
class FieldRange:
    """Numeric payload ``key`` within ``[gte, lte]`` (either bound may be open)."""

    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class IndexFilter:
    """Conjunction of conditions; ``cube_ids`` is always applied (tenancy)."""

    cube_ids: tuple[str, ...]
    must: tuple[FieldMatch | FieldRange, ...] = field(default_factory=tuple)


class IndexHit(NamedTuple):
    """One search result of the index (a named tuple: searches build hundreds of them)."""

    id: str
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """A derived, rebuildable index of dense + sparse vectors with payload filters.

    Upserts are idempotent (keyed by memory id). Implementations must be safe to call
    from several threads of one process.
    """

    name: str

    def upsert(self, points: Sequence[IndexPoint]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def search_dense(self, vector: Sequence[float], flt: IndexFilter, limit: int) -> list[IndexHit]: ...

    def search_sparse(self, vector: SparseVector, flt: IndexFilter, limit: int) -> list[IndexHit]: ...

    def search_both(
        self, dense: Sequence[float] | None, sparse: SparseVector | None, flt: IndexFilter, limit: int
    ) -> tuple[list[IndexHit], list[IndexHit]]:
        """``search_dense`` and ``search_sparse`` of one query in one call (either may be
        ``None``: its list is then empty), so the engine can plan the two together."""
        ...

    def ids(self, cube_id: str) -> set[str]: ...

    def count(self, cube_id: str | None = None) -> int: ...

    def delete_cube(self, cube_id: str) -> None: ...

    #: points written since the last :meth:`optimize` that it would index (0 where an
    #: engine does not count them: it needs no optimize)
    unoptimized_points: int

    def optimize(self) -> bool:
        """Build the search structures now (HNSW graphs, merged segments); blocking.
        Returns whether there was anything to do: ``False`` where the engine needs no
        such step (it optimizes by itself, or always scans)."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- embedders


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-normalised dense vectors."""

    #: stable identifier recorded in archives and index metadata (model + revision)
    id: str

    @property
    def dim(self) -> int:
        """Length of the vectors (may load the model to find out)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


# --------------------------------------------------------------------------- runtimes

#: ``info().capabilities`` string -> the class attribute that says it
CAPABILITIES = {
    "tokens": "supports_tokens",
    "json_schema": "supports_grammar",
    "kv_prefix": "supports_kv_prefix",
    "lora": "supports_lora",
}


def capability_names(runtime: Any) -> frozenset[str]:
    """The capability strings of ``runtime`` (a runtime or its class), from its attributes."""
    return frozenset(name for name, attr in CAPABILITIES.items() if getattr(runtime, attr, False))


class KVPrefix(Protocol):
    """A loaded KV prefix, ready for :meth:`Runtime.complete`'s ``prefix=``.

    ``token_ids`` are the exact tokens it was computed from; a prompt used with it must
    start with them. ``adapters`` are the keys of the LoRA adapters it was computed under
    (empty: the base model's); a generation must apply the same ones. Using it never
    changes it (each use works on a copy)."""

    @property
    def token_ids(self) -> tuple[int, ...]: ...

    @property
    def adapters(self) -> tuple[str, ...]: ...


@runtime_checkable
class Runtime(Protocol):
    """One loaded language model.

    Capabilities are class attributes: ``supports_tokens`` — exact tokenization (local
    runtimes; the HTTP runtime estimates); ``supports_grammar`` — decoding constrained to
    a JSON schema; ``supports_kv_prefix`` and ``supports_lora`` — activation and
    parametric memory (``lora_format`` says which LoRA file it loads: ``"safetensors"``,
    peft's tensors, or ``"gguf"``); ``supports_kv_prefix_lora`` — a KV prefix can be
    computed under LoRA adapters and used with them (without it, a prefix is the base
    model's and a generation uses either a prefix or adapters); ``supports_training`` — it
    is a :class:`TrainableRuntime`.
    """

    name: str
    supports_tokens: ClassVar[bool]
    supports_grammar: ClassVar[bool]
    supports_kv_prefix: ClassVar[bool]
    supports_lora: ClassVar[bool]
    supports_kv_prefix_lora: ClassVar[bool]
    supports_training: ClassVar[bool]
    lora_format: ClassVar[str | None]

    def info(self) -> RuntimeInfo: ...

    @property
    def fingerprint(self) -> Fingerprint: ...

    @property
    def context_length(self) -> int: ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as it appears inside a prompt (special tokens parsed, no BOS added)."""
        ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for ``messages``, ending where the assistant's answer begins."""
        ...

    def default_stops(self) -> tuple[str, ...]:
        """Stop sequences the prompt format needs (the plain format's ``User:``)."""
        ...

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams,
        prefix: Any | None = None,
        adapters: Sequence[Any] = (),
    ) -> Generation:
        """Generate a continuation of a rendered prompt (text or token ids).

        With ``prefix`` (from :meth:`load_prefix`; ``supports_kv_prefix``) the prompt's
        first tokens are not computed but taken from the prefix's KV cache. With
        ``adapters`` (from :meth:`load_adapter`; ``supports_lora``) the LoRA adapters
        apply to this generation only (their deltas add up). Both together only when the
        prefix was built under exactly these adapters (in any order); otherwise
        :class:`~memos.errors.InvalidInput`."""
        ...

    def build_prefix(self, token_ids: Sequence[int], adapters: Sequence[Any] = ()) -> bytes:
        """Prefill ``token_ids`` and return the KV cache as a safetensors file (bytes);
        with ``adapters`` (``supports_kv_prefix_lora``) the prefill applies them, and the
        file names their keys."""
        ...

    def load_prefix(self, data: bytes | Path, token_ids: Sequence[int]) -> KVPrefix:
        """A prefix from :meth:`build_prefix`'s bytes (or the file they were written to),
        for ``complete(prefix=…)``; it knows the adapters it was built under (``adapters``)."""
        ...

    def load_adapter(self, path: Path) -> Any:
        """A LoRA adapter file (``lora_format``) loaded for ``complete(adapters=…)``;
        loaded once per file and kept."""
        ...

    def chat(
        self, messages: Sequence[ChatMessage], params: GenerationParams, adapters: Sequence[Any] = ()
    ) -> Generation:
        """Generate the assistant's answer to ``messages``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TrainableRuntime(Runtime, Protocol):
    """A runtime on a local checkpoint that LoRA training can start from
    (``supports_training``): what :mod:`memos.parametric.train` needs of it."""

    #: the checkpoint directory (``config.json``, weights, tokenizer)
    path: Path

    @property
    def chat_template(self) -> str | None:
        """The model's Jinja chat template; ``None`` for the plain prompt format."""
        ...

    @property
    def pad_token_id(self) -> int | None: ...

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        model: Any | None = None,
        batch_size: int = 32,
    ) -> list[str]:
        """Greedy continuations of token-id prompts, batched, each cut at the end of its
        turn. ``model`` is another module over the same checkpoint (one being trained);
        by default the runtime's own."""
        ...


# --------------------------------------------------------------------------- extractors


@runtime_checkable
class Extractor(Protocol):
    """Turns one message into an :class:`~memos.extract.Extraction`.

    ``speaker`` is who wrote the text (first-person pronouns resolve to it);
    ``reference_time`` is when (relative dates resolve against it). Implementations
    should not raise on odd text; an empty extraction is a valid answer.
    """

    name: str

    def extract(self, text: str, *, speaker: str | None, reference_time: datetime | None) -> Extraction: ...
