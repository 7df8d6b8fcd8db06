"""Activation memory: a cube's memories compiled into a KV-cache prefix for one model.

A compiled prefix is the beginning of the prompt ``MemOS.chat`` builds — the system
prompt and a ``Memories:`` block listing the compiled memories — prefilled once by the
runtime, stored, and handed back to the runtime so a chat skips that prefill.

Correctness rules, each enforced here or in the runtimes:

- **Fingerprint.** The manifest and the blob name the runtime fingerprint (runtime, model,
  weights hash, dtype, tokenizer hash); loading under another raises
  :class:`~memos.errors.FingerprintMismatch`.
- **Positions.** Segments (say a ``profile`` and a ``hot`` segment) are compiled
  *jointly*, as one prefill of the whole prefix, in order. Re-rotating the keys of
  separately built segments would fix their positions but not their content: the tokens
  of a later segment never attended to the earlier one, so the cache would differ from a
  plain prefill of the same text. Joint compilation is exact by construction (the tests
  compare logits); the manifest records each segment's token span.
- **Copy-on-use.** Runtimes build a fresh working cache from the stored tensors on every
  use; the blob's bytes and hash never change.
- **Adapters.** A prefix is computed under the LoRA adapters a chat on the cube applies
  (parametric memory; the manifest names their ids, the blob their keys). A runtime uses
  it only with exactly those adapters, and a chat looks up only a prefix computed under
  the adapters it applies. An adapter superseded, deactivated or made stale makes the
  prefix stale; an adapter retired (its files deleted) purges it.
- **Invalidation.** The manifest lists every memory id and version inside. Updating,
  deleting or purging one marks the prefix ``stale`` (eagerly through the operations'
  hooks, and again checked before each use); chat never uses a stale prefix — it falls
  back to plaintext memory until the prefix is recompiled. Purging deletes the blob
  file and scrubs the token ids from the manifest.

Storage: the blob is a safetensors file, content-addressed under
``$MEMOS_HOME/blobs/sha256/<2>/<sha256>.safetensors`` (:mod:`memos.blobs`); its manifest
is a ``blobs`` row (``kind = "activation"``).

Who compiles: a user (``mos.activation.compile``), or the ``activation`` policy
(:mod:`memos.policies.activation`), which keeps each cube's prefix compiled from its
hottest stable memories; a recompile swaps the manifest rows in one transaction and
deletes the replaced blob only after it committed.

Modules: :mod:`~memos.activation.text` (how memories read in the prompt, where a prefix
ends), :mod:`~memos.activation.manifest` (the ``blobs`` row), :mod:`~memos.activation.prefixes`
(:class:`ActivationMemory`, built with the home and a runtime source). Compiling and
retiring a prefix publish ``artifact_compiled`` / ``artifact_retired``.
"""

from memos.activation.manifest import KIND, ActivationInfo, Segment
from memos.activation.prefixes import ActivationMemory
from memos.activation.text import memories_block, memory_text, prefix_text

__all__ = [
    "KIND",
    "ActivationInfo",
    "ActivationMemory",
    "Segment",
    "memories_block",
    "memory_text",
    "prefix_text",
]
