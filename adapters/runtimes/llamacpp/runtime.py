"""The ``llama_cpp`` runtime: llama-cpp-python on a GGUF file (the bundled ones or any path).

The chat template comes from the GGUF's metadata and is rendered by the same code as the
transformers runtime (:func:`memos.runtime.render_template`), so both local runtimes build
the same prompt text. JSON-schema outputs are constrained with a llama.cpp grammar.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from memos import weights as bundled
from memos.adapters.runtimes.llamacpp.config import LlamaCppSettings
from memos.adapters.runtimes.local import LocalRuntime, check_prefix, check_prefix_adapters
from memos.errors import DependencyMissing, InvalidInput, ModelError
from memos.runtime import Fingerprint, GenerationParams, RuntimeInfo

KV_FORMAT = "memos-kv/llama_cpp/1"


@dataclass(frozen=True)
class LlamaPrefix:
    """A KV prefix for the llama_cpp runtime: llama.cpp's saved context state;
    ``adapters``: the keys of the LoRA adapters it was computed under."""

    token_ids: tuple[int, ...]
    state: bytes
    adapters: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class LlamaLora:
    """A GGUF LoRA adapter initialised on the model (llama.cpp's handle)."""

    key: str  # sha256 of the GGUF file
    handle: Any
    scale: float = 1.0


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
               10: "Q2_K", 12: "Q3_K_M", 15: "Q4_K_M", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}  # fmt: skip


