"""The ``transformers`` runtime: torch on CPU, or CUDA when present.

Generation is a plain decode loop over the model's own cache object (the model builds the
right cache class for its architecture: a dynamic cache for a Llama such as SmolLM2,
sliding-window and full-attention layers for Gemma 3), so the time to the first token is
measured exactly and a KV prefix can be handed in and out.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from memos import weights as bundled
from memos.adapters.runtimes.hf.batch import greedy_batches
from memos.adapters.runtimes.hf.config import TransformersSettings
from memos.adapters.runtimes.local import LocalRuntime, check_prefix, check_prefix_adapters
from memos.errors import DependencyMissing, FingerprintMismatch, InvalidInput, ModelError
from memos.runtime import Fingerprint, GenerationParams, RuntimeInfo, safetensors_metadata

_DTYPES = {"float32", "bfloat16", "float16"}
KV_FORMAT = "memos-kv/transformers/1"


@dataclass(frozen=True, eq=False)
class HFLora:
    """A LoRA adapter loaded for the transformers runtime: per adapted module, (A, B) on the
    model's device, and peft's scale ``alpha / rank``."""

    key: str  # sha256 of the adapter file
    modules: dict[str, tuple[Any, Any]]
    scale: float


ADAPTER_FORMAT = "memos-lora/peft/1"


@dataclass(frozen=True)
class HFPrefix:
    """A KV prefix loaded for the transformers runtime (tensors on the model's device);
    ``adapters``: the keys of the LoRA adapters it was computed under."""

    token_ids: tuple[int, ...]
    kv: list[tuple[Any, Any]]
    seq: list[int]
    adapters: tuple[str, ...] = ()


ATTENTION = "memos_sdpa"


def _drop_cache_rename_notice(record: logging.LogRecord) -> bool:
    return "Use `cache` instead" not in record.getMessage()


def _quiet_cache_rename() -> None:
    """Silence transformers 5's notices of renamed names that we must keep using: the
    ``past_key_values`` argument, now ``cache`` (a FutureWarning on every forward call of
    a chat and a log line), and ``is_gradient_checkpointing``, read by peft when a LoRA
    adapter is trained. The old names are the ones every supported version (>= 4.56)
    takes, and users of memos can do nothing about them. Only these messages are dropped;
    other warnings, ours included, still show."""
    for name in ("past_key_values", "is_gradient_checkpointing"):
        warnings.filterwarnings("ignore", message=rf"`{name}` is deprecated", category=FutureWarning)
    logging.getLogger("transformers.utils.generic").addFilter(_drop_cache_rename_notice)  # added once


def _register_attention() -> str:
    """Register :func:`_sdpa_gqa` with transformers (idempotent) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, _sdpa_gqa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    return ATTENTION


def _sdpa_gqa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' SDPA attention, except that on the CPU grouped-query attention runs inside
    the kernel (``enable_gqa``) even under a mask.

    transformers copies every key/value head ``n_groups`` times (``repeat_kv``) whenever a mask
    is present, which is always the case when new tokens follow a cache: for SmolLM2 (9 query
    heads over 3 KV heads) a question after a 2k-token KV prefix spent a fifth of its time
    copying the prefix's keys and values. torch's CPU kernel reads the shared heads in place.
    Anything else (CUDA, position biases, soft-capping, paged caches) goes to transformers'
    own implementation unchanged.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1))
    special = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "cache")) or kwargs.get(
        "output_attentions", False
    )
    if query.device.type != "cpu" or groups == 1 or special:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_length:  # an empty static cache: attend to the filled part only
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


