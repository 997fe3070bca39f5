"""Final, provisional and served usage: the open window shows its usage so far, marked
provisional and never exported; a window served as final changes only through corrections,
one per window, naming the record they correct, even when the reader and the projector race;
a rebuilding projection serves nothing as final.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, ClassVar, NamedTuple

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from domain.cloud import Cloud, postgres_env
from domain.virtual_machine import VirtualMachine, VmEvent
from projections.usage import UsageProjection, UsageView
from projections.usage_records import TRACKING_TABLE, RecordQuery, UsageRebuilding, UsageRecords
from projections.usage_served import served_snapshot
from projections.usage_types import UsageType
from projections.usage_windows import AggregationWindow, WindowSize
from tests.usage_support import (
    Timeline,
    clock,
    drop_usage_tables,
    own_database,
    pool_for,
    project,
    usage_runner,
    utc,
)

HOURLY = AggregationWindow(WindowSize.HOURLY, "UTC")
GRACE = timedelta(minutes=5)
MORNING = RecordQuery(
    start=utc("2024-05-01 10:00"), end=utc("2024-05-01 14:00"), usage_type=UsageType.RUNNING_VM
)


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[str, Cloud]]:
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        yield url, cloud
        cloud.close()


class Reader:
    """Usage reads as the API makes them, at a chosen moment."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.now = utc("2030-01-01 00:00")

    def usage(self) -> UsageRecords:
        return UsageRecords(pool_for(self.url), HOURLY, grace=GRACE, clock=lambda: self.now)

    def listed(self, query: RecordQuery = MORNING) -> list[dict[str, Any]]:
        usage = self.usage()
        try:
            return usage.page(query, limit=1000).data
        finally:
            usage.pool.close()

    def exported(self, query: RecordQuery = MORNING) -> list[dict[str, Any]]:
        usage = self.usage()
        try:
            return list(usage.stream(query))
        finally:
            usage.pool.close()

    def summary(self, query: RecordQuery = MORNING) -> list[dict[str, Any]]:
        usage = self.usage()
        try:
            return usage.summary(query, None)
        finally:
            usage.pool.close()

    def corrections(self, query: RecordQuery = MORNING) -> list[dict[str, Any]]:
        usage = self.usage()
        try:
            return usage.corrections(query, limit=1000)[0]
        finally:
            usage.pool.close()


def by_window(found: list[dict[str, Any]]) -> dict[str, tuple[int, bool]]:
    return {r["start_date"][11:16]: (r["raw_usage_ms"], r["provisional"]) for r in found}


def minutes(n: int) -> int:
    return n * 60_000


def test_the_open_window_shows_its_usage_so_far_as_provisional_and_is_never_exported(
    store: tuple[str, Cloud],
) -> None:
    url, cloud = store
    t = Timeline(cloud)
    t.account(utc("2024-05-01 09:00"))
    t.deploy(utc("2024-05-01 10:20"))
    project(postgres_env(url), cloud)
    reader = Reader(url)

    reader.now = utc("2024-05-01 10:50")
    assert by_window(reader.listed()) == {"10:00": (minutes(30), True)}
    assert reader.exported() == []
    (account,) = reader.summary()
    (running,) = account["usage"]
    assert account["provisional"] is True
    assert (running["raw_usage_ms"], running["provisional_raw_usage_ms"]) == (minutes(30),) * 2
    first_id = reader.listed()[0]["id"]

    reader.now = utc("2024-05-01 11:03")  # the 10:00 window ended, but within the grace
    assert by_window(reader.listed()) == {
        "10:00": (minutes(40), True),
        "11:00": (minutes(3), True),
    }
    assert reader.exported() == []

    reader.now = utc("2024-05-01 11:05")
    listed = reader.listed()
    assert by_window(listed) == {"10:00": (minutes(40), False), "11:00": (minutes(5), True)}
    (exported,) = reader.exported()
    assert (exported["id"], exported["raw_usage_ms"]) == (first_id, minutes(40))
    assert exported["provisional"] is False
    (account,) = reader.summary()
    (running,) = account["usage"]
    assert (running["raw_usage_ms"], running["provisional_raw_usage_ms"]) == (
        minutes(45),
        minutes(5),
    )
    assert (running["records"], running["provisional_records"]) == (2, 1)
    # Firming up is not a correction: nothing final was ever served differently.
    assert reader.corrections() == []


class LateStop(NamedTuple):
    vm: VirtualMachine
    #: The log's position once both VMs run, before any stop. Counted by the log, never by
    #: hand: how many events opening an account takes is the tenancy's business.
    deployed: int


