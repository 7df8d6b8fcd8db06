"""memos — a memory operating system for LLM applications.

``import memos`` is cheap: heavy dependencies (torch, transformers, qdrant, llama_cpp)
load only when a component that needs them is first used.
"""

from __future__ import annotations

from memos.errors import MemosError

__version__ = "0.1.0"

__all__ = ["MemosError", "__version__"]
