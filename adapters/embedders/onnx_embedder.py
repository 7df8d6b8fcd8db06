"""Embedder on ONNX Runtime: a sentence-transformers model exported once, run without torch.

The first use exports the model into a cache directory (see
:mod:`memos.adapters.embedders.onnx_export`); every later process loads the cached graph
with ``onnxruntime`` and ``tokenizers`` only (0.2 s and ~110 MB instead of torch's 5 s and
~500 MB). On an idle 2-core CPU, short chat turns embed at about 1.2x the torch rate in fp32
(same vectors) and 1.8x in int8; with busy cores, 1.8x and 3x.

``precision="int8"`` quantizes weights per channel and activations per batch, so its
vectors differ slightly from fp32 (mean cosine 0.99) and a text's vector depends a little
on the batch it is embedded in. It has its own :attr:`OnnxEmbedder.id`, so an index never
mixes int8 and fp32 vectors.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from memos.adapters.embedders.onnx_export import (
    EXTRA_HINT,
    PRECISIONS,
    OnnxSession,
    Precision,
    default_cache_dir,
    ensure_exported,
    entry_dir,
    is_onnxruntime_available,
    read_meta,
)
from memos.adapters.embedders.sentence_transformers import CPU_BATCH_SIZE, resolve_model_path
from memos.errors import ConfigError, DependencyMissing

log = logging.getLogger(__name__)


class OnnxSettings(BaseModel):
    """What the ``onnx`` embedder is built with (the ``embedder*`` settings; ``precision``
    from ``embedder_backend``); its own checks stay in the constructor."""

    model_config = ConfigDict(extra="forbid")

    model: str = "all-MiniLM-L6-v2"
    device: str = "cpu"
    batch_size: int | None = None
    precision: str = "int8"
    threads: int | None = None
    cache_dir: Path | None = None


class OnnxEmbedder:
    """Unit-normalised embeddings from a sentence-transformers model exported to ONNX.

    ``precision``: ``"fp32"`` (same vectors as torch, cosine > 0.9999) or ``"int8"``
    (dynamic per-channel quantization; faster, mean cosine to fp32 about 0.99).
    ``threads``: ONNX Runtime intra-op threads (None: one per physical core).
    ``cache_dir``: where exports are kept (None: :func:`default_cache_dir`).
    Only ``device="cpu"`` is supported; use the sentence_transformers embedder on a GPU.
    """

    Settings = OnnxSettings

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        batch_size: int | None = None,
        *,
        precision: Precision = "int8",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown ONNX precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if device != "cpu":
            raise ConfigError(f"the ONNX embedder runs on the CPU only (got device {device!r})")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1 (got {threads})")
        self.model_name = model
        self.device = device
        self.batch_size = batch_size or CPU_BATCH_SIZE
        self.precision: Precision = precision
        self.threads = threads
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.id = f"onnx-{precision}:{model.removeprefix('sentence-transformers/')}"
        self._session: OnnxSession | None = None
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, list[float]] = OrderedDict()
        self._query_lock = threading.Lock()

    @property
    def entry(self) -> Path:
        """The cache directory this embedder's export lives (or will live) in."""
        return entry_dir(self.model_name, resolve_model_path(self.model_name), self.precision, self.cache_dir)

    def _load(self) -> OnnxSession:
        with self._lock:
            if self._session is None:
                if not is_onnxruntime_available():
                    raise DependencyMissing(f"the ONNX embedder needs onnxruntime: {EXTRA_HINT}")
                path = resolve_model_path(self.model_name)
                entry = ensure_exported(self.model_name, path, self.precision, self.cache_dir)
                meta = read_meta(entry)
                assert meta is not None
                self._session = OnnxSession(entry, meta, self.threads)
            return self._session

    @property
    def dim(self) -> int:
        if self._session is None:
            meta = read_meta(self.entry)  # a warm cache answers without loading the graph
            if meta is not None:
                return int(meta["dim"])
        return self._load().dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors: list[list[float]] = self._load().embed(texts, self.batch_size).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        # Applications repeat queries (chat turns, benchmarks); a small LRU saves a forward pass.
        with self._query_lock:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
                return cached
        vector = self.embed([text])[0]
        with self._query_lock:
            self._query_cache[text] = vector
            if len(self._query_cache) > 1024:
                self._query_cache.popitem(last=False)
        return vector
