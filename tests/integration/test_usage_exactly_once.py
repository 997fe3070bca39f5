"""The usage projection writes every record exactly once: across restarts at random points,
crashes inside a transaction, two projector processes at once, and a rebuild from scratch, the
export is byte for byte the same. Late events correct served windows visibly."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from domain.cloud import Cloud, postgres_env
from domain.virtual_machine import VirtualMachine, VmEvent
from projections.read_model import _adapt
from projections.runner import ensure_event_store, lost_a_race, retrying_ddl_races
from projections.usage import UsageProjection, UsageView
from projections.usage_records import RecordQuery
from projections.usage_windows import AggregationWindow, WindowSize
from tests.usage_support import (
    Timeline,
    clock,
    drop_usage_tables,
    export,
    own_database,
    period,
    project,
    records,
    usage_runner,
    utc,
)

HOURLY = AggregationWindow(WindowSize.HOURLY, "UTC")
DAY = period("2024-05-01 00:00", "2024-05-03 00:00")


def busy_day(cloud: Cloud, seed: int, vms: int = 12, changes: int = 16) -> Timeline:
    """VMs, volumes and templates starting and stopping at random instants over a day,
    saved in time order (a few hundred events)."""
    rng = random.Random(seed)
    t = Timeline(cloud)
    t.account(utc("2024-05-01 00:00"))
    t.template(utc("2024-05-01 00:30"))
    plan: list[tuple[Any, int, str]] = []
    base = utc("2024-05-01 01:00")
    for n in range(vms):
        deployed = base + timedelta(minutes=rng.uniform(0, 120))
        plan.append((deployed, n, "deploy"))
        plan.append((deployed + timedelta(seconds=20), n, "volume"))
        for k, minute in enumerate(sorted(rng.uniform(130, 1400) for _ in range(changes))):
            plan.append((base + timedelta(minutes=minute), n, "stop" if k % 2 == 0 else "start"))
    live: dict[int, VirtualMachine] = {}
    for at, n, action in sorted(plan):
        if action == "deploy":
            live[n] = t.deploy(at, name=f"vm-{n}")
        elif action == "volume":
            t.volume(at, at + timedelta(seconds=5), 8 * 1024**3, name=f"root-{n}")
        elif action == "stop":
            t.stop(live[n], at)
        else:
            t.start(live[n], at)
    return t


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[str, Cloud]]:
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        yield url, cloud
        cloud.close()


def interval_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT resource_id, usage_type, seq, started_at, ended_at, size_bytes "
            "FROM usage_intervals ORDER BY resource_id, usage_type, seq"
        ).fetchall()


def rebuilt_export(url: str, cloud: Cloud) -> bytes:
    drop_usage_tables(url)
    project(postgres_env(url), cloud)
    return export(url, HOURLY, DAY)


class SimulatedCrash(Exception):
    """The process dies after writing a batch's rows, before its transaction commits."""


class CrashingView(UsageView):
    crash_probability = 0.0
    rng = random.Random(0)

    def apply(self, writes: Any, tracking: Tracking, base: int | None, *more: Any) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for (table, _), row in writes.items():
                curs.execute(self._upserts[table], _adapt(row))
            if self.rng.random() < self.crash_probability:
                raise SimulatedCrash(tracking.notification_id)
        # Not crashed: roll the rows into the real, checked transaction.
        super().apply(writes, tracking, base, *more)


class SmallBatches(UsageProjection):
    name = "usage_projection"
    BATCH_SIZE = 7


def test_replaying_the_same_events_again_gives_the_same_bytes(
    store: tuple[str, Cloud],
) -> None:
    url, cloud = store
    busy_day(cloud, seed=1)
    project(postgres_env(url), cloud)
    first = export(url, HOURLY, DAY)
    assert first.count(b"\n") > 100
    assert rebuilt_export(url, cloud) == first
    assert rebuilt_export(url, cloud) == first


