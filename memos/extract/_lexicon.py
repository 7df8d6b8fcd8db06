"""Word lists the rule-based extractor reads (closed classes and a few open ones).

None of these lists names people or places: proper nouns are found by capitalisation.
The open lists (jobs, pets) only have to be good enough to tell "I'm a nurse" from
"I'm a fan"; anything after "I work as a" is taken as a job without consulting them.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Family and social roles: the word as said -> (predicate, direction). "to_speaker" means
# (name, predicate, speaker) as in "Mira is Alice's sister"; "from_speaker" means
# (speaker, predicate, name) for the single-valued ones such as married_to.
FAMILY: dict[str, tuple[str, str]] = {
    **{w: ("sibling_of", "to_speaker") for w in ("sister", "brother", "sibling", "twin", "sis", "bro")},
    **{w: ("parent_of", "to_speaker") for w in ("mother", "mom", "mum", "father", "dad", "parent", "stepmother",
                                                   "stepfather", "stepmom", "stepdad")},
    **{w: ("child_of", "to_speaker") for w in ("son", "daughter", "kid", "child", "stepson", "stepdaughter")},
    **{w: ("relative_of", "to_speaker") for w in ("cousin", "aunt", "uncle", "niece", "nephew", "grandma",
                                                     "grandmother", "grandpa", "grandfather", "granny",
                                                     "grandson", "granddaughter", "in-law")},
    **{w: ("married_to", "from_speaker") for w in ("wife", "husband", "spouse")},
    **{w: ("partner_of", "from_speaker") for w in ("partner", "girlfriend", "boyfriend", "fiance", "fiancee",
                                                      "fiancé", "fiancée")},
    **{w: ("friend_of", "to_speaker") for w in ("friend", "bestie", "buddy", "pal")},
    **{w: ("colleague_of", "to_speaker") for w in ("colleague", "coworker", "co-worker", "boss", "manager",
                                                      "teammate")},
    **{w: ("roommate_of", "to_speaker") for w in ("roommate", "flatmate", "housemate")},
    **{w: ("neighbor_of", "to_speaker") for w in ("neighbor", "neighbour")},
}  # fmt: skip
FAMILY_MODIFIERS = ("older", "younger", "little", "big", "baby", "twin", "elder", "best", "dear", "old", "new",
                    "late", "oldest", "youngest", "kid", "step", "close", "good")  # fmt: skip

# Pet words -> the species a has_pet relation records ("puppy" and "beagle" are dogs).
PETS: dict[str, str] = {
    **{w: "dog" for w in ("dog", "puppy", "pup", "doggo", "beagle", "labrador", "lab", "retriever", "poodle",
                          "terrier", "husky", "corgi", "dachshund", "spaniel", "collie", "greyhound", "pug",
                          "chihuahua", "bulldog", "shepherd", "schnauzer", "whippet", "mutt")},
    **{w: "cat" for w in ("cat", "kitten", "kitty")},
    **{w: "rabbit" for w in ("rabbit", "bunny")},
    **{w: w for w in ("hamster", "parrot", "budgie", "turtle", "tortoise", "guinea pig", "horse", "snake",
                      "lizard", "gecko", "ferret", "goldfish", "chinchilla")},
}  # fmt: skip
PET_MODIFIERS = ("new", "little", "young", "sweet", "tiny", "big", "rescue", "rescued", "baby", "cute", "senior",
                 "old", "adorable", "fluffy", "beautiful", "second", "furry")  # fmt: skip

# Heads of job titles; "UX designer" and "senior software engineer" end in one of these.
JOBS = _words("""
nurse teacher engineer developer programmer designer doctor physician surgeon lawyer attorney chef cook baker
barista waiter waitress bartender accountant architect artist writer author journalist reporter photographer
musician pianist guitarist drummer singer composer dancer actor actress student researcher scientist professor
lecturer manager consultant analyst pharmacist dentist therapist psychologist psychiatrist counselor counsellor
firefighter officer pilot electrician plumber carpenter mechanic farmer librarian translator interpreter editor
producer painter illustrator animator veterinarian vet paramedic physiotherapist midwife marketer salesperson
cashier receptionist secretary assistant intern freelancer entrepreneur founder ceo cto coach trainer tutor
instructor technician administrator director executive clerk driver courier cleaner gardener florist tailor
hairdresser stylist banker broker economist historian biologist chemist physicist mathematician statistician
sociologist curator archivist diplomat politician volunteer caregiver carer nanny worker soldier sailor
retiree
""")

DIETS = ("vegetarian", "vegan", "pescatarian", "pescetarian", "flexitarian")

# Company-like last words: a capitalised name ending in one of these is an organization.
ORG_SUFFIXES = _words("""
inc inc. corp corp. corporation co co. company ltd ltd. llc gmbh ag sa plc group labs lab studio studios agency
institute university college school academy hospital clinic bank foundation partners associates ventures
systems technologies solutions media press records cafe café bakery restaurant bar club museum library
council ministry department team society union network
""")

# Capitalised words that are not names (sentence openers, greetings, pronouns, fillers).
NOT_NAMES = _words("""
i i'm i've i'd i'll im ive the a an my our your his her their its this that these those there here it it's
what who whom which when where why how yes no not ok okay oh ah hey hi hello thanks thank sure well so and
but or if then also just maybe wow haha lol omg yeah yep nope please sorry congrats congratulations great cool
nice awesome good bad wait hmm anyway anyways btw by the way we you he she they me us them everyone everybody
someone somebody nobody anyone anybody people kids children most many some all both each every other another
life everything nothing something anything mom dad mum god love dear mr mrs ms dr also still really honestly
actually definitely probably totally absolutely glad happy sad same true right exactly indeed plus sounds
let let's did do does was were is are be been have has had can could would should will shall might must may
thankfully luckily fortunately unfortunately hopefully sadly basically seriously recently finally currently
personally obviously clearly apparently surprisingly interestingly lately besides meanwhile however though
""")

# Names of days and months belong to dates, not entities.
CALENDAR_WORDS = _words("""
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december christmas easter
""")

# Languages and nationalities are things even though capitalised.
LANGUAGES = _words("""
english german french spanish portuguese italian dutch norwegian swedish danish finnish polish russian chinese
japanese korean arabic hindi greek turkish brazilian american british european african asian argentinian
mexican lebanese thai vietnamese indian irish scottish welsh swiss austrian belgian canadian australian
ukrainian czech hungarian romanian persian moroccan ethiopian nigerian peruvian chilean colombian cuban
filipino indonesian malaysian icelandic catalan basque galician latin hebrew
""")

# Words that end an object phrase ("I love hiking in the hills" -> "hiking").
PHRASE_STOPS = _words("""
in on at with for from when while because since so but though although if as than like now anymore lately
nowadays these too very during after before until every whenever which that who where there here today tonight
yesterday tomorrow last next this again more really right is are was were will would can could should
and or then just even ever much lots a-lot almost mostly also
""")
# After a lone gerund these prepositions belong to the activity ("going to concerts").
GERUND_PREPOSITIONS = frozenset({"on", "to", "with", "for"})
DETERMINERS = frozenset({"the", "a", "an", "some", "all", "any", "lots", "of", "both"})
PRONOUN_OBJECTS = _words("""
it that this them you him her those these everything something anything nothing what how when one me us
myself yourself it's that's which whatever everyone someone anyone there here being they're we're you're
""")

# Gerunds too vague to be a liked activity on their own ("I love living here").
VAGUE_GERUNDS = _words("""
living being having doing getting going making seeing trying working knowing hearing feeling thinking talking
saying telling looking coming
""")

# Base forms of the -ing verbs used for plans ("I'm visiting Mira" -> "visit Mira").
ING_BASE = {
    "moving": "move", "visiting": "visit", "starting": "start", "flying": "fly", "travelling": "travel",
    "traveling": "travel", "heading": "head", "going": "go", "taking": "take", "getting": "get",
    "doing": "do", "running": "run", "hosting": "host", "meeting": "meet", "seeing": "see", "leaving": "leave",
    "coming": "come", "having": "have", "joining": "join", "driving": "drive", "hiking": "hike",
}  # fmt: skip

# Words a subject may be separated from its verb by ("I have also recently moved ...").
SUBJECT_GAP = _words("""
am 'm is 's are 're was were have 've has had been be do does did n't not never no longer also still now
currently just recently finally actually already really truly totally absolutely honestly definitely
officially happily always usually mostly even kind of sort kinda too both all then so pretty quite a an big
huge great massive used to who mainly basically literally genuinely seriously madly deeply only newly
originally since ever somehow will 'll
""")
NEGATIONS = frozenset({"n't", "not", "never", "no"})

_VOWELS = "aeiou"


def gerund(verb: str) -> str:
    """``hike`` -> ``hiking``, ``swim`` -> ``swimming``, ``cook`` -> ``cooking``."""
    v = verb.lower()
    if v.endswith("ing") or len(v) < 2:
        return v
    if v.endswith("ie"):
        return v[:-2] + "ying"
    if v.endswith("e") and not v.endswith(("ee", "ye", "oe")):
        return v[:-1] + "ing"
    # Short consonant-vowel-consonant verbs double their last letter (run, swim, jog).
    if len(v) <= 4 and v[-1] not in _VOWELS + "wxy" and v[-2] in _VOWELS and v[-3:-2] not in ("", *_VOWELS):
        return v + v[-1] + "ing"
    return v + "ing"


# One word with its attached apostrophe suffixes; contractions are split by split_token.
WORD_RE = re.compile(r"[^\W_][\w'’-]*")


def split_token(token: str) -> list[str]:
    """``I'm`` -> ``['I', "'m"]``, ``don't`` -> ``['do', "n't"]``, ``Mira's`` -> ``['Mira', "'s"]``."""
    t = token.replace("’", "'")
    low = t.lower()
    if low.endswith("n't") and len(t) > 3:
        return [t[:-3], "n't"]
    if "'" in t:
        head, _, tail = t.partition("'")
        return [head, "'" + tail] if head else [t]
    return [t]
