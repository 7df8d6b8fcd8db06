"""One settings object, resolved once and passed down.

Precedence, highest first: explicit arguments, ``MEMOS_*`` environment variables,
``$MEMOS_HOME/config.toml``, defaults. ``MEMOS_HOME`` itself comes from the argument or
the environment (default ``~/.memos``) because it says where the TOML file lives.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from memos import registry
from memos.errors import ConfigError
from memos.policies.base import Duration

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one memory carries besides its text, as ``add`` enforces them (and
    import, row by row). The defaults are the settings' defaults (``max_metadata_bytes``, …)."""

    #: the metadata as UTF-8 JSON: an annotation, not a second text
    metadata_bytes: int = 64 * 1024
    #: levels of nested objects and lists; 20, like Elasticsearch's mapping depth limit
    metadata_depth: int = 20
    tags: int = 100
    tag_chars: int = 100


_LIMITS = Limits()


class SearchSettings(BaseModel):
    """Weights and depths of the hybrid retrieval (see :mod:`memos.plaintext.retrieval.retriever`).

    The defaults were chosen on the LoCoMo development set (BENCHMARKS.md): the path
    weights, the three boosts and the context window are the only values fitted there,
    all rounded, none specific to a conversation.
    """

    model_config = ConfigDict(extra="forbid")

    candidates: int = Field(100, ge=1, le=2000, description="candidates fetched per path")
    fusion: Literal["score", "rrf"] = Field(
        "score",
        description="score: each path's scores min-max normalised over its candidates, then a "
        "weighted sum; rrf: weighted reciprocal rank fusion, w / (rrf_k + rank)",
    )
    rrf_k: float = Field(60.0, gt=0, description="rank offset of reciprocal rank fusion")
    weight_dense: float = Field(0.3, ge=0)
    weight_lexical: float = Field(0.7, ge=0)
    dense_window: float = Field(
        0.3,
        gt=0,
        le=2,
        description="cosines more than this below the best dense candidate count as no evidence "
        "(score fusion: the floor of the dense path's rescaling, so a small cube's spread is not blown up)",
    )
    weight_graph: float = Field(
        0.0, ge=0, description="entity-graph path; off by default: it did not help on LoCoMo (BENCHMARKS.md)"
    )
    weight_recency: float = Field(0.02, ge=0)
    weight_importance: float = Field(0.02, ge=0)
    recency_half_life_days: float = Field(90.0, gt=0)
    graph_expansion: bool = True
    speaker_boost: float = Field(
        0.4, ge=0, description="extra share for a memory spoken by someone the query names"
    )
    time_boost: float = Field(
        0.5, ge=0, description="extra share for a memory from the time a query names ('in May 2023')"
    )
    time_slack_days: float = Field(
        7.0, ge=0, description="how long after that time a memory may still be about it"
    )
    context_window: int = Field(
        6, ge=0, le=50, description="turns either side within a session that lift each other"
    )
    context_weight: float = Field(
        0.4, ge=0, description="share of the best nearby turn's score a turn gains (0: off)"
    )
    access_flush_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="search hits (hits, last_accessed) are counted in memory and written at most this "
        "often, and before any read that returns them; 0 writes on every search",
    )
    access_depth: int = Field(
        5,
        ge=1,
        le=1000,
        description="a search counts as a use (hits, last_accessed) of the memories in its first N "
        "places only: deeper ones were offered, not used, and would make every memory look used",
    )


#: runtime settings the kernel itself reads (sampling, the reader's timeout) or every
#: runtime takes; the others belong to the chosen backend, which validates them
COMMON_RUNTIME_FIELDS = frozenset(
    {"name", "model", "context_tokens", "max_new_tokens", "temperature", "top_p", "seed", "timeout_s"}
)


