"""Patterns and calendar arithmetic behind :mod:`memos.extract.timeparse` (private).

Each pattern comes with a resolver that turns a match into a UTC interval relative to a
reference day; :func:`scan` runs them all. The conventions are documented in
:mod:`memos.extract.timeparse`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
    "september": 9, "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11, "nov": 11,
    "december": 12, "dec": 12,
}  # fmt: skip
_WEEKDAYS = {
    d: i for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}
# A season's first month (northern hemisphere, meteorological seasons).
_SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
# Vague counts become a range of offsets, so "a few days ago" covers 2 to 5 days back.
_FUZZY = {"a couple of": (1, 3), "couple of": (1, 3), "a few": (2, 5), "few": (2, 5), "several": (3, 7)}
# Words that can't be months unless capitalised (they are also verbs).
_AMBIGUOUS_MONTHS = {"may", "march", "mar"}

Interval = tuple[datetime, datetime]


def at(d: date) -> datetime:
    """Midnight UTC at the start of ``d``."""
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _days(first: date, last: date) -> Interval:
    return at(first), at(last + timedelta(days=1))


def _shift_month(year: int, month: int, k: int) -> tuple[int, int]:
    y, m = divmod(year * 12 + month - 1 + k, 12)
    return y, m + 1


def _month(year: int, month: int) -> Interval:
    return at(date(year, month, 1)), at(date(*_shift_month(year, month, 1), 1))


def is_month_end(d: date) -> bool:
    return (d + timedelta(days=1)).day == 1


def _year(year: int) -> Interval:
    return at(date(year, 1, 1)), at(date(year + 1, 1, 1))


def _week(d: date) -> Interval:
    monday = d - timedelta(days=d.weekday())
    return _days(monday, monday + timedelta(days=6))


def _weekend(d: date) -> Interval:
    monday = d - timedelta(days=d.weekday())
    return _days(monday + timedelta(days=5), monday + timedelta(days=6))


def _season(year: int, first_month: int) -> Interval:
    return at(date(year, first_month, 1)), at(date(*_shift_month(year, first_month, 3), 1))


def safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _shifted(unit: str, d: date, k: int) -> Interval:
    """The calendar ``unit`` (day, week, month, year) ``k`` units away from ``d``."""
    if unit == "day":
        return _days(d + timedelta(days=k), d + timedelta(days=k))
    if unit == "week":
        return _week(d + timedelta(weeks=k))
    if unit == "month":
        return _month(*_shift_month(d.year, d.month, k))
    return _year(d.year + k)


def month_key(token: str) -> str:
    return token.lower().rstrip(".")


def _num_range(token: str) -> tuple[int, int]:
    t = " ".join(token.lower().split())
    if t in _FUZZY:
        return _FUZZY[t]
    n = int(t) if t.isdigit() else _NUMBERS[t]
    return n, n


# --------------------------------------------------------------------------- expression patterns

_MONTH_FULL = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_MONTH_ANY = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?)"
)
_ORD = r"(?:st|nd|rd|th)?"
_NUM = r"(?:a\s+couple\s+of|couple\s+of|a\s+few|few|several|\d{1,3}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_UNIT = r"(?:day|week|month|year)s?"
_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_FUTURE_RE = re.compile(
    r"\b(?:will|shall|gonna|going\s+to|plan(?:s|ning)?(?:\s+to)?|hop(?:e|ing)\s+to|want\s+to|next|upcoming|"
    r"coming\s+up|soon|tomorrow|looking\s+forward|can['’]t\s+wait|see\s+you)\b|['’]ll\b"
    # the present progressive of a trip is a plan: "she's coming in December"
    r"|(?:\b(?:am|is|are)|['’](?:m|s|re))(?:\s+\w+){0,2}?\s+(?:coming|going|moving|visiting|flying|travell?ing|heading|leaving|starting)\b",
    re.I,
)

_ISO_RE = re.compile(r"\b(?P<year>\d{4})(?P<sep>[-/])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})\b")
DMY_RE = re.compile(
    rf"\b(?:the\s+)?(?P<day>\d{{1,2}}){_ORD}\s+(?:of\s+)?(?P<mon>{_MONTH_ANY}),?\s+(?P<year>\d{{4}})\b", re.I
)
MDY_RE = re.compile(
    rf"\b(?P<mon>{_MONTH_ANY})\s+(?:the\s+)?(?P<day>\d{{1,2}}){_ORD},?\s+(?P<year>\d{{4}})\b", re.I
)
_MY_RE = re.compile(
    rf"\b(?:(?P<part>early|mid|late)[\s-]+)?(?P<mon>{_MONTH_ANY}),?\s+(?:of\s+)?(?P<year>\d{{4}})\b", re.I
)
_DM_RE = re.compile(
    rf"\b(?:the\s+)?(?P<day>\d{{1,2}}){_ORD}\s+(?:of\s+)?(?P<mon>{_MONTH_ANY})(?![\w.])", re.I
)
_MD_RE = re.compile(rf"\b(?P<mon>{_MONTH_ANY})\s+(?:the\s+)?(?P<day>\d{{1,2}}){_ORD}\b(?![:\d])", re.I)
_MONTH_ALONE_RE = re.compile(
    r"\b(?:(?P<rel>last|this|next)\s+|(?P<prep>in|during|since|until|till|by|before|after|through|around|from|of)"
    r"\s+(?:the\s+)?)?(?:(?P<part>early|mid|late|end\s+of|beginning\s+of|start\s+of|middle\s+of)[\s-]+)?"
    rf"(?P<mon>{_MONTH_FULL})\b(?!\s*,?\s*\d)",
    re.I,
)
_YEAR_RE = re.compile(
    # "of"/"around" are left out: "a crowd of 2000" is a count, not a year.
    r"\b(?:(?:in|during|since|until|till|by|before|after|from|throughout)\s+(?:the\s+year\s+)?|the\s+year\s+)"
    r"(?P<year>(?:1[89]|20|21)\d{2})\b(?![-/:]\d|\.\d)",
    re.I,
)
_SEASON_RE = re.compile(
    r"\b(?:(?P<rel>last|this|next|past)\s+|(?P<prep>in|during|since|until|by|over|through|throughout|around)"
    r"\s+(?:the\s+)?)?(?:(?P<part>early|mid|late)[\s-]+)?(?P<season>spring|summer|autumn|fall|winter)"
    r"(?:\s+(?:of\s+)?(?P<year>(?:19|20)\d{2}))?\b",
    re.I,
)
_DAY_WORDS = {
    "the day before yesterday": -2, "the day after tomorrow": 2, "yesterday": -1, "last night": -1,
    "today": 0, "tonight": 0, "this morning": 0, "this afternoon": 0, "this evening": 0, "tomorrow": 1,
}  # fmt: skip
_DAY_WORD_RE = re.compile(r"\b(?:" + "|".join(k.replace(" ", r"\s+") for k in _DAY_WORDS) + r")\b", re.I)
_REL_UNIT_RE = re.compile(
    r"\b(?P<rel>last|this|next|past|previous|coming)\s+(?P<unit>week|weekend|month|year)\b", re.I
)
_ROLLING_RE = re.compile(
    rf"\b(?:the\s+)?(?:past|last|previous)\s+(?P<num>{_NUM})\s+(?P<unit>{_UNIT})\b", re.I
)
_AGO_RE = re.compile(rf"\b(?P<num>{_NUM})\s+(?P<unit>{_UNIT})\s+ago\b", re.I)
_AHEAD_RE = re.compile(
    rf"\b(?:in\s+(?P<num>{_NUM})\s+(?P<unit>{_UNIT})|(?P<num2>{_NUM})\s+(?P<unit2>{_UNIT})\s+from\s+now)\b",
    re.I,
)
_WEEKDAY_RE = re.compile(
    rf"\b(?:(?P<rel>last|this|next|on|coming)\s+)?(?P<wd>{_WEEKDAY})(?P<plural>s)?\b", re.I
)
_OTHER_DAY_RE = re.compile(r"\bthe\s+other\s+day\b", re.I)


@dataclass(frozen=True, slots=True)
class _Ctx:
    text: str
    day: date | None  # the reference day (UTC), None when no reference was given

    def future(self, m: re.Match[str]) -> bool:
        """Whether the sentence around ``m`` is plainly about the future."""
        left = max(self.text.rfind(c, 0, m.start()) for c in ".!?\n")
        rights = [i for i in (self.text.find(c, m.end()) for c in ".!?\n") if i >= 0]
        return _FUTURE_RE.search(self.text, left + 1, min(rights, default=len(self.text))) is not None


Resolved = tuple[datetime, datetime, str] | None


def _iso(m: re.Match[str], ctx: _Ctx) -> Resolved:
    d = safe_date(int(m["year"]), int(m["month"]), int(m["day"]))
    return None if d is None else (*_days(d, d), "day")


def _dmy(m: re.Match[str], ctx: _Ctx) -> Resolved:
    d = safe_date(int(m["year"]), MONTHS[month_key(m["mon"])], int(m["day"]))
    return None if d is None else (*_days(d, d), "day")


def _month_ok(token: str) -> bool:
    return month_key(token) not in _AMBIGUOUS_MONTHS or token[0].isupper()


def _part(interval: Interval, part: str | None) -> Interval:
    """Narrow a month to its early (1-10), mid (11-20) or late (21-end) part."""
    if not part:
        return interval
    start, end = interval
    p = part.split()[0].lower()
    if p in {"early", "beginning", "start"}:
        return start, start + timedelta(days=10)
    if p in {"mid", "middle"}:
        return start + timedelta(days=10), start + timedelta(days=20)
    return start + timedelta(days=20), end


def _my(m: re.Match[str], ctx: _Ctx) -> Resolved:
    if not _month_ok(m["mon"]):
        return None
    return (*_part(_month(int(m["year"]), MONTHS[month_key(m["mon"])]), m["part"]), "month")


def _day_month(m: re.Match[str], ctx: _Ctx) -> Resolved:
    if ctx.day is None or not _month_ok(m["mon"]):
        return None
    month, day = MONTHS[month_key(m["mon"])], int(m["day"])
    future = ctx.future(m)
    # The nearest such date on the side of the reference the sentence's tense points to.
    for year in (ctx.day.year, ctx.day.year + (1 if future else -1)):
        d = safe_date(year, month, day)
        if d is not None and (d >= ctx.day if future else d <= ctx.day):
            return (*_days(d, d), "day")
    return None


def _month_alone(m: re.Match[str], ctx: _Ctx) -> Resolved:
    rel, prep, part = (m["rel"] or "").lower(), m["prep"], m["part"]
    if ctx.day is None or not (rel or prep or part) or not _month_ok(m["mon"]):
        return None
    month, (y, ref_month) = MONTHS[month_key(m["mon"])], (ctx.day.year, ctx.day.month)
    if rel == "this":
        year = y
    elif rel == "last":
        year = y if month < ref_month else y - 1
    elif rel == "next":
        year = y if month > ref_month else y + 1
    elif ctx.future(m):
        year = y if month >= ref_month else y + 1
    else:
        year = y if month <= ref_month else y - 1
    return (*_part(_month(year, month), part), "month")


def _year_only(m: re.Match[str], ctx: _Ctx) -> Resolved:
    return (*_year(int(m["year"])), "year")


def _season_interval(m: re.Match[str], ctx: _Ctx) -> Resolved:
    rel, first = (m["rel"] or "").lower(), _SEASONS[m["season"].lower()]
    if m["year"]:
        return (*_season(int(m["year"]), first), "season")
    if ctx.day is None or not (rel or m["prep"]):
        return None
    ref = at(ctx.day)
    # A season's "year" is the year it starts in (winter 2023 runs Dec 2023 - Feb 2024).
    candidates = [_season(ctx.day.year + k, first) for k in (-2, -1, 0, 1)]
    if rel == "this":
        current = [iv for iv in candidates if iv[0] <= ref < iv[1]]
        year = ctx.day.year - 1 if first == 12 and ctx.day.month <= 2 else ctx.day.year
        start, end = current[0] if current else _season(year, first)
    elif rel in {"last", "past"}:
        start, end = [iv for iv in candidates if iv[1] <= ref][-1]
    elif rel == "next" or ctx.future(m):
        start, end = next(iv for iv in candidates if iv[1] > ref and (rel != "next" or iv[0] > ref))
    else:
        start, end = [iv for iv in candidates if iv[0] <= ref][-1]
    if m["part"]:  # early/mid/late summer: the season's first, second or third month
        offset = {"early": 0, "mid": 1, "late": 2}[m["part"].lower()]
        start, end = _month(*_shift_month(start.year, start.month, offset))
    return start, end, "season"


def _day_word(m: re.Match[str], ctx: _Ctx) -> Resolved:
    if ctx.day is None:
        return None
    d = ctx.day + timedelta(days=_DAY_WORDS[" ".join(m[0].lower().split())])
    return (*_days(d, d), "day")


def _rel_unit(m: re.Match[str], ctx: _Ctx) -> Resolved:
    if ctx.day is None:
        return None
    rel, unit, d = m["rel"].lower(), m["unit"].lower(), ctx.day
    if rel == "past" and unit != "weekend":  # rolling window ending with the reference day
        first = {
            "week": d - timedelta(days=6),
            "month": d - timedelta(days=29),
            "year": d - timedelta(days=364),
        }[unit]
        return (*_days(first, d), unit)
    k = {"last": -1, "previous": -1, "past": -1, "this": 0, "next": 1, "coming": 1}[rel]
    if unit == "weekend":
        return (*_weekend(d + timedelta(weeks=k)), "weekend")
    return (*_shifted(unit, d, k), unit)


def _unit(token: str) -> str:
    return token.lower().rstrip("s")


def _months_back(d: date, k: int) -> date:
    """The same day of the month ``k`` months before ``d`` (clamped to the month's end)."""
    y, m = _shift_month(d.year, d.month, -k)
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def _rolling(m: re.Match[str], ctx: _Ctx) -> Resolved:
    if ctx.day is None:
        return None
    n, unit, d = _num_range(m["num"])[1], _unit(m["unit"]), ctx.day
    if unit in {"month", "year"}:  # "the past 3 months": from the day after 3 months back
        first = _months_back(d, n * (12 if unit == "year" else 1)) + timedelta(days=1)
    else:
        first = d - timedelta(days=n * (7 if unit == "week" else 1) - 1)
    return (*_days(first, d), unit)


def _offset(unit: str, d: date, lo: int, hi: int, sign: int) -> Resolved:
    a, b = _shifted(unit, d, sign * lo), _shifted(unit, d, sign * hi)
    return min(a[0], b[0]), max(a[1], b[1]), unit


def _ago(m: re.Match[str], ctx: _Ctx) -> Resolved:
    return None if ctx.day is None else _offset(_unit(m["unit"]), ctx.day, *_num_range(m["num"]), -1)


def _ahead(m: re.Match[str], ctx: _Ctx) -> Resolved:
    if ctx.day is None:
        return None
    num, unit = (m["num"], m["unit"]) if m["num"] else (m["num2"], m["unit2"])
    return _offset(_unit(unit), ctx.day, *_num_range(num), 1)


def _weekday(m: re.Match[str], ctx: _Ctx) -> Resolved:
    rel = (m["rel"] or "").lower()
    # A bare "Saturday" is too often today or a habit ("every Thursday"); "on Fridays" is a habit.
    if ctx.day is None or not rel or (m["plural"] and rel == "on"):
        return None
    target, d = _WEEKDAYS[m["wd"].lower()], ctx.day
    if rel == "this":
        day = d + timedelta(days=target - d.weekday())
    elif rel in {"next", "coming"} or (rel in {"", "on"} and ctx.future(m)):
        day = d + timedelta(days=(target - d.weekday() - 1) % 7 + 1)
    else:
        day = d - timedelta(days=(d.weekday() - target - 1) % 7 + 1)
    return (*_days(day, day), "day")


def _other_day(m: re.Match[str], ctx: _Ctx) -> Resolved:
    return None if ctx.day is None else _offset("day", ctx.day, 1, 6, -1)


# Cheap gates: most chat messages name no time at all, and the month patterns are the
# slowest, so a text is only searched with the patterns whose key words it contains.
_MONTH_GATE = re.compile(r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)", re.I)
_TIME_GATE = re.compile(
    r"\d|\b(?:yesterday|today|tonight|tomorrow|night|morning|afternoon|evening|days?|week|weekends?|weeks|"
    r"months?|years?|spring|summer|autumn|fall|winter|(?:mon|tues|wednes|thurs|fri|satur|sun)days?)\b",
    re.I,
)

_Resolver = Callable[[re.Match[str], _Ctx], Resolved]
_PATTERNS: tuple[tuple[re.Pattern[str], _Resolver, re.Pattern[str]], ...] = (
    (_ISO_RE, _iso, _TIME_GATE),
    (DMY_RE, _dmy, _MONTH_GATE),
    (MDY_RE, _dmy, _MONTH_GATE),
    (_MY_RE, _my, _MONTH_GATE),
    (_DM_RE, _day_month, _MONTH_GATE),
    (_MD_RE, _day_month, _MONTH_GATE),
    (_MONTH_ALONE_RE, _month_alone, _MONTH_GATE),
    (_YEAR_RE, _year_only, _TIME_GATE),
    (_SEASON_RE, _season_interval, _TIME_GATE),
    (_DAY_WORD_RE, _day_word, _TIME_GATE),
    (_REL_UNIT_RE, _rel_unit, _TIME_GATE),
    (_ROLLING_RE, _rolling, _TIME_GATE),
    (_AGO_RE, _ago, _TIME_GATE),
    (_AHEAD_RE, _ahead, _TIME_GATE),
    (_WEEKDAY_RE, _weekday, _TIME_GATE),
    (_OTHER_DAY_RE, _other_day, _TIME_GATE),
)


def scan(text: str, day: date | None) -> list[tuple[int, int, datetime, datetime, str]]:
    """Every candidate expression in ``text`` as ``(start, end, from, to, granularity)``,
    overlapping ones included; ``day`` is the reference day (``None``: absolute only)."""
    ctx = _Ctx(text=text, day=day)
    found: list[tuple[int, int, datetime, datetime, str]] = []
    gates = {gate: gate.search(text) is not None for gate in (_MONTH_GATE, _TIME_GATE)}
    for pattern, resolve, gate in _PATTERNS:
        if not gates[gate]:
            continue
        for m in pattern.finditer(text):
            try:
                resolved = resolve(m, ctx)
            except (ValueError, OverflowError, KeyError, IndexError, StopIteration):
                resolved = None  # a date outside the calendar: not a usable mention
            if resolved is not None:
                found.append((m.start(), m.end(), *resolved))
    return found
