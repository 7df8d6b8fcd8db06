"""Training data for parametric memory: statements, questions and answers, held-out split.

No model is needed: a memory's text is read as ``<subject> <predicate> <object>`` by a
small table of English predicates ("lives in", "works as", "'s favorite <thing> is",
"has a <pet> named" …, and the rule extractor's own: "plans to", "'s name is", "Mira is
Sam's sister" …). Each recognised fact yields

- the statement itself (language-model loss on every token, no chat template);
- recall prompts ("What do you remember about my sister Mira?") answered with the fact;
- questions in several phrasings, asked about "my …" (how the user speaks in a chat) and
  about the user by name, answered with a full sentence in the second person.

A memory the table does not recognise, or whose object depends on who said it ("running
my own studio", "try making it"), yields its statement alone; consolidation leaves such
memories out, since no question checks them.
Facts that share a question are answered together, never with rival answers to one
prompt: the objects of a predicate that allows several ("Alice likes jazz", "Alice likes
hiking" → "Alice likes jazz and hiking.") and everything known about one subject for its
recall prompts; each fact is then checked in that shared answer.
Examples are deduplicated; per fact, the last question phrasing (in a fixed, seeded
order) goes to the held-out split, which the gate evaluates and training never sees, and
the one before it to the validation split, which training never learns from either but
watches to stop and to choose its epoch: the gate's questions are not used to pick the
adapter they then score.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

__all__ = [
    "Example",
    "Fact",
    "Relation",
    "RELATIONS",
    "parse_fact",
    "examples_for",
    "build_examples",
    "trainable",
    "data_hash",
]


@dataclass(frozen=True, slots=True)
class Relation:
    """An English predicate: how to find it, how to ask about it, how to say it to 'you'."""

    name: str
    pattern: str  # regex; group "k" (optional) is a kind word such as "dog" or "food"
    questions: tuple[str, ...]  # {s}: subject; {do}: do/does; {poss}: possessive subject; {k}
    say: str  # third person, used after the subject: "{pred} {o}"
    say_you: str  # the same, conjugated for "you"
    many: bool = False  # a subject may have several objects (likes, plays): answered together


#: the species of the rule extractor's pet facts ("Melanie has a cat")
_PETS = "|".join(("dog", "cat", "rabbit", "hamster", "parrot", "budgie", "turtle", "tortoise", "guinea pig", "horse",
                  "snake", "lizard", "gecko", "ferret", "goldfish", "chinchilla", "puppy", "kitten", "bird", "fish"))  # fmt: skip
#: "Mira is Sam's sister", the rule extractor's kinship facts: read as "Sam's sister's name is Mira"
_KIN = re.compile(r"^(?P<o>[A-Z][\w'-]*(?: [A-Z][\w'-]*){0,2}) is (?P<s>\S+(?: \S+){0,2}(?:'s|’s) [\w-]+)$")
#: a note the extractor appends to a fact: "Alice lives in Berlin (since 2024-06)"
_NOTE = re.compile(r"\s*\([^()]*\)$")
#: words that make an object depend on who says it or on the conversation ("running my own
#: studio", "try making it"): such a fact does not read cleanly as a question and an answer
_DEICTIC = frozenset({"i", "i'm", "me", "my", "mine", "myself", "we", "we're", "us", "our", "you", "your", "it",
                      "it's", "its", "they", "they're", "them", "their", "this", "that", "these", "those", "here",
                      "there"})  # fmt: skip


RELATIONS: tuple[Relation, ...] = (
    Relation("lives_in", r"\blives in\b",
             ("Where {do} {s} live?", "In which city {do} {s} live?", "What city {do} {s} live in?",
              "Where is {poss} home?", "Where {do} {s} live these days?"),
             "lives in", "live in"),
    Relation("works_as", r"\bworks as(?: an?)?\b",
             ("What {do} {s} do for a living?", "What is {poss} job?", "What {do} {s} work as?",
              "What is {poss} profession?", "What kind of work {do} {s} do?"),
             "works as", "work as"),
    Relation("works_at", r"\bworks (?:at|for)\b",
             ("Where {do} {s} work?", "Which company {do} {s} work for?", "Who is {poss} employer?",
              "Who {do} {s} work for?", "At which company {do} {s} work?"),
             "works at", "work at"),
    Relation("born_in", r"\bwas born in\b",
             ("Where was {s_obj} born?", "What is {poss} birthplace?", "In which place was {s_obj} born?",
              "Where {do} {s} come from originally?", "What town was {s_obj} born in?"),
             "was born in", "were born in"),
    Relation("allergic_to", r"\bis allergic to\b",
             ("What is {s_obj} allergic to?", "What allergy {do} {s} have?", "What should {s} avoid eating?",
              "Which allergy {do} {s} have?", "What {do} {s} react badly to?"),
             "is allergic to", "are allergic to", many=True),
    Relation("favorite", r"'s favou?rite (?P<k>[a-z]+(?: [a-z]+)?) is\b",
             ("What is {poss} favorite {k}?", "Which {k} {do} {s} like best?", "What {k} {do} {s} love most?",
              "What is {poss} preferred {k}?", "Which {k} is {poss} favorite?"),
             "'s favorite {k} is", "r favorite {k} is"),
    Relation("pet_named", r"\bhas an? (?P<k>[a-z]+) (?:named|called)\b",
             ("What is the name of {poss} {k}?", "What is {poss} {k} called?", "What {do} {s} call {poss} {k}?",
              "What's the name of the {k} {s} {have}?", "How is {poss} {k} named?"),
             "has a {k} named", "have a {k} named"),
    Relation("drives", r"\bdrives an?\b",
             ("What car {do} {s} drive?", "What {do} {s} drive?", "Which car {do} {s} own?",
              "What vehicle {do} {s} drive?", "What kind of car {do} {s} have?"),
             "drives a", "drive a", many=True),
    Relation("plays", r"\bplays(?: the)?\b",
             ("What {do} {s} play?", "Which instrument {do} {s} play?", "What instrument {do} {s} play?",
              "What {do} {s} play in {poss} free time?", "Which game or instrument {do} {s} play?"),
             "plays", "play", many=True),
    Relation("speaks", r"\bspeaks\b",
             ("What language {do} {s} speak?", "Which language {do} {s} speak?", "What {do} {s} speak?",
              "Which language can {s} speak?", "What language is {s} fluent in?"),
             "speaks", "speak", many=True),
    Relation("studies", r"\bstudies\b",
             ("What {do} {s} study?", "What is {s} studying?", "Which subject {do} {s} study?",
              "What field {do} {s} study?", "What is {poss} subject?"),
             "studies", "study", many=True),
    Relation("married_to", r"\bis married to\b",
             ("Who is {s_obj} married to?", "Who is {poss} spouse?", "Whom did {s} marry?",
              "Who is {poss} husband or wife?", "To whom is {s_obj} married?"),
             "is married to", "are married to"),
    Relation("collects", r"\bcollects\b",
             ("What {do} {s} collect?", "What kind of things {do} {s} collect?", "What is {poss} collection of?",
              "Which things {do} {s} collect?", "What {do} {s} like to collect?"),
             "collects", "collect", many=True),
    Relation("grew_up_in", r"\bgrew up in\b",
             ("Where did {s} grow up?", "In which place did {s} grow up?", "Where did {s} spend {poss} childhood?",
              "What town did {s} grow up in?", "Where was {poss} childhood home?"),
             "grew up in", "grew up in"),
    Relation("likes", r"\b(?:likes|loves|enjoys)\b",
             ("What {do} {s} like?", "What {do} {s} enjoy?", "What {do} {s} love?",
              "What is something {s} {like}?", "What {do} {s} really like?"),
             "likes", "like", many=True),
    Relation("dislikes", r"\bdislikes\b",
             ("What {do} {s} dislike?", "What {do} {s} not like?", "What {do} {s} hate?",
              "What {do} {s} really dislike?", "What {do} {s} not enjoy?"),
             "dislikes", "dislike", many=True),
    Relation("plans_to", r"\bplans to\b",
             ("What {do} {s} plan to do?", "What are {poss} plans?", "What {do} {s} intend to do?",
              "What {do} {s} have planned?", "What {do} {s} want to do next?"),
             "plans to", "plan to", many=True),
    Relation("has_pet", rf"\bhas (?:an?|one) (?=(?:{_PETS})s?$)",
             ("What pet {do} {s} have?", "What animal {do} {s} have?", "What kind of pet {do} {s} have?",
              "Which pet {do} {s} own?", "What animals {do} {s} keep?"),
             "has a", "have a", many=True),
    Relation("named", r"'s name is\b",
             ("What is {poss} name?", "What's {poss} name?", "What name {do} {s} go by?",
              "Can you tell me {poss} name?", "Do you know {poss} name?"),
             "'s name is", "r name is"),
)  # fmt: skip

_USER_WORDS = ("the user", "user", "i", "me")


@dataclass(frozen=True, slots=True)
class Fact:
    """One memory read as subject / predicate / object."""

    text: str
    relation: str | None  # None: not recognised, trained as a statement only
    subject: str = ""  # as written ("The user's sister Mira", "Alice")
    rest: str = ""  # the subject after the user's possessive ("sister Mira"), "" for the user
    about_user: bool = False  # the subject is the user's own something (or the user)
    kind: str = ""
    obj: str = ""


@dataclass(frozen=True, slots=True)
class Example:
    """One training or evaluation example."""

    memory_id: str
    form: str  # "statement", "recall" or "question"
    prompt: str  # the user's message ("" for a statement)
    answer: str  # the target text
    split: str  # "train", "valid" (watched while training, never learned) or "heldout" (the gate's)
    obj: str  # what a correct answer must contain ("" when not checkable)


def _strip(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!").strip()


def parse_fact(text: str, user_name: str | None = None) -> Fact:
    """Read ``text`` as one fact (the first predicate of :data:`RELATIONS` that matches).
    An object that depends on who says it ("my", "it") leaves the fact unrecognised."""
    clean = _strip(text)
    body = _NOTE.sub("", clean)  # the note dates the statement; questions ask for the object
    kin = _KIN.match(body)
    if kin:
        return _fact(clean, "named", kin["s"], "", kin["o"], user_name)
    for rel in RELATIONS:
        m = re.search(rel.pattern, body, flags=re.IGNORECASE)
        if not m:
            continue
        subject = body[: m.start()].strip()
        obj = _strip(body[m.end() :])
        obj = re.split(r"\s+(?:since|because|and has|who|which)\s+", obj)[0].strip(" ,;")
        if not subject or not obj or len(obj.split()) > 8 or _DEICTIC & set(obj.lower().split()):
            continue
        return _fact(clean, rel.name, subject, m.groupdict().get("k") or "", obj, user_name)
    return Fact(clean, None)


def _fact(text: str, relation: str, subject: str, kind: str, obj: str, user_name: str | None) -> Fact:
    """The fact, its subject resolved: the user ("I", "the user", their name), the user's
    something ("my sister Mira", "Sam's dog") or someone else."""
    owners = [w for w in ("the user", "my", (user_name or "").lower()) if w]
    low = subject.lower()
    about_user, rest = False, subject
    if low in owners or low in _USER_WORDS:
        about_user, rest = True, ""
    else:
        for pre in [o + sep for o in owners for sep in ("'s ", "’s ")] + ["my "]:
            if low.startswith(pre):
                about_user, rest = True, subject[len(pre) :].strip()
                break
    return Fact(text, relation, subject, rest, about_user, kind, obj)


def _forms(fact: Fact, user_name: str | None) -> list[dict[str, str]]:
    """Ways to name the subject in a question: as the user says it, and by name."""
    if not fact.about_user:
        s = fact.subject
        return [{"s": s, "s_obj": s, "do": "does", "poss": s + "'s", "have": "has", "like": "likes"}]
    if not fact.rest:  # the user themself
        forms = [{"s": "I", "s_obj": "I", "do": "do", "poss": "my", "have": "have", "like": "like"}]
        if user_name:
            n = user_name
            forms.append({"s": n, "s_obj": n, "do": "does", "poss": n + "'s", "have": "has", "like": "likes"})
        return forms
    forms = [{"s": "my " + fact.rest, "s_obj": "my " + fact.rest, "do": "does", "poss": f"my {fact.rest}'s",
              "have": "has", "like": "likes"}]  # fmt: skip
    owner = user_name or "the user"
    s = f"{owner}'s {fact.rest}"
    forms.append({"s": s, "s_obj": s, "do": "does", "poss": s + "'s", "have": "has", "like": "likes"})
    return forms


def _say(fact: Fact, rel: Relation) -> str:
    """The fact told to the user: 'Your sister Mira lives in Tromsø.'"""
    if fact.about_user and not fact.rest:
        pred = rel.say_you.format(k=fact.kind)
        return f"You{pred if pred.startswith('r ') else ' ' + pred} {fact.obj}."  # "Your name is …"
    subj = f"Your {fact.rest}" if fact.about_user else fact.subject
    pred = rel.say.format(k=fact.kind)
    joiner = "" if pred.startswith("'") else " "
    return f"{subj}{joiner}{pred} {fact.obj}."


def _recall_prompts(fact: Fact, user_name: str | None) -> list[str]:
    if fact.relation is None:
        return []
    if fact.about_user and not fact.rest:
        return []  # "what do you remember about me" has many answers, one per fact
    who = f"my {fact.rest}" if fact.about_user else fact.subject
    return [f"What do you remember about {who}?", f"Tell me what you know about {who}."]


def _relation(fact: Fact) -> Relation:
    return next(r for r in RELATIONS if r.name == fact.relation)


def _shared_key(fact: Fact) -> tuple[str, str, str] | None:
    """Facts with this key are asked the same questions (a predicate that allows several objects)."""
    if fact.relation is None or not _relation(fact).many:
        return None
    return fact.relation, fact.subject.lower(), fact.kind.lower()


def _say_all(facts: Sequence[Fact]) -> str:
    """Several objects of one subject and predicate in one sentence: 'Alice likes jazz and hiking.'"""
    objs = list(dict.fromkeys(f.obj for f in facts))
    joined = objs[0] if len(objs) == 1 else ", ".join(objs[:-1]) + " and " + objs[-1]
    return _say(replace(facts[0], obj=joined), _relation(facts[0]))


def examples_for(memory_id: str, text: str, user_name: str | None = None, *, heldout: int = 1,
                 valid: int = 1, seed: int = 0, answer: str | None = None,
                 recall_answer: str | None = None) -> list[Example]:  # fmt: skip
    """The examples of one memory (see the module docstring). ``answer`` / ``recall_answer``
    replace its questions' / recall prompts' answer with one shared with other facts. The
    held-out and validation phrasings are chosen by the question (subject, predicate), not
    the memory: facts asked the same questions hold out the same ones. A fact keeps at
    least two phrasings to train on; with fewer, it has no validation phrasing."""
    fact = parse_fact(text, user_name)
    out = [Example(memory_id, "statement", "", fact.text + ".", "train", "")]
    if fact.relation is None:
        return out
    rel = _relation(fact)
    said = answer or _say(fact, rel)
    for prompt in _recall_prompts(fact, user_name):
        out.append(Example(memory_id, "recall", prompt, recall_answer or said, "train", fact.obj))
    questions: list[str] = []
    for n, form in enumerate(_forms(fact, user_name)):
        # every phrasing as the user asks ("my sister Mira"), two by name ("Sam's sister Mira")
        for q in rel.questions if n == 0 else rel.questions[:2]:
            question = q.format(k=fact.kind, **form)
            questions.append(question[0].upper() + question[1:])
    questions = list(dict.fromkeys(questions))
    rng = random.Random(f"{seed}:{fact.relation}|{fact.subject.lower()}|{fact.kind.lower()}")
    rng.shuffle(questions)
    cut = max(0, len(questions) - heldout)
    check = cut - valid if cut - valid >= 2 else cut
    for i, question in enumerate(questions):
        split = "train" if i < check else "valid" if i < cut else "heldout"
        out.append(Example(memory_id, "question", question, said, split, fact.obj))
    return out


def trainable(
    memories: Iterable[tuple[str, str]], user_name: str | None = None, *, max_shared: int = 6
) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``(memory id, text)`` pairs worth training, in order, and the ids left out: those
    that read as no fact (no question can check them), and past the first ``max_shared``
    objects of one subject's predicate (a list answer longer than that is not recalled
    whole: the facts stay in plaintext memory, where retrieval finds them)."""
    kept: list[tuple[str, str]] = []
    left: list[str] = []
    objects: dict[tuple[str, str, str], set[str]] = {}
    for memory_id, text in memories:
        fact = parse_fact(text, user_name)
        key = _shared_key(fact) if fact.relation is not None else None
        seen = objects.setdefault(key, set()) if key is not None else None
        if fact.relation is None or (
            seen is not None and fact.obj.lower() not in seen and len(seen) >= max_shared
        ):
            left.append(memory_id)
            continue
        if seen is not None:
            seen.add(fact.obj.lower())
        kept.append((memory_id, text))
    return kept, left


