"""The ``openai`` runtime: its settings (:mod:`.config`) and implementation (:mod:`.runtime`)."""

from memos.adapters.runtimes.openai_http.config import OpenAISettings
from memos.adapters.runtimes.openai_http.runtime import OpenAIRuntime, estimate_tokens

__all__ = ["OpenAIRuntime", "OpenAISettings", "estimate_tokens"]
