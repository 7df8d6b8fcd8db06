"""The dialect-specific statements of :mod:`memos.storage.relational.queries`, on real engines."""

from __future__ import annotations

from pathlib import Path

from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import MEMORY_STATE_INDEX
from memos.storage.relational.queries import memory_states_sql


def test_memory_states_read_the_covering_index_on_sqlite(tmp_path: Path) -> None:
    store = RelationalStore(f"sqlite:///{tmp_path / 'memos.db'}")
    store.migrate()
    with store.engine.connect() as conn:
        sql = memory_states_sql(conn.dialect, 2)
        assert conn.exec_driver_sql(sql, ("a", "b")).all() == []
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, ("a", "b")))
    assert f"COVERING INDEX {MEMORY_STATE_INDEX}" in plan


def test_memory_states_carry_no_sqlite_hint_elsewhere() -> None:
    from sqlalchemy.dialects import postgresql

    sql = memory_states_sql(postgresql.psycopg.dialect(), 3)
    assert "INDEXED BY" not in sql
    assert sql.endswith("WHERE id IN (%s, %s, %s)")