def late_stop_timeline(cloud: Cloud) -> LateStop:
    """A VM running from 10:00; its stop at 10:30 is made but not yet saved (a slow worker).
    Another VM runs 10:00-13:30, so the log moves on."""
    t = Timeline(cloud)
    t.account(utc("2024-05-01 09:00"))
    vm = t.deploy(utc("2024-05-01 10:00"))
    other = t.deploy(utc("2024-05-01 10:00"), name="other")
    deployed = cloud.position()
    with clock(utc("2024-05-01 10:30")):
        vm.transition(VmEvent.STOP_REQUESTED, "late/1")
        vm.transition(VmEvent.OPERATION_SUCCEEDED, "late/2")
    t.stop(other, utc("2024-05-01 13:30"))
    return LateStop(vm, deployed)


def running_of(vm: VirtualMachine, found: list[dict[str, Any]]) -> dict[str, int]:
    return {r["id"]: r["raw_usage_ms"] for r in found if r["resource_id"] == str(vm.id)}


def test_a_late_stop_after_windows_were_served_corrects_each_served_window(
    store: tuple[str, Cloud],
) -> None:
    url, cloud = store
    vm = late_stop_timeline(cloud).vm
    env = postgres_env(url)
    project(env, cloud)
    reader = Reader(url)
    served_query = RecordQuery(
        start=utc("2024-05-01 10:00"), end=utc("2024-05-01 13:00"), usage_type=UsageType.RUNNING_VM
    )
    served = running_of(vm, reader.exported(served_query))
    assert sorted(served.values()) == [minutes(60)] * 3

    cloud.save(vm)  # the stop at 10:30, committed after 10:00-13:00 was exported
    project(env, cloud)
    now = running_of(vm, reader.listed())
    corrections = reader.corrections()
    assert [
        (c["window_start"][11:16], c["period_start"][11:16], c["period_end"][11:16], c["delta_ms"])
        for c in corrections
    ] == [
        ("10:00", "10:30", "11:00", -minutes(30)),
        ("11:00", "11:00", "12:00", -minutes(60)),
        ("12:00", "12:00", "13:00", -minutes(60)),
    ]
    assert {c["reason"] for c in corrections} == {"late stop"}
    # Each correction names a record served; served + corrections = the record now (a record
    # corrected to nothing is gone).
    assert {c["record_id"] for c in corrections} == set(served)
    for record_id, served_ms in served.items():
        delta = sum(c["delta_ms"] for c in corrections if c["record_id"] == record_id)
        assert served_ms + delta == now.get(record_id, 0)
    # The 13:00 window was never served: it changed without a correction.
    assert by_window([r for r in reader.listed() if r["resource_id"] == str(vm.id)]) == {
        "10:00": (minutes(30), False)
    }

    # Rebuilding the usage tables (the served ledger stays) writes the same corrections.
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT * FROM usage_corrections ORDER BY id").fetchall()
    drop_usage_tables(url)
    project(env, cloud)
    with psycopg.connect(url) as conn:
        after = conn.execute("SELECT * FROM usage_corrections ORDER BY id").fetchall()
    assert after == before and len(after) == 3


def test_a_late_stop_before_anything_was_served_changes_the_window_without_correction(
    store: tuple[str, Cloud],
) -> None:
    url, cloud = store
    vm = late_stop_timeline(cloud).vm
    cloud.save(vm)  # committed late, but before anyone read the morning
    project(postgres_env(url), cloud)
    reader = Reader(url)
    assert by_window([r for r in reader.listed() if r["resource_id"] == str(vm.id)]) == {
        "10:00": (minutes(30), False)
    }
    assert reader.corrections() == []


def test_a_served_snapshot_stays_at_its_position_while_the_projector_moves_on(
    store: tuple[str, Cloud],
) -> None:
    """A reader's snapshot is exactly the position it wrote to the ledger: a late event the
    projector applies while the reader still streams is not in what it serves, and is a
    correction instead."""
    url, cloud = store
    vm = late_stop_timeline(cloud).vm
    env = postgres_env(url)
    project(env, cloud)
    with psycopg.connect(url, autocommit=True) as conn:
        with served_snapshot(conn, utc("2024-05-01 13:00"), TRACKING_TABLE) as snapshot:
            cloud.save(vm)
            project(env, cloud)
            assert cloud.position() > snapshot.position and not snapshot.rebuilding
            served = conn.execute(
                "SELECT ended_at FROM usage_intervals WHERE resource_id = %s AND usage_type = 1",
                (vm.id,),
            ).fetchall()
        ended = conn.execute(
            "SELECT ended_at FROM usage_intervals WHERE resource_id = %s AND usage_type = 1",
            (vm.id,),
        ).fetchall()
    assert served == [(None,)]
    assert ended == [(utc("2024-05-01 10:30"),)]
    assert sum(c["delta_ms"] for c in Reader(url).corrections()) == -minutes(150)


