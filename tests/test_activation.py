"""Activation memory: KV prefixes that are exact, fingerprinted, copy-on-use and invalidated.

The proofs the issue asks for: next-token logits with the injected cache equal plain
prefill of the same tokens (≤ 1e-4, fp32, CPU) for single- and multi-segment prefixes on
both bundled models (Gemma 3's prefix is longer than its 512-token sliding window);
on llama.cpp, logits bit for bit those of a plain prefill split the same way (prefix, then
the rest); identical greedy continuations of 32 tokens on both runtimes; five chats in
a row identical with the blob's hash unchanged; another fingerprint refused; update,
delete and purge invalidate, and purge removes the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock

from memos.errors import FingerprintMismatch, InvalidInput, InvalidState
from memos.runtime import GenerationParams

pytestmark = pytest.mark.slow

FACTS = [
    ("Alice is vegetarian", "profile", 0.9),
    ("Alice prefers tea over coffee", "preference", 0.9),
    ("Alice's sister Mira lives in Tromso", "fact", 0.8),
    ("Alice works as a UX designer at Nordlicht Studio in Berlin", "fact", 0.7),
    ("Alice has a beagle named Pretzel", "fact", 0.6),
]


def _text(n_facts: int) -> str:
    return " ".join(
        f"Fact {i}: the user's friend number {i} lives in city {i * 7} and likes jazz."
        for i in range(n_facts)
    )


@pytest.mark.parametrize(
    ("which", "n_prefix"), [("hf_runtime", 64), ("hf_runtime", 700), ("gemma_hf", 64), ("gemma_hf", 700)]
)
def test_transformers_prefix_logits_equal_plain_prefill(
    which: str, n_prefix: int, request: pytest.FixtureRequest
) -> None:
    rt = request.getfixturevalue(which)
    ids = rt.tokenize(_text(80))
    full = ids[: n_prefix + 24]
    prefix = rt.load_prefix(rt.build_prefix(ids[:n_prefix]), ids[:n_prefix])
    plain = rt.next_logits(full)
    injected = rt.next_logits(full, prefix)
    assert float((plain - injected).abs().max()) <= 1e-4
    # and the prefix is unchanged by use: a second use gives the same logits
    assert float((rt.next_logits(full, prefix) - injected).abs().max()) == 0.0
    a = rt.complete(full, GenerationParams(max_tokens=32)).read()
    b = rt.complete(full, GenerationParams(max_tokens=32), prefix=prefix).read()
    assert a == b and a


def test_a_prefix_loaded_from_its_file_is_mapped_and_exact(hf_runtime: Any, tmp_path: Path) -> None:
    """Loading from the file memory-maps it (tensors view the mapping, no copy); the logits
    equal those from the bytes, and using the prefix never writes to the file."""
    rt = hf_runtime
    ids = rt.tokenize(_text(40))
    data = rt.build_prefix(ids[:200])
    path = tmp_path / "kv.safetensors"
    path.write_bytes(data)
    mapped = rt.load_prefix(path, ids[:200])
    from_bytes = rt.load_prefix(data, ids[:200])
    assert (
        float((rt.next_logits(ids[:230], mapped) - rt.next_logits(ids[:230], from_bytes)).abs().max()) == 0.0
    )
    assert rt.complete(ids[:230], GenerationParams(max_tokens=8), prefix=mapped).read()
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    truncated = tmp_path / "short.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput):
        rt.load_prefix(truncated, ids[:200])


@pytest.mark.parametrize("which", ["hf_runtime", "gemma_hf"])
def test_in_kernel_grouped_query_attention_equals_transformers_sdpa(
    which: str, request: pytest.FixtureRequest
) -> None:
    """The runtime's attention (grouped-query heads read in place, no ``repeat_kv`` copy)
    gives the logits of transformers' own SDPA implementation, with and without a prefix
    (the masked case that made transformers copy the prefix's heads)."""
    rt = request.getfixturevalue(which)
    assert rt.model.config._attn_implementation == "memos_sdpa"
    ids = rt.tokenize(_text(40))
    prefix = rt.load_prefix(rt.build_prefix(ids[:300]), ids[:300])
    ours = (rt.next_logits(ids[:330]), rt.next_logits(ids[:330], prefix))
    rt.model.set_attn_implementation("sdpa")
    try:
        theirs = (rt.next_logits(ids[:330]), rt.next_logits(ids[:330], prefix))
    finally:
        rt.model.set_attn_implementation("memos_sdpa")
    for a, b in zip(ours, theirs, strict=True):
        assert float((a - b).abs().max()) <= 1e-4


@pytest.mark.parametrize("which", ["llama_runtime", "gemma_llama"])
def test_llama_cpp_restored_state_continues_identically(which: str, request: pytest.FixtureRequest) -> None:
    """llama.cpp's kernels may depend on the batch's shape (one 640-token prefill is not
    bit for bit 600 + 40 on every CPU), so the restored 600-token prefix + 40 tokens is
    compared with a plain prefill split the same way: the same logits bit for bit, and the
    same 32-token greedy continuation. Gemma 3's prefix is longer than its 512-token
    sliding window; read back as a whole context, its next tokens overwrote the window's
    oldest cells and the logits moved by about one."""
    import llama_cpp
    import numpy as np

    rt = request.getfixturevalue(which)
    ids = rt.tokenize(_text(80))
    pre, full = ids[:600], ids[:640]
    prefix = rt.load_prefix(rt.build_prefix(pre), pre)

    def plain_prefill() -> None:  # the prefix's tokens, then the rest in one call
        rt.reset()
        rt.llm.eval(pre)

    plain_prefill()
    rt.llm.eval(full[600:])
    plain = np.ctypeslib.as_array(llama_cpp.llama_get_logits(rt.llm.ctx), shape=(rt.llm.n_vocab(),)).copy()
    restored = rt.next_logits(full, prefix)
    assert np.array_equal(plain, restored)
    assert np.array_equal(rt.next_logits(full, prefix), restored)  # the prefix is unchanged by use

    plain_prefill()  # complete() computes only what the context does not hold yet: the 40
    a = rt.complete(full, GenerationParams(max_tokens=32))
    text = a.read()
    rt.reset()
    b = rt.complete(full, GenerationParams(max_tokens=32), prefix=prefix).read()
    c = rt.complete(full, GenerationParams(max_tokens=32), prefix=prefix).read()  # right after another use
    assert text == b == c and text
    assert a.stats.completion_tokens == 32 or a.stats.finish_reason == "stop"


def test_llama_cpp_next_logits_checks_the_prefix(llama_runtime: Any) -> None:
    ids = llama_runtime.tokenize(_text(5))
    prefix = llama_runtime.load_prefix(llama_runtime.build_prefix(ids[:10]), ids[:10])
    with pytest.raises(InvalidInput, match="start with"):
        llama_runtime.next_logits(ids[1:], prefix)
    with pytest.raises(InvalidInput, match="go on"):
        llama_runtime.next_logits(ids[:10], prefix)


def test_prompt_must_start_with_the_prefix(hf_runtime: Any) -> None:
    ids = hf_runtime.tokenize(_text(5))
    prefix = hf_runtime.load_prefix(hf_runtime.build_prefix(ids[:10]), ids[:10])
    with pytest.raises(InvalidInput, match="start with"):
        hf_runtime.complete(ids[1:], GenerationParams(max_tokens=4), prefix=prefix)
    with pytest.raises(InvalidInput, match="go on"):
        hf_runtime.complete(ids[:10], GenerationParams(max_tokens=4), prefix=prefix)


def test_another_fingerprint_is_refused(hf_runtime: Any, gemma_hf: Any, llama_runtime: Any) -> None:
    ids = hf_runtime.tokenize("Alice is vegetarian.")
    data = hf_runtime.build_prefix(ids)
    with pytest.raises(FingerprintMismatch):
        gemma_hf.load_prefix(data, ids)  # another model
    with pytest.raises((FingerprintMismatch, InvalidInput)):
        llama_runtime.load_prefix(data, ids)  # another runtime (and format)
    ldata = llama_runtime.build_prefix(ids)
    with pytest.raises((FingerprintMismatch, InvalidInput)):
        hf_runtime.load_prefix(ldata, ids)


# --------------------------------------------------------------------------- through MemOS


@pytest.fixture
def kv_mos(tmp_path: Path, embedder: Any) -> Iterator[tuple[Any, str]]:
    from memos.core import MemOS

    mos = MemOS(home=tmp_path / "home", embedder=embedder, clock=Clock())
    mos.add_user("alice", "Alice")
    cube = mos.create_cube("alice", "personal").id
    for text, kind, importance in FACTS:
        mos.add(text=text, type=kind, importance=importance, user_id="alice", cube_id=cube, extract=False)
    yield mos, cube
    mos.close()


@pytest.mark.parametrize("which", ["hf_runtime", "llama_runtime"])
def test_compile_and_chat_with_activation_memory(
    kv_mos: tuple[Any, str], which: str, request: pytest.FixtureRequest
) -> None:
    mos, cube = kv_mos
    rt = request.getfixturevalue(which)
    info = mos.activation.compile(cube, user_id="alice", runtime=rt)
    assert info.state == "ready" and [s.name for s in info.segments] == ["profile", "hot"]
    assert info.segments[0].end == info.segments[1].start and info.segments[1].end == info.n_tokens
    assert len(info.memories) == len(FACTS) and all(m["version"] == 1 for m in info.memories)
    blob = mos.activation.blob_path(info.id)
    assert blob.is_file() and hashlib.sha256(blob.read_bytes()).hexdigest() == info.id
    answers = []
    for _ in range(5):
        res = mos.chat("Where does my sister live?", user_id="alice", runtime=rt, max_tokens=24,
                       write_back=False, explain=True)  # fmt: skip
        assert res.activation is not None and res.activation["used"] is True
        answers.append(res.answer)
        # the prompt begins with exactly the compiled text; its memories are not repeated
        assert res.prompt is not None and res.prompt.count("Alice's sister Mira lives in Tromso") == 1
        assert not set(res.memory_ids) & set(info.memory_ids)
        # the retrieved memories the prefix holds keep their places among the k: not refilled
        assert res.activation["retrieved_in_prefix"]
        assert set(res.activation["retrieved_in_prefix"]) <= set(info.memory_ids)
        assert len(res.memory_ids) + len(res.activation["retrieved_in_prefix"]) <= mos.settings.chat.memories
        assert res.prompt_tokens <= res.context_budget
    assert len(set(answers)) == 1 and answers[0]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == info.id  # copy-on-use
    without = mos.chat("Where does my sister live?", user_id="alice", runtime=rt, max_tokens=24,
                       write_back=False, activation=False)  # fmt: skip
    assert without.activation is None


def test_prefix_tokens_are_the_prompt_start(kv_mos: tuple[Any, str], hf_runtime: Any) -> None:
    mos, cube = kv_mos
    info = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, top_n=2)
    _, prefix = mos.activation.load(info.id, hf_runtime)
    res = mos.chat("What pet do I have?", user_id="alice", runtime=hf_runtime, max_tokens=8,
                   write_back=False, explain=True)  # fmt: skip
    assert res.activation["used"]
    ids = hf_runtime.tokenize(res.prompt)
    assert tuple(ids[: len(prefix.token_ids)]) == prefix.token_ids


