"""Settings of the ``openai`` runtime (``[runtime]`` with ``name = "openai"``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenAISettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("default", description="the server's model name")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    api_key: str | None = None
    context_tokens: int = Field(4096, ge=1)
    timeout_s: float = Field(120.0, gt=0)
