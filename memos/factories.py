"""Builds the backends a home is configured with: lock, embedder, vector index, extractor.

The only place that reads backend names out of the settings; everything else receives
the objects it needs.
"""

from __future__ import annotations

import logging

from sqlalchemy import update

from memos import registry
from memos.config import DEFAULT_EMBEDDER, Settings
from memos.errors import ConfigError
from memos.lock import HomeLock
from memos.plaintext.sealing import SealedIndex, new_key
from memos.protocols import Embedder, Runtime, VectorIndex
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import MemoryRow, MetaRow

log = logging.getLogger(__name__)

#: dimensions of bundled embedders, so opening a home need not load the model
KNOWN_DIMS = {
    f"sentence-transformers:{DEFAULT_EMBEDDER}": 384,
    f"onnx-int8:{DEFAULT_EMBEDDER}": 384,
    f"onnx-fp32:{DEFAULT_EMBEDDER}": 384,
}


def lock_home(settings: Settings) -> HomeLock | None:
    """Take the home's process lock when it holds single-process stores."""
    settings.home.mkdir(parents=True, exist_ok=True)
    if not settings.embedded:
        return None
    lock = HomeLock(settings.home)
    lock.acquire()
    return lock


#: embedder id prefix (as recorded with a home's index) -> backend
_RECORDED_BACKENDS = {"sentence-transformers": "torch", "onnx-fp32": "onnx", "onnx-int8": "onnx-int8"}


def default_backend(settings: Settings) -> str:
    """The embedder backend of a new home when none is configured.

    ``onnx-int8`` for the bundled model on the CPU: on LoCoMo within half a point of torch
    (BENCHMARKS.md), about twice its rate on 2 cores and no torch in the process at run
    time; the graph is exported from the bundled weights once per machine. ``torch``
    for any other model (its int8 quality is unmeasured), on a GPU, or where ONNX
    Runtime is not installed.
    """
    from memos.adapters.embedders.onnx_export import is_onnxruntime_available

    bundled = settings.embedder.removeprefix("sentence-transformers/") == DEFAULT_EMBEDDER
    if bundled and settings.embedder_device == "cpu" and is_onnxruntime_available():
        return "onnx-int8"
    return "torch"


def embedder_backend(settings: Settings, store: RelationalStore) -> str:
    """The backend to embed with: the configured one, else the one the home's index was
    built with (a home opens as it was built, whatever the default has become since),
    else :func:`default_backend`."""
    if settings.embedder_backend is not None:
        return settings.embedder_backend
    with store.session() as s:
        meta = s.get(MetaRow, "index")
        recorded = str((meta.value or {}).get("embedder", "")) if meta is not None else ""
    return _RECORDED_BACKENDS.get(recorded.split(":", 1)[0]) or default_backend(settings)


def make_embedder(settings: Settings) -> Embedder:
    backend = settings.embedder_backend or default_backend(settings)
    values: dict[str, object] = {
        "model": settings.embedder,
        "device": settings.embedder_device,
        "batch_size": settings.embed_batch_size,
        "threads": settings.embedder_threads,
    }
    if backend == "torch":
        name = "sentence_transformers"
    else:
        name = "onnx"
        values.update(
            precision="int8" if backend == "onnx-int8" else "fp32", cache_dir=settings.embedder_cache_dir
        )
    cls = registry.load("memos.embedders", name)
    embedder: Embedder = cls(**registry.configure("memos.embedders", name, values))
    return embedder


def make_extractor(name: str):  # type: ignore[no-untyped-def]
    if name == "none":
        return None
    if name in ("rules", "llm"):
        # with "llm" the rules still run inline in add(); the LLM reader runs after commit
        from memos.extract.rules import RuleExtractor

        return RuleExtractor()
    raise ConfigError(f"unknown extractor {name!r}; use 'rules', 'llm' or 'none'")


def _dim(embedder: Embedder) -> int:
    return KNOWN_DIMS.get(embedder.id) or embedder.dim