def test_invalidation_update_delete_purge(kv_mos: tuple[Any, str], hf_runtime: Any) -> None:
    mos, cube = kv_mos
    items = {m.text: m for m in mos.list_memories(user_id="alice", cube_id=cube).items}
    info = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime)
    mos.update(items["Alice prefers tea over coffee"].id, user_id="alice", text="Alice prefers green tea")
    assert mos.activation.show(info.id[:12], user_id="alice").state == "stale"
    res = mos.chat("What do I drink?", user_id="alice", runtime=hf_runtime, max_tokens=8, write_back=False)
    assert res.activation is None  # never a stale prefix: plaintext memory instead
    with pytest.raises(InvalidState, match="stale"):
        mos.activation.load(info.id, hf_runtime)
    # recompile when asked: a new prefix with the new version
    fresh = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime)
    assert fresh.id != info.id and not mos.activation.blob_path(info.id).exists()  # replaced (same name)
    mos.delete(items["Alice has a beagle named Pretzel"].id, user_id="alice")
    assert mos.activation.show(fresh.id, user_id="alice").state == "stale"
    mos.restore(items["Alice has a beagle named Pretzel"].id, user_id="alice")
    third = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, name="second")
    path = mos.activation.blob_path(third.id)
    assert path.is_file()
    mos.purge(items["Alice is vegetarian"].id, user_id="alice", reason="erase")
    assert not path.exists()  # the file that held the memory is gone from disk
    gone = mos.activation.show(third.id, user_id="alice")
    assert gone.state == "purged" and items["Alice is vegetarian"].id not in gone.memory_ids
    from sqlalchemy import select

    from memos.storage.relational.models import BlobRow

    with mos.store.session() as s:
        manifest = s.scalars(select(BlobRow.manifest).where(BlobRow.sha256 == third.id)).one()
    assert manifest["token_ids"] == [] and "vegetarian" not in str(manifest)


