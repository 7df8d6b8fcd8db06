"""Activation and parametric memory composed: a KV prefix computed under LoRA adapters.

The runtime builds a prefix under adapters and uses it only with exactly those (the
greedy answer and the logits are those of the same prompt computed with the adapters and
no prefix); a prefix of the base model is refused with adapters, and one computed under
adapters without them. ``activation.compile`` computes under the cube's active adapters,
a chat applying them starts from that prefix and says why when it cannot; superseding the
adapter makes the prefix stale, retiring it purges the prefix; the activation policy
compiles for the active adapter set and recompiles when it changes.

The adapters are small random LoRA states in the runtime's own format (peft tensor names,
safetensors), stored as consolidation stores them: training one takes minutes, and what
is tested here is the composition, not what an adapter learned (tests/test_parametric.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock

from memos.errors import InvalidInput, InvalidState
from memos.policies.activation import ActivationPolicy, ActivationSettings
from memos.policies.base import ArtifactView, CompileActivation, CubeView, MemoryView
from memos.runtime import GenerationParams

FACTS = [
    ("Alice is vegetarian", "profile"),
    ("Alice prefers tea over coffee", "preference"),
    ("Alice's sister Mira lives in Tromso", "fact"),
    ("Alice has a beagle named Pretzel", "fact"),
    ("Alice's locker code is 4417", "fact"),
]


def _lora_bytes(rt: Any, seed: int, rank: int = 4, std: float = 0.05) -> bytes:
    """A LoRA adapter of ``rt``'s model on every layer's q_proj and v_proj, random weights."""
    import torch
    from safetensors.torch import save

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(int(rt.model.config.num_hidden_layers)):
        for proj in ("q_proj", "v_proj"):
            module = f"model.layers.{i}.self_attn.{proj}"
            out_f, in_f = rt.model.get_submodule(module).weight.shape
            state[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * std
            state[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * std
    meta = {"format": "memos-lora/peft/1", "base": json.dumps(rt.fingerprint.as_dict(), sort_keys=True),
            "rank": str(rank), "alpha": str(2 * rank), "target_modules": "q_proj,v_proj"}  # fmt: skip
    return bytes(save(state, metadata=meta))


def _store_adapter(mos: Any, cube: str, rt: Any, seed: int, trained_on: str, state: str = "active") -> str:
    """An adapter row as consolidation stores it (the blob, the manifest's base, memories, state)."""
    from memos.parametric.lora import KIND
    from memos.storage.relational.models import BlobRow

    data = _lora_bytes(rt, seed)
    sha = str(mos.parametric.blobs.write(data))
    manifest = {"name": "default", "state": state, "base": rt.fingerprint.as_dict(),
                "memories": [{"id": trained_on, "version": 1}], "gguf": None}  # fmt: skip
    with mos.store.session() as s:
        s.add(BlobRow(sha256=sha, cube_id=cube, kind=KIND, size=len(data), created_at=mos.clock(),
                      manifest=manifest))  # fmt: skip
    return sha


def _hot_facts(mos: Any, cube: str) -> list[str]:
    """Two facts, each returned by three searches (hot enough for the activation policy)."""
    texts = ["Alice's sister Mira lives in Tromso", "Alice has a beagle named Pretzel"]
    ids = [
        mos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False).memories[0].id
        for t in texts
    ]
    for _ in range(3):
        mos.search(" ".join(texts), user_id="alice", cube_ids=[cube], top_k=2)
    return ids


