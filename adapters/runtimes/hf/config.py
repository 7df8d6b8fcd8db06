"""Settings of the ``transformers`` runtime (``[runtime]`` with ``name = "transformers"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memos.weights import DEFAULT_MODEL


class TransformersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    device: str = Field("auto", description="auto | cpu | cuda[:N]")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    threads: int | None = Field(None, ge=1, description="torch's CPU threads")
    context_tokens: int = Field(2048, ge=1)
    cache_dir: Path | None = None
