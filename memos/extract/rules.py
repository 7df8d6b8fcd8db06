"""The rule-based extractor: regular expressions and heuristics, no model, no network.

How a message is read:

1. It is split into sentences. Questions yield entities and dates but no relations:
   asking "Do you still live in Lisbon?" asserts nothing.
2. Time expressions are found with :mod:`memos.extract.timeparse`; they date event facts
   ("Alice moved to Berlin (2024-06)") and plans.
3. Trigger patterns ("live in", "work at", "I'm a <job>", "my sister <Name>", "I love")
   fire; for each, the subject is found by walking back from the trigger over
   auxiliaries and adverbs ("I have recently moved" -> I; "my sister" -> Mira when the
   message named her), and the object by reading forward: a capitalised name for places
   and organisations, a short phrase for likes.
4. Entities are the speaker, the relations' arguments and capitalised names (a name at
   the start of a sentence counts only when it is known or appears mid-sentence too).

It prefers precision to recall: a relation is emitted only when subject and object are
both found; negations ("I don't live in Lisbon anymore") and habits of the past
("I used to work at X") turn into the past predicates (``lived_in``, ``worked_at``) or
into nothing, and modal verbs ("I might move") stop a trigger.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from memos.errors import InvalidInput
from memos.extract import Entity, Extraction, Relation, indefinite_article, normalize_name
from memos.extract import _lexicon as lex
from memos.extract import _patterns as pat
from memos.extract._text import (
    PLACE_CUES,
    Sentence,
    classify_name,
    clause_after,
    is_name_word,
    normalize_text,
    phrase_items,
    proper_after,
    proper_before,
    sentences,
    tokens_before,
)
from memos.extract.timeparse import TimeMention, find_time_expressions, parse_timestamp

__all__ = ["RuleExtractor", "asks_only"]

logger = logging.getLogger(__name__)


_OBJECT_KINDS = {
    "lives_in": "place", "lived_in": "place", "moved_to": "place", "born_in": "place", "grew_up_in": "place",
    "comes_from": "place", "works_at": "organization", "worked_at": "organization", "studies_at": "organization",
    "likes": "thing", "dislikes": "thing", "avoids": "thing", "has_pet": "thing", "has_diet": "thing",
    "is_a": "thing", "married_to": "person", "partner_of": "person",
}  # fmt: skip
# Verbs of a change of state: the sentence's date is when the new state began.
_BECAME = frozenset({"became", "become", "went", "gone", "turned"})
_HAVE = frozenset({"have", "has", "own", "owns"})
# Words before a bare verb that let a third person take it ("Mira doesn't like", "she will love").
_AUXILIARIES = frozenset({"do", "does", "did", "n't", "not", "never", "will", "'ll"})
# The bare forms of the liking verbs: after a name with no auxiliary ("Looks like a blast",
# "Themes like love") the capitalised word is not a subject.
_BARE_LIKE = frozenset({"love", "like", "enjoy", "adore"})
# A last word that leaves a liked thing unfinished ("escaping to").
_DANGLING = frozenset({"to", "on", "with", "for", "of", "about", "in", "at", "from", "into"})
_WORD_START = re.compile(r"[^\W\d_][\w'&-]*")


@dataclass(frozen=True, slots=True)
class _Subject:
    name: str
    negated: bool  # "don't", "no longer", "never" between subject and verb
    used_to: bool  # "used to": a habit of the past
    past: bool  # "was"/"were"/"had": not a current state
    after_be: bool  # the verb follows a form of "to be" ("I'm like, ..." is not liking)
    future: bool  # "will"/"'ll": a plan, not a fact
    been: bool  # "have been going to": a habit, not a plan
    singular: bool  # a third person ("Mira", "she", "my sister"): "Mira like" is no clause
    auxiliary: bool  # "do"/"does"/"did"/"will"/a negation before the verb ("Mira doesn't like")


class _Reader:
    """State of one extraction: what was found so far, who "she" and "my sister" are."""

    def __init__(
        self, text: str, speaker: str | None, reference: datetime | None, known: frozenset[str]
    ) -> None:
        self.text, self.speaker, self.reference, self.known = text, speaker, reference, known
        self.mentions = find_time_expressions(text, reference)
        # (subject, predicate, object) keys -> the relation and the fact that states it
        self.relations: dict[tuple[str, str, str], tuple[Relation, str]] = {}
        self.kinds: dict[str, Entity] = {}
        self.names: list[tuple[str, bool, str]] = []  # (name, at sentence start, word before)
        self.last_person: str | None = None
        self.last_pet: str | None = None
        self.family: dict[str, str] = {}  # "sister" -> "Mira", as named in this message
        self.plan_spans: list[tuple[int, int]] = []  # triggers already read as plans

    def run(self) -> Extraction:
        rules = (self._family, self._self_name, self._pets, self._moved, self._job_start, self._proper, self._jobs,
                 self._diet, self._likes, self._plans)  # fmt: skip
        for st in sentences(self.text):
            if not st.is_question:
                for rule in rules:
                    rule(st)
            self._scan_names(st)
        return Extraction(
            entities=self._entities(),
            relations=tuple(rel for rel, _ in self.relations.values()),
            dates=tuple(self.mentions),
            facts=tuple(fact for _, fact in self.relations.values()),
        )

    # ------------------------------------------------------------------ plumbing

    def _add(self, st: Sentence, subject: str, predicate: str, obj: str, *, fact: str | None = None,
             dated: str | None = None, obj_kind: str | None = None) -> None:  # fmt: skip
        """Record a relation with its fact. ``dated`` formats the sentence's date into a note
        on the fact ("since {}" -> "Alice lives in Berlin (since 2024-06)"); plans take a
        future date, everything else a past one."""
        subject, obj = normalize_name(subject), normalize_name(obj)
        key = (subject.casefold(), predicate, obj.casefold())
        if not subject or not obj or key[0] == key[2] or key in self.relations:
            return
        rel = Relation.of(subject, predicate, obj)
        text = fact or rel.fact
        when = self._when(st, future=predicate == "plans_to") if dated else None
        self.relations[key] = (rel, f"{text} ({dated.format(when.iso)})" if dated and when else text)
        if "'s " not in subject:
            self._entity(subject, "person")
        kind = obj_kind or _OBJECT_KINDS.get(predicate)
        if kind:
            self._entity(obj, kind)

    def _entity(self, name: str, kind: str) -> None:
        entity = Entity(name, kind)
        if entity.name and entity.key not in self.kinds:
            self.kinds[entity.key] = entity

    def _when(self, st: Sentence, *, future: bool) -> TimeMention | None:
        """The sentence's date: the first one on the right side of the reference time."""
        inside = [m for m in self.mentions if st.start <= m.span[0] < st.end]
        if self.reference is None:
            return inside[0] if inside else None
        ref = self.reference
        return next((m for m in inside if (m.end > ref if future else m.start <= ref)), None)

    def _subject(self, st: Sentence, pos: int, *, future_ok: bool = False) -> _Subject | None:
        """Who does the verb at ``pos``: walk back over auxiliaries and adverbs. A verb
        after "will"/"'ll" states nothing yet, so it has no subject unless ``future_ok``."""
        toks = tokens_before(st.text, pos)
        i, gap = len(toks), []
        while i and toks[i - 1].lower() in lex.SUBJECT_GAP:
            i -= 1
            gap.append(toks[i].lower())
        future = bool({"will", "'ll"}.intersection(gap))
        if not i or (future and not future_ok):
            return None
        head, low = toks[i - 1], toks[i - 1].lower()
        name: str | None = None
        if low in {"i", "we"}:
            name = self.speaker
        elif low in {"he", "she"}:
            name = self.last_person
        elif low in lex.FAMILY or low in lex.PETS:
            name = self._role(toks, i - 1)
        elif is_name_word(head) and head.replace("-", "").isalpha():
            words, j = [head], i - 1
            while j and len(words) < 3 and is_name_word(toks[j - 1]) and toks[j - 1].isalpha():
                j -= 1
                words.insert(0, toks[j])
            name = " ".join(words)
            self.last_person = name if name != self.speaker else self.last_person
        if not name:
            return None
        return _Subject(
            name=name,
            negated=bool(lex.NEGATIONS.intersection(gap)) or "longer" in gap,
            used_to="used" in gap,
            past=bool({"was", "were", "had"}.intersection(gap)),
            after_be=bool(gap) and gap[0] in {"am", "'m", "is", "'s", "are", "'re", "was", "were"},
            future=future,
            been="been" in gap,
            singular=low not in {"i", "we"},
            auxiliary=bool(_AUXILIARIES.intersection(gap)),
        )

    def _role(self, toks: list[str], k: int) -> str | None:
        """Resolve "my sister" to "Mira" (if named in this message) or "Alice's sister"."""
        word, j = toks[k].lower(), k
        while j and toks[j - 1].lower() in lex.FAMILY_MODIFIERS + lex.PET_MODIFIERS:
            j -= 1
        if j and toks[j - 1].lower() in {"my", "our"}:
            owner = self.speaker
            if word in lex.FAMILY and word in self.family:
                return self.family[word]
            if word in lex.FAMILY and j >= 2 and is_name_word(toks[j - 2]):
                return toks[j - 2]  # "Mira, my sister, lives in ..."
        elif j >= 2 and toks[j - 1] == "'s" and is_name_word(toks[j - 2]):
            owner = toks[j - 2]
        else:
            return None
        if owner is None:
            return None
        return f"{owner}'s {lex.PETS.get(word, word)}"

    def _name_at(self, st: Sentence, pos: int, max_words: int = 3) -> tuple[str, int] | None:
        got = proper_after(st.text, pos, max_words)
        return got if got and is_name_word(got[0].split()[0]) else None

    # ------------------------------------------------------------------ rules

    def _family(self, st: Sentence) -> None:
        for m in pat.MY_FAM_NAME.finditer(st.text):
            got = self._name_at(st, m.end())
            if got:
                self._kin(st, m["fam"].lower(), got[0])
        for m in pat.NAME_IS_MY_FAM.finditer(st.text):
            name = proper_before(st.text, m.start())
            if name:
                self._kin(st, m["fam"].lower(), name)
        for m in pat.FAM_NAME_IS.finditer(st.text):
            got = self._name_at(st, m.end())
            if got:
                self._kin(st, m["fam"].lower(), got[0])
        for m in pat.MARRIED.finditer(st.text):
            subj, got = self._subject(st, m.start()), self._name_at(st, m.end())
            if subj and got and not subj.negated:
                predicate = "married_to" if m["married"] else "partner_of"
                self._add(st, subj.name, predicate, got[0], obj_kind="person")

    def _kin(self, st: Sentence, word: str, name: str) -> None:
        name = normalize_name(name)
        if self.speaker is None or not name or name == self.speaker:
            return
        predicate, direction = lex.FAMILY[word]
        self.family[word], self.last_person = name, name
        self._entity(name, "person")
        if direction == "to_speaker":
            self._add(st, name, predicate, self.speaker, fact=f"{name} is {self.speaker}'s {word}")
        elif predicate == "married_to":
            self._add(st, self.speaker, predicate, name)
        else:
            self._add(st, self.speaker, predicate, name, fact=f"{name} is {self.speaker}'s {word}")

    def _self_name(self, st: Sentence) -> None:
        for m in pat.MY_NAME.finditer(st.text):
            got = self._name_at(st, m.end(), 2)
            if got and self.speaker:
                self._add(st, self.speaker, "has_name", got[0], obj_kind="person")

    def _pets(self, st: Sentence) -> None:
        for m in pat.HAS_PET.finditer(st.text):
            subj = self._subject(st, m.start())
            if subj is None or subj.negated or subj.past or subj.used_to:
                continue
            verb, species = " ".join(m["verb"].lower().split()), lex.PETS[m["pet"].lower()]
            if verb == "getting":
                self._add(st, subj.name, "plans_to", f"get a {species}", dated="{}")
                continue
            done = "adopted" if verb == "adopt" else verb
            named = pat.NAMED_AFTER.match(st.text, m.end())
            self._pet(st, subj.name, species, self._name_at(st, named.end(), 2) if named else None,
                      dated=None if verb in _HAVE else done + " {}")  # fmt: skip
        for pattern in (pat.MY_PET, pat.PET_NAME_IS):
            for m in pattern.finditer(st.text):
                if self.speaker is None:
                    break
                self._pet(st, self.speaker, lex.PETS[m["pet"].lower()], self._name_at(st, m.end(), 2))
        for m in pat.NAMED.finditer(st.text):
            subj = self._subject(st, m.start())
            if m["pet"] and self.speaker:
                target: str | None = f"{self.speaker}'s {lex.PETS[m['pet'].lower()]}"
            else:
                first_person = subj is not None and subj.name == self.speaker
                target = self.last_pet or (f"{self.speaker}'s pet" if first_person else None)
            got = self._name_at(st, m.end(), 2)
            if target and got:
                self._add(st, target, "has_name", got[0], obj_kind="thing")
        for m in pat.POSS_NAME_IS.finditer(st.text):
            got = self._name_at(st, m.end(), 2)
            if self.last_pet and got:
                self._add(st, self.last_pet, "has_name", got[0], obj_kind="thing")

    def _pet(
        self, st: Sentence, owner: str, species: str, name: tuple[str, int] | None, dated: str | None = None
    ) -> None:
        # "a dog named Pretzel" is said once; both facts carry the name so either answers
        # "what is the name of Alice's dog?"
        fact = f"{owner} has {indefinite_article(species)} {species}" + (f" named {name[0]}" if name else "")
        self._add(st, owner, "has_pet", species, fact=fact, dated=dated)
        self.last_pet = f"{owner}'s {species}"
        if name:
            self._add(st, self.last_pet, "has_name", name[0], obj_kind="thing")

    def _moved(self, st: Sentence) -> None:
        for m in pat.MOVED.finditer(st.text):
            subj = self._subject(st, m.start())
            if subj is None or subj.negated:
                continue
            ends: dict[str, str] = {}
            cursor = m.end()
            for _ in range(2):  # "moved from Lisbon to Berlin", in either order
                step = pat.FROM_TO.match(st.text, cursor)
                got = proper_after(st.text, step.end()) if step else None
                if step is None or got is None:
                    break
                ends.setdefault(step.group(1).lower(), got[0])
                cursor = got[1]
            if "to" in ends:
                self._add(st, subj.name, "moved_to", ends["to"], dated="{}")
                self._add(st, subj.name, "lives_in", ends["to"], dated="since {}")
            if "from" in ends:
                self._add(st, subj.name, "lived_in", ends["from"])

    def _job_start(self, st: Sentence) -> None:
        for m in pat.JOB_START.finditer(st.text):
            subj, got = self._subject(st, m.start(), future_ok=True), proper_after(st.text, m.end())
            if subj is None or got is None or subj.negated:
                continue
            verb = (m["verb"] or m["verb2"] or "").lower()
            if (
                verb == "starting"
                or subj.future
                or (self._when(st, future=True) and not self._when(st, future=False))
            ):
                self._add(st, subj.name, "plans_to", f"start working at {got[0]}", dated="{}")
                self.plan_spans.append((st.start + m.start(), st.start + m.end()))
                continue
            self._add(st, subj.name, "works_at", got[0], dated="since {}")
            self._job_after(st, subj.name, got[1])

    def _job_after(self, st: Sentence, subject: str, pos: int) -> None:
        m = pat.AS_JOB.match(st.text, pos)
        if m:
            self._add(st, subject, "is_a", m["job"])

    def _proper(self, st: Sentence) -> None:
        for pattern, predicate, kind in pat.PROPER_RULES:
            for m in pattern.finditer(st.text):
                subj, got = self._subject(st, m.start()), proper_after(st.text, m.end())
                if subj is None or got is None:
                    continue
                pred = predicate
                if subj.negated or subj.used_to or (subj.past and pred in pat.PAST_FORM):
                    # "I don't live in Lisbon anymore" / "I used to work at X": a former state.
                    after = st.text[got[1] :].lower()
                    former = subj.used_to or subj.past or "longer" in st.text.lower() or "anymore" in after
                    if pred not in pat.PAST_FORM or not former:
                        continue
                    pred = pat.PAST_FORM[pred]
                self._add(st, subj.name, pred, got[0], obj_kind=kind)
                if pred == "works_at":
                    self._job_after(st, subj.name, got[1])

    def _jobs(self, st: Sentence) -> None:
        for pattern in (pat.IS_JOB, pat.WORK_AS):
            for m in pattern.finditer(st.text):
                subj = self._subject(st, m.start())
                if subj is None or subj.negated or subj.past or subj.used_to:
                    continue
                job = " ".join(m["job"].split())
                if job.split()[0].lower() in lex.DETERMINERS | lex.PRONOUN_OBJECTS:
                    continue
                aux = (m.groupdict().get("aux") or "").lower()
                self._add(st, subj.name, "is_a", job, dated="since {}" if aux in _BECAME else None)
                at = pat.AT_ORG.match(st.text, m.end())
                got = proper_after(st.text, at.end()) if at else None
                if got:
                    self._add(st, subj.name, "works_at", got[0], obj_kind="organization")

    def _diet(self, st: Sentence) -> None:
        for m in pat.DIET.finditer(st.text):
            subj = self._subject(st, m.start())
            if subj is None or subj.negated or subj.past or subj.used_to:
                continue
            diet, aux = m["diet"].lower(), (m["aux"] or "").lower()
            self._add(st, subj.name, "has_diet", diet, dated="since {}" if aux in _BECAME else None)

    def _likes(self, st: Sentence) -> None:
        for pattern, predicate in ((pat.LIKE, "likes"), (pat.DISLIKE, "dislikes"), (pat.AVOID, "avoids")):
            for m in pattern.finditer(st.text):
                subj = self._subject(st, m.start())
                if subj is None or subj.used_to or subj.past:
                    continue
                pred = predicate
                if predicate == "likes" and m["verb"].lower() in {"like", "likes"} and subj.after_be:
                    continue  # "I'm like, totally lost" is a filler, not a preference
                if (
                    predicate == "likes"
                    and m["verb"].lower() in _BARE_LIKE
                    and subj.singular
                    and not subj.auxiliary
                ):
                    continue  # "Looks like a blast": no one likes anything
                if subj.negated:
                    if pred != "likes":
                        continue
                    pred = "dislikes"
                for item in _liked(st.text, m.end(), self.speaker):
                    self._add(st, subj.name, pred, item)
        for m in pat.FAVORITE.finditer(st.text):
            if self.speaker:
                for item in _liked(st.text, m.end(), self.speaker):
                    self._add(st, self.speaker, "likes", item)

    def _plans(self, st: Sentence) -> None:
        starts = [m.span[0] - st.start for m in self.mentions if st.start <= m.span[0] < st.end]

        def until_date(pos: int) -> int:  # a plan's clause ends where its date begins
            return min((p for p in starts if p >= pos), default=len(st.text))

        for m in pat.PLAN.finditer(st.text):
            subj = self._subject(st, m.start(), future_ok=True)
            first = pat.FIRST_WORD.match(st.text, m.end())
            if subj is None or subj.negated or subj.past or subj.been or first is None:
                continue
            word = first.group(1)
            clause = clause_after(st.text, m.end(), until_date(m.end()))
            if clause is None:
                continue
            if word.lower() in lex.DETERMINERS | {"my", "our"} or word[:1].isupper():
                if m["verb"].lower() != "going":
                    continue
                clause = f"go to {clause}"  # "going to the lake" is a trip, not a verb
            elif word.lower() in lex.PRONOUN_OBJECTS:
                continue
            self._add(st, subj.name, "plans_to", clause, dated="{}")
        if self._when(st, future=True) is None or self.reference is None:
            return  # "I'm visiting Mira" is a plan only when dated in the future
        for m in pat.ING_FUTURE.finditer(st.text):
            ing, span = m["ing"].lower(), (st.start + m.start("ing"), st.start + m.end())
            if ing == "going" and pat.GOING_TO_VERB.match(st.text, m.end()):
                continue  # handled by pat.PLAN
            if any(a < span[1] and span[0] < b for a, b in self.plan_spans):
                continue  # "I'll be starting at X" was read as a job start already
            subj = self._subject(st, m.start(), future_ok=True)
            if subj is None or subj.negated or subj.past:
                continue
            clause = clause_after(st.text, m.end(), until_date(m.end()))
            text = f"{lex.ING_BASE[ing]} {clause}" if clause else lex.ING_BASE[ing]
            self._add(st, subj.name, "plans_to", text, dated="{}")

    # ------------------------------------------------------------------ entities

    def _scan_names(self, st: Sentence) -> None:
        first = pat.FIRST_WORD.match(st.text)
        pos = 0
        for m in _WORD_START.finditer(st.text):
            if m.start() < pos or not is_name_word(m.group()):
                continue
            got = proper_after(st.text, m.start(), 4)
            if got is None:
                continue
            pos = got[1]
            before = [t.lower() for t in tokens_before(st.text, m.start(), 30)]
            while before and before[-1] in {"the", "a", "an"}:  # "in the Black Forest": the cue is "in"
                before.pop()
            self.names.append(
                (got[0], first is not None and m.start() == first.start(1), before[-1] if before else "")
            )

    def _entities(self) -> tuple[Entity, ...]:
        out: dict[str, Entity] = {}
        if self.speaker:
            out[self.speaker.casefold()] = Entity(self.speaker, "person")
        for key, entity in self.kinds.items():
            out.setdefault(key, entity)
        known = self.known | {n.casefold() for n, initial, _ in self.names if not initial} | set(out)
        for name, initial, before in self.names:
            entity = Entity(name, classify_name(name, before))
            if not entity.name or (initial and " " not in name and entity.key not in known):
                continue
            if name.isupper() and before not in PLACE_CUES:
                continue  # "UX", "TV": acronyms are names only where a place is expected
            out.setdefault(entity.key, entity)
        for mention in self.mentions:
            out.setdefault(mention.iso, Entity(mention.iso, "date"))
        return tuple(out.values())


