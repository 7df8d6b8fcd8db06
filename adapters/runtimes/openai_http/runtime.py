"""The ``openai`` runtime: any OpenAI-compatible HTTP server, streamed.

vLLM, Ollama, llama.cpp's server (``python -m llama_cpp.server``) and OpenAI itself speak
``/v1/chat/completions`` and ``/v1/completions`` with server-sent events. The server
applies the model's chat template, so this runtime only carries plaintext memory: it
cannot take a KV prefix or a LoRA adapter, and it cannot tokenize — token counts for
the context budget are a conservative estimate (:func:`estimate_tokens`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from memos.adapters.runtimes.local import RuntimeIdentity
from memos.adapters.runtimes.openai_http.config import OpenAISettings
from memos.errors import ConfigError, InvalidState, ModelError
from memos.runtime import (
    ChatMessage,
    Fingerprint,
    Generation,
    GenerationParams,
    RuntimeInfo,
    plain_prompt,
)


def estimate_tokens(text: str) -> int:
    """An upper-leaning token estimate: one token per three UTF-8 bytes (English BPE
    vocabularies average about four)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 3)) if text else 0


class OpenAIRuntime(RuntimeIdentity):
    name = "openai"
    Settings = OpenAISettings
    supports_grammar = True

    def __init__(
        self,
        model: str = "default",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        context_tokens: int = 4096,
        timeout_s: float = 120.0,
    ) -> None:
        import httpx

        if not base_url:
            raise ConfigError(
                "the openai runtime needs runtime.base_url, e.g. http://127.0.0.1:8000/v1 "
                "(MEMOS_RUNTIME__BASE_URL)"
            )
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.model = model
        self._context = context_tokens
        self._fingerprint = Fingerprint(
            self.name, f"{self.base_url}#{model}", "unknown", "unknown", "unknown"
        )

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            fingerprint=self._fingerprint,
            context_length=self._context,
            chat_template=True,
            device=f"remote {self.base_url}",
            capabilities=self.capabilities(),
        )

    def models(self) -> list[str]:
        """Model ids the server lists (``GET /v1/models``)."""
        data = self._request("GET", "/models")
        return [m["id"] for m in data.get("data", [])]

    # ------------------------------------------------------------------ text
    def tokenize(self, text: str) -> list[int]:
        raise InvalidState("the openai runtime cannot tokenize; use count_tokens for an estimate")

    def detokenize(self, ids: Sequence[int]) -> str:
        raise InvalidState("the openai runtime cannot detokenize")

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """For budgeting only: the server renders the real prompt with its template."""
        return plain_prompt(messages)

    def default_stops(self) -> tuple[str, ...]:
        return ()

    # ------------------------------------------------------------------ generation
    def chat(
        self, messages: Sequence[ChatMessage], params: GenerationParams, adapters: Sequence[Any] = ()
    ) -> Generation:
        if adapters:
            raise InvalidState("the openai runtime carries plaintext memory only: no LoRA adapters")
        body: dict[str, Any] = {"messages": [m.as_dict() for m in messages]}
        return self._stream("/chat/completions", body, params, lambda c: c.get("delta", {}).get("content"))

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams,
        prefix: Any | None = None,
        adapters: Sequence[Any] = (),
    ) -> Generation:
        if adapters:
            raise InvalidState("the openai runtime carries plaintext memory only: no LoRA adapters")
        if prefix is not None:
            raise InvalidState("the openai runtime carries plaintext memory only: no KV prefix")
        body: dict[str, Any] = {"prompt": prompt if isinstance(prompt, str) else list(prompt)}
        return self._stream("/completions", body, params, lambda c: c.get("text"))

    def _stream(self, path: str, body: dict[str, Any], params: GenerationParams, pick: Any) -> Generation:
        body.update(
            model=self.model,
            stream=True,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
        )
        if params.stop:
            body["stop"] = list(params.stop)[:4]  # the OpenAI API takes at most four
        if params.json_schema is not None:
            body["response_format"] = {"type": "json_object", "schema": params.json_schema}

        def source() -> Iterator[tuple[str, int]]:
            import httpx

            try:
                with self._http.stream("POST", path, json=body) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise ModelError(
                            f"{self.base_url}{path} answered {resp.status_code}: {resp.text[:300]}"
                        )
                    for line in resp.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        chunk = json.loads(data)
                        for choice in chunk.get("choices", []):
                            piece = pick(choice)
                            if piece:
                                yield piece, 1
            except httpx.HTTPError as exc:
                raise ModelError(f"the model server at {self.base_url} failed: {exc}") from exc

        return Generation(source, stop=params.stop, max_tokens=params.max_tokens)

    def build_prefix(self, token_ids: Sequence[int], adapters: Sequence[Any] = ()) -> bytes:
        raise InvalidState("the openai runtime carries plaintext memory only: no KV prefix")

    def load_prefix(self, data: Any, token_ids: Sequence[int]) -> Any:
        raise InvalidState("the openai runtime carries plaintext memory only: no KV prefix")

    def load_adapter(self, path: Any) -> Any:
        raise InvalidState("the openai runtime carries plaintext memory only: no LoRA adapters")

    def _request(self, method: str, path: str) -> dict[str, Any]:
        import httpx

        try:
            resp = self._http.request(method, path)
            resp.raise_for_status()
            data: dict[str, Any] = resp.json()
            return data
        except httpx.HTTPError as exc:
            raise ModelError(f"the model server at {self.base_url} failed: {exc}") from exc

    def close(self) -> None:
        self._http.close()
