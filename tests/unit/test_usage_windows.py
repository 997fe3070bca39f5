"""Aggregation windows and usage arithmetic: hours to the millisecond, CloudStack's "1.5 Hrs",
windows across clock changes (at midnight, by 30 minutes, in half-hour zones) against
hand-computed timelines, and windows tiling time in any zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.tariff import Rate, Tariff
from projections.usage_types import UsageType
from projections.usage_windows import (
    AggregationWindow,
    WindowSize,
    display_usage,
    raw_hours,
    to_ms_precision,
)
from tests.usage_timezones import SCENARIOS, Scenario

HOURLY_UTC = AggregationWindow(WindowSize.HOURLY, "UTC")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (5_400_000, "1.5 Hrs"),
        (3_600_000, "1 Hrs"),
        (0, "0 Hrs"),
        (2_100_000, "0.583333 Hrs"),
        (1, "0 Hrs"),
        (1_800, "0.0005 Hrs"),
    ],
)
def test_display_usage_is_cloudstacks_hours_text(ms: int, shown: str) -> None:
    assert display_usage(ms) == shown


def test_raw_usage_keeps_millisecond_precision() -> None:
    assert round(raw_hours(1) * 3_600_000) == 1
    assert round(raw_hours(123_456_789) * 3_600_000) == 123_456_789
    assert raw_hours(5_400_000) == 1.5


def test_event_times_are_truncated_to_the_millisecond() -> None:
    at = datetime(2024, 3, 12, 10, 20, 0, 123_999, tzinfo=UTC)
    assert to_ms_precision(at).microsecond == 123_000


def test_an_interval_is_cut_at_each_hour_and_continues_in_the_next() -> None:
    pieces = list(
        HOURLY_UTC.cut(
            utc("2024-03-12 10:20"),
            utc("2024-03-12 12:05:00.250"),
            utc("2024-03-12 00:00"),
            utc("2024-03-13 00:00"),
        )
    )
    assert [(s.hour, ms) for s, _, ms in pieces] == [
        (10, 40 * 60_000),
        (11, 3_600_000),
        (12, 5 * 60_000 + 250),
    ]


def test_hourly_windows_in_a_half_hour_timezone_start_at_half_past_utc() -> None:
    kolkata = AggregationWindow(WindowSize.HOURLY, "Asia/Kolkata")
    start = kolkata.floor(utc("2024-03-12 10:20"))
    assert start == utc("2024-03-12 09:30")
    assert kolkata.local(start).isoformat() == "2024-03-12T15:00:00+05:30"


def test_the_repeated_hour_of_a_dst_fall_back_is_two_windows() -> None:
    paris = AggregationWindow(WindowSize.HOURLY, "Europe/Paris")
    # 27 Oct 2024: 03:00 CEST becomes 02:00 CET; local 02:00-03:00 happens twice.
    windows = list(paris.windows(utc("2024-10-27 00:00"), utc("2024-10-27 02:00")))
    labels = [paris.local(s).isoformat() for s, _ in windows]
    assert labels == ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"]
    assert all(e - s == timedelta(hours=1) for s, e in windows)


def test_daily_windows_follow_local_midnight_across_dst_changes() -> None:
    paris = AggregationWindow(WindowSize.DAILY, "Europe/Paris")
    spring = list(paris.windows(utc("2024-03-30 23:30"), utc("2024-03-31 23:30")))
    assert [e - s for s, e in spring] == [timedelta(hours=23), timedelta(hours=24)]
    autumn = next(iter(paris.windows(utc("2024-10-27 12:00"), utc("2024-10-27 13:00"))))
    assert autumn[1] - autumn[0] == timedelta(hours=25)
    assert paris.local(autumn[0]).isoformat() == "2024-10-27T00:00:00+02:00"


def test_a_running_day_in_a_dst_change_day_counts_its_real_hours() -> None:
    paris = AggregationWindow(WindowSize.DAILY, "Europe/Paris")
    start = utc("2024-10-26 22:00")  # local midnight, CEST
    end = utc("2024-10-27 23:00")  # next local midnight, CET
    ((_, _, ms),) = paris.cut(start, end, start, end)
    assert ms == 25 * 3_600_000


def _labelled(
    window: AggregationWindow, pieces: list[tuple[datetime, datetime, int]]
) -> list[tuple[str, str, int]]:
    return [
        (window.local(s).isoformat(), window.local(e).isoformat(), ms // 60_000)
        for s, e, ms in pieces
    ]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_windows_across_clock_changes_are_the_hand_computed_ones(scenario: Scenario) -> None:
    """Every hourly and daily window a run overlaps, with its usage, as worked out by hand
    (`tests.usage_timezones`): labels, lengths and minutes."""
    hourly = AggregationWindow(WindowSize.HOURLY, scenario.zone)
    daily = AggregationWindow(WindowSize.DAILY, scenario.zone)
    for _, run in scenario.all_runs():
        for window, expected in ((hourly, run.hourly_records()), (daily, run.daily_records())):
            if not expected:
                continue
            pieces = list(window.cut(run.started, run.stopped, run.started, run.stopped))
            assert _labelled(window, pieces) == expected


@pytest.mark.parametrize(
    ("zone", "day", "first_instant", "hours"),
    [
        ("America/Santiago", "2024-09-08", "2024-09-08T01:00:00-03:00", 23),
        ("America/Santiago", "2024-04-06", "2024-04-06T00:00:00-03:00", 25),
        ("America/Havana", "2024-03-10", "2024-03-10T01:00:00-04:00", 23),
        ("America/Havana", "2024-11-03", "2024-11-03T00:00:00-04:00", 25),
        ("Asia/Beirut", "2022-03-27", "2022-03-27T01:00:00+03:00", 23),
        ("America/Asuncion", "2023-10-01", "2023-10-01T01:00:00-03:00", 23),
        ("Australia/Lord_Howe", "2024-10-06", "2024-10-06T00:00:00+10:30", 23.5),
        ("Australia/Lord_Howe", "2024-04-07", "2024-04-07T00:00:00+11:00", 24.5),
    ],
)
def test_a_day_starts_at_its_first_instant_whatever_the_query_starts_with(
    zone: str, day: str, first_instant: str, hours: float
) -> None:
    """The window holding any instant of the day is the same: from the day's first local
    midnight (or first instant, when midnight is skipped) to the next day's."""
    daily = AggregationWindow(WindowSize.DAILY, zone)
    start = datetime.fromisoformat(first_instant)
    length = timedelta(hours=hours)
    for offset in (timedelta(0), timedelta(minutes=1), length / 2, length - timedelta(seconds=1)):
        window_start = daily.floor(start + offset)
        assert window_start == start
        assert daily.next_start(window_start) - window_start == length
        assert daily.local(window_start).date().isoformat() == day