class RuntimeSettings(BaseModel):
    """The language model that ``chat`` and the LLM extractor use (see :mod:`memos.runtime`).

    The fields below are the documented ones; the backend named by ``name`` validates
    those it takes with its own settings model (``Settings`` of the runtime class), so a
    setting it does not take — a typo, or one meant for another runtime — is refused
    naming the field and the runtime. A plugin's own settings go in the same table."""

    model_config = ConfigDict(extra="allow")

    name: str = Field("transformers", description="transformers | llama_cpp | openai (or a plugin's name)")
    model: str = Field(
        "smollm2-135m-instruct",
        description="bundled model (smollm2-135m-instruct, gemma3-270m), a local HF checkpoint "
        "directory, a .gguf file, or for openai the server's model name",
    )
    device: str = Field("auto", description="transformers: auto | cpu | cuda[:N]")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    threads: int | None = Field(None, ge=1, description="CPU threads (torch / llama.cpp)")
    gpu_layers: int = Field(0, ge=-1, description="llama_cpp: layers offloaded to the GPU (-1: all)")
    context_tokens: int = Field(2048, ge=256, description="context budget: prompt + answer")
    max_new_tokens: int = Field(192, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy (deterministic)")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    api_key: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    cache_dir: Path | None = Field(
        None, description="converted checkpoints and assembled GGUFs; default ~/.cache/memos/models"
    )

    @model_validator(mode="after")
    def _backend_takes_them(self) -> RuntimeSettings:
        from memos import registry

        if self.name in registry.available("memos.runtimes"):  # else loading it reports the name
            registry.configure("memos.runtimes", self.name, self.backend_values(set_only=True))
        return self

    def backend_values(
        self, *, set_only: bool = False, fields: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The settings meant for the backend: with ``set_only``, those given explicitly
        (besides the common ones); with ``fields``, those among them (defaults included)."""
        extra = dict(self.model_extra or {})
        if set_only:
            given = self.model_fields_set - COMMON_RUNTIME_FIELDS - set(extra)
            return {**{k: getattr(self, k) for k in given}, **extra}
        values = {**{k: getattr(self, k) for k in type(self).model_fields}, **extra}
        return {k: v for k, v in values.items() if fields is None or k in fields}


class ChatSettings(BaseModel):
    """How ``chat`` assembles its prompt and writes the exchange back."""

    model_config = ConfigDict(extra="forbid")

    memories: int = Field(8, ge=0, le=100, description="retrieved memories offered to the prompt")
    min_score: float = Field(0.0, ge=0, description="drop retrieved memories scoring below this")
    history_turns: int = Field(8, ge=0, le=200, description="recent turns of the session offered")
    recall_assistant_turns: bool = Field(
        False,
        description="offer the model's own earlier answers as memories (they stay in the session "
        "history either way); off: a small model's mistakes should not become its memories",
    )
    system_prompt: str = Field(
        "You are a helpful assistant with a long-term memory, talking with {user}. Use the "
        "memories when they are relevant; do not invent facts.",
        description="{user} becomes the user's name",
    )
    write_back: bool = True
    activation: bool = Field(
        True, description="use the cube's compiled KV prefix (activation memory) when one is ready"
    )
    reader_max_tokens: int = Field(400, ge=1, description="token budget of the LLM reader's JSON answer")
    parametric: bool = Field(True, description="apply the cubes' active LoRA adapters (parametric memory)")
    max_adapters: int = Field(
        2, ge=0, le=8, description="at most this many cubes' adapters are stacked in one chat"
    )


class ParametricSettings(BaseModel):
    """Consolidation into LoRA adapters (parametric memory) and its gate."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(32, ge=1, le=256)
    alpha: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, lt=1)
    epochs: int = Field(
        4, ge=1, le=100, description="at most; early stopping on validation recall and anchor-text drift"
    )
    batch_size: int = Field(16, ge=1, le=512)
    seed: int = 0
    max_ppl_increase: float = Field(
        0.05, ge=0, description="the gate: general-text perplexity may rise at most this fraction"
    )