class ServingMidBatch(UsageView):
    """A reader serves the morning after the projector computed a batch, before it commits."""

    reader: ClassVar[Reader | None] = None
    served: ClassVar[list[dict[str, Any]]] = []

    def apply(self, writes: Any, tracking: Tracking, base: int | None, *more: Any) -> None:
        reader, ServingMidBatch.reader = ServingMidBatch.reader, None
        if reader is not None:
            ServingMidBatch.served = reader.exported()
        super().apply(writes, tracking, base, *more)


def test_a_window_served_while_a_batch_is_computed_is_corrected_by_that_batch(
    store: tuple[str, Cloud],
) -> None:
    url, cloud = store
    vm = late_stop_timeline(cloud).vm
    env = postgres_env(url)
    project(env, cloud)
    cloud.save(vm)
    ServingMidBatch.reader = Reader(url)
    runner = usage_runner(env, UsageProjection, ServingMidBatch)
    try:
        runner.wait(cloud.position(), timeout=60)
    finally:
        runner.__exit__(None, None, None)
    served = running_of(vm, ServingMidBatch.served)
    assert sorted(served.values()) == [minutes(60)] * 4
    corrections = Reader(url).corrections()
    assert sum(c["delta_ms"] for c in corrections) == -minutes(210)
    assert {c["record_id"] for c in corrections} == set(served)


def test_records_and_corrections_name_the_same_record(store: tuple[str, Cloud]) -> None:
    """A correction's `record_id` is computed apart from the SQL's: both must agree for a
    variant with every field set (offering, template, size, zone, name)."""
    url, cloud = store
    t = Timeline(cloud)
    t.account(utc("2024-05-01 09:00"))
    volume = t.volume(utc("2024-05-01 10:00"), utc("2024-05-01 10:00:05"), 8 * 1024**3)
    project(postgres_env(url), cloud)
    reader = Reader(url)
    query = RecordQuery(
        start=utc("2024-05-01 10:00"), end=utc("2024-05-01 11:00"), usage_type=UsageType.VOLUME
    )
    (served,) = reader.exported(query)
    t.destroy_volume(volume, utc("2024-05-01 10:30"))
    project(postgres_env(url), cloud)
    (correction,) = reader.corrections(query)
    assert correction["record_id"] == served["id"]
    assert (
        served["raw_usage_ms"] + correction["delta_ms"] == reader.listed(query)[0]["raw_usage_ms"]
    )


class Gated(UsageProjection):
    """Commits every event, and stops before the events after `limit` until let go."""

    name = "usage_projection"
    BATCH_SIZE = 1
    limit: ClassVar[int] = 0
    gate: ClassVar[threading.Event] = threading.Event()

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if tracking.notification_id > Gated.limit:
            assert Gated.gate.wait(timeout=60)
        super().process_event(domain_event, tracking)


def test_a_rebuilding_projection_serves_nothing_as_final_and_refuses_exports(
    store: tuple[str, Cloud],
) -> None:
    """Replaying behind what was served, the records are short of it and the events still to
    replay will not correct them: all provisional, no export, no ledger row, until caught up."""
    url, cloud = store
    vm, deployed = late_stop_timeline(cloud)
    cloud.save(vm)
    env = postgres_env(url)
    project(env, cloud)
    reader = Reader(url)
    served = reader.exported()
    assert len(served) == 5  # vm 10:00-10:30, other 10:00-13:30

    drop_usage_tables(url)
    Gated.limit, Gated.gate = deployed, threading.Event()  # both VMs running, nothing stopped
    runner = usage_runner(env, Gated)
    try:
        # The rebuild has committed every event up to the gate (and waits there); the runner's
        # error, if it failed, is raised here.
        runner.wait(deployed, timeout=60)
        listed = reader.listed()
        assert {r["resource_name"] for r in listed} == {"web-1", "other"}
        assert all(r["provisional"] for r in listed)
        with pytest.raises(UsageRebuilding):
            reader.exported()
        with psycopg.connect(url) as conn:
            ledger = conn.execute("SELECT count(*) FROM usage_served").fetchone()
        assert ledger == (1,)
        Gated.gate.set()
        runner.wait(cloud.position(), timeout=60)
    finally:
        Gated.gate.set()
        runner.__exit__(None, None, None)
    assert reader.exported() == served
