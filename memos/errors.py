"""Typed errors of memos.

Every error raised on purpose by memos derives from :class:`MemosError`; each subclass
also derives from the builtin exception it stands for, so ``except KeyError`` in user
code keeps working. Messages are written for a person: they say what was wrong and what
to do about it.
"""

from __future__ import annotations

from typing import ClassVar


class MemosError(Exception):
    """Root of every error memos raises on purpose."""

    #: HTTP status the server maps this error to (4xx for the caller's mistakes).
    http_status: int = 500


class ConfigError(MemosError, ValueError):
    """The configuration is invalid or incomplete."""

    http_status = 400


class InvalidInput(MemosError, ValueError):
    """An argument has the wrong type, shape or size."""

    http_status = 422


class InvalidFilter(InvalidInput):
    """A search or list filter names an unknown field or has a malformed value."""


class NotFound(MemosError, KeyError):
    """A user, cube, memory or blob does not exist (or is not visible to the caller)."""

    http_status = 404

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(MemosError, ValueError):
    """An object with that id or name exists already."""

    http_status = 409


class Conflict(AlreadyExists):
    """Something is in the way of a call (an export's target file, a cube imported already);
    passing the call's keywords ``fix`` avoids it. The message spells them as the SDK does;
    an interface words them as its own options with :meth:`advice`."""

    #: how the SDK spells the keywords that avoid a conflict
    SDK_SPELLING: ClassVar[dict[str, str]] = {
        "overwrite": "overwrite=True",
        "copy": "copy=True",
        "name": "name='…'",
        "cube_id": "cube_id='…'",
    }

    def __init__(self, problem: str, fix: tuple[str, ...], purpose: str) -> None:
        self.problem, self.fix, self.purpose = problem, fix, purpose
        super().__init__(self.advice(self.SDK_SPELLING))

    def advice(self, spelling: dict[str, str]) -> str:
        return f"{self.problem}; pass {' and '.join(spelling[k] for k in self.fix)} {self.purpose}"


class PermissionDenied(MemosError, PermissionError):
    """The acting user may not do this to this cube."""

    http_status = 403


class InvalidState(MemosError, RuntimeError):
    """The operation does not apply in the object's current lifecycle state."""

    http_status = 409


class HomeLocked(MemosError, RuntimeError):
    """Another process holds the embedded home open."""

    http_status = 423


class ArchiveError(MemosError, ValueError):
    """A ``.memcube`` archive is malformed, tampered with, or of an unknown version."""

    http_status = 422


class StorageError(MemosError, RuntimeError):
    """A storage backend failed; the original error is chained with ``from``."""


class DependencyMissing(MemosError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class ModelError(MemosError, RuntimeError):
    """A model runtime failed to load or to generate (the cause is chained)."""

    http_status = 502


class ContextOverflow(InvalidInput):
    """A prompt cannot fit the model's context budget, even with every optional part dropped."""


class FingerprintMismatch(MemosError, ValueError):
    """A KV cache or adapter was built for another model, runtime or tokenizer."""

    http_status = 409


class Cancelled(MemosError, RuntimeError):
    """A long operation (a consolidation) was cancelled; nothing was stored."""

    http_status = 409
