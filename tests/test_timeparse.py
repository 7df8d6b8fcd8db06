"""Timestamps and time expressions: every expression class resolved against one fixed
reference, Wednesday 10 May 2023, 14:00 UTC."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from memos.errors import InvalidInput, MemosError
from memos.extract.timeparse import (
    TimeMention,
    annotate_time_expressions,
    find_time_expressions,
    parse_timestamp,
    query_time_range,
)

REF = datetime(2023, 5, 10, 14, 0, tzinfo=UTC)  # a Wednesday


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def one(text: str, reference: datetime | None = REF) -> TimeMention:
    found = find_time_expressions(text, reference)
    assert len(found) == 1, f"{text!r} -> {found}"
    return found[0]


# --------------------------------------------------------------------------- parse_timestamp


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37, tzinfo=UTC)),
        ("12:05 am on 1 Jan, 2020", datetime(2020, 1, 1, 0, 5, tzinfo=UTC)),
        ("12:30 pm on 3 March, 2021", datetime(2021, 3, 3, 12, 30, tzinfo=UTC)),
        ("2024-03-02T18:30:00Z", datetime(2024, 3, 2, 18, 30, tzinfo=UTC)),
        ("2024-03-02T20:30:00+02:00", datetime(2024, 3, 2, 18, 30, tzinfo=UTC)),
        ("2024-03-02 18:30", datetime(2024, 3, 2, 18, 30, tzinfo=UTC)),
        ("2024-03-02", datetime(2024, 3, 2, tzinfo=UTC)),
        ("8 May 2023", datetime(2023, 5, 8, tzinfo=UTC)),
        ("May 8, 2023", datetime(2023, 5, 8, tzinfo=UTC)),
        (1709404200, datetime(2024, 3, 2, 18, 30, tzinfo=UTC)),
        (1709404200.5, datetime(2024, 3, 2, 18, 30, 0, 500000, tzinfo=UTC)),
        ("1709404200", datetime(2024, 3, 2, 18, 30, tzinfo=UTC)),
        (datetime(2023, 1, 1, 9), datetime(2023, 1, 1, 9, tzinfo=UTC)),
        (datetime(2023, 1, 1, 9, tzinfo=timezone(timedelta(hours=-5))), datetime(2023, 1, 1, 14, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts_common_forms(value: object, expected: datetime) -> None:
    got = parse_timestamp(value)  # type: ignore[arg-type]
    assert got == expected
    assert got is not None and got.tzinfo is UTC


@pytest.mark.parametrize("value", [None, "", "   "])
def test_parse_timestamp_missing_is_none(value: str | None) -> None:
    assert parse_timestamp(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "13:00 pm on 8 May, 2023",
        "1:56 pm on 31 February, 2023",
        "2023-13-45",
        float("nan"),
        1e20,
        True,
        [1],
    ],
)
def test_parse_timestamp_rejects_garbage_with_a_helpful_message(value: object) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_timestamp(value)  # type: ignore[arg-type]
    assert isinstance(err.value, ValueError) and isinstance(err.value, MemosError)
    assert "ISO-8601" in str(err.value) or "finite" in str(err.value)


# --------------------------------------------------------------------------- absolute dates


@pytest.mark.parametrize(
    ("text", "start", "end", "granularity"),
    [
        ("We met on 8 May 2023.", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("We met on the 8th of May, 2023.", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("We met on May 8, 2023.", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("We met on Dec. 5th 2022.", day(2022, 12, 5), day(2022, 12, 6), "day"),
        ("Logged 2023-05-08 at noon", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("It opened in May 2023", day(2023, 5, 1), day(2023, 6, 1), "month"),
        ("It opened in early June 2022", day(2022, 6, 1), day(2022, 6, 11), "month"),
        ("She was born in 1990.", day(1990, 1, 1), day(1991, 1, 1), "year"),
        ("in the summer of 2021", day(2021, 6, 1), day(2021, 9, 1), "season"),
    ],
)
def test_absolute_dates(text: str, start: datetime, end: datetime, granularity: str) -> None:
    m = one(text)
    assert (m.start, m.end, m.granularity) == (start, end, granularity)
    # absolute dates need no reference at all
    assert find_time_expressions(text, None) == [m]


def test_day_and_month_without_year_take_the_tense_side_of_the_reference() -> None:
    assert one("I saw her on 3 June").start == day(2022, 6, 3)  # past: the last 3 June
    assert one("I will fly out on 3 June").start == day(2023, 6, 3)  # future: the next one
    assert one("We met on May 2").start == day(2023, 5, 2)


# --------------------------------------------------------------------------- months alone


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("We went hiking in May.", (2023, 5)),  # the reference's own month
        ("We went hiking in June.", (2022, 6)),  # past tense: the last June
        ("I will go hiking in June.", (2023, 6)),  # future: the next June
        ("I'm planning a trip in April.", (2024, 4)),
        ("Since March things are better.", (2023, 3)),
        ("It was cold last May.", (2022, 5)),
        ("It was warm last April.", (2023, 4)),
        ("See you next March!", (2024, 3)),
        ("she’ll come in June", (2023, 6)),  # curly apostrophe still reads as future
    ],
)
def test_month_alone(text: str, month: tuple[int, int]) -> None:
    m = one(text)
    assert m.granularity == "month"
    assert (m.start.year, m.start.month, m.start.day) == (*month, 1)
    assert m.end == day(*month, 1).replace(month=month[1] % 12 + 1, year=month[0] + month[1] // 12)


def test_month_parts_narrow_the_interval() -> None:
    m = one("We moved in late April.")
    assert (m.start, m.end) == (day(2023, 4, 21), day(2023, 5, 1))
    m = one("We moved in mid-March.")
    assert (m.start, m.end) == (day(2023, 3, 11), day(2023, 3, 21))


@pytest.mark.parametrize(
    "text",
    [
        "I may go",
        "You may want to rest, I may 5 times",
        "They march on",
        "We march in march",  # lowercase march is the verb
        "in may we trust",
        "A crowd of 2000 people",
        "I go running on Fridays",
        "Finally a quiet Saturday",  # a bare weekday is too often today or a habit
        "Call me at 555 1234",
        "",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert find_time_expressions(text, REF) == []


# --------------------------------------------------------------------------- relative expressions


@pytest.mark.parametrize(
    ("text", "start", "end", "granularity"),
    [
        ("yesterday", day(2023, 5, 9), day(2023, 5, 10), "day"),
        ("last night", day(2023, 5, 9), day(2023, 5, 10), "day"),
        ("today", day(2023, 5, 10), day(2023, 5, 11), "day"),
        ("tomorrow", day(2023, 5, 11), day(2023, 5, 12), "day"),
        ("the day before yesterday", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("last week", day(2023, 5, 1), day(2023, 5, 8), "week"),
        ("this week", day(2023, 5, 8), day(2023, 5, 15), "week"),
        ("next week", day(2023, 5, 15), day(2023, 5, 22), "week"),
        ("last month", day(2023, 4, 1), day(2023, 5, 1), "month"),
        ("next month", day(2023, 6, 1), day(2023, 7, 1), "month"),
        ("last year", day(2022, 1, 1), day(2023, 1, 1), "year"),
        ("this year", day(2023, 1, 1), day(2024, 1, 1), "year"),
        ("two days ago", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("3 weeks ago", day(2023, 4, 17), day(2023, 4, 24), "week"),
        ("a month ago", day(2023, 4, 1), day(2023, 5, 1), "month"),
        ("a few days ago", day(2023, 5, 5), day(2023, 5, 9), "day"),
        ("a couple of weeks ago", day(2023, 4, 17), day(2023, 5, 8), "week"),
        ("in two weeks", day(2023, 5, 22), day(2023, 5, 29), "week"),
        ("last Friday", day(2023, 5, 5), day(2023, 5, 6), "day"),
        ("last Tuesday", day(2023, 5, 9), day(2023, 5, 10), "day"),
        ("last Wednesday", day(2023, 5, 3), day(2023, 5, 4), "day"),
        ("this Friday", day(2023, 5, 12), day(2023, 5, 13), "day"),
        ("next Tuesday", day(2023, 5, 16), day(2023, 5, 17), "day"),
        ("we met on Monday", day(2023, 5, 8), day(2023, 5, 9), "day"),
        ("last weekend", day(2023, 5, 6), day(2023, 5, 8), "weekend"),
        ("this weekend", day(2023, 5, 13), day(2023, 5, 15), "weekend"),
        ("the past 3 days", day(2023, 5, 8), day(2023, 5, 11), "day"),
        ("the past week", day(2023, 5, 4), day(2023, 5, 11), "week"),
        ("the past 2 months", day(2023, 3, 11), day(2023, 5, 11), "month"),
        ("last summer", day(2022, 6, 1), day(2022, 9, 1), "season"),
        ("in the winter", day(2022, 12, 1), day(2023, 3, 1), "season"),
        ("next summer", day(2023, 6, 1), day(2023, 9, 1), "season"),
    ],
)
def test_relative_expressions(text: str, start: datetime, end: datetime, granularity: str) -> None:
    m = one(text)
    assert (m.start, m.end, m.granularity) == (start, end, granularity), m


def test_relative_expressions_need_a_reference() -> None:
    assert find_time_expressions("I moved last month, two days ago, in May", None) == []
    assert [m.text for m in find_time_expressions("yesterday, 8 May 2023", None)] == ["8 May 2023"]


def test_reference_in_another_zone_is_converted_to_utc() -> None:
    # 01:00 on 11 May in UTC+3 is still 10 May in UTC
    ref = datetime(2023, 5, 11, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert one("yesterday", ref).start == day(2023, 5, 9)
    assert one("yesterday", datetime(2023, 5, 10, 14)).start == day(2023, 5, 9)  # naive means UTC


def test_mentions_are_in_text_order_and_longest_wins() -> None:
    text = "On 8 May 2023 I said I moved last month and will leave next week."
    found = find_time_expressions(text, REF)
    assert [m.text for m in found] == ["8 May 2023", "last month", "next week"]
    assert [m.span for m in found] == [(text.index(m.text), text.index(m.text) + len(m.text)) for m in found]
    assert found[0].iso == "2023-05-08"


def test_time_mention_is_frozen_and_has_iso_forms() -> None:
    m = one("last week")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.text = "x"  # type: ignore[misc]
    assert m.iso == "2023-05-01/2023-05-07"
    assert one("last month").iso == "2023-04"
    assert one("last year").iso == "2022"
    assert one("yesterday").iso == "2023-05-09"
    # equality ignores where the mention was found
    assert TimeMention("x", REF, REF, "day", span=(1, 2)) == TimeMention("x", REF, REF, "day")


# --------------------------------------------------------------------------- queries and ingest


def test_query_time_range() -> None:
    assert query_time_range("What did Caroline do last year?", REF) == (day(2022, 1, 1), day(2023, 1, 1))
    assert query_time_range("What did Caroline do in May?", REF) == (day(2023, 5, 1), day(2023, 6, 1))
    assert query_time_range("What happened between March 2022 and May 2023?", REF) == (
        day(2022, 3, 1),
        day(2023, 6, 1),
    )
    assert query_time_range("When did Caroline move to Sweden?", REF) is None
    assert query_time_range("", REF) is None


def test_query_time_range_defaults_to_now() -> None:
    before = datetime.now(UTC)
    got = query_time_range("What did I do yesterday?")
    assert got is not None
    assert got[1] - got[0] == timedelta(days=1)
    assert got[0].date() in {before.date() - timedelta(days=1), datetime.now(UTC).date() - timedelta(days=1)}


def test_annotate_pins_relative_dates() -> None:
    text = "I moved to Berlin last month and saw Mira on 8 May 2023. In May I ran."
    assert annotate_time_expressions(text, REF) == (
        "I moved to Berlin last month (2023-04) and saw Mira on 8 May 2023. In May (2023-05) I ran."
    )
    assert annotate_time_expressions("nothing here", REF) == "nothing here"
