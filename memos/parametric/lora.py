"""The manifest of a LoRA adapter: a ``blobs`` row of kind ``parametric``.

The row names the adapter's safetensors blob (its sha256) and the cube; ``manifest``
holds its state, the base model it was trained from, the memories and versions it was
trained on, the hyper-parameters, the data hash, the gate's evaluation, the GGUF export
for llama.cpp, and a queued retrain.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from memos.errors import InvalidInput, NotFound
from memos.storage.relational.models import BlobRow

KIND = "parametric"
FORMAT = "memos-lora/peft/1"
State = Literal["active", "inactive", "rejected", "stale", "retired"]


class Evaluation(BaseModel):
    recall_base: float = Field(description="held-out exact-match recall of the base model")
    recall_adapter: float = Field(description="the same with the adapter")
    recall_seen_adapter: float = Field(
        description="recall on one trained phrasing per fact, with the adapter"
    )
    ppl_base: float = Field(description="perplexity of the general text, base model")
    ppl_adapter: float
    ppl_ratio: float
    n_heldout: int
    passed: bool
    reasons: list[str] = Field(default_factory=list, description="why it failed the gate")


class LoraInfo(BaseModel):
    """The manifest of one parametric-memory adapter."""

    id: str = Field(description="sha256 of the adapter's safetensors blob")
    cube_id: str
    name: str
    state: State
    reason: str | None = None
    base: dict[str, str] = Field(description="the base model: runtime fingerprint it was trained from")
    memories: list[dict[str, Any]] = Field(description="[{id, version}] it was built from")
    left_out: list[str] = Field(
        default_factory=list,
        description="ids of its memories it was not trained on: they read as no fact a question can check, or "
        "are objects past the most one answer lists (max_shared)",
    )
    hyper: dict[str, Any]
    data_hash: str
    n_examples: dict[str, int]
    evaluation: Evaluation | None
    epochs: list[dict[str, Any]]
    best_epoch: int = Field(0, description="the epoch whose weights were kept (the best held-out probe)")
    train_s: float
    bytes: int
    gguf: dict[str, Any] | None = Field(None, description="{sha256, bytes} of the GGUF LoRA for llama.cpp")
    created_at: datetime
    retrain: dict[str, Any] | None = Field(
        None, description="a queued retrain: {memory_ids, queued_at, reason}"
    )

    @property
    def memory_ids(self) -> list[str]:
        return [m["id"] for m in self.memories]


def info(sha: str, cube_id: str, size: int, created: datetime, m: Mapping[str, Any]) -> LoraInfo:
    ev = m.get("evaluation")
    return LoraInfo(
        id=sha, cube_id=cube_id, name=m.get("name", "default"), state=m.get("state", "inactive"),
        reason=m.get("reason"), base=dict(m.get("base", {})), memories=list(m.get("memories", [])),
        left_out=list(m.get("left_out", [])),
        hyper=dict(m.get("hyper", {})), data_hash=m.get("data_hash", ""), n_examples=dict(m.get("n_examples", {})),
        evaluation=Evaluation(**ev) if ev else None, epochs=list(m.get("epochs", [])),
        best_epoch=int(m.get("best_epoch", 0)),
        train_s=float(m.get("train_s", 0.0)), bytes=size, gguf=m.get("gguf"), created_at=created,
        retrain=m.get("retrain"),
    )  # fmt: skip


def info_of(row: BlobRow) -> LoraInfo:
    return info(row.sha256, row.cube_id or "", row.size, row.created_at, row.manifest)


def rows(s: Session, cube_id: str) -> list[BlobRow]:
    """The cube's adapters, newest first."""
    q = (
        select(BlobRow)
        .where(BlobRow.kind == KIND, BlobRow.cube_id == cube_id)
        .order_by(BlobRow.created_at.desc())
    )
    return list(s.scalars(q))


def find(s: Session, adapter_id: str) -> BlobRow:
    """The adapter named by ``adapter_id`` or an unambiguous beginning of it."""
    if not isinstance(adapter_id, str) or len(adapter_id) < 6:
        raise InvalidInput("give an adapter id (at least 6 characters of it)")
    found = list(
        s.scalars(select(BlobRow).where(BlobRow.kind == KIND, BlobRow.sha256.startswith(adapter_id.lower())))
    )
    if len(found) != 1:
        raise NotFound(
            f"no adapter {adapter_id!r}" if not found else f"{adapter_id!r} is ambiguous; give more of it"
        )
    return found[0]


def same_base(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Same model weights and tokenizer (the runtime and its dtype may differ)."""
    return (
        bool(a)
        and a.get("model_id") == b.get("model_id")
        and a.get("weights_sha256") == b.get("weights_sha256")
    )
