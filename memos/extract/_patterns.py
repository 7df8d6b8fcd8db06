"""The trigger patterns of the rule-based extractor (private to :mod:`memos.extract`).

Patterns are case-insensitive; whether a word is a name (capitalised) is checked in code,
since Python's ``re`` has no Unicode upper-case class. Word lists come from
:mod:`memos.extract._lexicon`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from memos.extract import _lexicon as lex

_I = re.IGNORECASE


def _alt(words: Iterable[str]) -> str:
    # Longest first, so "grandmother" is tried before "grand..." prefixes of it.
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_FAM = _alt(lex.FAMILY)
_FAM_MOD = rf"(?:(?:{_alt(lex.FAMILY_MODIFIERS)})[\s-]+)*"
_PET = _alt(lex.PETS)
_PET_MOD = rf"(?:(?:{_alt(lex.PET_MODIFIERS)})[\s-]+)*"
_JOB_PHRASE = rf"(?P<job>(?:[\w-]+\s+){{0,2}}?(?:{_alt(lex.JOBS)}))"

# "<subject> <trigger> <Proper Noun>": (trigger, predicate, kind of the object).
PROPER_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\b(?:live|lives|living|reside|resides|residing|based|settled|staying)\s+(?:here\s+|now\s+)?in\b", _I),
     "lives_in", "place"),
    (re.compile(r"\blived\s+in\b", _I), "lived_in", "place"),
    (re.compile(r"\bborn(?:\s+and\s+raised)?\s+in\b", _I), "born_in", "place"),
    (re.compile(r"\bgrew\s+up\s+in\b", _I), "grew_up_in", "place"),
    (re.compile(r"(?:\b(?:am|is|are|come|comes)|'m|'s|'re)\s+(?:originally\s+)?from\b", _I), "comes_from", "place"),
    (re.compile(r"\b(?:work|works|working|employed)\s+(?:full[- ]time\s+|part[- ]time\s+|remotely\s+)?(?:at|for)\b",
                _I), "works_at", "organization"),
    (re.compile(r"\bworked\s+(?:at|for)\b", _I), "worked_at", "organization"),
    (re.compile(r"\b(?:study|studies|studying|enrolled)\s+(?:at|in)\b|\bstudent\s+at\b", _I), "studies_at",
     "organization"),
)  # fmt: skip
PAST_FORM = {"lives_in": "lived_in", "works_at": "worked_at"}
JOB_START = re.compile(
    r"\b(?:joined|(?P<verb>started|starting|got|landed|accepted|took)\s+(?:a\s+|an\s+|my\s+|the\s+)?(?:new\s+)?"
    r"(?:job|position|role)\s+(?:at|with)|(?P<verb2>started|starting)\s+(?:working\s+)?at|got\s+hired\s+(?:at|by))\b",
    _I,
)
MOVED = re.compile(r"\b(?:moved|relocated)(?:\s+(?:back|here|over|away))?\b", _I)
FROM_TO = re.compile(r"\s+(?:all\s+the\s+way\s+)?(from|to)\s+", _I)
AS_JOB = re.compile(rf"\s*,?\s*as\s+an?\s+{_JOB_PHRASE}\b", _I)
AT_ORG = re.compile(r"\s*,?\s*(?:at|for|with)\s+", _I)
IS_JOB = re.compile(
    rf"(?:\b(?P<aux>am|is|are|became|become|been|now)|'m|'s|'re)\s+(?:now\s+|officially\s+|also\s+|still\s+)?"
    rf"an?\s+{_JOB_PHRASE}\b",
    _I,
)
WORK_AS = re.compile(
    r"\bwork(?:s|ing)?\s+as\s+(?:an?\s+)?(?P<job>[\w-]+(?:\s+[\w-]+){0,2}?)"
    r"(?=\s+(?:at|for|in|with|now|and|but|since|because|here|there)\b|\s*[.,;!?]|\s*$)",
    _I,
)
DIET = re.compile(
    rf"(?:\b(?P<aux>am|is|are|became|become|went|gone|turned|been|now|stayed)|'m|'s|'re)\s+"
    rf"(?:(?:now|fully|completely|strictly|mostly|officially|a)\s+)*(?P<diet>{_alt(lex.DIETS)})\b",
    _I,
)
LIKE = re.compile(
    r"\b(?P<verb>love|loves|like|likes|enjoy|enjoys|adore|adores|into|(?:fan|lover)\s+of|passionate\s+about"
    r"|obsessed\s+with|crazy\s+about|addicted\s+to|fond\s+of)\b",
    _I,
)
DISLIKE = re.compile(
    r"\b(?:hate|hates|dislike|dislikes|detest|detests|loathe|loathes|can't\s+stand|cannot\s+stand)\b", _I
)
AVOID = re.compile(
    r"\b(?:(?:stopped|quit|gave\s+up|given\s+up)\s+eating|(?:don't|do\s+not|doesn't|does\s+not|no\s+longer|never)\s+eat)\b",
    _I,
)
FAVORITE = re.compile(
    r"\b(?:my|our)\s+(?:all-time\s+|absolute\s+)?favou?rite\s+[\w -]{1,30}?\s+(?:is|are)\s+", _I
)
HAS_PET = re.compile(
    rf"\b(?P<verb>have|has|got|adopted|adopt|rescued|bought|brought\s+home|welcomed|own|owns|getting)\s+"
    rf"(?:(?:a|an|one|two|three|another|the|\d+)\s+)?{_PET_MOD}(?:[\w-]+\s+)??(?P<pet>{_PET})(?:s)?\b",
    _I,
)
NAMED_AFTER = re.compile(r"\s*,?\s+(?:named|called)\s+", _I)
MY_PET = re.compile(rf"\b(?:my|our)\s+{_PET_MOD}(?P<pet>{_PET})\b(?!')(?:\s*,)?", _I)
PET_NAME_IS = re.compile(
    rf"\b(?:my|our)\s+{_PET_MOD}(?P<pet>{_PET})(?:'s\s+name\s+is|\s+is\s+(?:called|named))\s+", _I
)
NAMED = re.compile(
    rf"\b(?:named|called|call|name|naming)\s+(?:(?P<pron>him|her|it)|(?:my|our|the)\s+{_PET_MOD}(?P<pet>{_PET}))\s+",
    _I,
)
POSS_NAME_IS = re.compile(r"\b(?:his|her|its)\s+name\s+is\s+", _I)
MY_FAM_NAME = re.compile(rf"\b(?:my|our)\s+{_FAM_MOD}(?P<fam>{_FAM})(?:\s*,)?\s+", _I)
NAME_IS_MY_FAM = re.compile(rf"(?:\s+(?:is|was)\s+|'s\s+|\s*,\s*)my\s+{_FAM_MOD}(?P<fam>{_FAM})\b", _I)
FAM_NAME_IS = re.compile(
    rf"\b(?:my|our)\s+{_FAM_MOD}(?P<fam>{_FAM})(?:'s\s+name\s+is|\s+is\s+(?:called|named))\s+", _I
)
MARRIED = re.compile(r"\b(?:(?P<married>(?:got\s+)?married(?:\s+to)?)|engaged\s+to|dating)\s+", _I)
MY_NAME = re.compile(r"\b(?:my\s+name\s+is|call\s+me|my\s+name's)\s+", _I)
PLAN = re.compile(r"\b(?P<verb>plan|plans|planning|going|hoping|hope|intend|intends|intending)\s+to\s+", _I)
ING_FUTURE = re.compile(
    rf"(?:\b(?:am|are|is|be)|'m|'re|'s)\s+(?:also\s+|finally\s+|actually\s+)?(?P<ing>{_alt(lex.ING_BASE)})\b",
    _I,
)
GOING_TO_VERB = re.compile(r"\s+to\s+[a-z]")
FIRST_WORD = re.compile(r"\s*([^\W_][\w'-]*)")
