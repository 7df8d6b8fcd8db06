"""The ONNX embedder against the torch one, on the bundled all-MiniLM-L6-v2 (no mocks).

The bounds come from measuring over 500 LoCoMo chat turns: int8 vs fp32 mean cosine
0.991, min 0.97 (0.954 over 2,700 turns and questions; one-word texts reach ~0.94);
fp32 ONNX vs torch > 0.9999999. The sentences here are our own.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memos.errors import ConfigError, DependencyMissing

pytestmark = pytest.mark.slow  # exports the model twice (~20 s each on 2 cores)

SENTENCES = [
    "I finally adopted a puppy last weekend, her name is Luna.",
    "We should grab dinner at that Thai place on Friday.",
    "My sister is moving to Denver in August for her new job.",
    "I've been painting landscapes again, mostly sunsets over the lake.",
    "The marathon was brutal but I finished in under four hours!",
    "Can you remind me what book we picked for the club this month?",
    "Work has been stressful since the merger was announced.",
    "I started volunteering at the animal shelter on Tuesdays.",
    "Grandma's recipe for apple pie uses a pinch of cardamom.",
    "We're planning a road trip along the coast next spring.",
    "My therapist suggested journaling every night before bed.",
    "The concert tickets sold out in ten minutes, I was so upset.",
    "I switched to a standing desk and my back feels much better.",
    "Our team won the pub quiz thanks to a question about volcanoes.",
    "I'm learning Spanish with an app, twenty minutes a day.",
    "The kids built a treehouse in the backyard over the summer.",
    "ok",
    "  spaces around this one  ",
    "Prices: $1,299.99 on 2023-05-08 at 7:55 pm",
    "A long memory that rambles on about many things " * 30,
]
QUERIES = {
    "What is the name of the new dog?": 0,
    "Where is the sister relocating?": 2,
    "What kind of pictures does she paint?": 3,
    "How long did the race take?": 4,
    "Which charity work do they do?": 7,
    "What spice goes into the pie?": 8,
    "Which language is being studied?": 14,
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_fp32(cache_dir: Path) -> Any:
    from memos.adapters.embedders.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(precision="fp32", cache_dir=cache_dir, threads=2)


@pytest.fixture(scope="module")
def onnx_int8(cache_dir: Path) -> Any:
    from memos.adapters.embedders.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(precision="int8", cache_dir=cache_dir, threads=2)


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("variant", ["onnx_fp32", "onnx_int8"])
def test_unit_norm_and_dim(variant: str, request: pytest.FixtureRequest) -> None:
    emb = request.getfixturevalue(variant)
    vectors = emb.embed(SENTENCES)
    assert len(vectors) == len(SENTENCES)
    assert emb.dim == 384
    for v in vectors:
        assert len(v) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-5)
    assert emb.embed([]) == []
    # int8 quantizes activations per batch, so a text alone and in a batch differ slightly
    assert _cos(emb.embed_query(SENTENCES[0]), vectors[0]) >= 0.98


def test_fp32_matches_torch(onnx_fp32: Any, embedder: Any) -> None:
    got, ref = onnx_fp32.embed(SENTENCES), embedder.embed(SENTENCES)
    assert min(_cos(a, b) for a, b in zip(got, ref, strict=True)) >= 0.9999


def test_int8_stays_close_to_fp32(onnx_int8: Any, embedder: Any) -> None:
    got, ref = onnx_int8.embed(SENTENCES), embedder.embed(SENTENCES)
    cosines = [_cos(a, b) for a, b in zip(got, ref, strict=True)]
    assert sum(cosines) / len(cosines) >= 0.98
    assert min(cosines) >= 0.93  # the worst case is a one-word text ("ok"): 0.94-0.96


def test_int8_retrieves_like_fp32(onnx_int8: Any, embedder: Any) -> None:
    for emb in (embedder, onnx_int8):
        docs = emb.embed(SENTENCES)
        for query, expected in QUERIES.items():
            q = emb.embed_query(query)
            best = max(range(len(docs)), key=lambda i: _cos(q, docs[i]))
            assert best == expected, (emb.id, query, SENTENCES[best])


def test_int8_alone_or_batched_stays_close_to_fp32(onnx_int8: Any, cache_dir: Path, embedder: Any) -> None:
    from memos.adapters.embedders.onnx_embedder import OnnxEmbedder

    # int8 quantizes activations per batch, so a text's vector depends a little on its batch
    # neighbours; alone or batched, it must stay within the measured bound of fp32.
    one_by_one = OnnxEmbedder(precision="int8", cache_dir=cache_dir, batch_size=1)
    ref = embedder.embed(SENTENCES)
    for vectors in (onnx_int8.embed(SENTENCES), [one_by_one.embed([t])[0] for t in SENTENCES]):
        cosines = [_cos(a, b) for a, b in zip(vectors, ref, strict=True)]
        assert sum(cosines) / len(cosines) >= 0.98 and min(cosines) >= 0.93


def test_ids_differ_per_variant(onnx_fp32: Any, onnx_int8: Any, embedder: Any) -> None:
    ids = {embedder.id, onnx_fp32.id, onnx_int8.id}
    assert len(ids) == 3
    assert onnx_int8.id == "onnx-int8:all-MiniLM-L6-v2"
    assert onnx_fp32.entry != onnx_int8.entry


def test_cache_is_reused_across_instances_and_processes(onnx_int8: Any, cache_dir: Path) -> None:
    from memos.adapters.embedders import onnx_export
    from memos.adapters.embedders.onnx_embedder import OnnxEmbedder

    onnx_int8.embed(["warm the cache"])
    model_file = onnx_int8.entry / "model.onnx"
    before = (model_file.stat().st_mtime_ns, onnx_export.EXPORTS)

    again = OnnxEmbedder(precision="int8", cache_dir=cache_dir)
    assert again.dim == 384 and again._session is None  # the dimension comes from meta.json
    again.embed(["no second export"])
    assert (model_file.stat().st_mtime_ns, onnx_export.EXPORTS) == before

    # A new process embeds from the cache: no export, and torch is never imported.
    code = (
        "import sys\n"
        "from memos.adapters.embedders import onnx_export\n"
        "from memos.adapters.embedders.onnx_embedder import OnnxEmbedder\n"
        f"e = OnnxEmbedder(precision='int8', cache_dir={str(cache_dir)!r})\n"
        "assert len(e.embed(['hello from another process'])[0]) == 384\n"
        "print(onnx_export.EXPORTS, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]
    assert model_file.stat().st_mtime_ns == before[0]


def test_importing_the_module_is_light() -> None:
    code = (
        "import sys, memos.adapters.embedders.onnx_embedder, memos.adapters.embedders.onnx_export\n"
        "print(','.join(m for m in ('torch', 'onnx', 'onnxruntime', 'tokenizers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_onnxruntime_says_what_to_install(tmp_path: Path) -> None:
    # A fresh interpreter in which onnxruntime cannot be imported, as on an install that lost it.
    code = (
        "import sys\n"
        "sys.modules['onnxruntime'] = None\n"
        "from memos.adapters.embedders.onnx_embedder import OnnxEmbedder\n"
        "from memos.errors import DependencyMissing\n"
        f"e = OnnxEmbedder(cache_dir={str(tmp_path)!r})\n"
        "try:\n"
        "    e.embed(['x'])\n"
        "except DependencyMissing as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install onnxruntime onnx" in out.stdout and "embedder_backend='torch'" in out.stdout, (
        out.stderr
    )
    assert issubclass(DependencyMissing, ImportError)


def test_bad_arguments_are_config_errors() -> None:
    from memos.adapters.embedders.onnx_embedder import OnnxEmbedder

    with pytest.raises(ConfigError):
        OnnxEmbedder(precision="int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        OnnxEmbedder(device="cuda")
    with pytest.raises(ConfigError):
        OnnxEmbedder(threads=0)


def test_torch_threads_are_applied_when_the_model_loads() -> None:
    # torch's thread count is process-wide, so this runs in its own interpreter.
    code = (
        "import torch\n"
        "from memos.adapters.embedders.sentence_transformers import SentenceTransformerEmbedder\n"
        "e = SentenceTransformerEmbedder(threads=1)\n"
        "assert len(e.embed(['one thread'])[0]) == 384\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "1"
    with pytest.raises(ConfigError):
        from memos.adapters.embedders.sentence_transformers import SentenceTransformerEmbedder

        SentenceTransformerEmbedder(threads=0)
