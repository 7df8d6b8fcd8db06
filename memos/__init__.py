"""memos — a memory operating system for LLM applications.

>>> from memos import MemOS                       # doctest: +SKIP
>>> mos = MemOS(home="~/.memos")                  # doctest: +SKIP

Where things are (the map is in docs/ARCHITECTURE.md): :class:`MemOS` (``memos.core``)
is the facade every interface calls; :mod:`memos.acl` checks who may do what;
:mod:`memos.events` says what happened; :mod:`memos.memories` stores, reads and forgets
plaintext memories (on :mod:`memos.plaintext`: rows, index, graph, search); :mod:`memos.chat` runs the memory-augmented forward pass;
:mod:`memos.activation` and :mod:`memos.parametric` hold KV prefixes and LoRA adapters;
:mod:`memos.archive` moves a cube in and out of a ``.memcube``.

``import memos`` is cheap: the facade and heavy dependencies (torch, transformers,
qdrant, llama_cpp) load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from memos.errors import (
    AlreadyExists,
    ConfigError,
    InvalidInput,
    InvalidState,
    MemosError,
    NotFound,
    PermissionDenied,
    StorageError,
)
from memos.version import __version__

if TYPE_CHECKING:
    from memos.activation import ActivationInfo
    from memos.aio import AsyncMemOS
    from memos.archive import ChatLog, Manifest
    from memos.chat import ChatResult
    from memos.config import Settings, load_settings
    from memos.core import MemOS
    from memos.parametric import LoraInfo
    from memos.scheduler import Job

#: public names imported on first use, and where from (the facade's return types
#: included: interfaces name them from here, not from the services)
_LAZY = {
    "MemOS": "memos.core",
    "AsyncMemOS": "memos.aio",
    "Settings": "memos.config",
    "load_settings": "memos.config",
    "ChatResult": "memos.chat",
    "ChatLog": "memos.archive",
    "Manifest": "memos.archive",
    "ActivationInfo": "memos.activation",
    "LoraInfo": "memos.parametric",
    "Job": "memos.scheduler",
}

__all__ = [
    "ActivationInfo",
    "AlreadyExists",
    "AsyncMemOS",
    "ChatLog",
    "ChatResult",
    "ConfigError",
    "InvalidInput",
    "InvalidState",
    "Job",
    "LoraInfo",
    "Manifest",
    "MemOS",
    "MemosError",
    "NotFound",
    "PermissionDenied",
    "Settings",
    "StorageError",
    "__version__",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