def build_examples(memories: Iterable[tuple[str, str]], user_name: str | None = None, *, heldout: int = 1,
                   valid: int = 1, seed: int = 0) -> list[Example]:  # fmt: skip
    """Examples of many ``(memory id, text)`` pairs, deduplicated by (form, prompt, answer);
    held-out and validation examples by what they check too (each fact of a shared answer
    is scored)."""
    items = [(mid, text, parse_fact(text, user_name)) for mid, text in memories]
    shared: dict[tuple[str, str, str], list[Fact]] = {}
    for _, _, fact in items:
        if (key := _shared_key(fact)) is not None:
            shared.setdefault(key, []).append(fact)
    answers = {key: _say_all(facts) for key, facts in shared.items()}
    about: dict[str, list[str]] = {}  # subject → what is said of it, for its recall prompts
    for _, _, fact in items:
        if fact.relation is not None:
            key = _shared_key(fact)
            said = answers[key] if key is not None else _say(fact, _relation(fact))
            about.setdefault(fact.subject.lower(), [])
            if said not in about[fact.subject.lower()]:
                about[fact.subject.lower()].append(said)
    seen: set[tuple[str, str, str, str]] = set()
    out: list[Example] = []
    for memory_id, text, fact in items:
        key = _shared_key(fact)
        made = examples_for(
            memory_id, text, user_name, heldout=heldout, valid=valid, seed=seed,
            answer=answers[key] if key is not None else None,
            recall_answer=" ".join(about[fact.subject.lower()]) if fact.relation is not None else None,
        )  # fmt: skip
        for ex in made:
            dedup = (
                ex.form,
                ex.prompt.lower(),
                ex.answer.lower(),
                ex.obj.lower() if ex.split != "train" else "",
            )
            if dedup not in seen:
                seen.add(dedup)
                out.append(ex)
    # a phrasing trained for one fact is no held-out (or validation) test for another
    trained = {e.prompt.lower() for e in out if e.split == "train"}
    return [e for e in out if e.split == "train" or e.prompt.lower() not in trained]


def data_hash(examples: Sequence[Example]) -> str:
    blob = json.dumps([asdict(e) for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()
