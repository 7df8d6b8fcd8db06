"""Settings of the ``llama_cpp`` runtime (``[runtime]`` with ``name = "llama_cpp"``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from memos.weights import DEFAULT_MODEL


class LlamaCppSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    threads: int | None = Field(None, ge=1, description="unset: all CPUs up to 4, else half")
    gpu_layers: int = Field(0, ge=-1, description="layers offloaded to the GPU (-1: all)")
    context_tokens: int = Field(2048, ge=1)
    cache_dir: Path | None = None
    seed: int = 0