def test_compiling_and_retiring_prefixes_publish_events(kv_mos: tuple[Any, str], hf_runtime: Any) -> None:
    from memos.events import Event, EventKind

    mos, cube = kv_mos
    items = {m.text: m for m in mos.list_memories(user_id="alice", cube_id=cube).items}
    seen: list[Event] = []
    mos.events.subscribe(seen.append, [EventKind.artifact_compiled, EventKind.artifact_retired])
    first = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, top_n=2)
    [compiled] = seen
    assert (compiled.kind, compiled.actor, compiled.cube_id) == (EventKind.artifact_compiled, "alice", cube)
    assert compiled.memory_ids == tuple(first.memory_ids)
    assert compiled.details == {"kind": "kv_prefix", "id": first.id, "name": "default"}
    mos.update(items["Alice is vegetarian"].id, user_id="alice", text="Alice is vegan")
    second = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, top_n=2)
    replaced, recompiled = seen[1:]  # the older prefix of the same name went
    assert replaced.kind == EventKind.artifact_retired and replaced.details["id"] == first.id
    assert replaced.memory_ids == tuple(first.memory_ids)
    assert replaced.reason == f"replaced by {second.id[:12]}"
    assert recompiled.kind == EventKind.artifact_compiled and recompiled.details["id"] == second.id
    other = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, top_n=2, name="other")
    del seen[:]
    mos.purge(items["Alice is vegetarian"].id, user_id="alice", reason="erase")
    assert sorted(e.details["id"] for e in seen) == sorted([second.id, other.id])
    assert all(e.kind == EventKind.artifact_retired and e.actor == "alice" for e in seen)
    assert all(items["Alice is vegetarian"].id in e.memory_ids for e in seen)
    del seen[:]
    mos.purge(items["Alice prefers tea over coffee"].id, user_id="alice")
    assert seen == []  # retired once: the prefixes are purged already
    mos.activation.drop(other.id, user_id="alice")
    [dropped] = seen
    assert dropped.kind == EventKind.artifact_retired and dropped.reason == "dropped"
    assert dropped.details == {"kind": "kv_prefix", "id": other.id, "name": "other"}