class SchedulerSettings(BaseModel):
    """The job scheduler (:mod:`memos.scheduler`): where jobs run, how they are leased and retried.

    ``MemOS(..., scheduler="background")`` is short for ``{"mode": "background"}``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "background"] = Field(
        "off",
        description="off: jobs run in `memos scheduler run` workers; background: also in a thread of "
        "each MemOS of this home, stopped on close",
    )
    lease_seconds: float = Field(60.0, gt=0, description="a claim's lease; the worker extends it every third")
    poll_seconds: float = Field(2.0, gt=0, description="how often an idle worker looks for due jobs")
    max_attempts: int = Field(5, ge=1, description="claims of a job before it is failed for good")
    backoff_seconds: float = Field(
        5.0, gt=0, description="delay before the first retry; doubles per attempt, at most 10 minutes"
    )
    policy_interval: Duration | None = Field(
        None,
        description="run each cube's policies this often (workers queue policy.apply: 1h, 30m); "
        "none: only when asked (memos policy apply)",
    )
    blob_sweep_interval: Duration | None = Field(
        timedelta(days=1),
        description="remove blob files no row names this often (workers queue maintenance.sweep_blobs); "
        '"off": only at an unclean reopen and when asked (memos sweep-blobs)',
    )
    blob_sweep_grace: Duration = Field(
        timedelta(hours=1),
        description="a sweep takes only files this old (by mtime): a younger one may be a write "
        "whose row has not committed; more than the longest compile or training write",
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_only(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @field_validator("blob_sweep_interval", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        """TOML has no null: ``"off"`` turns the scheduled sweep off."""
        return None if value == "off" else value


class Settings(BaseSettings):
    """Resolved configuration of one memos home."""

    model_config = SettingsConfigDict(
        env_prefix="MEMOS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(default_factory=lambda: Path("~/.memos").expanduser())
    relational_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite (WAL) file memos.db in the home"
    )
    vector_url: str | None = Field(
        None,
        description="None: embedded Qdrant Edge in the home; qdrant://host:port or http(s)://… "
        "for a Qdrant server; ':memory:' or qdrant-local:PATH for qdrant-client's in-process mode",
    )
    vector_api_key: str | None = None
    vector_collection: str = "memos"
    embedder: str = Field(DEFAULT_EMBEDDER, description="bundled model name or sentence-transformers path")
    embedder_device: str = "cpu"
    embedder_backend: Literal["torch", "onnx", "onnx-int8"] | None = Field(
        None,
        description="torch (any model, GPU); onnx (the same vectors, faster on CPU); onnx-int8 (fastest "
        "on CPU; on LoCoMo within 0.4 point of torch, BENCHMARKS.md). Unset: the backend the home's "
        "index was built with; for a new home onnx-int8 with the bundled model on the CPU, else torch",
    )
    embedder_threads: int | None = Field(None, ge=1, description="CPU threads for the embedder")
    embedder_cache_dir: Path | None = Field(None, description="where ONNX exports are cached")
    embed_batch_size: int | None = Field(
        None, ge=1, description="texts per forward pass; unset: 16 on the CPU (fastest there), 64 on a GPU"
    )
    extractor: Literal["rules", "llm", "none"] = Field(
        "rules", description="rules (no model); llm (the runtime, schema-constrained; rules on failure); none"
    )
    index_optimize_every: int = Field(
        100_000,
        ge=0,
        description="build the embedded index's search structures (HNSW) after this many new points, "
        "in the add that reaches it: rounds keep the optimize's peak memory and each add's pause bounded "
        "(about a minute per 100k points on 2 cores); 0: only when asked (memos reindex, MemOS.optimize_index)",
    )
    max_text_chars: int = Field(32_000, ge=1)
    max_messages_per_add: int = Field(10_000, ge=1)
    max_metadata_bytes: int = Field(
        _LIMITS.metadata_bytes, ge=2, description="a memory's metadata, as UTF-8 JSON, in bytes"
    )
    max_metadata_depth: int = Field(
        _LIMITS.metadata_depth, ge=1, description="levels of nested objects and lists in metadata"
    )
    max_tags: int = Field(_LIMITS.tags, ge=0, description="tags on one memory")
    max_tag_chars: int = Field(_LIMITS.tag_chars, ge=1, description="characters in one tag")
    archive_max_member_bytes: int = Field(2 * 1024**3, ge=1)
    search: SearchSettings = Field(default_factory=lambda: SearchSettings())
    runtime: RuntimeSettings = Field(default_factory=lambda: RuntimeSettings())
    chat: ChatSettings = Field(default_factory=lambda: ChatSettings())
    parametric: ParametricSettings = Field(default_factory=lambda: ParametricSettings())
    scheduler: SchedulerSettings = Field(default_factory=lambda: SchedulerSettings())
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="[policies.<name>]: each policy's settings (memos.policies; a cube's owner "
        "overrides them per cube with `memos policy set`)",
    )

    @field_validator("policies")
    @classmethod
    def _policies_known(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # each against its policy's settings model (unknown policy or field: an error naming
        # both); kept as written, the durations too ("30d"), for merging with cube overrides
        for name, values in value.items():
            registry.configure("memos.policies", name, values)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # config.toml is merged by load_settings(), which knows the home; no dotenv files.
        return (init_settings, env_settings)

    # ------------------------------------------------------------------ derived
    @property
    def sqlite_path(self) -> Path | None:
        if self.relational_url is None:
            return self.home / "memos.db"
        if self.relational_url.startswith("sqlite:///"):
            return Path(self.relational_url.removeprefix("sqlite:///"))
        return None

    @property
    def resolved_relational_url(self) -> str:
        if self.relational_url is None:
            return f"sqlite:///{self.home / 'memos.db'}"
        return self.relational_url

    @property
    def limits(self) -> Limits:
        """The bounds ``add``, ``update`` and import put on metadata and tags."""
        return Limits(self.max_metadata_bytes, self.max_metadata_depth, self.max_tags, self.max_tag_chars)

    @property
    def embedded(self) -> bool:
        """True when this process owns files in the home that only one process may open."""
        return self.vector_url is None or self.sqlite_path is not None

    def public_dict(self) -> dict[str, Any]:
        """The resolved configuration with secrets masked (for ``memos config show``)."""
        data = self.model_dump(mode="json")
        data["relational_url"] = _mask_url(self.resolved_relational_url)
        data["vector_url"] = self.vector_url or f"qdrant-edge:{self.home / 'index'}"
        if data.get("vector_api_key"):
            data["vector_api_key"] = "***"
        if data["runtime"].get("api_key"):
            data["runtime"]["api_key"] = "***"
        return data


def _mask_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def load_settings(home: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve the settings: arguments > ``MEMOS_*`` env > ``config.toml`` > defaults."""
    home_path = Path(home or os.environ.get("MEMOS_HOME") or "~/.memos").expanduser().resolve()
    file_values: dict[str, Any] = {}
    toml_path = home_path / "config.toml"
    if toml_path.is_file():
        try:
            file_values = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path} is not valid TOML: {exc}") from exc
        file_values.pop("home", None)
    env_keys = {k[len("MEMOS_") :].lower().split("__")[0] for k in os.environ if k.startswith("MEMOS_")}
    # Environment beats the file: drop file values the environment sets.
    for key in list(file_values):
        if key in env_keys:
            file_values.pop(key)
    explicit = {k: v for k, v in overrides.items() if v is not None}
    merged = {**file_values, **explicit, "home": home_path}
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid memos configuration ({toml_path}): {problems}") from exc