def test_restarts_and_crashes_at_random_points_change_nothing(
    store: tuple[str, Cloud],
) -> None:
    url, cloud = store
    busy_day(cloud, seed=2)
    env = postgres_env(url)
    target = cloud.position()
    rng = random.Random(2)
    CrashingView.rng = random.Random(3)
    CrashingView.crash_probability = 0.2
    restarts = crashes = 0
    try:
        while True:
            runner = usage_runner(env, SmallBatches, CrashingView)
            time.sleep(rng.uniform(0, 0.05))
            try:
                runner.__exit__(None, None, None)
            except SimulatedCrash:
                crashes += 1
            restarts += 1
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT max(notification_id) FROM usage_projection_tracking "
                    "WHERE application_name = 'Cloud'"
                ).fetchone()
            if row and row[0] is not None and row[0] >= target:
                break
            assert restarts < 500
    finally:
        CrashingView.crash_probability = 0.0
    assert crashes > 0 and restarts > 2
    interrupted = export(url, HOURLY, DAY)
    intervals = interval_rows(url)
    assert rebuilt_export(url, cloud) == interrupted
    assert interval_rows(url) == intervals


def test_two_projectors_at_once_write_each_record_once(store: tuple[str, Cloud]) -> None:
    url, cloud = store
    ensure_event_store(postgres_env(url))
    env = {**postgres_env(url), "CLOUD_CREATE_TABLE": "false"}
    lost_races = 0
    died: list[BaseException] = []
    stop = threading.Event()

    def projector() -> None:
        try:
            follow_until_stopped()
        except BaseException as error:  # a dead projector would leave the other one alone
            died.append(error)

    def follow_until_stopped() -> None:
        nonlocal lost_races
        while not stop.is_set():
            # Both create the usage tables at once: a DDL race, not a test failure.
            runner = retrying_ddl_races(lambda: usage_runner(env, SmallBatches))
            while not stop.is_set() and not runner.is_interrupted.is_set():
                time.sleep(0.01)
            try:
                runner.__exit__(None, None, None)
            except Exception as error:
                if not lost_a_race(error):
                    raise
                lost_races += 1

    threads = [threading.Thread(target=projector) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        busy_day(cloud, seed=4)  # appended while both projectors follow the log
        target = cloud.position()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT max(notification_id) FROM usage_projection_tracking "
                    "WHERE application_name = 'Cloud'"
                ).fetchone()
            if row and row[0] is not None and row[0] >= target:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert died == []
    together = export(url, HOURLY, DAY)
    assert rebuilt_export(url, cloud) == together


def test_a_late_stop_corrects_the_served_window_and_says_so(store: tuple[str, Cloud]) -> None:
    url, cloud = store
    env = postgres_env(url)
    t = Timeline(cloud)
    t.account(utc("2024-05-01 09:00"))
    vm = t.deploy(utc("2024-05-01 10:00"))
    other = t.deploy(utc("2024-05-01 10:30"), name="other")
    # The stop happens at 11:05 but a slow worker commits it only after the 11:00-12:00
    # window has been served as final (read below).
    with clock(utc("2024-05-01 11:05")):
        vm.transition(VmEvent.STOP_REQUESTED, "late/1")
        vm.transition(VmEvent.OPERATION_SUCCEEDED, "late/2")
    t.stop(other, utc("2024-05-01 12:30"))
    project(env, cloud)
    query = RecordQuery(
        start=utc("2024-05-01 10:00"), end=utc("2024-05-01 12:00"), account_id=t.account_id
    )

    def running(found: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
        return {
            r["start_date"][11:16]: (r["raw_usage_ms"], r["corrections"])
            for r in found
            if r["resource_id"] == str(vm.id) and r["usage_type_name"] == "RUNNING_VM"
        }

    before = running(records(url, HOURLY, query))
    assert before == {"10:00": (3_600_000, 0), "11:00": (3_600_000, 0)}

    cloud.save(vm)  # the late stop
    project(env, cloud)
    after = running(records(url, HOURLY, query))
    assert after == {"10:00": (3_600_000, 0), "11:00": (5 * 60_000, 1)}

    with psycopg.connect(url) as conn:
        corrections = conn.execute(
            "SELECT usage_type, resource_id, period_start, period_end, delta_ms, reason "
            "FROM usage_corrections ORDER BY notification_id, id"
        ).fetchall()
    assert corrections == [
        (1, vm.id, utc("2024-05-01 11:05"), utc("2024-05-01 12:00"), -55 * 60_000, "late stop")
    ]
    # The correction accounts exactly for the change: nothing counted twice.
    assert before["11:00"][0] + corrections[0][4] == after["11:00"][0]
    # And a rebuild from the event store reproduces records and corrections alike.
    exported = export(url, HOURLY, query)
    assert rebuilt_export(url, cloud) and export(url, HOURLY, query) == exported
