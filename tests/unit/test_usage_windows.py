"""Aggregation windows and usage arithmetic: hours to the millisecond, CloudStack's "1.5 Hrs",
DST and sub-hour timezones, daily windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from projections.tariff import Rate, Tariff
from projections.usage_types import UsageType
from projections.usage_windows import (
    AggregationWindow,
    WindowSize,
    display_usage,
    raw_hours,
    to_ms_precision,
)

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
