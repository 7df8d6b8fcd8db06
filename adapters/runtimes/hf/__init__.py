"""The ``transformers`` runtime: its settings (:mod:`.config`) and implementation (:mod:`.runtime`)."""

from memos.adapters.runtimes.hf.config import TransformersSettings
from memos.adapters.runtimes.hf.runtime import (
    ADAPTER_FORMAT,
    KV_FORMAT,
    HFLora,
    HFPrefix,
    TransformersRuntime,
    _quiet_cache_rename,
)

__all__ = ["ADAPTER_FORMAT", "KV_FORMAT", "HFLora", "HFPrefix", "TransformersRuntime", "TransformersSettings",
           "_quiet_cache_rename"]  # fmt: skip
