"""Text helpers for the rule-based extractor: sentences, proper nouns, object phrases.

Everything here works on plain strings with character offsets, is linear in the length
of its input and never raises on odd text (it returns nothing instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memos.extract._lexicon import (
    CALENDAR_WORDS,
    DETERMINERS,
    GERUND_PREPOSITIONS,
    LANGUAGES,
    NOT_NAMES,
    ORG_SUFFIXES,
    PHRASE_STOPS,
    PRONOUN_OBJECTS,
    VAGUE_GERUNDS,
    WORD_RE,
    gerund,
    split_token,
)

# Curly quotes and odd spaces map to ASCII one-for-one, so offsets stay valid.
_TRANSLATE = str.maketrans(
    {"’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " ", "\u2009": " ", "\u202f": " "}
)
_ABBREVIATION_END = re.compile(r"(?:\b(?:St|Dr|Mr|Mrs|Ms|Mt|Ft|Prof|Jr|Sr|vs|etc)|\be\.g|\bi\.e)\.$")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\s*\n\s*")
_WORD = re.compile(r"\s*((?:St|Dr|Mt|Ft)\.|[^\W_][\w'&-]*)")
_LEAD_THE = re.compile(r"\s*(?:the\s+)?")
_CONNECTORS = frozenset(
    {"of", "de", "da", "do", "del", "la", "le", "von", "van", "der", "den", "di", "du", "y"}
)
_HARD_STOP = re.compile(r"[.;:!?()\[\]\"\n]|\s[-–—]\s|[–—]")
_CLAUSE_STOP = re.compile(
    r"[.;:!?()\[\]\"\n,]|\s[-–—]\s|[–—]|\s(?:because|but|so|since|although|though|which|when|while|and\s+then)\b"
)
_LIST_TOKEN = re.compile(r"[^\W_][\w'-]*|[,&/]")
_TRAILING_FILLER = frozenset(
    {"soon", "maybe", "too", "then", "now", "again", "already", "eventually", "finally"}
)


def normalize_text(text: str) -> str:
    """Curly quotes to straight ones (same length, so offsets survive)."""
    return text.translate(_TRANSLATE)


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence and where it starts in the message."""

    start: int
    text: str

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def is_question(self) -> bool:
        return self.text.rstrip().endswith("?")


def sentences(text: str) -> list[Sentence]:
    """Split on sentence punctuation and newlines, not after "St." or "Dr."."""
    out: list[Sentence] = []
    pos = 0
    pending_start: int | None = None
    for m in _SENTENCE_BREAK.finditer(text):
        piece = text[pos : m.start()]
        if _ABBREVIATION_END.search(piece) and "\n" not in m.group():
            pending_start = pos if pending_start is None else pending_start
            pos = m.end()
            continue
        start = pos if pending_start is None else pending_start
        if text[start : m.start()].strip():
            out.append(Sentence(start, text[start : m.start()]))
        pos, pending_start = m.end(), None
    start = pos if pending_start is None else pending_start
    if text[start:].strip():
        out.append(Sentence(start, text[start:]))
    return out


def is_name_word(word: str) -> bool:
    """A capitalised word that could start a name (not "The", "Monday", "I'm")."""
    return word[:1].isupper() and word.lower() not in NOT_NAMES and word.lower() not in CALENDAR_WORDS


def proper_after(text: str, pos: int, max_words: int = 5) -> tuple[str, int] | None:
    """The proper noun starting at ``pos`` (after spaces and a lowercase "the"), as
    ``(name, end)``: capitalised words, joined by connectors such as "of" ("University
    of Lisbon"). ``None`` when the next word is not capitalised."""
    lead = _LEAD_THE.match(text, pos)
    cursor = end = lead.end() if lead else pos
    words: list[str] = []
    pending: str | None = None
    while len(words) < max_words:
        m = _WORD.match(text, cursor)
        if m is None:
            break
        word = m.group(1)
        if word[:1].isupper() and (words or is_name_word(word)) and word.lower() not in CALENDAR_WORDS:
            words += [pending, word] if pending else [word]
            pending, cursor, end = None, m.end(), m.end()
        elif words and pending is None and word.lower() in _CONNECTORS:
            pending, cursor = word, m.end()
        else:
            break
    if not words:
        return None
    return " ".join(words), end


_BACK_TOKEN = re.compile(r"[^\W_][\w'&-]*")