class TransformersRuntime(LocalRuntime):
    name = "transformers"
    Settings = TransformersSettings
    supports_kv_prefix = True
    supports_lora = True
    supports_kv_prefix_lora = True
    supports_training = True
    lora_format: ClassVar[str | None] = "safetensors"

    def __init__(
        self,
        model: str = bundled.DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        threads: int | None = None,
        context_tokens: int = 2048,
        cache_dir: Path | None = None,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - torch is a core dependency
            raise DependencyMissing("the transformers runtime needs torch and transformers") from exc
        hf_logging.disable_progress_bar()  # a library draws no progress bars on its users' terminals
        _quiet_cache_rename()
        if dtype == "auto":
            dtype = "float32"
        if dtype not in _DTYPES:
            raise InvalidInput(f"dtype must be one of {', '.join(sorted(_DTYPES))} or auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model_name = bundled.canonical(model)
        self.path = bundled.hf_checkpoint(model, cache_dir)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
            self.model = AutoModelForCausalLM.from_pretrained(
                str(self.path), dtype=getattr(torch, dtype), attn_implementation=_register_attention()
            ).to(device)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one typed error
            raise ModelError(f"could not load {model!r} from {self.path}: {exc}") from exc
        self.model.eval()
        self.device = device
        self.dtype = dtype
        max_pos = int(getattr(self.model.config, "max_position_embeddings", context_tokens) or context_tokens)
        self._context = min(context_tokens, max_pos)
        weights, tok = bundled.checkpoint_hashes(self.path, cache_dir)
        self._fingerprint = Fingerprint(self.name, self.model_name, weights, dtype, tok)
        self._template = self.tokenizer.chat_template
        self._bos = self.tokenizer.bos_token or ""
        self._eos_text = self.tokenizer.eos_token or ""
        self._eos = self._eos_ids()
        self._prefix_type = HFPrefix
        self._adapter_type = HFLora
        self._adapters: dict[str, HFLora] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ identity
    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            fingerprint=self._fingerprint,
            context_length=self._context,
            chat_template=self._template is not None,
            device=self.device,
            capabilities=self.capabilities(),
        )

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        cfg = getattr(self.model, "generation_config", None)
        for source in (getattr(cfg, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list | tuple):
                ids.update(int(x) for x in source)
        if self._template is not None:
            # chat models end a turn with their end-of-turn token even when it is not the EOS
            for special in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
                tid = self.tokenizer.convert_tokens_to_ids(special)
                if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                    ids.add(tid)
        return ids

    # ------------------------------------------------------------------ text
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # ------------------------------------------------------------------ generation
    # ------------------------------------------------------------------ KV prefixes
    def build_prefix(self, token_ids: Sequence[int], adapters: Sequence[HFLora] = ()) -> bytes:
        """The KV cache of ``token_ids``, computed with ``adapters`` attached (their keys are
        in the blob's metadata: the prefix serves only a generation under the same ones)."""
        from safetensors.torch import save

        ids = [int(x) for x in token_ids]
        if not ids or len(ids) >= self._context:
            raise InvalidInput(f"a KV prefix needs 1 to {self._context - 1} tokens, got {len(ids)}")
        adapters = self._prefix_adapters(adapters)
        torch = self._torch
        with self._lock, torch.inference_mode(), self._attached(adapters):
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1
            )
            cache = out.past_key_values
            tensors: dict[str, Any] = {}
            layers = []
            for i, layer in enumerate(cache.layers):
                tensors[f"k.{i}"] = layer.keys.detach().to("cpu").contiguous()
                tensors[f"v.{i}"] = layer.values.detach().to("cpu").contiguous()
                layers.append({"class": type(layer).__name__, "seq": int(layer.get_seq_length())})
        meta = {
            "format": KV_FORMAT,
            "fingerprint": self._fingerprint.key,
            "n_tokens": str(len(ids)),
            "layers": json.dumps(layers),
            "adapters": json.dumps([a.key for a in adapters]),
        }
        return bytes(save(tensors, metadata=meta))

    def load_prefix(self, data: bytes | Path, token_ids: Sequence[int]) -> HFPrefix:
        """A prefix from :meth:`build_prefix`'s bytes, or from its file: a file is memory-mapped
        and the tensors are views of the mapping (no copy; a private mapping, so nothing can
        write through to the file)."""
        import mmap

        from safetensors.torch import load

        buf: Any = data
        if isinstance(data, (str, Path)):
            with open(data, "rb") as fh:
                buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        n_header = int.from_bytes(bytes(buf[:8]), "little") if len(buf) >= 8 else 0
        meta = self._kv_metadata(bytes(buf[: 8 + n_header]), KV_FORMAT)
        ids = tuple(int(x) for x in token_ids)
        if int(meta["n_tokens"]) != len(ids):
            raise InvalidInput("the KV prefix and its token ids disagree in length")
        layers = json.loads(meta["layers"])
        from transformers import DynamicCache

        fresh = DynamicCache(config=self.model.config)
        expected = [type(layer).__name__ for layer in fresh.layers]
        if expected and expected != [layer["class"] for layer in layers]:
            raise FingerprintMismatch("the KV prefix's cache layers do not match this model's")
        tensors = load(buf) if isinstance(buf, bytes) else self._mapped_tensors(buf, n_header)
        kv = [
            (tensors[f"k.{i}"].to(self.device), tensors[f"v.{i}"].to(self.device)) for i in range(len(layers))
        ]
        adapters = tuple(str(k) for k in json.loads(meta.get("adapters", "[]")))
        return HFPrefix(ids, kv, [int(layer["seq"]) for layer in layers], adapters)

    def _mapped_tensors(self, buf: Any, n_header: int) -> dict[str, Any]:
        """Tensors viewing a memory-mapped safetensors file."""
        torch = self._torch
        dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
        header = json.loads(bytes(buf[8 : 8 + n_header]))
        out: dict[str, Any] = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if entry["dtype"] not in dtypes:
                raise InvalidInput(f"KV tensor {name} has an unexpected dtype {entry['dtype']}")
            dtype = dtypes[entry["dtype"]]
            start, end = entry["data_offsets"]
            size = torch.empty((), dtype=dtype).element_size()
            if end > len(buf) - 8 - n_header or (end - start) % size:
                raise InvalidInput("the KV prefix file is truncated")
            flat = torch.frombuffer(
                buf, dtype=dtype, count=(end - start) // size, offset=8 + n_header + start
            )
            out[name] = flat.view(entry["shape"])
        return out

    # ------------------------------------------------------------------ LoRA adapters
    def load_adapter(self, path: Path) -> HFLora:
        """A LoRA adapter saved by :mod:`memos.parametric` (peft tensor names, safetensors)."""
        import hashlib

        from safetensors import safe_open

        data = Path(path).read_bytes()
        key = hashlib.sha256(data).hexdigest()
        if key in self._adapters:
            return self._adapters[key]
        meta = safetensors_metadata(data)
        if meta.get("format") != ADAPTER_FORMAT:
            raise InvalidInput(f"{path} is not a memos LoRA adapter (format {meta.get('format')!r})")
        base = json.loads(meta.get("base", "{}"))
        mine = self._fingerprint.as_dict()
        if (base.get("model_id"), base.get("weights_sha256")) != (mine["model_id"], mine["weights_sha256"]):
            raise FingerprintMismatch(
                f"this adapter was trained for {base.get('model_id')} ({str(base.get('weights_sha256'))[:12]}), "
                f"not {mine['model_id']} ({mine['weights_sha256'][:12]})"
            )
        pairs: dict[str, dict[str, Any]] = {}
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                module, _, part = name.removeprefix("base_model.model.").rpartition(".lora_")
                pairs.setdefault(module, {})[part.split(".")[0]] = fh.get_tensor(name)
        dtype = getattr(self._torch, self.dtype)
        modules: dict[str, tuple[Any, Any]] = {}
        for module, ab in pairs.items():
            try:
                self.model.get_submodule(module)
            except AttributeError as exc:
                raise FingerprintMismatch(f"this model has no module {module} the adapter adapts") from exc
            modules[module] = (ab["A"].to(self.device, dtype), ab["B"].to(self.device, dtype))
        adapter = HFLora(key, modules, float(meta["alpha"]) / float(meta["rank"]))
        self._adapters[key] = adapter
        return adapter

    def _attach(self, adapters: Sequence[HFLora]) -> list[Any]:
        """Forward hooks adding each adapter's low-rank delta; the weights are never touched,
        so removing the hooks leaves the model exactly as it was."""
        import torch.nn.functional as F

        per_module: dict[str, list[tuple[Any, Any, float]]] = {}
        for adapter in adapters:
            for module, (a, b) in adapter.modules.items():
                per_module.setdefault(module, []).append((a, b, adapter.scale))
        handles = []
        for module, deltas in per_module.items():

            def hook(_mod: Any, args: tuple[Any, ...], out: Any, deltas: list[Any] = deltas) -> Any:
                x = args[0]
                for a, b, scale in deltas:
                    out = out + F.linear(F.linear(x, a), b) * scale
                return out

            handles.append(self.model.get_submodule(module).register_forward_hook(hook))
        return handles

    def generate_batch(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        adapters: Sequence[HFLora] = (),
        batch_size: int = 32,
    ) -> list[str]:
        """Greedy answers to rendered ``prompts``, batched (left-padded): for evaluations
        that ask a model hundreds of short questions. The same forward pass as
        :meth:`complete`, adapters attached the same way."""
        torch = self._torch
        with self._lock, torch.inference_mode(), self._attached(adapters):
            return self._generate_ids(
                self.model, [self.tokenize(p) for p in prompts], max_new_tokens, batch_size
            )

    @property
    def pad_token_id(self) -> int | None:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else None

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        model: Any | None = None,
        batch_size: int = 32,
    ) -> list[str]:
        """Greedy continuations of token-id prompts, batched, cut at the end of the turn;
        ``model`` is another module over this checkpoint (a LoRA being trained), on its
        own device; by default this runtime's model."""
        if model is None:
            with self._lock:
                return self._generate_ids(self.model, prompts, max_new_tokens, batch_size)
        return self._generate_ids(model, prompts, max_new_tokens, batch_size)

    def _generate_ids(
        self, model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int
    ) -> list[str]:
        device = next(model.parameters()).device
        answers = greedy_batches(model, prompts, max_new_tokens, set(self._eos), device, batch_size)
        return [self.detokenize(a).strip() for a in answers]

    def next_logits(
        self, token_ids: Sequence[int], prefix: HFPrefix | None = None, adapters: Sequence[HFLora] = ()
    ) -> Any:
        """The next-token logits after ``token_ids`` (float32, on the CPU), with or without a
        prefix or adapters."""
        torch = self._torch
        ids = [int(x) for x in token_ids]
        adapters = self._check_adapters(adapters)
        if prefix is not None:
            check_prefix_adapters(prefix, adapters)
        with self._lock, torch.inference_mode(), self._attached(adapters):
            return self._next_logits(ids, prefix)

    def _next_logits(self, ids: list[int], prefix: HFPrefix | None) -> Any:
        torch = self._torch
        if prefix is None:
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1
            )
        else:
            check_prefix(ids, prefix)
            out = self.model(
                input_ids=torch.tensor([ids[len(prefix.token_ids) :]], device=self.device),
                past_key_values=self._cache_from(prefix),
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1].float().cpu()

    def _cache_from(self, prefix: HFPrefix) -> Any:
        """A fresh cache object over the prefix's tensors (copy-on-use, see below)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        layers: list[Any] = list(cache.layers)
        for layer, (k, v), seq in zip(layers, prefix.kv, prefix.seq, strict=True):
            # The layer starts from the stored tensors themselves: the cache layers only ever
            # concatenate or slice (new tensors), never write in place, so the prefix is
            # left unchanged by use — the tests check the logits of a second use.
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            if hasattr(layer, "cumulative_length"):  # sliding-window layers keep only the window
                layer.cumulative_length = seq
        return cache

    def _tokens(
        self, ids: list[int], params: GenerationParams, prefix: HFPrefix | None, adapters: Sequence[HFLora]
    ) -> Iterator[int]:
        torch = self._torch
        with self._lock, torch.inference_mode(), self._attached(adapters):
            gen = None
            if params.temperature > 0:
                gen = torch.Generator(device=self.device).manual_seed(params.seed)
            try:
                # logits of the last position only: the vocabulary projection of every
                # prompt position would cost as much as the rest of a small model's prefill
                if prefix is None:
                    out = self.model(
                        input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1
                    )
                else:
                    out = self.model(
                        input_ids=torch.tensor([ids[len(prefix.token_ids) :]], device=self.device),
                        past_key_values=self._cache_from(prefix),
                        use_cache=True,
                        logits_to_keep=1,
                    )
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"the model failed on the prompt: {exc}") from exc
            while True:
                next_id = self._pick(out.logits[0, -1], params, gen)
                yield next_id  # the next forward runs only if the caller wants another token
                out = self.model(
                    input_ids=torch.tensor([[next_id]], device=self.device),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )

    @contextmanager
    def _attached(self, adapters: Sequence[HFLora]) -> Iterator[None]:
        handles = self._attach(adapters)
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _pick(self, logits: Any, params: GenerationParams, gen: Any) -> int:
        torch = self._torch
        if params.temperature <= 0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p
            sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
            choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
            return int(order[choice].item())
        return int(torch.multinomial(probs, 1, generator=gen).item())

    def close(self) -> None:
        self.model = None
