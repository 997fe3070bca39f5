"""CloudStack's snapshot policy schedules, parsed and checked; and the policy's changes and undo."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from temporalio.client import ScheduleRange

from activities.snapshot_policies import calendar_of
from domain.errors import InvalidParameter
from domain.snapshot import SnapshotIntervalType
from domain.snapshot_policy import (
    SnapshotPolicy,
    SnapshotSchedule,
    check_max_snaps,
    check_timezone,
    parse_interval,
    parse_schedule,
    policy_id_for,
    recurring_job_id,
    recurring_snapshot_name,
)
from domain.snapshot_policy_operations import check_policy

H, D, W, M = (
    SnapshotIntervalType.HOURLY,
    SnapshotIntervalType.DAILY,
    SnapshotIntervalType.WEEKLY,
    SnapshotIntervalType.MONTHLY,
)


@pytest.mark.parametrize(
    ("interval", "schedule", "parsed"),
    [
        (H, "0", SnapshotSchedule(minute=0)),
        (H, "59", SnapshotSchedule(minute=59)),
        (D, "30:02", SnapshotSchedule(minute=30, hour=2)),
        (D, " 00:23 ", SnapshotSchedule(minute=0, hour=23)),
        (W, "00:03:1", SnapshotSchedule(minute=0, hour=3, day_of_week=0)),  # Sunday
        (W, "15:12:7", SnapshotSchedule(minute=15, hour=12, day_of_week=6)),  # Saturday
        (M, "45:23:28", SnapshotSchedule(minute=45, hour=23, day_of_month=28)),
        (M, "00:00:1", SnapshotSchedule(minute=0, hour=0, day_of_month=1)),
    ],
)
def test_cloudstack_schedules_parse_per_interval(
    interval: SnapshotIntervalType, schedule: str, parsed: SnapshotSchedule
) -> None:
    assert parse_schedule(interval, schedule) == parsed


@pytest.mark.parametrize(
    ("interval", "schedule"),
    [
        (H, ""),
        (H, "60"),
        (H, "30:02"),  # an hourly schedule is only the minute
        (H, "-1"),
        (D, "30"),
        (D, "30:24"),
        (D, "61:02"),
        (D, "aa:bb"),
        (W, "00:03"),
        (W, "00:03:0"),
        (W, "00:03:8"),
        (M, "00:03:29"),  # CloudStack allows only days every month has
        (M, "00:03:0"),
        (M, "00:03:1:1"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field_and_the_form(
    interval: SnapshotIntervalType, schedule: str
) -> None:
    with pytest.raises(InvalidParameter) as refused:
        parse_schedule(interval, schedule)
    assert refused.value.field == "schedule"
    assert interval.value in refused.value.message


def test_interval_timezone_and_max_snaps_are_checked_naming_their_field() -> None:
    assert parse_interval("daily") is D
    for bad in ("MANUAL", "yearly", ""):
        with pytest.raises(InvalidParameter) as refused:
            parse_interval(bad)
        assert refused.value.field == "interval_type"
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    for bad in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(InvalidParameter) as refused:
            check_timezone(bad)
        assert refused.value.field == "timezone"
    assert check_max_snaps(D, 8) == 8
    for too_many_or_few in (0, 9, -1):
        with pytest.raises(InvalidParameter) as refused:
            check_max_snaps(D, too_many_or_few)
        assert refused.value.field == "max_snaps"
    with pytest.raises(InvalidParameter) as refused:
        check_policy("WEEKLY", "00:03", "UTC", 3)
    assert refused.value.field == "schedule"


def test_a_schedule_becomes_a_temporal_calendar_with_every_unset_field_left_open() -> None:
    hourly = calendar_of(SnapshotSchedule(minute=15), "h")
    assert hourly.minute == [ScheduleRange(15)] and hourly.second == [ScheduleRange(0)]
    assert hourly.hour == [ScheduleRange(0, 23)]
    assert hourly.day_of_month == [ScheduleRange(1, 31)]
    assert hourly.day_of_week == [ScheduleRange(0, 6)]
    weekly = calendar_of(SnapshotSchedule(minute=0, hour=3, day_of_week=1), "w")
    assert (weekly.hour, weekly.day_of_week) == ([ScheduleRange(3)], [ScheduleRange(1)])
    assert weekly.day_of_month == [ScheduleRange(1, 31)]
    monthly = calendar_of(SnapshotSchedule(minute=0, hour=3, day_of_month=28), "m")
    assert (monthly.day_of_month, monthly.day_of_week) == (
        [ScheduleRange(28)],
        [ScheduleRange(0, 6)],
    )


def test_a_runs_job_id_and_snapshot_name_come_from_the_scheduled_time_in_utc() -> None:
    policy_id = uuid.uuid4()
    at = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=1)))
    assert recurring_job_id(policy_id, at) == recurring_job_id(policy_id, same_instant)
    assert recurring_job_id(policy_id, at) != recurring_job_id(policy_id, at + timedelta(days=1))
    assert recurring_snapshot_name("ROOT-7", D, same_instant) == "ROOT-7_DAILY_20261122013000"


def test_one_policy_per_volume_and_interval() -> None:
    volume_id = uuid.uuid4()
    assert policy_id_for(volume_id, D) == policy_id_for(volume_id, D)
    assert policy_id_for(volume_id, D) != policy_id_for(volume_id, W)
    assert policy_id_for(volume_id, D) != policy_id_for(uuid.uuid4(), D)


def _policy() -> SnapshotPolicy:
    return SnapshotPolicy(
        volume_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        zone_id=uuid.uuid4(),
        interval_type="DAILY",
        schedule="30:02",
        timezone="Europe/Berlin",
        max_snaps=3,
        command_id="job-1/record",
    )


def test_a_failed_update_is_undone_to_the_settings_it_replaced() -> None:
    policy = _policy()
    assert policy.update("00:05", "UTC", 5, "job-2/record")
    assert not policy.update("00:05", "UTC", 5, "job-2/record")  # a repeat changes nothing
    assert policy.undo("job-2/record", "job-2/undo-record")
    assert policy.settings == ("30:02", "Europe/Berlin", 3) and policy.active


def test_a_failed_create_is_undone_by_deleting_the_policy_and_a_superseded_change_is_kept() -> None:
    policy = _policy()
    assert policy.undo("job-1/record", "job-1/undo-record")
    assert not policy.active
    policy.update("00:06", "UTC", 2, "job-3/record")  # creating again brings it back
    assert policy.active
    policy.update("00:07", "UTC", 2, "job-4/record")
    assert not policy.undo("job-3/record", "job-3/undo-record")  # job 4 came later
    assert policy.settings == ("00:07", "UTC", 2)
    assert policy.delete("job-5/record") and not policy.delete("job-6/record")