def proper_before(text: str, pos: int, max_words: int = 3) -> str | None:
    """The capitalised run of words that ends right before ``pos`` (spaces allowed)."""
    window_start = max(0, pos - 80)
    tokens = list(_BACK_TOKEN.finditer(text, window_start, pos))
    words: list[str] = []
    edge = pos
    for tok in reversed(tokens):
        if text[tok.end() : edge].strip() or len(words) >= max_words:
            break
        if not tok.group()[:1].isupper():
            break
        words.insert(0, tok.group())
        edge = tok.start()
    while words and not is_name_word(words[0]):
        words.pop(0)
    return " ".join(words) or None


def tokens_before(text: str, pos: int, window: int = 120) -> list[str]:
    """The words before ``pos`` in the same clause-ish window, contractions split."""
    out: list[str] = []
    for m in WORD_RE.finditer(text, max(0, pos - window), pos):
        out.extend(split_token(m.group()))
    return out


def phrase_items(text: str, pos: int, speaker: str | None, max_words: int = 4) -> list[str]:
    """The object of a verb like "love": a short noun phrase, or several joined by
    "and"/commas ("hiking, jazz and cooking"). Stops at prepositions, conjunctions and
    sentence punctuation; drops pronouns ("I love it") and over-long phrases."""
    stop = _HARD_STOP.search(text, pos, min(len(text), pos + 200))
    segment = text[pos : stop.start() if stop else min(len(text), pos + 200)]
    items: list[list[str]] = [[]]
    for m in _LIST_TOKEN.finditer(segment):
        tok, low = m.group(), m.group().lower()
        if tok in ",&/" or low in {"and", "or"}:
            if items[-1]:
                items.append([])
            continue
        current = items[-1]
        lone_gerund = len(current) == 1 and current[0].lower().endswith("ing")
        if low in PHRASE_STOPS and not (lone_gerund and low in GERUND_PREPOSITIONS):
            break
        if len(current) == max_words:
            items[-1] = []  # too long to be a crisp object: drop it rather than guess
            break
        current.append(tok)
    out = []
    for words in items:
        item = _clean_item(words, speaker)
        if item and item not in out:
            out.append(item)
    return out


def _clean_item(words: list[str], speaker: str | None) -> str | None:
    while words and words[0].lower() in DETERMINERS:
        words = words[1:]
    while words and words[-1].lower() in DETERMINERS | {"lot", "bit"}:
        words = words[:-1]
    if not words or any(
        w.lower() in PRONOUN_OBJECTS | {"i", "we", "he", "she", "they", "you"} for w in words
    ):
        return None
    first = words[0].lower()
    if len(words) == 1 and (first in VAGUE_GERUNDS or (first.endswith("ly") and words[0].islower())):
        return None  # "I love living here", "I'm into jazz, obviously"
    if first == "to" and len(words) > 1:  # "love to hike" -> "hiking"
        words = [gerund(words[1]), *words[2:]]
    elif first in {"my", "our"}:
        if speaker is None or len(words) == 1:
            return None
        words = [f"{speaker}'s", *words[1:]]
    elif first in {"your", "his", "her", "their", "its", "to"}:
        return None
    return " ".join(words)


def clause_after(text: str, pos: int, limit: int, max_words: int = 10) -> str | None:
    """The rest of a clause from ``pos`` (a plan: "visit Mira in Tromsø"), cut at
    punctuation, at conjunctions and at ``limit`` (where a time expression starts)."""
    limit = min(limit, len(text), pos + 300)
    stop = _CLAUSE_STOP.search(text, pos, limit)
    words = text[pos : stop.start() if stop else limit].split()[:max_words]
    while words and words[-1].lower().strip(",") in _TRAILING_FILLER:
        words.pop()  # "visit Mira soon" -> "visit Mira"; "start on <date>" -> "start"
    return " ".join(words) or None


# The word before a capitalised name that makes it a place ("visit" is left out: people are visited too).
PLACE_CUES = frozenset(
    {"in", "to", "from", "near", "around", "into", "across", "through", "at", "towards", "toward", "via"}
)
_ORG_CUES = frozenset({"joined", "for"})


def classify_name(name: str, before: str) -> str:
    """The entity kind of a capitalised name, from its own words and the word before it."""
    words = name.lower().split()
    if any(w in ORG_SUFFIXES for w in words):
        return "organization"
    if words[0] in LANGUAGES:
        return "thing"
    if before in PLACE_CUES:
        return "place"
    if before in _ORG_CUES:
        return "organization"
    return "person"  # in chat, an unknown capitalised name is most often someone's
