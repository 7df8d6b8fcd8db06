"""Timestamps and time expressions, stdlib only.

Two jobs:

* :func:`parse_timestamp` reads the timestamps that callers hand us (ISO-8601, epoch
  seconds, LoCoMo session dates such as ``"1:56 pm on 8 May, 2023"``) into aware UTC
  datetimes.
* :func:`find_time_expressions` finds phrases such as ``"last month"`` or ``"8 May 2023"``
  in a text and resolves each to the interval it denotes, relative to a reference time
  (the message's timestamp). It serves ingest (pin relative dates inside memories, see
  :func:`annotate_time_expressions`) and queries (:func:`query_time_range`).

Conventions, chosen to be simple and predictable rather than clever:

* Intervals are half-open ``[start, end)`` in UTC and aligned to whole days. Dates are read
  in UTC; a reference time is converted to UTC first (LoCoMo times carry no zone at all).
* Weeks are ISO weeks, Monday to Sunday; a weekend is Saturday and Sunday of that week.
  "last week/month/year" is the previous *calendar* unit; "the past week" and
  "the last 3 days" are rolling windows that end with the reference day.
* "last Friday" is the most recent Friday strictly before the reference day, "next Friday"
  the first strictly after it, "this Friday" the Friday of the reference's week.
* A month, season or weekday with no year ("in May", "in the summer", "on Friday") is the
  most recent one at or before the reference, unless its sentence is plainly about the
  future ("will", "going to", "next", "plan to", ...), in which case it is the next one at
  or after the reference.
* Relative expressions need a reference; without one only absolute dates are found.
* "may"/"march" count as months only when capitalised and tied to a day, a year or a
  preposition ("in May"), so "I may go" is not a date.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from memos.errors import InvalidInput
from memos.extract._timeexpr import (
    DMY_RE,
    MDY_RE,
    MONTHS,
    at,
    is_month_end,
    month_key,
    safe_date,
    scan,
)

__all__ = [
    "GRANULARITIES",
    "TimeMention",
    "annotate_time_expressions",
    "find_time_expressions",
    "parse_timestamp",
    "query_time_range",
]

#: Values of :attr:`TimeMention.granularity`, finest first.
GRANULARITIES = ("day", "weekend", "week", "month", "season", "year")


@dataclass(frozen=True, slots=True)
class TimeMention:
    """A time expression found in a text and the interval ``[start, end)`` it denotes.

    ``span`` is the expression's ``(start, end)`` character offsets in the text it was
    found in; it does not take part in equality.
    """

    text: str
    start: datetime
    end: datetime
    granularity: str
    span: tuple[int, int] = field(default=(0, 0), compare=False)

    @property
    def iso(self) -> str:
        """The interval in ISO-8601 form: ``2023-05-08``, ``2023-05``, ``2023`` or
        ``2023-05-01/2023-05-07`` (an inclusive range of days)."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date()  # end is exclusive
        if first == last:
            return first.isoformat()
        if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31) and first.year == last.year:
            return f"{first.year:04d}"
        if first.day == 1 and (first.year, first.month) == (last.year, last.month) and is_month_end(last):
            return f"{first.year:04d}-{first.month:02d}"
        return f"{first.isoformat()}/{last.isoformat()}"


# --------------------------------------------------------------------------- timestamps

_EPOCH_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_LOCOMO_RE = re.compile(
    r"(\d{1,2}):(\d{2})\s*([ap])\.?\s*m\.?\s+on\s+(\d{1,2})\s+([A-Za-z]+)\.?,?\s+(\d{4})", re.I
)
_HINT = (
    "expected ISO-8601 ('2024-03-02T18:30:00Z'), epoch seconds (1709404200), "
    "a LoCoMo session date ('1:56 pm on 8 May, 2023') or a date such as '8 May 2023'"
)


def parse_timestamp(value: str | int | float | datetime | None) -> datetime | None:
    """Read a timestamp into an aware UTC datetime.

    Accepts a datetime (naive means UTC), epoch seconds (number or numeric string),
    ISO-8601 text, LoCoMo session dates (``"10:37 am on 27 June, 2023"``) and plain dates
    (``"8 May 2023"``, ``"May 8, 2023"``; midnight UTC). ``None`` and blank strings give
    ``None``. Anything else raises :class:`~memos.errors.InvalidInput`.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date):  # a date is not a datetime: take its midnight
        return at(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"cannot read a timestamp from a {type(value).__name__}; {_HINT}")
    if isinstance(value, int | float):
        return _from_epoch(value)
    text = value.strip()
    if not text:
        return None
    if _EPOCH_RE.fullmatch(text):
        return _from_epoch(float(text))
    try:
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        pass
    m = _LOCOMO_RE.fullmatch(text)
    if m is not None:
        hour, minute, half, day, month_name, year = m.groups()
        month = MONTHS.get(month_name.lower())
        h = int(hour) % 12 + (12 if half.lower() == "p" else 0)
        if month is not None and int(hour) <= 12:
            try:
                return datetime(int(year), month, int(day), h, int(minute), tzinfo=UTC)
            except ValueError:
                pass
    for pattern in (DMY_RE, MDY_RE):
        m = pattern.fullmatch(text)
        if m is not None:
            d = safe_date(int(m["year"]), MONTHS[month_key(m["mon"])], int(m["day"]))
            if d is not None:
                return at(d)
    raise InvalidInput(f"cannot parse {_short(text)} as a timestamp; {_HINT}")


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise InvalidInput(f"epoch seconds must be finite, got {seconds!r}")
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidInput(f"epoch seconds {seconds!r} are out of range; {_HINT}") from exc


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def find_time_expressions(text: str, reference: datetime | None = None) -> list[TimeMention]:
    """Find the time expressions in ``text``, each resolved to the interval it denotes.

    ``reference`` is when the text was written (naive means UTC); relative expressions
    ("yesterday", "last month", "in May") are resolved against it and skipped when it is
    ``None``. Overlapping candidates resolve to the longest one; results are in text order.
    """
    if not text:
        return []
    found = scan(text, _utc(reference).date() if reference is not None else None)
    # Longest first so "8 May 2023" beats its own "May 2023"; ties go to the earlier pattern.
    found.sort(key=lambda f: f[0] - f[1])
    taken: list[tuple[int, int, datetime, datetime, str]] = []
    for cand in found:
        if all(cand[1] <= t[0] or cand[0] >= t[1] for t in taken):
            taken.append(cand)
    taken.sort(key=lambda f: f[0])
    return [TimeMention(text[s:e], start, end, gran, span=(s, e)) for s, e, start, end, gran in taken]


def query_time_range(query: str, now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """The interval a query asks about ("What did Caroline do last year?"), or ``None``.

    Several expressions are covered by one interval from the earliest start to the latest
    end. ``now`` defaults to the current time.
    """
    mentions = find_time_expressions(query, now if now is not None else datetime.now(UTC))
    if not mentions:
        return None
    return min(m.start for m in mentions), max(m.end for m in mentions)


_HAS_YEAR_RE = re.compile(r"\b\d{4}\b")


def annotate_time_expressions(text: str, reference: datetime | None) -> str:
    """Pin relative dates in ``text`` for storage: ``"moved last month"`` becomes
    ``"moved last month (2024-06)"``; expressions that already name a year are left alone.
    """
    out, pos = [], 0
    for mention in find_time_expressions(text, reference):
        if _HAS_YEAR_RE.search(mention.text):
            continue
        out.append(text[pos : mention.span[1]])
        out.append(f" ({mention.iso})")
        pos = mention.span[1]
    out.append(text[pos:])
    return "".join(out)
