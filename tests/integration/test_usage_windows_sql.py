"""The SQL that cuts records and the Python window arithmetic agree to the millisecond, in
timezones with DST changes and half-hour offsets, hourly and daily."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from domain.cloud import Cloud, postgres_env
from domain.virtual_machine import VirtualMachine
from projections.usage_records import RecordQuery
from projections.usage_windows import AggregationWindow, WindowSize
from tests.usage_support import Timeline, own_database, project, records, utc

START, END = utc("2024-10-26 00:00"), utc("2024-10-29 00:00")


@pytest.fixture(scope="module")
def dst_weekend(database_url: str) -> Iterator[str]:
    """VMs started and stopped at random instants (to the millisecond) around the
    27 October 2024 fall-back in Europe."""
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        rng = random.Random(27)
        t = Timeline(cloud)
        t.account(utc("2024-10-25 00:00"))
        plan = []
        for n in range(6):
            at = START + timedelta(milliseconds=rng.randrange(0, 10 * 3_600_000))
            plan.append((at, n, "deploy"))
            for k in range(8):
                at += timedelta(milliseconds=rng.randrange(60_000, 8 * 3_600_000))
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
    "window",
    [
        AggregationWindow(WindowSize.HOURLY, "Europe/Paris"),
        AggregationWindow(WindowSize.DAILY, "Europe/Paris"),
        AggregationWindow(WindowSize.HOURLY, "Asia/Kolkata"),
        AggregationWindow(WindowSize.DAILY, "America/New_York"),
    ],
    ids=lambda w: f"{w.size}-{w.timezone}",
)
def test_sql_records_equal_the_python_cut_of_the_same_intervals(
    dst_weekend: str, window: AggregationWindow
) -> None:
    with psycopg.connect(dst_weekend) as conn:
        intervals = conn.execute(
            "SELECT resource_id, usage_type, started_at, ended_at FROM usage_intervals"
        ).fetchall()
    expected: dict[tuple[str, int, str], int] = defaultdict(int)
    for resource_id, usage_type, started, ended in intervals:
        for ws, _, ms in window.cut(started, ended or END + timedelta(days=7), START, END):
            expected[(str(resource_id), usage_type, window.local(ws).isoformat())] += ms
    found = records(dst_weekend, window, RecordQuery(start=START, end=END))
    got = {(r["resource_id"], r["usage_type"], r["start_date"]): r["raw_usage_ms"] for r in found}
    assert len(got) == len(found)
    assert got == dict(expected)
