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


# --------------------------------------------------------------------------- model runtimes
# One loaded model per runtime and test session. The first run converts the bundled GGUFs
# for transformers into ~/.cache/memos/models (a minute or two each); later runs load the
# cached checkpoints in seconds.


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def hf_runtime() -> Iterator[Any]:
    from memos.adapters.runtimes.hf import TransformersRuntime

    rt = TransformersRuntime("smollm2-135m-instruct", context_tokens=2048)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def llama_runtime() -> Iterator[Any]:
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'memcube-os[llama]')"
    )
    from memos.adapters.runtimes.llamacpp import LlamaCppRuntime

    rt = LlamaCppRuntime("smollm2-135m-instruct", context_tokens=2048, threads=2)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def gemma_hf() -> Iterator[Any]:
    from memos.adapters.runtimes.hf import TransformersRuntime

    rt = TransformersRuntime("gemma3-270m", context_tokens=1024)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def gemma_llama() -> Iterator[Any]:
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'memcube-os[llama]')"
    )
    from memos.adapters.runtimes.llamacpp import LlamaCppRuntime

    rt = LlamaCppRuntime("gemma3-270m", context_tokens=1024, threads=2)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def openai_server() -> Iterator[str]:
    """A real OpenAI-compatible server: llama.cpp's, on the bundled GGUF, on a free loopback port."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    import subprocess
    import sys
    import time

    import httpx

    from memos.weights import gguf_path

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path("smollm2")),
         "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {err[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not come up within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def openai_runtime(openai_server: str) -> Iterator[Any]:
    from memos.adapters.runtimes.openai_http import OpenAIRuntime

    rt = OpenAIRuntime("smollm2", base_url=openai_server, context_tokens=2048)
    yield rt
    rt.close()


@pytest.fixture(params=["transformers", "llama_cpp", "openai"])
def any_runtime(request: pytest.FixtureRequest) -> Any:
    """Each of the three runtimes on the default model, for the shared contract."""
    name = {"transformers": "hf_runtime", "llama_cpp": "llama_runtime", "openai": "openai_runtime"}
    return request.getfixturevalue(name[str(request.param)])
