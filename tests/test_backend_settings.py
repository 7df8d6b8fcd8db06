"""Each backend validates its own settings: a setting it does not take — misspelt, or
meant for another backend — is refused naming the field and the backend, from the SDK,
the CLI and the environment alike; the documented keys keep working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from memos import registry
from memos.cli import app
from memos.config import Settings, load_settings
from memos.errors import ConfigError

RUNNER = CliRunner()


def _toml(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")
    return home


@pytest.mark.parametrize(
    ("table", "field", "backend"),
    [
        ('name = "llama_cpp"\ngpu_layer = 1', "gpu_layer", "llama_cpp"),  # misspelt
        ('name = "transformers"\ngpu_layers = -1', "gpu_layers", "transformers"),  # another runtime's
        ('name = "openai"\nbase_url = "http://127.0.0.1:1/v1"\ndtype = "float16"', "dtype", "openai"),
        ('devcie = "cuda"', "devcie", "transformers"),  # the default runtime
    ],
)
def test_a_runtime_setting_the_runtime_does_not_take_is_refused(
    tmp_path: Path, table: str, field: str, backend: str
) -> None:
    home = _toml(tmp_path / "h", f"[runtime]\n{table}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(home)
    assert f"'{field}' is not a setting of the {backend} runtime" in str(err.value)


def test_a_misspelt_runtime_setting_is_refused_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMOS_RUNTIME__NAME", "llama_cpp")
    monkeypatch.setenv("MEMOS_RUNTIME__GPU_LAYRES", "-1")
    with pytest.raises(ConfigError, match="'gpu_layres' is not a setting of the llama_cpp runtime"):
        load_settings(tmp_path)


def test_the_cli_refuses_a_misspelt_runtime_setting_in_one_line(tmp_path: Path) -> None:
    home = _toml(tmp_path / "h", '[runtime]\nname = "llama_cpp"\ngpu_layer = 1\n')
    result = RUNNER.invoke(app, ["config", "show"], env={"MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert result.exit_code != 0
    out = result.stdout + result.stderr
    assert "gpu_layer" in out and "llama_cpp" in out and "Traceback" not in out


def test_documented_runtime_keys_keep_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _toml(
        tmp_path / "h", '[runtime]\nname = "llama_cpp"\ngpu_layers = -1\nthreads = 2\nmax_new_tokens = 16\n'
    )
    s = load_settings(home)
    assert (s.runtime.name, s.runtime.gpu_layers, s.runtime.threads, s.runtime.max_new_tokens) == (
        "llama_cpp",
        -1,
        2,
        16,
    )
    shown = s.public_dict()["runtime"]
    assert shown["gpu_layers"] == -1 and shown["threads"] == 2
    monkeypatch.setenv("MEMOS_RUNTIME__NAME", "llama_cpp")
    monkeypatch.setenv("MEMOS_RUNTIME__GPU_LAYERS", "-1")
    assert load_settings(tmp_path / "other").runtime.gpu_layers == -1
    monkeypatch.delenv("MEMOS_RUNTIME__NAME")
    monkeypatch.delenv("MEMOS_RUNTIME__GPU_LAYERS")
    # the kernel's own runtime settings (sampling, the reader's timeout) go with any runtime
    _toml(home, '[runtime]\nname = "transformers"\nseed = 3\ntimeout_s = 5\ntemperature = 0.5\n')
    assert load_settings(home).runtime.timeout_s == 5


def test_a_runtime_override_the_runtime_does_not_take_is_refused_before_loading() -> None:
    from memos.factories import make_runtime

    with pytest.raises(ConfigError, match="'gpu_layers' is not a setting of the openai runtime"):
        make_runtime(Settings(), "openai", base_url="http://127.0.0.1:1/v1", gpu_layers=2)
    with pytest.raises(ConfigError, match="'threads' of the llama_cpp runtime"):
        make_runtime(Settings(), "llama_cpp", threads=0)


def test_another_runtime_by_name_ignores_the_configured_runtimes_own_settings(tmp_path: Path) -> None:
    """`mos.runtime("openai", …)` on a home configured for llama.cpp: the llama.cpp keys
    are not the openai runtime's business (only overrides must be its own)."""
    from memos.factories import make_runtime

    s = load_settings(tmp_path, runtime={"name": "llama_cpp", "gpu_layers": -1})
    rt = make_runtime(s, "openai", base_url="http://127.0.0.1:1/v1", model="m")
    try:
        assert rt.name == "openai" and rt.context_length == s.runtime.context_tokens
    finally:
        rt.close()


def _vector_home(tmp_path: Path, embedder: Any, **settings: Any) -> Any:
    from memos.core import MemOS

    return MemOS(home=tmp_path / "h", embedder=embedder, **settings)


def test_a_vector_setting_the_index_does_not_take_is_refused_on_open(tmp_path: Path, embedder: Any) -> None:
    """An API key without a vector_url would silently open the embedded index."""
    with pytest.raises(
        ConfigError, match="'vector_api_key' is not a setting of the qdrant_edge vector index"
    ):
        _vector_home(tmp_path, embedder, vector_api_key="secret")


def test_the_cli_refuses_a_vector_setting_the_index_does_not_take(tmp_path: Path) -> None:
    env = {"MEMOS_HOME": str(tmp_path / "h"), "HF_HUB_OFFLINE": "1", "MEMOS_VECTOR_COLLECTION": "mine"}
    result = RUNNER.invoke(app, ["init"], env=env)
    assert result.exit_code != 0
    out = result.stdout + result.stderr
    assert "'vector_collection' is not a setting of the qdrant_edge vector index" in out
    assert "Traceback" not in out


def test_a_misspelt_vector_setting_is_refused(tmp_path: Path) -> None:
    home = _toml(tmp_path / "h", 'vector_colection = "x"\n')
    with pytest.raises(ConfigError, match="vector_colection"):
        load_settings(home)


def test_vector_settings_reach_the_server_backend(tmp_path: Path, embedder: Any) -> None:
    mos = _vector_home(tmp_path, embedder, vector_url=":memory:", vector_collection="mine")
    try:
        assert mos.index.name == "qdrant" and mos.index.collection == "mine"
    finally:
        mos.close()


@pytest.mark.parametrize("group", ["memos.runtimes", "memos.vector_indexes", "memos.embedders"])
def test_every_builtin_backend_brings_a_settings_model_that_forbids_unknown_fields(group: str) -> None:
    for name in registry.available(group):
        model = registry.settings_model(group, name)
        assert model is not None and issubclass(model, BaseModel), name
        with pytest.raises(ValidationError):
            model.model_validate({"no_such_setting": 1})
        with pytest.raises(ConfigError, match=f"'no_such_setting' is not a setting of the {name} "):
            registry.configure(group, name, {"no_such_setting": 1})


def test_vector_url_forms_choose_the_backend() -> None:
    from memos.storage.vector import backend_for

    assert backend_for(None) == "qdrant_edge"
    for url in (":memory:", "qdrant-local:/tmp/x", "qdrant://h:6333", "http://h:6333", "https://cloud"):
        assert backend_for(url) == "qdrant", url
    assert backend_for("redis://h") is None and backend_for(":memory:x") is None