def make_index(settings: Settings, dim: int) -> VectorIndex:
    """The vector-index backend serving ``settings.vector_url``
    (:data:`memos.storage.vector.URL_FORMS`), built from its own settings model: a
    ``vector_*`` setting that backend does not take is refused, naming it."""
    from memos.storage.vector import backend_for

    url = settings.vector_url
    name = backend_for(url)
    if name is None:
        raise ConfigError(
            f"vector_url {url!r} not understood; use qdrant://host:port, http(s)://…, ':memory:' "
            "or qdrant-local:PATH (or leave it unset for the embedded Qdrant Edge)"
        )
    given = {
        key: getattr(settings, f"vector_{key}")
        for key in _VECTOR_KEYS
        if f"vector_{key}" in settings.model_fields_set and getattr(settings, f"vector_{key}") is not None
    }
    if url is not None:
        given["url"] = url
    cls = registry.load("memos.vector_indexes", name)
    values = registry.configure(
        "memos.vector_indexes", name, given, keys={k: f"vector_{k}" for k in _VECTOR_KEYS}
    )
    index: VectorIndex = cls.from_settings(cls.Settings(**values), dim, settings.home)
    return index


#: the user's ``vector_*`` settings, as a vector backend's settings model names them
_VECTOR_KEYS = ("url", "api_key", "collection")


def open_index(settings: Settings, store: RelationalStore, embedder: Embedder) -> VectorIndex:
    """Open the configured vector index, checking it was built by the same embedder."""
    with store.session() as s:
        meta = s.get(MetaRow, "index")
        recorded = dict(meta.value) if meta is not None else None
    target = str(settings.home / "index") if settings.vector_url is None else settings.vector_collection
    rebuild = False
    if recorded and recorded.get("embedder") != embedder.id:
        if settings.vector_url is None:
            fresh_target = not (settings.home / "index").exists()
        else:
            fresh_target = recorded.get("target") != target
        if not fresh_target:
            where = (
                f"remove the index folder {settings.home / 'index'}"
                if settings.vector_url is None
                else "set a new vector_collection"
            )
            raise ConfigError(
                f"this home's vector index was built with {recorded.get('embedder')} but the configured embedder "
                f"is {embedder.id}. Set the embedder back, or {where} and open the home again: memos then "
                "re-embeds every memory from its text."
            )
        rebuild = True  # a new, empty index for a new embedder: embed every row again
    dim = int(recorded["dim"]) if recorded and not rebuild else _dim(embedder)
    index = make_index(settings, dim)
    key = recorded.get("payload_key") if recorded and not rebuild else None
    if recorded is None or rebuild:
        key = new_key()  # a new index is sealed from its first point (memos.plaintext.sealing)
        with store.session() as s:
            s.merge(
                MetaRow(
                    key="index",
                    value={
                        "embedder": embedder.id,
                        "dim": dim,
                        "backend": index.name,
                        "target": target,
                        "payload_key": key,
                    },
                )
            )
            if rebuild:
                s.execute(update(MemoryRow).values(index_state="pending"))
        log.info("vector index at %s will be (re)built with %s", target, embedder.id)
    elif key is None:
        log.info("the vector index at %s keeps payloads in clear; `memos reindex` seals them", target)
    return SealedIndex(index, key)


def make_runtime(settings: Settings, name: str | None = None, **overrides: object) -> Runtime:
    """Load the configured model runtime (``settings.runtime``), or another by ``name``.

    The runtime's own settings model takes the ``[runtime]`` values it declares (another
    runtime than the configured one ignores those meant for the configured one) and every
    override, which it must know."""
    cfg = settings.runtime
    runtime_name = name or cfg.name
    cls = registry.load("memos.runtimes", runtime_name)
    given = {k: v for k, v in overrides.items() if v is not None}
    model = registry.settings_model("memos.runtimes", runtime_name)
    if model is None:  # a plugin without a settings model gets the documented values, as before
        values = {k: v for k, v in cfg.backend_values().items() if k in _PLAIN_RUNTIME_ARGS}
    else:
        values = cfg.backend_values(fields=model.model_fields)
    kwargs = registry.configure("memos.runtimes", runtime_name, {**values, **given})
    runtime: Runtime = cls(**kwargs)
    return runtime


#: what every runtime was built with before runtimes had settings models (plugins still are)
_PLAIN_RUNTIME_ARGS = frozenset(
    {"model", "device", "dtype", "threads", "gpu_layers", "context_tokens", "base_url", "api_key", "timeout_s",
     "cache_dir", "seed"}
)  # fmt: skip