# --------------------------------------------------------------------------- the runtime
@pytest.mark.slow
def test_a_prefix_built_under_an_adapter_serves_exactly_that_adapter(hf_runtime: Any, tmp_path: Path) -> None:
    rt = hf_runtime
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(_lora_bytes(rt, seed=1))
    adapter = rt.load_adapter(path)
    ids = rt.tokenize(
        " ".join(f"Fact {i}: friend {i} lives in city {i * 7} and likes jazz." for i in range(12))
    )
    pre, full = ids[:60], ids[:90]
    plain_bytes, under_bytes = rt.build_prefix(pre), rt.build_prefix(pre, [adapter])
    assert plain_bytes != under_bytes  # the adapter changes the keys and values
    plain, under = rt.load_prefix(plain_bytes, pre), rt.load_prefix(under_bytes, pre)
    assert plain.adapters == () and under.adapters == (adapter.key,)
    base = rt.next_logits(full)
    with_adapter = rt.next_logits(full, adapters=[adapter])
    started = rt.next_logits(full, under, [adapter])
    assert float((base - with_adapter).abs().max()) > 1e-2  # the adapter matters here
    assert float((started - with_adapter).abs().max()) <= 1e-4
    params = GenerationParams(max_tokens=24)
    expected = rt.complete(full, params, adapters=[adapter]).read()
    assert expected and rt.complete(full, params, prefix=under, adapters=[adapter]).read() == expected
    # a prefix of the base model is refused under an adapter, and one under an adapter without it
    with pytest.raises(InvalidInput, match="computed without adapters but the generation applies adapters"):
        rt.complete(full, params, prefix=plain, adapters=[adapter])
    with pytest.raises(InvalidInput, match=f"computed with adapters {adapter.key[:12]} but .* applies none"):
        rt.complete(full, params, prefix=under)
    with pytest.raises(InvalidInput, match="build the prefix under the same adapters"):
        rt.next_logits(full, plain, [adapter])
    assert rt.complete(full, params, prefix=plain).read() == rt.complete(full, params).read()


@pytest.mark.slow
def test_llama_cpp_builds_a_prefix_under_a_gguf_adapter(
    hf_runtime: Any, llama_runtime: Any, tmp_path: Path
) -> None:
    """The adapter exported to GGUF as consolidation does; the restored prefix + the rest
    gives bit for bit the logits of a prefill under the adapter split the same way (llama.cpp's
    kernels depend on the batch's shape, see tests/test_activation.py), and the same answer."""
    import llama_cpp
    import numpy as np
    from safetensors.torch import load

    from memos.parametric.gguf_lora import export_gguf_lora

    rt = llama_runtime
    config = json.loads((Path(hf_runtime.path) / "config.json").read_text())
    path = export_gguf_lora(load(_lora_bytes(hf_runtime, seed=1)), config, 8.0, tmp_path / "adapter.gguf")
    adapter = rt.load_adapter(path)
    ids = rt.tokenize(
        " ".join(f"Fact {i}: friend {i} lives in city {i * 7} and likes jazz." for i in range(12))
    )
    pre, full = ids[:60], ids[:90]
    plain, under = (
        rt.load_prefix(rt.build_prefix(pre), pre),
        rt.load_prefix(rt.build_prefix(pre, [adapter]), pre),
    )
    assert plain.state != under.state and under.adapters == (adapter.key,) and plain.adapters == ()
    rt._set_adapters([adapter])  # a plain prefill under the adapter, split as prefix + rest
    rt.reset()
    rt.llm.eval(pre)
    rt.llm.eval(full[60:])
    split = np.ctypeslib.as_array(llama_cpp.llama_get_logits(rt.llm.ctx), shape=(rt.llm.n_vocab(),)).copy()
    assert np.array_equal(rt.next_logits(full, under, [adapter]), split)
    assert not np.allclose(rt.next_logits(full, plain), split, atol=1e-2)  # the adapter matters here
    params = GenerationParams(max_tokens=16)
    rt._set_adapters([adapter])
    rt.reset()
    rt.llm.eval(pre)  # complete() computes only what the context does not hold yet: the rest
    expected = rt.complete(full, params, adapters=[adapter]).read()
    rt.reset()
    assert expected and rt.complete(full, params, prefix=under, adapters=[adapter]).read() == expected
    with pytest.raises(InvalidInput, match="computed without adapters"):
        rt.complete(full, params, prefix=plain, adapters=[adapter])
    with pytest.raises(InvalidInput, match="computed with adapters"):
        rt.next_logits(full, under)


