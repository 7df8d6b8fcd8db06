"""Shared fixtures: isolated homes, one embedder per test session, both relational backends.

Tests run on the real components: SQLite and PostgreSQL, Qdrant Edge, the bundled
all-MiniLM-L6-v2. The PostgreSQL variants run when MEMOS_TEST_POSTGRES_URL is set
(.ci/run sets it) and are skipped with a plain reason otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_URL = os.environ.get("MEMOS_TEST_POSTGRES_URL")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No test may touch the developer's ~/.memos or inherit their MEMOS_* settings.
    for key in list(os.environ):
        if key.startswith("MEMOS_") and key != "MEMOS_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path / "default-home"))


@pytest.fixture(scope="session")
def embedder() -> Any:
    from memos.adapters.embedders.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


class Clock:
    """Injectable time: starts at a fixed instant, moves only when told."""

    def __init__(self, start: datetime = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # distinct, ordered timestamps
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    from memos.storage.relational.engine import _normalise_url

    engine = create_engine(_normalise_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        if not PG_URL:
            pytest.skip("PostgreSQL suite skipped: set MEMOS_TEST_POSTGRES_URL to run it (.ci/run does)")
        reset_postgres(PG_URL)
    return str(request.param)


@pytest.fixture
def make_mos(tmp_path: Path, embedder: Any, backend: str) -> Iterator[Callable[..., Any]]:
    """Factory of MemOS instances on the parametrized relational backend; all closed at the end."""
    from memos.core import MemOS

    opened: list[Any] = []

    def factory(home: Path | None = None, **overrides: Any) -> Any:
        if backend == "postgres":
            overrides.setdefault("relational_url", PG_URL)
        overrides.setdefault("clock", Clock())
        mos = MemOS(home=home or tmp_path / "home", embedder=embedder, **overrides)
        opened.append(mos)
        return mos

    yield factory
    for mos in opened:
        mos.close()


@pytest.fixture
def mos(make_mos: Callable[..., Any]) -> Any:
    return make_mos()


@pytest.fixture
def alice(mos: Any) -> tuple[Any, str]:
    """A home with user alice and her cube 'personal'; returns (mos, cube_id)."""
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal")
    return mos, cube.id
