"""Export a peft LoRA adapter to a GGUF LoRA file that llama.cpp loads.

The file says ``general.type = adapter``, ``adapter.type = lora``, the LoRA alpha and the
base model's architecture; each adapted matrix ``W`` of layer ``N`` becomes two tensors
``blk.N.<name>.weight.lora_a`` (peft's ``lora_A``, rank x in) and ``...lora_b`` (peft's
``lora_B``, out x rank), so llama.cpp computes ``W x + alpha/r * B A x`` as peft does.

One subtlety: llama.cpp stores a Llama's query and key projections with their rows
permuted (its rotary embedding pairs dimensions differently from transformers'), and the
de-quantized checkpoint we train on has them un-permuted. The rows of ``B`` (the output
side) of ``q_proj`` and ``k_proj`` are permuted the same way here, or the adapter would
rotate the wrong dimensions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from memos.errors import InvalidInput

# transformers module name -> llama.cpp tensor name (within blk.N)
_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}  # fmt: skip
# model_type -> (GGUF architecture, whether q/k rows are permuted)
_ARCHS = {"llama": ("llama", True), "gemma3_text": ("gemma3", False), "gemma3": ("gemma3", False)}
_KEY = re.compile(r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")


def _permute_rows(weight: Any, n_head: int) -> Any:
    """llama.cpp's row order for a rotary projection with ``n_head`` heads."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def export_gguf_lora(state: dict[str, Any], config: dict[str, Any], alpha: float, path: Path) -> Path:
    """Write ``state`` (peft tensor names) as a GGUF LoRA for a base with HF ``config``."""
    import gguf
    import numpy as np

    model_type = str(config.get("model_type", ""))
    if model_type not in _ARCHS:
        raise InvalidInput(f"GGUF LoRA export knows {', '.join(sorted(_ARCHS))}, not {model_type!r}")
    arch, permuted = _ARCHS[model_type]
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, tensor in state.items():
        m = _KEY.search(key)
        if not m or m.group(2) not in _NAMES:
            raise InvalidInput(f"cannot export adapter tensor {key!r} to GGUF")
        pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = tensor
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for (layer, module), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise InvalidInput(f"adapter layer {layer} {module} lacks its A or B matrix")
        a = ab["A"].detach().float().cpu().numpy()
        b = ab["B"].detach().float().cpu().numpy()
        if permuted and module == "self_attn.q_proj":
            b = _permute_rows(b, n_head)
        elif permuted and module == "self_attn.k_proj":
            b = _permute_rows(b, n_kv)
        name = f"blk.{layer}.{_NAMES[module]}.weight"
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
