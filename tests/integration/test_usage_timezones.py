"""Usage records cut by the SQL across clock changes, against hand-computed timelines.

Every hourly and daily record of the VMs of `tests.usage_timezones` (zones whose clocks change
at midnight, by 30 minutes, or sit half an hour off UTC) is compared with the hours a person
worked out; nothing is compared with the Python window arithmetic. Then: a zero-length
interval makes no record, a day's record does not depend on where the query starts, and on a
busy weekend of clock changes every millisecond of usage lands in exactly one window.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from domain.cloud import Cloud, postgres_env
from domain.virtual_machine import VirtualMachine
from projections.usage_records import RecordQuery
from projections.usage_types import UsageType
from projections.usage_windows import AggregationWindow, WindowSize
from tests.usage_support import Timeline, own_database, project, records, utc
from tests.usage_timezones import SCENARIOS, Run, Scenario

BLINK = utc("2024-03-12 10:30:00.250")

RunKey = tuple[str, str]


@pytest.fixture(scope="module")
def timelines(database_url: str) -> Iterator[tuple[str, dict[RunKey, UUID]]]:
    """One VM per run of every scenario, started and stopped at its instants (saved in time
    order: nothing is late), and one VM started and stopped in the same millisecond."""
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        t = Timeline(cloud)
        t.account(utc("2022-01-01 00:00"))
        plan: list[tuple[datetime, str, RunKey]] = []
        for scenario in SCENARIOS:
            for role, run in scenario.all_runs():
                key = (scenario.name, role)
                plan.append((run.started.astimezone(UTC), "deploy", key))
                plan.append((run.stopped.astimezone(UTC), "stop", key))
        plan += [(BLINK, "deploy", ("blink", "")), (BLINK, "stop", ("blink", ""))]
        live: dict[RunKey, VirtualMachine] = {}
        for at, action, key in sorted(plan, key=lambda step: (step[0], step[1] == "stop")):
            if action == "deploy":
                live[key] = t.deploy(at, name="-".join(key))
            else:
                t.stop(live[key], at)
        project(postgres_env(url), cloud)
        cloud.close()
        yield url, {key: vm.id for key, vm in live.items()}


def running_records(
    url: str, window: AggregationWindow, start: datetime, end: datetime, vm_id: UUID
) -> list[dict[str, Any]]:
    found = records(url, window, RecordQuery(start=start, end=end, usage_type=UsageType.RUNNING_VM))
    return [r for r in found if r["resource_id"] == str(vm_id)]


def as_minutes(found: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    out = []
    for r in found:
        assert r["raw_usage_ms"] % 60_000 == 0, r
        out.append((r["start_date"], r["end_date"], r["raw_usage_ms"] // 60_000))
    return out


def runs_with(scenario: Scenario, size: WindowSize) -> list[tuple[str, Run]]:
    return [
        (role, run)
        for role, run in scenario.all_runs()
        if (run.hourly if size is WindowSize.HOURLY else run.daily)
    ]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_hourly_record_across_a_clock_change_is_the_hand_computed_one(
    timelines: tuple[str, dict[RunKey, UUID]], scenario: Scenario
) -> None:
    url, ids = timelines
    window = AggregationWindow(WindowSize.HOURLY, scenario.zone)
    for role, run in runs_with(scenario, WindowSize.HOURLY):
        found = running_records(url, window, run.started, run.stopped, ids[(scenario.name, role)])
        assert as_minutes(found) == run.hourly_records(), role


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_daily_record_across_a_clock_change_is_the_hand_computed_one(
    timelines: tuple[str, dict[RunKey, UUID]], scenario: Scenario
) -> None:
    url, ids = timelines
    window = AggregationWindow(WindowSize.DAILY, scenario.zone)
    for role, run in runs_with(scenario, WindowSize.DAILY):
        found = running_records(url, window, run.started, run.stopped, ids[(scenario.name, role)])
        assert as_minutes(found) == run.daily_records(), role


@pytest.mark.parametrize(
    ("zone", "key", "day_start", "queries"),
    [
        (
            "America/Santiago",
            ("America/Santiago-spring", "days"),
            "2024-09-08T01:00:00-03:00",
            [
                ("2024-09-06T00:00:00-04:00", "2024-09-10T00:00:00-03:00"),
                ("2024-09-08T01:00:00-03:00", "2024-09-08T01:00:01-03:00"),
                ("2024-09-08T12:00:00-03:00", "2024-09-08T13:00:00-03:00"),
                ("2024-09-08T23:59:00-03:00", "2024-09-09T00:00:00-03:00"),
            ],
        ),
        (
            "America/Havana",
            ("America/Havana-autumn", "days"),
            "2024-11-03T00:00:00-04:00",
            [
                ("2024-11-01T00:00:00-04:00", "2024-11-05T00:00:00-05:00"),
                ("2024-11-03T00:30:00-05:00", "2024-11-03T00:40:00-05:00"),
                ("2024-11-03T18:00:00-05:00", "2024-11-04T00:00:00-05:00"),
            ],
        ),
    ],
)
def test_a_days_record_is_the_same_whatever_the_query_starts_with(
    timelines: tuple[str, dict[RunKey, UUID]],
    zone: str,
    key: RunKey,
    day_start: str,
    queries: list[tuple[str, str]],
) -> None:
    url, ids = timelines
    window = AggregationWindow(WindowSize.DAILY, zone)
    seen = set()
    for start, end in queries:
        found = running_records(
            url, window, datetime.fromisoformat(start), datetime.fromisoformat(end), ids[key]
        )
        (day,) = [r for r in found if r["start_date"] == day_start]
        seen.add((day["id"], day["start_date"], day["end_date"], day["raw_usage_ms"]))
    assert len(seen) == 1


@pytest.mark.parametrize("size", list(WindowSize))
def test_a_zero_length_interval_makes_no_record(
    timelines: tuple[str, dict[RunKey, UUID]], size: WindowSize
) -> None:
    url, ids = timelines
    window = AggregationWindow(size, "UTC")
    around = RecordQuery(start=BLINK - timedelta(hours=1), end=BLINK + timedelta(hours=1))
    found = records(url, window, around)
    blink = str(ids[("blink", "")])
    assert {r["usage_type_name"] for r in found if r["resource_id"] == blink} == {"ALLOCATED_VM"}
    assert all(r["raw_usage_ms"] > 0 for r in found)


# --- every millisecond once, on a weekend of clock changes -----------------------------------

WEEKEND = utc("2024-04-05 00:00"), utc("2024-04-09 00:00")


@pytest.fixture(scope="module")
def busy_weekend(database_url: str) -> Iterator[str]:
    """VMs started and stopped at random instants (to the millisecond) over the weekend of
    6-7 April 2024, when Santiago, Lord Howe and Adelaide all changed their clocks."""
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        rng = random.Random(7)
        t = Timeline(cloud)
        t.account(WEEKEND[0] - timedelta(days=1))
        plan = []
        for n in range(8):
            at = WEEKEND[0] + timedelta(milliseconds=rng.randrange(0, 20 * 3_600_000) if n else 0)
            plan.append((at, n, "deploy"))
            for k in range(10):
                at += timedelta(milliseconds=rng.randrange(1, 9 * 3_600_000))
                plan.append((at, n, "stop" if k % 2 == 0 else "start"))
        live: dict[int, VirtualMachine] = {}
        for at, n, action in sorted(plan):
            if action == "deploy":
                live[n] = t.deploy(at, name=f"vm-{n}")
            elif action == "stop":
                t.stop(live[n], at)
            else:
                t.start(live[n], at)
        project(postgres_env(url), cloud)
        cloud.close()
        yield url


@pytest.mark.parametrize(
    "zone",
    ["America/Santiago", "Australia/Lord_Howe", "Australia/Adelaide", "America/Havana"],
)
@pytest.mark.parametrize("size", list(WindowSize))
def test_every_millisecond_of_usage_lands_in_exactly_one_window(
    busy_weekend: str, zone: str, size: WindowSize
) -> None:
    window = AggregationWindow(size, zone)
    query = RecordQuery(start=WEEKEND[0] + timedelta(hours=5), end=WEEKEND[1])
    found = records(busy_weekend, window, query)
    # The records cover whole windows: from the first window's start to the last one's end.
    lower = min(datetime.fromisoformat(r["start_date"]) for r in found)
    upper = max(datetime.fromisoformat(r["end_date"]) for r in found)
    assert lower <= query.start and upper >= query.end
    spans = sorted(
        {
            (datetime.fromisoformat(r["start_date"]), datetime.fromisoformat(r["end_date"]))
            for r in found
        }
    )
    starts = [start for start, _ in spans]
    ends = [end for _, end in spans]
    assert len(set(starts)) == len(starts), "two windows with one start"
    assert all(ends[i] <= starts[i + 1] for i in range(len(spans) - 1)), "windows overlap"
    with psycopg.connect(busy_weekend) as conn:
        intervals = conn.execute(
            "SELECT resource_id, usage_type, started_at, coalesce(ended_at, %s) "
            "FROM usage_intervals",
            (WEEKEND[1] + timedelta(days=30),),
        ).fetchall()
    expected: dict[tuple[str, int], int] = defaultdict(int)
    for resource_id, usage_type, started, ended in intervals:
        inside = min(ended, upper) - max(started, lower)
        if inside > timedelta(0):
            expected[(str(resource_id), usage_type)] += inside // timedelta(milliseconds=1)
    got: dict[tuple[str, int], int] = defaultdict(int)
    for r in found:
        got[(r["resource_id"], r["usage_type"])] += r["raw_usage_ms"]
    assert got == expected