# --------------------------------------------------------------------------- compile, chat, invalidation
@pytest.fixture
def kv_mos(tmp_path: Path, embedder: Any) -> Iterator[tuple[Any, str, list[str]]]:
    from memos.core import MemOS

    mos = MemOS(home=tmp_path / "home", embedder=embedder, clock=Clock())
    mos.add_user("alice", "Alice")
    cube = mos.create_cube("alice", "personal").id
    ids = [
        mos.add(text=t, type=k, user_id="alice", cube_id=cube, extract=False).memories[0].id for t, k in FACTS
    ]
    yield mos, cube, ids
    mos.close()


@pytest.mark.slow
def test_chat_starts_from_the_prefix_computed_under_its_adapters(
    kv_mos: tuple[Any, str, list[str]], hf_runtime: Any
) -> None:
    mos, cube, ids = kv_mos
    rt = hf_runtime
    first = _store_adapter(mos, cube, rt, seed=1, trained_on=ids[4])
    kept = ids[:3]  # the prefix's memories; the adapter was trained on another one
    info = mos.activation.compile(cube, user_id="alice", runtime=rt, memory_ids=kept)
    assert info.adapters == [first] and info.state == "ready"  # the cube's active adapter

    def ask(**kw: Any) -> Any:
        return mos.chat("Where does my sister live?", user_id="alice", cube_ids=[cube], runtime=rt,
                        max_tokens=16, write_back=False, explain=True, **kw)  # fmt: skip

    res = ask()
    assert [p["id"] for p in res.parametric] == [first]
    assert res.activation is not None and res.activation["used"] is True and res.activation["id"] == info.id
    assert res.activation["adapters"] == [first]
    # exactly the answer of the same prompt computed with the adapter and no prefix (greedy)
    found = mos.activation.for_chat(cube, rt, [first])
    assert found is not None
    _, prefix, text, _ = found
    assert res.prompt is not None and res.prompt.startswith(text)
    prompt_ids = [*prefix.token_ids, *rt.tokenize(res.prompt[len(text) :])]
    adapter = rt.load_adapter(mos.parametric.blob_path(first))
    expected = rt.complete(prompt_ids, GenerationParams(max_tokens=16), adapters=[adapter]).read().strip()
    assert expected and res.answer == expected
    # a chat without the adapter does not start from it, and says why
    bare = ask(parametric=False)
    assert bare.parametric == [] and bare.activation is not None and bare.activation["used"] is False
    assert bare.activation["reason"] == f"compiled under adapters {first[:12]}; this chat applies no adapters"
    plain = mos.activation.compile(
        cube, user_id="alice", runtime=rt, memory_ids=kept, adapters=[], name="plain"
    )
    assert plain.adapters == [] and plain.id != info.id  # another cache: computed without the adapter
    assert ask(parametric=False).activation["id"] == plain.id and ask().activation["id"] == info.id
    with pytest.raises(InvalidState, match="active adapters"):
        mos.activation.compile(cube, user_id="alice", runtime=rt, memory_ids=kept, adapters=["f" * 64])
    with pytest.raises(InvalidInput, match="list of adapter ids"):
        mos.activation.compile(cube, user_id="alice", runtime=rt, adapters=first)

    # another adapter supersedes it: the prefix computed under the first is stale
    second = _store_adapter(mos, cube, rt, seed=2, trained_on=ids[3], state="inactive")
    mos.parametric.activate(second, user_id="alice")
    stale = mos.activation.show(info.id, user_id="alice")
    assert stale.state == "stale" and f"adapter {first[:12]} is inactive: superseded" in (
        stale.stale_reason or ""
    )
    res = ask()
    assert [p["id"] for p in res.parametric] == [second] and res.activation["used"] is False
    assert res.activation["id"] == plain.id and "applies adapters " + second[:12] in res.activation["reason"]
    # retiring the adapter (a memory it was trained on purged) purges the prefix computed under it
    third = mos.activation.compile(cube, user_id="alice", runtime=rt, memory_ids=kept[:2], name="third")
    assert third.adapters == [second] and mos.activation.blob_path(third.id).is_file()
    assert ask().activation["id"] == third.id
    mos.purge(ids[3], user_id="alice", reason="erase")
    assert mos.parametric.show(second, user_id="alice").state == "retired"
    gone = mos.activation.show(third.id, user_id="alice")
    assert gone.state == "purged" and f"adapter {second[:12]}" in (gone.stale_reason or "")
    assert not mos.activation.blob_path(third.id).exists()
    assert set(gone.memory_ids) == set(kept[:2])  # none of its own memories was purged
    res = ask()
    assert res.parametric == [] and res.activation["used"] is True and res.activation["id"] == plain.id


