"""Alembic environment: migrations run on the connection memos hands in (see engine.py)."""

from __future__ import annotations

from alembic import context

from memos.storage.relational.models import Base

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:  # invoked from the alembic CLI (used to author migrations only)
    from sqlalchemy import create_engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite://").connect()

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
