"""The runtimes a home has loaded: each configuration once, shared by chat, activation,
parametric memory and the LLM reader."""

from __future__ import annotations

import threading
from typing import Any

from memos.config import Settings
from memos.protocols import Runtime


class Runtimes:
    """``MemOS.runtime`` and ``close_runtimes``: a pool of loaded runtimes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: dict[str, Runtime] = {}
        self._lock = threading.Lock()

    def get(self, name: str | None = None, **overrides: Any) -> Runtime:
        """The loaded runtime ``name`` (default: the configured one), loaded on first use."""
        from memos import factories

        key = name or self.settings.runtime.name
        if overrides:
            key += repr(sorted(overrides.items()))
        with self._lock:  # two threads asking at once load the model once
            rt = self._loaded.get(key)
            if rt is None:
                rt = factories.make_runtime(self.settings, name, **overrides)
                self._loaded[key] = rt
        return rt

    def close(self) -> None:
        """Close every loaded runtime; the next ``get`` loads again."""
        with self._lock:
            for rt in self._loaded.values():
                rt.close()
            self._loaded.clear()
