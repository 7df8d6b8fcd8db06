"""Many-row statements without SQLAlchemy's per-row parameter processing.

``Connection.execute(stmt, [dict, …])`` builds every row's parameters through the
compiled statement and runs each value through its type's bind processor, one call per
value: at thousands of rows a second (bulk imports) that costs more than SQLite's own
work. :func:`execute_many` compiles the statement once, converts each column's values
with the same bind processors SQLAlchemy would use — once per *distinct* value, since a
batch repeats the same timestamps, cube ids and ``None`` s — and hands the driver plain
tuples. The values stored are exactly those of ``Connection.execute``.

Only positional (``qmark``) dialects, i.e. SQLite, take this path; PostgreSQL keeps
SQLAlchemy's own ``executemany`` (its "insertmanyvalues" batching is already fast there).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

_Processor = Callable[[Any], Any]


def execute_many(conn: Connection, stmt: UpdateBase, rows: Sequence[Mapping[str, Any]]) -> int:
    """Run ``stmt`` once per mapping in ``rows`` (all with the same keys).

    Returns the rows affected as the driver reports them: exact for updates and deletes,
    -1 for PostgreSQL inserts (its batched insert does not count)."""
    if not rows:
        return 0
    dialect = conn.dialect
    if dialect.paramstyle != "qmark":
        result: CursorResult[Any] = conn.execute(stmt, list(rows))
        return int(result.rowcount or 0)
    keys = list(rows[0])
    compiled = stmt.compile(dialect=dialect, column_keys=keys)
    assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
    getters: list[tuple[str | None, Any, _Processor | None]] = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in rows[0]:
            getters.append((name, None, processor))
        else:  # a value fixed in the statement (``.values(state="done")``)
            value = bind.effective_value
            getters.append((None, processor(value) if processor is not None else value, None))
    caches: list[dict[Hashable, Any]] = [{} for _ in getters]

    def convert(row: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for (key, fixed, processor), cache in zip(getters, caches, strict=True):
            if key is None:
                out.append(fixed)
                continue
            value = row[key]
            if processor is None or value is None:
                out.append(value)
                continue
            # keyed with the type: 1 == True == 1.0 must not share a converted value
            key_ = (type(value), value)
            try:
                out.append(cache[key_])
            except KeyError:
                out.append(cache.setdefault(key_, processor(value)))
            except TypeError:  # unhashable (a dict or list for a JSON column)
                if value:
                    out.append(processor(value))
                else:  # the empty dict or list of most rows: converted once
                    key_ = (type(value), None)
                    out.append(cache[key_] if key_ in cache else cache.setdefault(key_, processor(value)))
        return tuple(out)

    cursor = conn.exec_driver_sql(compiled.string, [convert(r) for r in rows])
    return int(cursor.rowcount or 0)
