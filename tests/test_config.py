"""Configuration precedence, the cheap `import memos`, and the registries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from memos.config import Settings, load_settings
from memos.errors import ConfigError


def test_import_memos_is_light() -> None:
    code = (
        "import sys, memos, memos.core, memos.errors, memos.types, memos.config, memos.cli;"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'qdrant_client', 'qdrant_edge',"
        " 'llama_cpp', 'onnxruntime', 'onnx') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import memos pulled in: {out.stdout.strip()}"


def test_precedence_args_env_file_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text(
        'embedder = "from-file"\nmax_text_chars = 100\n[search]\nrrf_k = 10.0\n', encoding="utf-8"
    )
    s = load_settings(home)
    assert s.embedder == "from-file" and s.max_text_chars == 100 and s.search.rrf_k == 10.0
    assert s.resolved_relational_url == f"sqlite:///{home.resolve() / 'memos.db'}"
    monkeypatch.setenv("MEMOS_MAX_TEXT_CHARS", "200")
    assert load_settings(home).max_text_chars == 200  # env beats file
    assert load_settings(home, max_text_chars=300).max_text_chars == 300  # args beat env
    monkeypatch.setenv("MEMOS_HOME", str(home))
    assert load_settings().home == home.resolve()


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("max_text_chars = 'lots'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_text_chars"):
        load_settings(tmp_path)
    (tmp_path / "config.toml").write_text("typo_key = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="typo_key"):
        load_settings(tmp_path)
    (tmp_path / "config.toml").write_text("not toml [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="TOML"):
        load_settings(tmp_path)


def test_public_dict_masks_secrets(tmp_path: Path) -> None:
    s = load_settings(tmp_path, relational_url="postgresql://me:hunter2@db/memos", vector_api_key="k")
    shown = s.public_dict()
    assert "hunter2" not in str(shown) and shown["vector_api_key"] == "***"


def test_registries_list_builtin_backends() -> None:
    from memos import registry

    assert {"qdrant_edge", "qdrant"} <= set(registry.available("memos.vector_indexes"))
    assert "sentence_transformers" in registry.available("memos.embedders")
    with pytest.raises(ConfigError, match="available"):
        registry.load("memos.vector_indexes", "nope")


def test_embed_batch_size_defaults_to_the_device_and_can_be_set() -> None:
    """Unset, the embedders run batches of 16 texts on the CPU (fastest there) and 64 on a
    GPU; a configured size reaches whichever backend is built (models load lazily)."""
    from memos.adapters.embedders.onnx_embedder import OnnxEmbedder
    from memos.adapters.embedders.sentence_transformers import SentenceTransformerEmbedder
    from memos.factories import make_embedder

    assert SentenceTransformerEmbedder().batch_size == 16
    assert SentenceTransformerEmbedder(device="cuda").batch_size == 64
    assert OnnxEmbedder().batch_size == 16
    for backend in ("torch", "onnx-int8"):
        assert make_embedder(Settings(embedder_backend=backend)).batch_size == 16  # type: ignore[attr-defined]
        configured = Settings(embedder_backend=backend, embed_batch_size=8)
        assert make_embedder(configured).batch_size == 8  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        Settings(embed_batch_size=0)


def test_input_limits_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounds add puts on metadata and tags: defaults, MEMOS_* env, config.toml."""
    from memos.config import Limits

    assert load_settings(tmp_path).limits == Limits() == Limits(65_536, 20, 100, 100)
    (tmp_path / "config.toml").write_text("max_tags = 7\nmax_tag_chars = 30\n", encoding="utf-8")
    monkeypatch.setenv("MEMOS_MAX_METADATA_BYTES", "1000")
    monkeypatch.setenv("MEMOS_MAX_METADATA_DEPTH", "4")
    assert load_settings(tmp_path).limits == Limits(
        metadata_bytes=1000, metadata_depth=4, tags=7, tag_chars=30
    )
    monkeypatch.setenv("MEMOS_MAX_METADATA_DEPTH", "0")
    with pytest.raises(ConfigError, match="max_metadata_depth"):
        load_settings(tmp_path)


def test_the_facade_is_importable_from_the_package_lazily() -> None:
    code = (
        "import sys, memos; assert 'memos.core' not in sys.modules, 'import memos loaded the facade';"
        "from memos import MemOS, AsyncMemOS, Settings, MemosError, NotFound;"
        "import memos.core, memos.aio, memos.config, memos.errors;"
        "assert MemOS is memos.core.MemOS and AsyncMemOS is memos.aio.AsyncMemOS;"
        "assert Settings is memos.config.Settings and NotFound is memos.errors.NotFound;"
        "assert issubclass(NotFound, MemosError); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    import memos

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        memos.Nope  # noqa: B018
