"""Extraction of entities, relations, dates and facts from a message.

The types here are what every extractor returns, whether it is the rule-based
:class:`~memos.extract.rules.RuleExtractor` (no model, no network) or an LLM-backed one.
They are plain frozen dataclasses so that they hash, compare and cost nothing to build.
The Protocol an extractor implements is :class:`memos.protocols.Extractor`.

A :class:`Relation` whose predicate is *functional* holds one value at a time for a
subject (``lives_in``, ``works_at``, ...): a newer relation with the same subject and
predicate but another object supersedes the older one. :meth:`Relation.conflicts_with`
states that rule, plus the opposing pairs (``likes`` against ``dislikes``/``avoids``), so
the caller that keeps memories does not have to know the predicate vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from memos.errors import InvalidInput
from memos.extract.timeparse import TimeMention

__all__ = [
    "ENTITY_KINDS",
    "FUNCTIONAL_PREDICATES",
    "OPPOSING_PREDICATES",
    "Entity",
    "Extraction",
    "Relation",
    "indefinite_article",
    "normalize_name",
]

#: The kinds an :class:`Entity` may have.
ENTITY_KINDS = frozenset({"person", "place", "organization", "thing", "date"})

#: Predicates with one current value per subject: a newer object replaces the older one.
FUNCTIONAL_PREDICATES = frozenset(
    {"lives_in", "works_at", "married_to", "partner_of", "has_name", "born_in", "comes_from",
     "studies_at", "is_a", "has_diet"}
)  # fmt: skip

#: Pairs of predicates that contradict each other for the same subject and object.
OPPOSING_PREDICATES = frozenset({frozenset({"likes", "dislikes"}), frozenset({"likes", "avoids"})})

# Templates for the third-person statement of a relation; an unknown predicate is
# rendered from its own name ("plays_in" -> "plays in").
_FACT_TEMPLATES = {
    "lives_in": "{s} lives in {o}",
    "lived_in": "{s} lived in {o}",
    "moved_to": "{s} moved to {o}",
    "works_at": "{s} works at {o}",
    "worked_at": "{s} worked at {o}",
    "studies_at": "{s} studies at {o}",
    "born_in": "{s} was born in {o}",
    "grew_up_in": "{s} grew up in {o}",
    "comes_from": "{s} is from {o}",
    "likes": "{s} likes {o}",
    "dislikes": "{s} dislikes {o}",
    "avoids": "{s} no longer eats {o}",
    "has_diet": "{s} is {o}",
    "has_pet": "{s} has {a} {o}",
    "has_name": "{s}'s name is {o}",
    "is_a": "{s} is {a} {o}",
    "sibling_of": "{s} is {o}'s sibling",
    "parent_of": "{s} is {o}'s parent",
    "child_of": "{s} is {o}'s child",
    "relative_of": "{s} is {o}'s relative",
    "friend_of": "{s} is {o}'s friend",
    "colleague_of": "{s} is {o}'s colleague",
    "married_to": "{s} is married to {o}",
    "partner_of": "{s} is {o}'s partner",
    "plans_to": "{s} plans to {o}",
}

_SPACES = re.compile(r"\s+")
_POSSESSIVE = re.compile(r"(?:['’]s|(?<=s)['’])$")
_EDGE_PUNCT = "\"'“”‘’`«»()[]{}<>.,;:!?*_ "


@dataclass(frozen=True, slots=True)
class Entity:
    """A named thing a message mentions.

    ``name`` is normalised on construction: whitespace collapsed, quotes and edge
    punctuation dropped, a trailing possessive removed ("Mira's" -> "Mira"); its case is
    kept. ``kind`` is one of :data:`ENTITY_KINDS`.
    """

    name: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ENTITY_KINDS:
            raise InvalidInput(f"unknown entity kind {self.kind!r}; use one of {sorted(ENTITY_KINDS)}")
        # frozen dataclass: normalising in place needs object.__setattr__
        object.__setattr__(self, "name", normalize_name(self.name))

    @property
    def key(self) -> str:
        """The lower-cased canonical form, for deduplication across messages."""
        return self.name.casefold()


@dataclass(frozen=True, slots=True)
class Relation:
    """A ``(subject, predicate, object)`` triple; ``functional`` marks single-valued
    predicates whose newer value supersedes the older one.

    Build one with :meth:`of` to take ``functional`` from :data:`FUNCTIONAL_PREDICATES`.
    """

    subject: str
    predicate: str
    object: str
    functional: bool

    @classmethod
    def of(cls, subject: str, predicate: str, obj: str) -> Relation:
        """A relation whose ``functional`` flag follows :data:`FUNCTIONAL_PREDICATES`."""
        return cls(subject, predicate, obj, predicate in FUNCTIONAL_PREDICATES)

    @property
    def fact(self) -> str:
        """The relation as a short third-person statement ("Alice lives in Berlin")."""
        template = _FACT_TEMPLATES.get(self.predicate)
        if template is None:
            return f"{self.subject} {self.predicate.replace('_', ' ')} {self.object}"
        return template.format(s=self.subject, o=self.object, a=indefinite_article(self.object))

    def conflicts_with(self, other: Relation) -> bool:
        """Whether ``other`` (about the same subject) contradicts this relation: a
        functional predicate with a different object, or opposing predicates
        (:data:`OPPOSING_PREDICATES`) with the same object."""
        if self.subject.casefold() != other.subject.casefold():
            return False
        same_object = self.object.casefold() == other.object.casefold()
        if self.predicate == other.predicate:
            return self.functional and not same_object
        return same_object and frozenset({self.predicate, other.predicate}) in OPPOSING_PREDICATES


@dataclass(frozen=True, slots=True)
class Extraction:
    """What an extractor found in one message.

    ``facts`` are short, normalised third-person statements, one per relation:
    ``facts[i]`` states ``relations[i]`` ("Alice lives in Berlin (since 2024-06)"), with a
    date note where the message dated the event. ``dates`` are the message's time
    expressions resolved against its timestamp (``TimeMention.iso`` gives the ISO form).
    """

    entities: tuple[Entity, ...] = field(default_factory=tuple)
    relations: tuple[Relation, ...] = field(default_factory=tuple)
    dates: tuple[TimeMention, ...] = field(default_factory=tuple)
    facts: tuple[str, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.entities or self.relations or self.dates or self.facts)


def indefinite_article(phrase: str) -> str:
    """ "a" or "an" for ``phrase`` by its sound: "an engineer", "a UX designer", "an MRI tech"."""
    first = phrase.split()[0] if phrase.split() else ""
    if len(first) > 1 and first.isupper():  # an acronym is read letter by letter
        return "an" if first[0] in "AEFHILMNORSX" else "a"
    low = first.lower()
    if low.startswith(("uni", "use", "usu", "eu", "one")):
        return "a"
    return "an" if low[:1] in ("a", "e", "i", "o", "u") or low.startswith(("hour", "honest")) else "a"


def normalize_name(name: str) -> str:
    """Collapse whitespace, drop edge punctuation and a trailing possessive ('s)."""
    text = _SPACES.sub(" ", name).strip(_EDGE_PUNCT)
    return _POSSESSIVE.sub("", text).strip(_EDGE_PUNCT)

