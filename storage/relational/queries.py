"""Dialect-specific statements the kernel runs as raw SQL on its hot paths.

The kernel asks for a statement by what it needs; the dialect's tricks (SQLite's
``INDEXED BY``, placeholder styles) stay here, beside the schema they refer to.
"""

from __future__ import annotations

from sqlalchemy.engine import Dialect

from memos.storage.relational.models import MEMORY_STATE_INDEX, MemoryRow


def placeholders(dialect: Dialect, n: int) -> str:
    """``n`` bound-parameter placeholders for a driver-level ``IN (…)`` list."""
    return ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * n)


def memory_states_sql(dialect: Dialect, n: int) -> str:
    """``SELECT id, state, importance`` of ``n`` memories by id (positional parameters).

    The hot path of every search: answered from the covering index alone. SQLite's planner
    would take the primary key's index and then visit every table row, so it is told which
    index to use; other engines choose the covering index themselves."""
    hint = f" INDEXED BY {MEMORY_STATE_INDEX}" if dialect.name == "sqlite" else ""
    return f"SELECT id, state, importance FROM {MemoryRow.__tablename__}{hint} WHERE id IN ({placeholders(dialect, n)})"