# --------------------------------------------------------------------------- the policy (pure)
T0 = Clock()()
NOW = T0 + timedelta(days=2)


def _mem(mid: str, heat: float) -> MemoryView:
    return MemoryView(
        id=mid, type="fact", state="active", importance=0.5, tags=(), metadata={}, recorded_at=T0,
        updated_at=T0, retired_at=None, hits=5, last_accessed=T0, session_id=None, source_ids=(),
        chars=40, heat=heat,
    )  # fmt: skip


def _artifact(kind: str, aid: str, state: str, memory_ids: tuple[str, ...] = (), **kw: Any) -> ArtifactView:
    if kind == "lora":
        kw.setdefault("formats", ("safetensors",))
    kw.setdefault("runtime", "transformers")
    return ArtifactView(kind=kind, id=aid, name="auto", state=state, memory_ids=memory_ids, created_at=T0,
                        model="smollm2-135m-instruct", **kw)  # fmt: skip


def test_the_policy_compiles_for_the_active_adapters_and_recompiles_when_they_change() -> None:
    mems = tuple(_mem(f"m{i}", 10.0 - i) for i in range(3))
    ids = tuple(m.id for m in mems)

    def decide(*artifacts: ArtifactView) -> list[Any]:
        view = CubeView("c", "alice", mems, artifacts, "transformers", "safetensors")
        return ActivationPolicy().decide(view, [], NOW, ActivationSettings())

    a_active = _artifact("lora", "a" * 64, "active", ("m9",))
    (first,) = decide(
        a_active, _artifact("lora", "b" * 64, "inactive"), _artifact("lora", "c" * 64, "rejected")
    )
    assert isinstance(first, CompileActivation) and first.adapters == ("a" * 64,) and first.memory_ids == ids
    # a prefix under the active adapters: nothing to do; with no adapter active, none
    assert decide(a_active, _artifact("kv_prefix", "k" * 64, "ready", ids, adapters=("a" * 64,))) == []
    (bare,) = decide(_artifact("lora", "a" * 64, "active", outdated=True))  # its memories changed
    assert bare.adapters == ()
    # an adapter activated since the compile: recompile under it
    (again,) = decide(a_active, _artifact("kv_prefix", "k" * 64, "ready", ids))
    assert (
        again.adapters == ("a" * 64,) and "the active adapters changed: [] -> [aaaaaaaaaaaa]" in again.reason
    )
    assert again.as_dict()["adapters"] == ("a" * 64,)