def test_compiled_prefix_survives_reopen_and_refuses_other_models(tmp_path: Path, embedder: Any, hf_runtime: Any,
                                                                  gemma_hf: Any) -> None:  # fmt: skip
    from memos.core import MemOS

    home = tmp_path / "home"
    with MemOS(home=home, embedder=embedder) as mos:
        mos.add_user("alice", "Alice")
        cube = mos.create_cube("alice", "personal").id
        mos.add(text="Alice is vegetarian", type="profile", user_id="alice", cube_id=cube)
        info = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime)
    with MemOS(home=home, embedder=embedder) as mos:
        assert [i.id for i in mos.activation.list(cube, user_id="alice")] == [info.id]
        res = mos.chat("What do I eat?", user_id="alice", runtime=hf_runtime, max_tokens=8, write_back=False)
        assert res.activation is not None and res.activation["used"]
        with pytest.raises(FingerprintMismatch):
            mos.activation.load(info.id, gemma_hf)
        other = mos.chat("What do I eat?", user_id="alice", runtime=gemma_hf, max_tokens=8, write_back=False)
        assert other.activation is None  # no prefix for that model: plaintext only
        mos.delete_cube(cube, "alice")
        assert not mos.activation.blob_path(info.id).exists()


def test_bad_compile_requests(kv_mos: tuple[Any, str], hf_runtime: Any, openai_runtime: Any) -> None:
    mos, cube = kv_mos
    with pytest.raises(InvalidInput):
        mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, token_budget=4)
    with pytest.raises(InvalidInput):
        mos.activation.compile(
            cube, user_id="alice", runtime=hf_runtime, memory_ids=["x"], segments={"a": ["y"]}
        )
    with pytest.raises(KeyError):
        mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, memory_ids=["no-such-memory"])
    with pytest.raises(InvalidState, match="cannot hold activation memory"):
        mos.activation.compile(cube, user_id="alice", runtime=openai_runtime)
    mos.add_user("bob")
    with pytest.raises(PermissionError):
        mos.activation.compile(cube, user_id="bob", runtime=hf_runtime)
    assert mos.activation.list(cube, user_id="alice") == []  # nothing half-written