def test_a_date_the_zone_skipped_has_no_window() -> None:
    """Samoa skipped 30 December 2011 (23:59:59-10:00 on the 29th, then 31 December 00:00+14:00):
    the 29th's window ends where the 31st's begins."""
    apia = AggregationWindow(WindowSize.DAILY, "Pacific/Apia")
    windows = list(apia.windows(utc("2011-12-29 10:00"), utc("2011-12-31 10:00")))
    assert [(apia.local(s).isoformat(), e - s) for s, e in windows] == [
        ("2011-12-29T00:00:00-10:00", timedelta(hours=24)),
        ("2011-12-31T00:00:00+14:00", timedelta(hours=24)),
    ]


def test_window_boundaries_do_not_depend_on_where_a_query_starts() -> None:
    santiago = AggregationWindow(WindowSize.DAILY, "America/Santiago")
    from_before = santiago.boundaries(utc("2024-09-06 12:00"), utc("2024-09-10 00:00"))
    from_inside = santiago.boundaries(utc("2024-09-08 15:00"), utc("2024-09-10 00:00"))
    assert from_inside == from_before[2:]
    assert santiago.local(from_inside[0]).isoformat() == "2024-09-08T01:00:00-03:00"


ZONES = [
    "UTC",
    "America/Santiago",
    "America/Havana",
    "Asia/Beirut",
    "America/Asuncion",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Europe/Paris",
    "Pacific/Apia",
]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    size=st.sampled_from(list(WindowSize)),
    instant=st.datetimes(
        min_value=datetime(2010, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
    ),
)
def test_windows_tile_time_with_no_gap_and_no_overlap(
    zone: str, size: WindowSize, instant: datetime
) -> None:
    """Any instant lies in exactly one window, whose neighbours touch it: the window before
    ends where it starts, the window after starts where it ends."""
    window = AggregationWindow(size, zone)
    start = window.floor(instant)
    end = window.next_start(start)
    assert start <= instant < end
    assert window.floor(end) == end and window.floor(start) == start
    assert window.floor(end - timedelta(microseconds=1)) == start
    assert window.next_start(window.floor(start - timedelta(microseconds=1))) == start
    longest = timedelta(hours=1, minutes=30) if size is WindowSize.HOURLY else timedelta(hours=26)
    assert end - start <= longest


def test_usage_types_parse_by_id_or_name() -> None:
    assert UsageType.parse("1") is UsageType.RUNNING_VM
    assert UsageType.parse("volume") is UsageType.VOLUME
    with pytest.raises(ValueError):
        UsageType.parse("CPU")


def test_the_most_specific_rate_prices_hours_and_gib_hours_exactly() -> None:
    big = uuid4()
    tariff = Tariff(
        currency="EUR",
        rates=[
            Rate(usage_type=UsageType.RUNNING_VM, price_per_hour=Decimal("0.05")),
            Rate(usage_type=UsageType.RUNNING_VM, offering_id=big, price_per_hour=Decimal("0.2")),
            Rate(usage_type=UsageType.VOLUME, price_per_gib_hour=Decimal("0.001")),
        ],
    )
    assert tariff.cost(UsageType.RUNNING_VM, None, 5_400_000, 0) == Decimal("0.075")
    assert tariff.cost(UsageType.RUNNING_VM, big, 5_400_000, 0) == Decimal("0.3")
    gib_hour_ms = 3_600_000 * 1024**3
    assert tariff.cost(UsageType.VOLUME, None, 3_600_000, 8 * gib_hour_ms) == Decimal("0.008")
    assert tariff.cost(UsageType.TEMPLATE, None, 3_600_000, 0) == Decimal(0)
