"""The ``llama_cpp`` runtime: its settings (:mod:`.config`) and implementation (:mod:`.runtime`)."""

from memos.adapters.runtimes.llamacpp.config import LlamaCppSettings
from memos.adapters.runtimes.llamacpp.runtime import KV_FORMAT, LlamaCppRuntime, LlamaLora, LlamaPrefix

__all__ = ["KV_FORMAT", "LlamaLora", "LlamaCppRuntime", "LlamaCppSettings", "LlamaPrefix"]
