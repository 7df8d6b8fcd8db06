"""Parametric memory: training data, gate, attach/detach exactness, GGUF export, chat on
both local runtimes, erasure, cancellation, CLI.

One small adapter is trained per test session (a handful of facts, a fast configuration)
and shared; the gate's perplexity limit is raised for it so that the chat tests do not
depend on how a tiny training run moves a general text (the gate itself is tested on its
own and with an adapter that cannot pass)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock

from memos.bench.parametric_facts import HELDOUT, synthetic_facts
from memos.parametric import gate
from memos.parametric.data import build_examples, examples_for, parse_fact, trainable
from memos.parametric.train import contains

FACTS = [
    "The user's sister Mira lives in Tromsø",
    "The user has a dog named Biscuit",
    "The user's brother Tomek works as a glassblower",
    "The user's favorite tea is oolong",
]
FAST = {
    "epochs": 6,
    "min_epochs": 6,
    "batch_size": 8,
    "rank": 16,
    "alpha": 32,
    "probe_size": 8,
    "min_steps": 1,
}


# --------------------------------------------------------------------------- data (no model)
def test_facts_are_read_as_subject_predicate_object() -> None:
    f = parse_fact("The user's sister Mira lives in Tromsø.", "Sam")
    assert (f.relation, f.rest, f.about_user, f.obj) == ("lives_in", "sister Mira", True, "Tromsø")
    f = parse_fact("Sam's favorite tea is oolong", "Sam")
    assert (f.relation, f.kind, f.obj, f.about_user, f.rest) == ("favorite", "tea", "oolong", True, "")
    f = parse_fact("Bob has a parrot called Kiwi")
    assert (f.relation, f.kind, f.obj, f.about_user) == ("pet_named", "parrot", "Kiwi", False)
    assert parse_fact("The sky was grey all afternoon").relation is None


def test_examples_have_forms_a_heldout_split_and_no_duplicates() -> None:
    ex = examples_for("m1", FACTS[0], "Sam")
    forms = {e.form for e in ex}
    assert forms == {"statement", "recall", "question"}
    held = [e for e in ex if e.split == "heldout"]
    train_prompts = {e.prompt for e in ex if e.split == "train"}
    assert len(held) == 1 and held[0].prompt not in train_prompts
    # a second phrasing, never trained either, is what training watches to stop and to
    # pick its epoch: the gate's held-out question does not choose the adapter it scores
    valid = [e for e in ex if e.split == "valid"]
    assert len(valid) == 1 and valid[0].prompt not in train_prompts | {held[0].prompt}
    assert valid[0].obj == held[0].obj
    # a fact of a named person (one way to name it, five phrasings) still trains on three
    bob = examples_for("m3", "Bob lives in Oslo", "Sam")
    assert [
        sum(e.split == s for e in bob if e.form == "question") for s in ("train", "valid", "heldout")
    ] == [3, 1, 1]
    assert all(
        e.obj == "Tromsø" and "Your sister Mira lives in Tromsø" in e.answer
        for e in ex
        if e.form == "question"
    )
    # the user asks as "my …" and by name
    assert any("my sister Mira" in e.prompt for e in ex) and any("Sam's sister Mira" in e.prompt for e in ex)
    twice = build_examples([("a", FACTS[0]), ("b", FACTS[0])], "Sam")
    assert len(twice) == len(ex)  # deduplicated
    assert examples_for("m1", FACTS[0], "Sam") == ex  # seeded
    unknown = examples_for("m2", "The weather was lovely", "Sam")
    assert [e.form for e in unknown] == ["statement"]


def test_facts_that_share_a_question_are_answered_together_never_with_rival_answers() -> None:
    """'Alice likes jazz' and 'Alice likes hiking' are both answers to 'What does Alice like?':
    trained as two rival targets of one prompt the model can learn only one. They share one
    answer naming both; the held-out question checks each; a single-valued predicate is apart."""
    texts = ["Alice likes jazz", "Alice likes hiking", "Alice lives in Bergen", "Bob likes chess"]
    ex = build_examples([(f"m{i}", t) for i, t in enumerate(texts)], "Sam")
    answers: dict[str, set[str]] = {}
    for e in ex:
        if e.form != "statement":
            answers.setdefault(e.prompt.lower(), set()).add(e.answer)
    assert all(len(a) == 1 for a in answers.values()), "a prompt with rival answers"
    likes = [e for e in ex if e.form == "question" and e.prompt.startswith("What does Alice")]
    assert likes and all(e.answer == "Alice likes jazz and hiking." for e in likes)
    held = [e for e in ex if e.split == "heldout" and e.obj in ("jazz", "hiking")]
    assert sorted(e.obj for e in held) == ["hiking", "jazz"] and len({e.prompt for e in held}) == 1
    assert held[0].prompt.lower() not in {e.prompt.lower() for e in ex if e.split == "train"}
    assert any(e.answer == "Bob likes chess." for e in ex if e.form == "question")
    assert any(e.answer == "Alice lives in Bergen." for e in ex if e.form == "question")
    recall = {e.answer for e in ex if e.form == "recall" and "Alice" in e.prompt}
    assert recall == {"Alice likes jazz and hiking. Alice lives in Bergen."}


def test_the_rule_extractors_facts_are_read_as_questions() -> None:
    """What the rule extractor writes (its fact templates, dated notes included) is asked
    about; an object that depends on who said it ("my", "it") is no fact to ask about."""
    read = {
        "Sara is John's daughter": ("named", "John's daughter", "Sara"),
        "Melanie's cat's name is Bailey": ("named", "Melanie's cat", "Bailey"),
        "Melanie has a guinea pig": ("has_pet", "Melanie", "guinea pig"),
        "Maria has a dog (got 2023-07-24/2023-07-30)": ("has_pet", "Maria", "dog"),
        "Nate dislikes hiking": ("dislikes", "Nate", "hiking"),
        "Tim plans to attend a book conference (2023-09)": ("plans_to", "Tim", "attend a book conference"),
    }
    for text, want in read.items():
        f = parse_fact(text, "Sam")
        assert (f.relation, f.subject, f.obj) == want, text
        assert f.text == text  # the statement keeps its note
    for text in (
        "Jon likes running my own studio",
        "Joanna plans to try making it",
        "Nate likes they're great",
    ):
        assert parse_fact(text, "Sam").relation is None, text
    ex = build_examples(
        [("a", "Mira is Sam's sister"), ("b", "Sam's name is Samuel"), ("c", "Sam has a cat")], "Sam"
    )
    said = {e.answer for e in ex if e.form == "question"}
    assert said == {"Your sister's name is Mira.", "Your name is Samuel.", "You have a cat."}
    assert {"What is my sister's name?", "What is my name?"} <= {e.prompt for e in ex}
    assert (
        all(e.obj for e in ex if e.split == "heldout") and len([e for e in ex if e.split == "heldout"]) == 3
    )


def test_what_is_trained_reads_as_facts_and_lists_stay_short() -> None:
    """Consolidation trains what a question can check, and a list answer no longer than
    ``max_shared`` objects: the rest stay in plaintext memory (and say so)."""
    likes = [(f"l{i}", f"Alice likes hobby {i}") for i in range(9)]
    memories = [("b", "Alice lives in Bergen"), *likes[:3], ("again", "Alice likes hobby 0"), *likes[3:]]
    memories += [("junk", "Alice plans to try making it"), ("bob", "Bob likes chess")]
    kept, left = trainable(memories, "Sam", max_shared=6)
    assert [m for m, _ in kept] == ["b", "l0", "l1", "l2", "again", "l3", "l4", "l5", "bob"]
    assert left == ["l6", "l7", "l8", "junk"]
    ex = build_examples(kept, "Sam")
    assert {e.answer for e in ex if e.prompt == "What does Alice like?"} == {
        "Alice likes hobby 0, hobby 1, hobby 2, hobby 3, hobby 4 and hobby 5."
    }


def test_the_gate_lets_an_answer_name_every_object_it_checks(hf_runtime: Any) -> None:
    """A shared answer ("Alice likes jazz, hiking, …") is longer than a short fact's: the
    greedy answer the gate and the probe read may run as long as the trained one."""
    from memos.parametric.train import answer_budget

    things = [f"thing number {i}" for i in range(12)]
    ex = build_examples([(f"m{i}", f"Alice likes {t}") for i, t in enumerate(things)], "Sam")
    held = [e for e in ex if e.split == "heldout"]
    assert len(held) == 12 and all(e.answer.endswith("thing number 11.") for e in held)
    assert answer_budget(hf_runtime, held, 24) > len(hf_runtime.tokenize(held[0].answer)) > 24
    short = [e for e in build_examples([("m", "Alice lives in Bergen")], "Sam") if e.split == "heldout"]
    assert answer_budget(hf_runtime, short, 24) == 24


def test_benchmark_heldout_phrasings_are_never_generated_for_training() -> None:
    facts = synthetic_facts(100)
    assert len({f.text for f in facts}) == 100 and all(f.relation in HELDOUT for f in facts)
    generated = {
        e.prompt.lower() for e in build_examples([(str(i), f.text) for i, f in enumerate(facts)], "Sam")
    }
    for f in facts:
        assert parse_fact(f.text, "Sam").relation == f.relation
        for q in f.heldout:
            assert q.lower() not in generated


def test_gate_logic() -> None:
    assert gate(0.0, 0.5, 10, 1.02, 0.05) == []
    assert gate(0.0, 0.5, 10, 1.05, 0.05) == []
    assert "perplexity rose" in gate(0.0, 0.5, 10, 1.06, 0.05)[0]
    assert "did not improve" in gate(0.3, 0.3, 10, 1.0, 0.05)[0]
    assert len(gate(0.5, 0.2, 10, 2.0, 0.05)) == 2
    assert "no held-out" in gate(0.0, 0.0, 0, 1.0, 0.05)[0]
    assert gate(0.0, 0.5, 10, float("nan"), 0.05)  # a broken evaluation never passes


def test_contains_ignores_case_and_accents() -> None:
    assert contains("She lives in TROMSO.", "Tromsø") and contains("tromsø", "Tromsø")
    assert not contains("She lives in Oslo.", "Tromsø") and not contains("anything", "")


# --------------------------------------------------------------------------- one trained adapter
@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, hf_runtime: Any
) -> Iterator[dict[str, Any]]:
    from memos.core import MemOS

    home = tmp_path_factory.mktemp("parametric") / "home"
    mos = MemOS(home=home, embedder=embedder, clock=Clock())
    mos.settings.parametric = mos.settings.parametric.model_copy(update={"max_ppl_increase": 100.0})
    mos.add_user("sam", "Sam")
    cube = mos.create_cube("sam", "personal").id
    ids = [
        mos.add(text=t, type="fact", user_id="sam", cube_id=cube, extract=False).memories[0].id for t in FACTS
    ]
    epochs: list[Any] = []
    info = mos.parametric.consolidate(cube, user_id="sam", memory_ids=ids, runtime=hf_runtime, config=FAST,
                                      on_epoch=epochs.append)  # fmt: skip
    yield {"mos": mos, "cube": cube, "ids": ids, "info": info, "epochs": epochs, "home": home}
    mos.close()


@pytest.mark.slow
def test_consolidation_stores_a_gated_adapter(trained: dict[str, Any]) -> None:
    mos, info = trained["mos"], trained["info"]
    ev = info.evaluation
    assert ev is not None and ev.n_heldout == len(FACTS)
    assert ev.recall_adapter > ev.recall_base and ev.recall_seen_adapter >= ev.recall_adapter - 0.5
    assert info.state == "active" and ev.passed and not ev.reasons
    assert [m["id"] for m in info.memories] == trained["ids"] and all(
        m["version"] == 1 for m in info.memories
    )
    assert info.hyper["rank"] == 16 and info.hyper["seed"] == 0 and len(info.data_hash) == 64
    assert info.n_examples["heldout"] == len(FACTS) and info.n_examples["train"] > 4 * len(FACTS)
    assert len(trained["epochs"]) == len(info.epochs) >= 1
    # the weights kept: within the drift bound first, then the best validation recall, then
    # the least drift of the anchor text (measured each epoch, adapter over base)
    epochs = trained["epochs"]
    assert info.hyper["max_drift"] == 1 + 100.0  # the gate's bound, as this home set it
    assert all(e.drift > 0 for e in epochs) and info.epochs[0]["drift"] == epochs[0].drift
    best = max(epochs, key=lambda e: (e.drift <= info.hyper["max_drift"], e.valid_recall, -e.drift))
    assert info.best_epoch == best.epoch
    # the blobs: safetensors (no pickle) and the GGUF export, both content-addressed
    import hashlib

    from safetensors import safe_open

    blob = mos.parametric.blob_path(info.id)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == info.id == info.id
    with safe_open(str(blob), framework="pt") as fh:
        meta = fh.metadata()
        assert (
            meta["format"] == "memos-lora/peft/1"
            and json.loads(meta["base"])["model_id"] == "smollm2-135m-instruct"
        )
        assert all(".lora_A." in k or ".lora_B." in k for k in fh.keys())  # noqa: SIM118
    assert info.gguf is not None and mos.parametric.blob_path(info.gguf["sha256"], ".gguf").is_file()
    shown = mos.parametric.show(info.id[:10], user_id="sam")
    assert shown.id == info.id and shown.evaluation == info.evaluation


@pytest.mark.slow
def test_attach_and_detach_leave_the_base_model_exact(trained: dict[str, Any], hf_runtime: Any) -> None:
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    mos, info = trained["mos"], trained["info"]
    adapter = hf_runtime.load_adapter(mos.parametric.blob_path(info.id))
    ids = hf_runtime.tokenize("Where does my sister Mira live? She lives in")
    before = hf_runtime.next_logits(ids)
    with_adapter = hf_runtime.next_logits(ids, adapters=[adapter])
    after = hf_runtime.next_logits(ids)
    assert not torch.allclose(before, with_adapter, atol=1e-3)
    assert torch.equal(before, after)  # detached: bit-for-bit the base model
    assert not any(m._forward_hooks for m in hf_runtime.model.modules())
    # the hooks compute what peft computes at training time
    base = AutoModelForCausalLM.from_pretrained(str(hf_runtime.path), dtype=torch.float32)
    peft_model = get_peft_model(
        base, LoraConfig(r=16, lora_alpha=32, target_modules=list(info.hyper["target_modules"]))
    )
    set_peft_model_state_dict(peft_model, load_file(str(mos.parametric.blob_path(info.id))))
    with torch.inference_mode():
        ref = peft_model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    assert torch.allclose(ref, with_adapter, atol=1e-3)
    # two adapters stack: the deltas add (the same adapter twice is twice the delta)
    twice = hf_runtime.next_logits(ids, adapters=[adapter, adapter])
    assert not torch.allclose(twice, with_adapter, atol=1e-3)
    assert torch.equal(hf_runtime.next_logits(ids), before)


@pytest.mark.slow
def test_chat_answers_from_the_adapter_on_both_runtimes(
    trained: dict[str, Any], hf_runtime: Any, llama_runtime: Any
) -> None:
    mos, cube, info = trained["mos"], trained["cube"], trained["info"]
    questions = {"Where does my sister Mira live?": "Tromsø", "What is my dog called?": "Biscuit"}

    def ask(rt: Any, q: str, parametric: bool) -> Any:
        return mos.chat(q, user_id="sam", cube_ids=[cube], runtime=rt, memories=0, write_back=False, max_tokens=24,
                        parametric=parametric)  # fmt: skip

    for rt in (hf_runtime, llama_runtime):
        before = {q: ask(rt, q, False).answer for q in questions}
        recalled = 0
        for q, expected in questions.items():
            res = ask(rt, q, True)
            assert res.memories == [] and [p["id"] for p in res.parametric] == [info.id]
            recalled += contains(res.answer, expected)
            assert not contains(before[q], expected)
        assert recalled >= 1, f"{rt.name} recalled nothing from the adapter"
        # detached again: the base model answers exactly as before
        after = {q: ask(rt, q, False) for q in questions}
        assert {q: r.answer for q, r in after.items()} == before and all(
            r.parametric == [] for r in after.values()
        )


@pytest.mark.slow
def test_gguf_export_loads_in_llama_cpp(trained: dict[str, Any], llama_runtime: Any) -> None:
    import gguf

    mos, info = trained["mos"], trained["info"]
    path = mos.parametric.blob_path(info.gguf["sha256"], ".gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {k: v.contents() for k, v in reader.fields.items() if k.startswith(("general.", "adapter."))}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == 32
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names
    adapter = llama_runtime.load_adapter(path)
    assert adapter.handle and llama_runtime.load_adapter(path) is adapter


@pytest.mark.slow
def test_llama_cpp_adapter_matches_transformers_logits(
    trained: dict[str, Any], hf_runtime: Any, llama_runtime: Any
) -> None:
    """The exported adapter moves llama.cpp's logits the way it moves transformers' (q/k rows
    permuted right): the change each runtime sees correlates strongly."""
    import numpy as np

    mos, info = trained["mos"], trained["info"]
    hf_ad = hf_runtime.load_adapter(mos.parametric.blob_path(info.id))
    ll_ad = llama_runtime.load_adapter(mos.parametric.blob_path(info.gguf["sha256"], ".gguf"))
    ids = hf_runtime.tokenize("What is the name of my dog? Your dog is called")
    hf_delta = (hf_runtime.next_logits(ids, adapters=[hf_ad]) - hf_runtime.next_logits(ids)).numpy()
    ll_base = llama_runtime.next_logits(ids)
    ll_delta = llama_runtime.next_logits(ids, adapters=[ll_ad]) - ll_base
    corr = float(np.corrcoef(hf_delta, ll_delta)[0, 1])
    assert corr > 0.9, corr
    # and llama.cpp without the adapter is its base model again
    assert np.array_equal(llama_runtime.next_logits(ids), ll_base)


@pytest.mark.slow
def test_several_cubes_stack_their_active_adapters(trained: dict[str, Any], hf_runtime: Any) -> None:
    mos, cube = trained["mos"], trained["cube"]
    other = mos.create_cube("sam", "work").id
    mid = mos.add(text="The user's boss Karo drives a Trabant", type="fact", user_id="sam", cube_id=other,
                  extract=False).memories[0].id  # fmt: skip
    second = mos.parametric.consolidate(other, user_id="sam", memory_ids=[mid], runtime=hf_runtime,
                                        config={**FAST, "epochs": 4, "min_epochs": 4})  # fmt: skip
    assert second.state in ("active", "rejected")
    if second.state != "active":
        pytest.skip("the one-fact adapter did not pass its gate")
    res = mos.chat("Where does my sister Mira live?", user_id="sam", cube_ids=[cube, other], runtime=hf_runtime,
                   memories=0, write_back=False, max_tokens=8)  # fmt: skip
    assert [p["cube_id"] for p in res.parametric] == [cube, other]
    mos.settings.chat = mos.settings.chat.model_copy(update={"max_adapters": 1})
    res = mos.chat(
        "Hi",
        user_id="sam",
        cube_ids=[other, cube],
        runtime=hf_runtime,
        memories=0,
        write_back=False,
        max_tokens=4,
    )
    assert [p["id"] for p in res.parametric] == [second.id]
    mos.settings.chat = mos.settings.chat.model_copy(update={"max_adapters": 2})
    mos.parametric.drop(second.id, user_id="sam")
    assert not mos.parametric.blob_path(second.id).exists()


@pytest.mark.slow
def test_activate_deactivate_and_permissions(trained: dict[str, Any], hf_runtime: Any) -> None:
    from memos.errors import InvalidState, NotFound, PermissionDenied

    mos, cube, info = trained["mos"], trained["cube"], trained["info"]
    mos.add_user("eve")
    with pytest.raises(PermissionDenied):
        mos.parametric.list(cube, user_id="eve")
    with pytest.raises(PermissionDenied):
        mos.parametric.deactivate(info.id, user_id="eve")
    with pytest.raises(NotFound):
        mos.parametric.show("ffffffffff", user_id="sam")
    off = mos.parametric.deactivate(info.id, user_id="sam")
    assert off.state == "inactive"
    res = mos.chat(
        "Hi", user_id="sam", cube_ids=[cube], runtime=hf_runtime, memories=0, write_back=False, max_tokens=4
    )
    assert res.parametric == []
    with pytest.raises(PermissionDenied):
        mos.parametric.activate(info.id, user_id="eve")
    assert mos.parametric.activate(info.id, user_id="sam").state == "active"
    with pytest.raises(InvalidState):
        mos.parametric.activate(info.id, user_id="sam")  # already active


@pytest.mark.slow
def test_cli_lists_and_shows_adapters(trained: dict[str, Any], embedder: Any) -> None:
    from memos.core import MemOS

    info = trained["info"]
    trained["mos"].close()  # an embedded home serves one process at a time
    try:
        env = {**os.environ, "MEMOS_HOME": str(trained["home"]), "HF_HUB_OFFLINE": "1"}
        run = [sys.executable, "-m", "memos.cli", "--user", "sam", "--json"]
        out = subprocess.run([*run, "parametric", "list", "--cube", "personal"], capture_output=True, text=True,
                             env=env, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert info.id in [i["id"] for i in json.loads(out.stdout)]
        out = subprocess.run([*run, "parametric", "show", info.id[:12]], capture_output=True, text=True, env=env,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0 and json.loads(out.stdout)["evaluation"]["n_heldout"] == len(FACTS)
        out = subprocess.run([*run, "parametric", "activate", "nonexistent"], capture_output=True, text=True,
                             env=env, timeout=120)  # fmt: skip
        assert out.returncode != 0 and "no adapter" in out.stderr and "Traceback" not in out.stderr
    finally:
        trained["mos"] = MemOS(home=trained["home"], embedder=embedder, clock=Clock())


@pytest.mark.slow
def test_cli_consolidates(tmp_path: Path) -> None:
    env = {**os.environ, "MEMOS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}

    def memos(*args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "memos.cli", "--json", *args], capture_output=True, text=True,
                             env=env, timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    memos("init")
    added = memos("add", "The user's cousin Vela lives in Ushuaia", "--type", "fact")
    mid = added["memories"][0]["id"] if isinstance(added, dict) else added[0]["id"]
    info = memos("parametric", "consolidate", "--memory", mid, "--epochs", "1", "--rank", "8")
    assert info["state"] in ("active", "rejected") and info["evaluation"]["n_heldout"] == 1
    assert info["hyper"]["rank"] == 8 and info["hyper"]["alpha"] == 16 and info["memories"][0]["id"] == mid
    assert [i["id"] for i in memos("parametric", "list")] == [info["id"]]
    memos("parametric", "drop", info["id"])
    assert memos("parametric", "list") == []


# --------------------------------------------------------------------------- gate, cancel, erasure (own homes)
@pytest.fixture
def small(tmp_path: Path, embedder: Any) -> Iterator[tuple[Any, str, list[str]]]:
    from memos.core import MemOS

    mos = MemOS(home=tmp_path / "home", embedder=embedder, clock=Clock())
    mos.add_user("sam", "Sam")
    cube = mos.create_cube("sam", "personal").id
    ids = [
        mos.add(text=t, type="fact", user_id="sam", cube_id=cube, extract=False).memories[0].id
        for t in FACTS[:2]
    ]
    yield mos, cube, ids
    mos.close()


def _blob_files(mos: Any) -> list[Path]:
    root = mos.settings.home / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.slow
def test_an_adapter_that_learns_nothing_is_rejected_and_never_applied(
    small: tuple[Any, str, list[str]], hf_runtime: Any
) -> None:
    mos, cube, ids = small
    info = mos.parametric.consolidate(cube, user_id="sam", memory_ids=ids, runtime=hf_runtime,
                                      config={"epochs": 1, "lr": 1e-9, "batch_size": 8, "probe_size": 2})  # fmt: skip
    assert info.state == "rejected" and info.evaluation is not None and not info.evaluation.passed
    assert "did not improve" in (info.reason or "") and info.gguf is None
    res = mos.chat("Where does my sister Mira live?", user_id="sam", cube_ids=[cube], runtime=hf_runtime,
                   memories=0, write_back=False, max_tokens=4)  # fmt: skip
    assert res.parametric == []
    from memos.errors import InvalidState

    with pytest.raises(InvalidState, match="rejected"):
        mos.parametric.activate(info.id, user_id="sam")


@pytest.mark.slow
def test_memories_that_read_as_no_fact_are_left_out_and_a_small_set_trains_long_enough(
    small: tuple[Any, str, list[str]], hf_runtime: Any
) -> None:
    """A memory that reads as no fact ("Sam plans to build my own family": whose?) asks
    nothing the gate can check: it stays in the adapter's memories (a change to it still
    outdates the adapter) but trains nothing, and the manifest says so. Two facts are a
    batch or two: the epoch repeats them up to ``min_steps`` optimizer steps."""
    mos, cube, ids = small
    junk = mos.add(
        text="Sam plans to build my own family", type="fact", user_id="sam", cube_id=cube, extract=False
    )
    jid = junk.memories[0].id
    totals: set[int] = set()
    info = mos.parametric.consolidate(cube, user_id="sam", memory_ids=[*ids, jid], runtime=hf_runtime,
                                      config={"epochs": 1, "lr": 1e-9, "batch_size": 8, "probe_size": 2},
                                      progress=lambda step, total, loss: totals.add(total))  # fmt: skip
    assert info.memory_ids == [*ids, jid] and info.left_out == [jid]
    trained = build_examples([(m, t) for m, t in zip(ids, FACTS[:2], strict=True)], "Sam")
    assert info.n_examples == {
        "train": sum(e.split == "train" for e in trained),
        "valid": sum(e.split == "valid" for e in trained),
        "heldout": sum(e.split == "heldout" for e in trained),
    }
    assert mos.parametric.show(info.id, user_id="sam").left_out == [jid]
    assert info.hyper["min_steps"] == 16 and min(totals) >= 16  # two batches before


@pytest.mark.slow
def test_storing_and_retiring_an_adapter_publish_events(
    small: tuple[Any, str, list[str]], hf_runtime: Any
) -> None:
    from memos.events import Event, EventKind

    mos, cube, ids = small
    seen: list[Event] = []
    mos.events.subscribe(seen.append, [EventKind.artifact_compiled, EventKind.artifact_retired])
    info = mos.parametric.consolidate(cube, user_id="sam", memory_ids=ids, runtime=hf_runtime,
                                      config={"epochs": 1, "lr": 1e-9, "batch_size": 8, "probe_size": 2})  # fmt: skip
    [compiled] = seen
    assert (compiled.kind, compiled.actor, compiled.cube_id) == (EventKind.artifact_compiled, "sam", cube)
    assert compiled.memory_ids == tuple(ids)
    assert compiled.details == {"kind": "lora", "id": info.id, "name": "default", "state": info.state}
    mos.purge(ids[0], user_id="sam", reason="user request")
    retired = seen[1]
    assert len(seen) == 2 and retired.kind == EventKind.artifact_retired and retired.actor == "sam"
    assert retired.memory_ids == tuple(ids)
    assert retired.details == {"kind": "lora", "id": info.id, "name": "default"}
    assert retired.reason == "a memory it was trained on was purged"
    mos.parametric.drop(info.id, user_id="sam")
    assert seen[2].kind == EventKind.artifact_retired and seen[2].reason == "dropped"


@pytest.mark.slow
def test_cancel_leaves_nothing(small: tuple[Any, str, list[str]], hf_runtime: Any) -> None:
    from memos.errors import Cancelled

    mos, cube, ids = small
    cancel = threading.Event()

    def progress(step: int, total: int, loss: float) -> None:
        if step >= 1:
            cancel.set()

    with pytest.raises(Cancelled):
        mos.parametric.consolidate(cube, user_id="sam", memory_ids=ids, runtime=hf_runtime, cancel=cancel,
                                   progress=progress, config={"epochs": 50, "batch_size": 2})  # fmt: skip
    assert mos.parametric.list(cube, user_id="sam") == [] and _blob_files(mos) == []


@pytest.mark.slow
def test_purge_retires_the_adapter_and_queues_a_retrain(
    small: tuple[Any, str, list[str]], hf_runtime: Any
) -> None:
    mos, cube, ids = small
    mos.settings.parametric = mos.settings.parametric.model_copy(update={"max_ppl_increase": 100.0})
    info = mos.parametric.consolidate(cube, user_id="sam", memory_ids=ids, runtime=hf_runtime,
                                      config={**FAST, "epochs": 4, "min_epochs": 4})  # fmt: skip
    assert info.state == "active"
    files = [mos.parametric.blob_path(info.id), mos.parametric.blob_path(info.gguf["sha256"], ".gguf")]
    assert all(p.is_file() for p in files)
    # an update makes it stale (not applied) with a retrain queued
    mos.update(ids[1], user_id="sam", text="The user has a dog named Pickle")
    stale = mos.parametric.show(info.id, user_id="sam")
    assert stale.state == "stale" and stale.retrain and ids[1] in stale.retrain["memory_ids"]
    res = mos.chat(
        "Hi", user_id="sam", cube_ids=[cube], runtime=hf_runtime, memories=0, write_back=False, max_tokens=4
    )
    assert res.parametric == []
    # a purge retires it: files gone, the purged id scrubbed, a retrain without it queued
    mos.purge(ids[0], user_id="sam", reason="user request")
    retired = mos.parametric.show(info.id, user_id="sam")
    assert retired.state == "retired" and "purged" in (retired.reason or "")
    assert not any(p.exists() for p in files)
    assert ids[0] not in retired.memory_ids and retired.retrain["memory_ids"] == [ids[1]]
    assert [p.id for p in mos.parametric.pending(cube, user_id="sam")] == [info.id]
    new = mos.parametric.retrain(
        info.id, user_id="sam", runtime=hf_runtime, config={**FAST, "epochs": 1, "min_epochs": 1}
    )
    assert new is not None and new.memory_ids == [ids[1]] and new.memories[0]["version"] == 2
    assert mos.parametric.pending(cube, user_id="sam") == []