class RuleExtractor:
    """Extracts entities, relations, dates and facts with rules alone.

    Fast (thousands of chat messages per second on one core) and total: :meth:`extract`
    never raises on any text; a failure inside is logged, counted in :attr:`failures`
    and answered with an empty :class:`~memos.extract.Extraction`.

    ``known_names`` (e.g. the conversation's speakers) count as names even at the start
    of a sentence. Texts longer than ``max_chars`` are read up to that length.
    """

    name = "rules"

    def __init__(self, known_names: Iterable[str] = (), *, max_chars: int = 50_000) -> None:
        self.known_names = frozenset(normalize_name(n).casefold() for n in known_names if isinstance(n, str))
        self.max_chars = max_chars
        self.failures = 0

    def extract(
        self, text: str, *, speaker: str | None = None, reference_time: datetime | None = None
    ) -> Extraction:
        """Read one message written by ``speaker`` at ``reference_time``."""
        try:
            if not isinstance(text, str) or not text.strip():
                return Extraction()
            who = normalize_name(speaker) if isinstance(speaker, str) else None
            known = self.known_names | ({who.casefold()} if who else set())
            reader = _Reader(
                normalize_text(text[: self.max_chars]), who or None, _reference(reference_time), known
            )
            return reader.run()
        except Exception:  # the contract is "never raises": a bug must not lose the turn
            self.failures += 1
            size = len(text) if isinstance(text, str) else -1
            logger.warning("rule extraction failed on a %d-character text", size, exc_info=True)
            return Extraction()


def asks_only(text: str) -> bool:
    """Whether ``text`` has sentences and every one is a question (split as the extractor
    splits them): such a message asks, it asserts nothing."""
    parts = [p for p in sentences(text) if p.text.strip()]
    return bool(parts) and all(p.is_question for p in parts)


def _liked(text: str, pos: int, speaker: str | None) -> list[str]:
    """The things liked after ``pos``: "my" inside one is the speaker's ("running my own
    studio" -> "running Jon's own studio"); one cut off after a preposition ("I love
    escaping to that world" -> "escaping to") names nothing and is dropped."""
    out = []
    for item in phrase_items(text, pos, speaker):
        words = item.split()
        if words[-1].lower() in _DANGLING:
            continue
        if speaker:
            words = [words[0], *(f"{speaker}'s" if w.lower() in {"my", "our"} else w for w in words[1:])]
        out.append(" ".join(words))
    return out


def _reference(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return parse_timestamp(value)
    try:
        return parse_timestamp(value)  # type: ignore[arg-type]  # lenient: strings and epochs too
    except InvalidInput:
        return None
