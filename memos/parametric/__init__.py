"""Parametric memory: a cube's stable knowledge consolidated into a LoRA adapter.

``mos.parametric.consolidate(cube_id, user_id=…)`` turns a selection of the cube's
memories into training data (:mod:`memos.parametric.data`: statements, recall prompts and
questions in several phrasings, with held-out and validation splits), trains a LoRA adapter with peft on
the transformers checkpoint of the base model (:mod:`memos.parametric.train`), evaluates
it and stores it.

**Gate.** An adapter becomes ``active`` only if, on the held-out questions training never
saw, its exact-match recall is higher than the base model's, and its perplexity on a fixed
general text (``general_text.txt``, shipped with the package) is at most
``1 + max_ppl_increase`` (5%) times the base model's. Otherwise it is kept as
``rejected`` with its numbers (no adapter is applied).

**Forward pass.** ``MemOS.chat`` applies the active adapters of the cubes it reads: on
the transformers runtime by forward hooks attached for that one generation (the weights
are never modified, so the base model is exactly itself afterwards); on llama.cpp as a
GGUF LoRA exported at consolidation (:mod:`memos.parametric.gguf_lora`) and set on the
context for the request. **Several cubes:** each cube has at most one active adapter per
base model (activating one deactivates the others); a chat over several cubes *stacks*
their active adapters (the low-rank deltas add up, each at its trained scale), up to
``chat.max_adapters`` in the order of ``cube_ids``. A KV prefix (activation memory) is
computed under the cube's active adapters and serves only a chat that applies those.

**Erasure.** Purging a memory an adapter was trained on *retires* the adapter: both blob
files are deleted, the manifest keeps why, and a retrain without the purged memories is
queued (``pending`` / ``retrain``). Updating or deleting such a memory marks the adapter
``stale`` (not applied) and queues a retrain too; the blob stays until then. The queue is
the jobs table: the transaction that marks the adapter also enqueues a ``parametric.retrain``
job keyed by its id (:mod:`memos.scheduler.artifacts`), which a worker runs when the
cube's parametric policy allows training; the manifest's ``retrain`` entry says on what.

Storage: ``$MEMOS_HOME/blobs/sha256/<2>/<sha>.safetensors`` (peft tensor names and the
base fingerprint in its metadata) and ``<sha>.gguf`` (:mod:`memos.blobs`); the manifest
is a ``blobs`` row with ``kind = "parametric"``. No pickle anywhere.

Modules: :mod:`~memos.parametric.data` (training examples), :mod:`~memos.parametric.train`
(peft), :mod:`~memos.parametric.gate` (evaluation and gate), :mod:`~memos.parametric.lora`
(the ``blobs`` row), :mod:`~memos.parametric.gguf_lora` (export for llama.cpp),
:mod:`~memos.parametric.memory` (:class:`ParametricMemory`, built with the home and a
runtime source). Storing and retiring an adapter publish ``artifact_compiled`` /
``artifact_retired``.
"""

from memos.parametric.gate import gate
from memos.parametric.lora import KIND, Evaluation, LoraInfo
from memos.parametric.memory import ParametricMemory
from memos.parametric.train import TrainConfig

__all__ = ["LoraInfo", "Evaluation", "ParametricMemory", "TrainConfig", "KIND", "gate"]
