"""The sparse lexical encoder: tokens, stable term ids, BM25 weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memos.plaintext.retrieval.lexical import (
    AVG_DOC_LEN,
    K1,
    B,
    encode_document,
    encode_query,
    term_id,
    tokenize,
)
from memos.protocols import SparseVector


def test_tokenize_lowercases_and_drops_stop_words() -> None:
    assert tokenize("The cat sat on THE mat") == ["cat", "sat", "mat"]


def test_names_and_possessives_keep_matching() -> None:
    assert tokenize("Caroline's") == ["caroline"]
    assert tokenize("Caroline’s dog") == ["caroline", "dog"]  # typographic apostrophe
    assert tokenize("O'Brien") == ["obrien"]
    assert tokenize("Melanie") == ["melanie"]


def test_numbers_dates_months_and_weekdays_survive() -> None:
    assert tokenize("7 May 2023") == ["7", "may", "2023"]
    assert tokenize("on the 7th of May") == ["7", "may"]
    assert tokenize("2023-05-07") == ["2023", "5", "7"]
    assert tokenize("Sundays and Mondays") == ["sunday", "monday"]
    assert tokenize("March") == ["march"]
    assert sorted(tokenize("Aug 7")) == sorted(tokenize("7 August"))


def test_contractions_fold_to_stop_words() -> None:
    assert tokenize("I'm sure we'll go, don't you think? It's fine, can't stop") == [
        "sure",
        "go",
        "think",
        "fine",
        "stop",
    ]


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (["painting", "painted", "paints", "paint"], "paint"),
        (["hiking", "hiked", "hikes", "hike"], "hike"),
        (["swimming", "swim", "swims"], "swim"),
        (["hobbies", "hobby"], "hobbie"),
        (["studied", "studies", "study", "studying"], "studie"),
        (["movies", "movie"], "movie"),
        (["boxes", "box"], "box"),
        (["classes", "class"], "class"),
        (["visited", "visiting", "visits", "visit"], "visit"),
        (["played", "playing", "plays", "play"], "play"),
    ],
)
def test_stemmer_folds_inflections(variants: list[str], expected: str) -> None:
    assert {t for v in variants for t in tokenize(v)} == {expected}


@pytest.mark.parametrize("word", ["thing", "bring", "need", "bus", "tennis", "paris", "glass", "red"])
def test_stemmer_leaves_short_and_non_inflected_words(word: str) -> None:
    assert tokenize(word) == [word]


def test_unicode_words() -> None:
    assert tokenize("Café naïve 東京 тест") == ["café", "naïve", "東京", "тест"]


def test_term_id_is_stable_and_31_bit() -> None:
    ids = {term_id(t) for t in ("caroline", "may", "2023", "東京")}
    assert len(ids) == 4
    assert all(0 <= i < 2**31 for i in ids)
    assert term_id("caroline") == term_id("caroline")
    # Same value in a fresh interpreter with another hash seed: never Python's hash().
    code = "from memos.plaintext.retrieval.lexical import term_id; print(term_id('caroline'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert int(out.stdout) == term_id("caroline")


def test_encode_query_unique_sorted_unit_weights() -> None:
    vec = encode_query("Caroline Caroline went hiking; hike!")
    assert vec.indices == sorted(set(vec.indices))
    assert len(vec.indices) == 3  # caroline, went, hike
    assert vec.values == [1.0, 1.0, 1.0]


def test_encode_document_bm25_weights() -> None:
    vec = encode_document("dog dog cat")
    weights = _weights(vec)
    norm = K1 * (1 - B + B * 3 / AVG_DOC_LEN)
    assert weights[term_id("dog")] == pytest.approx(2 * (K1 + 1) / (2 + norm))
    assert weights[term_id("cat")] == pytest.approx(1 * (K1 + 1) / (1 + norm))
    assert vec.indices == sorted(vec.indices)


def test_encode_document_saturates_and_normalises_length() -> None:
    one = _weights(encode_document("dog"))[term_id("dog")]
    many = _weights(encode_document("dog " * 50))[term_id("dog")]
    assert many < K1 + 1  # saturation bound
    long_doc = encode_document("dog " + " ".join(f"word{i}" for i in range(100)))
    diluted = _weights(long_doc)[term_id("dog")]
    assert diluted < one  # longer documents weigh each term less
    assert encode_document("dog", avg_len=4.0).values != encode_document("dog", avg_len=64.0).values


def test_empty_and_stop_word_only_text() -> None:
    for text in ("", "   ", "the and of it"):
        assert encode_document(text).indices == []
        assert encode_query(text).indices == []


def test_avg_len_must_be_positive() -> None:
    with pytest.raises(ValueError):
        encode_document("dog", avg_len=0)


def _weights(vec: SparseVector) -> dict[int, float]:
    return dict(zip(vec.indices, vec.values, strict=True))