class LlamaCppRuntime(LocalRuntime):
    name = "llama_cpp"
    Settings = LlamaCppSettings
    supports_grammar = True
    supports_kv_prefix = True
    supports_lora = True
    supports_kv_prefix_lora = True
    lora_format: ClassVar[str | None] = "gguf"

    def __init__(
        self,
        model: str = bundled.DEFAULT_MODEL,
        *,
        threads: int | None = None,
        gpu_layers: int = 0,
        context_tokens: int = 2048,
        cache_dir: Path | None = None,
        seed: int = 0,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise DependencyMissing(
                "the llama_cpp runtime needs llama-cpp-python: pip install 'memcube-os[llama]'"
            ) from exc
        self.model_name = bundled.canonical(model)
        self.path = bundled.gguf_path(model, cache_dir)
        self._cache = cache_dir or bundled.default_cache_dir()
        if threads is None:
            # llama.cpp's own default is half the CPUs (it assumes hyper-threads), which is
            # one thread on a 2-vCPU machine; use them all on small machines
            cpus = os.cpu_count() or 1
            threads = cpus if cpus <= 4 else cpus // 2
        try:
            self.llm = Llama(
                model_path=str(self.path),
                n_ctx=context_tokens,
                n_threads=threads,
                n_gpu_layers=gpu_layers,
                seed=seed,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"llama.cpp could not load {self.path}: {exc}") from exc
        meta: dict[str, str] = dict(self.llm.metadata)
        arch = meta.get("general.architecture", "")
        trained = int(meta.get(f"{arch}.context_length", context_tokens) or context_tokens)
        self._context = min(context_tokens, trained, self.llm.n_ctx())
        self._template = meta.get("tokenizer.chat_template")
        file_type = _FILE_TYPES.get(int(meta.get("general.file_type", -1)), "gguf")
        weights = bundled.cached_sha256(self.path, cache_dir or bundled.default_cache_dir())
        self._fingerprint = Fingerprint(self.name, self.model_name, weights, file_type, self._vocab_hash())
        self._bos = self._piece(self.llm.token_bos())
        self._eos_text = self._piece(self.llm.token_eos())
        self._eos = self._eos_ids()
        self._prefix_type = LlamaPrefix
        self._adapter_type = LlamaLora
        self._adapters: dict[str, LlamaLora] = {}
        self._active: tuple[str, ...] = ()  # the adapters set on the context now
        self._lock = threading.Lock()
        self._seq_header = self._state_header()

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self.llm.detokenize([token], special=True)).decode("utf-8", "replace")

    def _vocab_hash(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for i in range(self.llm.n_vocab()):
            h.update(bytes(self.llm.detokenize([i], special=True)))
            h.update(b"\x00")
        return h.hexdigest()

    def _eos_ids(self) -> set[int]:
        ids = {self.llm.token_eos()}
        if self._template is not None:
            for special in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
                toks = self.llm.tokenize(special.encode(), add_bos=False, special=True)
                if len(toks) == 1:
                    ids.add(toks[0])
        return {i for i in ids if i >= 0}

    # ------------------------------------------------------------------ identity
    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            fingerprint=self._fingerprint,
            context_length=self._context,
            chat_template=self._template is not None,
            device="gpu" if self.llm.model_params.n_gpu_layers else "cpu",
            capabilities=self.capabilities(),
        )

    # ------------------------------------------------------------------ text
    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def detokenize(self, ids: Sequence[int]) -> str:
        return bytes(self.llm.detokenize(list(ids))).decode("utf-8", "replace")

    # ------------------------------------------------------------------ generation
    def reset(self) -> None:
        """Forget the context's cached tokens, so the next prompt is computed from scratch."""
        with self._lock:
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()

    # ------------------------------------------------------------------ KV prefixes
    def build_prefix(self, token_ids: Sequence[int], adapters: Sequence[LlamaLora] = ()) -> bytes:
        """llama.cpp's context state after ``token_ids``, computed with ``adapters`` set on
        the context (their keys are in the blob's metadata)."""
        import llama_cpp
        import numpy as np
        from safetensors.numpy import save

        ids = [int(x) for x in token_ids]
        if not ids or len(ids) >= self._context:
            raise InvalidInput(f"a KV prefix needs 1 to {self._context - 1} tokens, got {len(ids)}")
        adapters = self._prefix_adapters(adapters)
        with self._lock:
            self._set_adapters(adapters)
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()
            self.llm.eval(ids)
            ctx = self.llm._ctx.ctx
            size = llama_cpp.llama_state_get_size(ctx)
            buf = (ctypes.c_uint8 * int(size))()
            n = int(llama_cpp.llama_state_get_data(ctx, buf, size))
            state = np.frombuffer(bytes(buf)[:n], dtype=np.uint8)
        meta = {"format": KV_FORMAT, "fingerprint": self._fingerprint.key, "n_tokens": str(len(ids)),
                "adapters": json.dumps([a.key for a in adapters])}  # fmt: skip
        return bytes(save({"state": state, "token_ids": np.asarray(ids, dtype=np.int32)}, metadata=meta))

    def load_prefix(self, data: bytes | Path, token_ids: Sequence[int]) -> LlamaPrefix:
        from safetensors.numpy import load

        if isinstance(data, (str, Path)):
            data = Path(data).read_bytes()  # llama.cpp restores its state from one buffer anyway
        meta = self._kv_metadata(data, KV_FORMAT)  # the format and the fingerprint
        tensors = load(data)
        ids = tuple(int(x) for x in token_ids)
        if tuple(int(x) for x in tensors["token_ids"]) != ids:
            raise InvalidInput("the KV prefix and its token ids disagree")
        adapters = tuple(str(k) for k in json.loads(meta.get("adapters", "[]")))
        return LlamaPrefix(ids, tensors["state"].tobytes(), adapters)

    def _restore(self, prefix: LlamaPrefix) -> None:
        """Load the prefix's state into the context (a copy: the prefix itself never changes).

        The blob is llama.cpp's whole-context state: the architecture's name, then the KV
        memory. The memory goes in through the per-sequence reader, which lays the cells out
        as a prefill does and leaves the cache's head after them. The whole-context reader
        leaves the head at cell 0, and a sliding-window cache (Gemma 3) then writes the next
        tokens over its oldest, out-of-window cells: the same attention summed in another
        order, rounding that llama.cpp's 8-bit activations amplify to about one logit. Read
        this way, the rest of the prompt is computed bit for bit as after a plain prefill."""
        import llama_cpp

        state = prefix.state
        if self._seq_header is not None:
            name = int.from_bytes(state[:4], sys.byteorder)  # uint32 length, then the name
            state = self._seq_header + state[4 + name :]
        size = len(state)
        buf = (ctypes.c_uint8 * size).from_buffer_copy(state)
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        ctx = self.llm._ctx.ctx
        if self._seq_header is None:
            done = int(llama_cpp.llama_state_set_data(ctx, buf, size))
        else:
            done = int(llama_cpp.llama_state_seq_set_data(ctx, buf, size, 0))
        if done != size:
            raise ModelError("llama.cpp refused the saved KV state")
        n = len(prefix.token_ids)
        self.llm.input_ids[:n] = prefix.token_ids
        self.llm.n_tokens = n
        self.llm._requires_eval = True

    def _state_header(self) -> bytes | None:
        """What llama.cpp's per-sequence state has before the KV memory (a magic number and
        the sequence id), read off the empty context: there, the sequence 0 state is this
        header and then the same memory bytes as the whole-context state after its
        architecture name. None where that does not hold (another llama.cpp), and prefixes
        are then restored through the whole-context reader."""
        import llama_cpp

        ctx = self.llm._ctx.ctx
        whole = (ctypes.c_uint8 * int(llama_cpp.llama_state_get_size(ctx)))()
        n = int(llama_cpp.llama_state_get_data(ctx, whole, len(whole)))
        memory = bytes(whole)[4 + int.from_bytes(bytes(whole)[:4], sys.byteorder) : n]
        seq = (ctypes.c_uint8 * int(llama_cpp.llama_state_seq_get_size(ctx, 0)))()
        m = int(llama_cpp.llama_state_seq_get_data(ctx, seq, len(seq), 0))
        seq_bytes = bytes(seq)[:m]
        if not memory or len(seq_bytes) <= len(memory) or not seq_bytes.endswith(memory):
            return None
        return seq_bytes[: len(seq_bytes) - len(memory)]

    # ------------------------------------------------------------------ LoRA adapters
    def load_adapter(self, path: Path) -> LlamaLora:
        """A GGUF LoRA (see :func:`memos.parametric.gguf_lora.export_gguf_lora`)."""
        import llama_cpp

        key = bundled.cached_sha256(Path(path), self._cache)
        with self._lock:
            if key in self._adapters:
                return self._adapters[key]
            handle = llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode())
            if not handle:
                raise InvalidInput(
                    f"llama.cpp refused the LoRA adapter {path} (not a GGUF LoRA for this model?)"
                )
            adapter = LlamaLora(key, handle)
            self._adapters[key] = adapter
        return adapter

    def _set_adapters(self, adapters: Sequence[LlamaLora]) -> None:
        """Set the context's adapters; a change forgets the cached tokens (their KV was
        computed under other weights)."""
        import llama_cpp

        keys = tuple(a.key for a in adapters)
        if keys == self._active:
            return
        n = len(adapters)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(1, n))(*[a.handle for a in adapters])
        scales = (ctypes.c_float * max(1, n))(*[a.scale for a in adapters])
        if llama_cpp.llama_set_adapters_lora(
            self.llm._ctx.ctx, handles if n else None, n, scales if n else None
        ):
            raise ModelError("llama.cpp could not set the LoRA adapters")
        self._active = keys
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()

    def next_logits(
        self, token_ids: Sequence[int], prefix: LlamaPrefix | None = None, adapters: Sequence[LlamaLora] = ()
    ) -> Any:
        """The next-token logits after ``token_ids`` (a float32 numpy vector), computed from
        scratch or from a prefix's state, with or without adapters."""
        import numpy as np

        ids = [int(x) for x in token_ids]
        adapters = self._check_adapters(adapters)
        if prefix is not None:
            if not isinstance(prefix, LlamaPrefix):
                raise InvalidInput("this prefix was not loaded by the llama_cpp runtime")
            check_prefix_adapters(prefix, adapters)
            n = check_prefix(ids, prefix)
        with self._lock:
            self._set_adapters(adapters)
            if prefix is None:
                self.llm.reset()
                self.llm._ctx.kv_cache_clear()
                self.llm.eval(ids)
            else:
                self._restore(prefix)
                self.llm.eval(ids[n:])
            logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).copy()
            self.llm.reset()  # the context's tokens are not a prompt cache for the next request
            self.llm._ctx.kv_cache_clear()
        return logits.astype(np.float32)

    def _tokens(
        self,
        ids: list[int],
        params: GenerationParams,
        prefix: LlamaPrefix | None,
        adapters: Sequence[LlamaLora],
    ) -> Iterator[int]:
        grammar = None
        if params.json_schema is not None:
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_json_schema(json.dumps(params.json_schema), verbose=False)
        with self._lock:
            self._set_adapters(adapters)
            if prefix is not None:
                # generate() sees the restored tokens as a cached prefix and computes the rest
                self._restore(prefix)
            self.llm.set_seed(params.seed)
            try:
                yield from self.llm.generate(
                    ids, temp=params.temperature, top_p=params.top_p, top_k=0, min_p=0.0,
                    repeat_penalty=1.0, grammar=grammar,
                )  # fmt: skip
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"llama.cpp failed to generate: {exc}") from exc

    def close(self) -> None:
        import llama_cpp

        if self._adapters:
            with self._lock:
                self._set_adapters(())
                for adapter in self._adapters.values():
                    llama_cpp.llama_adapter_lora_free(adapter.handle)
                self._adapters.clear()
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
