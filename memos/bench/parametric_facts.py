"""Synthetic personal facts for ``memos bench parametric``: things no base model can know.

Each fact has a unique subject (a relative or friend with an invented first name, or the
user's own pet/favourite), an object drawn from lists of real but unguessable values, and
questions in phrasings that :mod:`memos.parametric.data` never generates (the held-out
phrasings the benchmark reports as ``recall_*``). Everything is seeded: the same ``n``
gives the same facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RELATIVES = ("sister", "brother", "cousin", "friend", "colleague", "neighbor", "aunt", "uncle",
             "grandmother", "grandfather", "niece", "nephew", "boss", "roommate", "godmother")  # fmt: skip
SYLLABLES = ("ka", "ri", "mo", "ta", "le", "vi", "no", "sa", "du", "pe", "lo", "mi", "ra", "zo",
             "be", "fi", "go", "ha", "ju", "ne", "so", "te", "wa", "yo")  # fmt: skip
CITIES = ("Tromsø", "Ushuaia", "Tartu", "Plovdiv", "Trondheim", "Valparaíso", "Hobart", "Tbilisi",
          "Cusco", "Nairobi", "Reykjavik", "Ljubljana", "Kraków", "Porto", "Tampere", "Aarhus",
          "Bergen", "Gdańsk", "Zagreb", "Sapporo", "Halifax", "Dunedin", "Windhoek", "Bilbao",
          "Marrakesh", "Salzburg", "Bruges", "Galway", "Riga", "Vilnius")  # fmt: skip
JOBS = ("glassblower", "beekeeper", "cartographer", "luthier", "sommelier", "taxidermist", "farrier",
        "locksmith", "blacksmith", "puppeteer", "ferry captain", "perfumer", "clockmaker", "stonemason",
        "falconer", "bookbinder", "cooper", "organ builder", "tea taster", "lighthouse keeper")  # fmt: skip
COMPANIES = ("Norvik Tools", "Pelago Shipping", "Brightwell Labs", "Kestrel Foods", "Aldermoor Bank",
             "Quillon Press", "Tessaro Motors", "Veltra Energy", "Orbis Textiles", "Lumen Dairy")  # fmt: skip
INSTRUMENTS = ("the bassoon", "the theremin", "the hurdy-gurdy", "the oboe", "the banjo", "the cello",
               "the harp", "the accordion", "the sitar", "the tuba")  # fmt: skip
LANGUAGES = ("Icelandic", "Basque", "Welsh", "Estonian", "Swahili", "Tagalog", "Maltese", "Georgian",
             "Quechua", "Faroese")  # fmt: skip
ALLERGENS = ("kiwis", "sesame", "celery", "walnuts", "shellfish", "mustard", "lupin", "buckwheat",
             "mangoes", "cinnamon")  # fmt: skip
CARS = ("Saab 900", "Lada Niva", "Citroën 2CV", "Volvo Amazon", "Trabant", "Fiat Multipla",
        "Skoda Octavia", "Renault Twingo", "Mini Cooper", "Subaru Forester")  # fmt: skip
COLLECTIONS = ("antique maps", "seashells", "vinyl records", "pocket watches", "stamps", "matchboxes",
               "fountain pens", "old coins", "snow globes", "tin toys")  # fmt: skip
PETS = ("dog", "cat", "parrot", "rabbit", "tortoise", "hamster", "goldfish", "ferret", "pony", "iguana")
FAVORITES = ("food", "color", "tea", "flower", "book", "band", "dessert", "sport", "season", "cheese")
FAVORITE_VALUES = ("pierogi", "teal", "oolong", "peonies", "Moby Dick", "Radiohead", "baklava",
                   "curling", "autumn", "gouda")  # fmt: skip

# held-out phrasings: never produced by memos.parametric.data (checked by a test)
HELDOUT = {
    "lives_in": ("Do you know where {s} lives?", "Which town is {s} living in?"),
    "works_as": ("Do you remember what {s} does for work?", "What's {poss} occupation?"),
    "works_at": ("Do you know which company employs {s}?", "What's the name of {poss} workplace?"),
    "speaks": ("Do you know which language {s} speaks?", "In what language does {s} talk?"),
    "plays": ("Do you know what instrument {s} plays?", "Which musical instrument does {s} play?"),
    "allergic_to": ("Do you know what {s} is allergic to?", "What gives {s} an allergic reaction?"),
    "drives": ("Do you know what car {s} drives?", "What's {poss} car?"),
    "collects": ("Do you know what {s} collects?", "What does {s} have a collection of?"),
    "pet_named": ("Do you know the name of {poss} {k}?", "How do I call my {k}?"),
    "favorite": ("Do you know {poss} favorite {k}?", "Tell me {poss} favorite {k}."),
}

_VALUES = {"lives_in": CITIES, "works_as": JOBS, "works_at": COMPANIES, "speaks": LANGUAGES,
           "plays": INSTRUMENTS, "allergic_to": ALLERGENS, "drives": CARS, "collects": COLLECTIONS}  # fmt: skip
_VERBS = {"lives_in": "lives in", "works_as": "works as a", "works_at": "works at", "speaks": "speaks",
          "plays": "plays", "allergic_to": "is allergic to", "drives": "drives a", "collects": "collects"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SyntheticFact:
    text: str  # the memory, as an application would store it
    answer: str  # what a correct answer contains
    relation: str
    heldout: tuple[str, ...]  # question phrasings training never sees


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name not in used and len(name) >= 4:
            used.add(name)
            return name


def synthetic_facts(n: int = 100, seed: int = 7) -> list[SyntheticFact]:
    """``n`` facts about "the user": pets and favourites first (one each), then relatives."""
    rng = random.Random(seed)
    used: set[str] = set()
    out: list[SyntheticFact] = []
    own = [("pet_named", k) for k in PETS] + [("favorite", k) for k in FAVORITES]
    rng.shuffle(own)
    for relation, kind in own[: min(len(own), n // 5)]:
        if relation == "pet_named":
            value = _name(rng, used)
            text = f"The user has a {kind} named {value}"
        else:
            value = FAVORITE_VALUES[FAVORITES.index(kind)]
            text = f"The user's favorite {kind} is {value}"
        held = tuple(q.format(s="I", poss="my", k=kind) for q in HELDOUT[relation])
        out.append(SyntheticFact(text, value, relation, held))
    relations = list(_VALUES)
    while len(out) < n:
        relation = relations[len(out) % len(relations)]
        relative = rng.choice(RELATIVES)
        person = _name(rng, used)
        value = rng.choice(_VALUES[relation])
        text = f"The user's {relative} {person} {_VERBS[relation]} {value}"
        s = f"my {relative} {person}"
        held = tuple(q.format(s=s, poss=f"{s}'s", k="") for q in HELDOUT[relation])
        answer = value.removeprefix("the ")
        out.append(SyntheticFact(text, answer, relation, held))
    return out