def test_the_policy_compiles_only_under_adapters_the_runtime_applies() -> None:
    """On llama.cpp an adapter never exported to GGUF is not applied by chats (nor can a
    prefix be computed under it): the policy compiles without it, and a prefix without it
    is current — not a change of adapters to recompile for at every run."""
    mems = tuple(_mem(f"m{i}", 10.0 - i) for i in range(3))
    ids = tuple(m.id for m in mems)
    plain = _artifact("lora", "a" * 64, "active", ("m9",))
    exported = _artifact("lora", "b" * 64, "active", ("m9",), formats=("safetensors", "gguf"))

    def decide(fmt: str | None, *artifacts: ArtifactView) -> list[Any]:
        view = CubeView("c", "alice", mems, artifacts, "llama_cpp", fmt)
        return ActivationPolicy().decide(view, [], NOW, ActivationSettings())

    (first,) = decide("gguf", plain)
    assert first.adapters == ()
    assert decide("gguf", plain, _artifact("kv_prefix", "k" * 64, "ready", ids, runtime="llama_cpp")) == []
    (under,) = decide("gguf", exported)
    assert under.adapters == ("b" * 64,)
    (bare,) = decide(None, exported)  # a runtime that computes prefixes without adapters
    assert bare.adapters == ()


@pytest.mark.slow
def test_a_llama_cpp_home_compiles_beside_an_adapter_without_gguf(make_mos: Any, hf_runtime: Any) -> None:
    """The kernel side of the above: the view the policy gets says which LoRA format the
    configured runtime applies and which files each adapter has, so apply compiles without
    the adapter (it used to plan a compile under it, which the kernel refused) and then
    leaves the prefix alone."""
    mos = make_mos(runtime={"name": "llama_cpp"})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    ids = _hot_facts(mos, cube)
    adapter = _store_adapter(mos, cube, hf_runtime, seed=1, trained_on=ids[0])  # "gguf": None
    mos.clock.advance(hours=2)
    report = mos.policies.apply(cube_ids=[cube])
    (a,) = [a for o in report.cubes[0].outcomes if o.policy == "activation" for a in o.actions]
    assert a.adapters == () and report.counts()["failed"] == 0
    (info,) = mos.activation.list(cube, user_id="alice")
    assert info.adapters == [] and info.state == "ready" and adapter not in info.adapters
    mos.clock.advance(hours=2)  # past min_interval: nothing changed, nothing to compile
    assert mos.policies.apply(cube_ids=[cube]).counts().get("compile_activation") is None


# --------------------------------------------------------------------------- the policy on the kernel
@pytest.mark.slow
def test_the_policy_compiles_under_the_active_adapter_and_again_after_it_changed(alice: Any) -> None:
    mos, cube = alice
    ids = _hot_facts(mos, cube)
    rt = mos.runtime()
    first = _store_adapter(mos, cube, rt, seed=1, trained_on=ids[0])
    mos.clock.advance(hours=2)
    report = mos.policies.apply(cube_ids=[cube])
    (a,) = [a for o in report.cubes[0].outcomes if o.policy == "activation" for a in o.actions]
    assert a.adapters == (first,) and report.counts()["failed"] == 0
    (info,) = mos.activation.list(cube, user_id="alice")
    assert info.adapters == [first] and info.state == "ready"
    r = mos.chat(
        "Where does my sister live?", user_id="alice", cube_ids=[cube], write_back=False, max_tokens=4
    )
    assert r.activation["used"] is True and r.activation["id"] == info.id and r.parametric[0]["id"] == first
    assert mos.policies.apply(cube_ids=[cube]).counts().get("compile_activation") is None
    # a new adapter becomes active: after the debounce the prefix is compiled under it
    second = _store_adapter(mos, cube, rt, seed=2, trained_on=ids[1], state="inactive")
    mos.parametric.activate(second, user_id="alice")
    mos.clock.advance(minutes=11)
    plan = mos.policies.plan(cube_ids=[cube])
    (b,) = [a for o in plan.cubes[0].outcomes if o.policy == "activation" for a in o.actions]
    assert b.adapters == (second,) and "no longer valid" in b.reason
    mos.policies.apply(cube_ids=[cube])
    (new,) = mos.activation.list(cube, user_id="alice")
    assert new.adapters == [second] and new.id != info.id
    r = mos.chat("Hi", user_id="alice", cube_ids=[cube], write_back=False, max_tokens=2)
    assert r.activation["used"] is True and r.activation["id"] == new.id
