"""Usage records of fixed timelines, compared record by record with hand-computed hours.

The timeline (UTC, 12 March 2024): a template registered at 09:10; a VM deployed at 10:20,
stopped at 11:05, started at 11:30, destroyed (and expunged) at 13:00; its root volume created
at 10:21 with 8 GiB, resized to 16 GiB at 11:40, destroyed at 13:00; a snapshot taken at 11:15
and deleted at 12:45. Volume resize and snapshots are declared here as the lifecycle issue will
declare them: extra facts and declarations, the projection unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar
from uuid import UUID

import pytest
from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.catalog import GIB
from domain.cloud import Cloud, postgres_env
from domain.virtual_machine import VmEvent
from domain.vm_snapshot import VmSnapshot, VmSnapshotEvent
from domain.volume import Volume, VolumeEvent
from projections.usage import UsageProjection
from projections.usage_records import RecordQuery
from projections.usage_types import (
    USAGE_CATALOG,
    ResourceFacts,
    UsageCatalog,
    UsageDeclaration,
    UsageType,
    event_of,
    on,
)
from projections.usage_windows import AggregationWindow, WindowSize
from tests.usage_support import (
    HOUR_MS,
    Timeline,
    clock,
    minutes,
    own_database,
    period,
    project,
    records,
    utc,
)


class ResizableVolume(Volume):
    """A volume with the resize event the lifecycle issue will add."""

    @event("Resized")
    def resize(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes


class Snapshot(CloudAggregate):
    """A volume snapshot as the lifecycle issue will add it: created, then deleted."""

    @event("Created")
    def __init__(
        self, name: str, account_id: UUID, zone_id: UUID, volume_id: UUID, size_bytes: int
    ) -> None:
        self.name = name
        self.account_id = account_id
        self.zone_id = zone_id
        self.volume_id = volume_id
        self.size_bytes = size_bytes

    @event("Deleted")
    def delete(self) -> None:
        self.deleted = True


SNAPSHOT_CATALOG: UsageCatalog = USAGE_CATALOG.extended(
    facts=(
        ResourceFacts(
            "volume", event_of(ResizableVolume, "Resized"), lambda e: {"size_bytes": e.size_bytes}
        ),
        ResourceFacts(
            "snapshot",
            event_of(Snapshot, "Created"),
            lambda e: {
                "account_id": str(e.account_id),
                "zone_id": str(e.zone_id),
                "name": e.name,
                "size_bytes": e.size_bytes,
            },
        ),
    ),
    declarations=(
        UsageDeclaration(
            UsageType.SNAPSHOT,
            "snapshot",
            opens=on(event_of(Snapshot, "Created")),
            closes=on(event_of(Snapshot, "Deleted")),
            description="Snapshot {resource_name} ({size_gib} GiB) usage time",
            size_fact="size_bytes",
        ),
    ),
)


class LifecycleUsageProjection(UsageProjection):
    name = "usage_projection"
    catalog: ClassVar[UsageCatalog] = SNAPSHOT_CATALOG


@pytest.fixture(scope="module")
def timeline(database_url: str) -> Iterator[tuple[str, Timeline, dict[str, Any]]]:
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        t = Timeline(cloud)
        t.account(utc("2024-03-12 08:00"))
        template = t.template(utc("2024-03-12 09:10"), size_bytes=2 * GIB)
        vm = t.deploy(utc("2024-03-12 10:20"))
        with clock(utc("2024-03-12 10:20")):
            volume = ResizableVolume(
                name="root-1",
                account_id=t.account_id,
                zone_id=t.zone_id,
                volume_type="ROOT",
                size_bytes=8 * GIB,
                template_id=t.template_id,
            )
            volume.transition(VolumeEvent.CREATE_REQUESTED, "c1")
        with clock(utc("2024-03-12 10:21")):
            volume.record_created(uuid.uuid4(), "/pool/root-1", 8 * GIB, "c2")
        cloud.save(volume)
        t.stop(vm, utc("2024-03-12 11:05"))
        with clock(utc("2024-03-12 11:15")):
            snapshot = Snapshot(
                name="snap-1",
                account_id=t.account_id,
                zone_id=t.zone_id,
                volume_id=volume.id,
                size_bytes=1 * GIB,
            )
        cloud.save(snapshot)
        t.start(vm, utc("2024-03-12 11:30"))
        with clock(utc("2024-03-12 11:40")):
            volume.resize(16 * GIB)
        cloud.save(volume)
        with clock(utc("2024-03-12 12:45")):
            snapshot.delete()
        cloud.save(snapshot)
        t.vm(
            vm,
            utc("2024-03-12 13:00"),
            VmEvent.STOP_REQUESTED,
            VmEvent.OPERATION_SUCCEEDED,
            VmEvent.DESTROY_REQUESTED,
            VmEvent.EXPUNGE_OPERATION,
        )
        t.destroy_volume(volume, utc("2024-03-12 13:00"))
        project(postgres_env(url), cloud, LifecycleUsageProjection)
        ids = {"vm": vm.id, "volume": volume.id, "template": template.id, "snapshot": snapshot.id}
        yield url, t, ids
        cloud.close()


def by_key(found: list[dict[str, Any]]) -> dict[tuple[str, str, str, int | None], int]:
    """(usage type, resource, window start, size) → raw usage in ms, asserting uniqueness."""
    out: dict[tuple[str, str, str, int | None], int] = {}
    for r in found:
        key = (r["usage_type_name"], r["resource_id"], r["start_date"], r["size_bytes"])
        assert key not in out, f"duplicate record {key}"
        out[key] = r["raw_usage_ms"]
    return out


HOURLY = AggregationWindow(WindowSize.HOURLY, "UTC")


def test_every_hourly_record_matches_the_hand_computed_usage(
    timeline: tuple[str, Timeline, dict[str, Any]],
) -> None:
    url, _, ids = timeline
    found = records(url, HOURLY, period("2024-03-12 09:00", "2024-03-12 15:00"))
    vm, vol, tpl, snap = (str(ids[k]) for k in ("vm", "volume", "template", "snapshot"))
    h = "2024-03-12T{:02d}:00:00+00:00".format
    expected: dict[tuple[str, str, str, int | None], int] = {
        # RUNNING_VM: 10:20-11:05, 11:30-13:00
        ("RUNNING_VM", vm, h(10), None): minutes(40),
        ("RUNNING_VM", vm, h(11), None): minutes(5 + 30),
        ("RUNNING_VM", vm, h(12), None): HOUR_MS,
        # ALLOCATED_VM: 10:20 until expunged at 13:00
        ("ALLOCATED_VM", vm, h(10), None): minutes(40),
        ("ALLOCATED_VM", vm, h(11), None): HOUR_MS,
        ("ALLOCATED_VM", vm, h(12), None): HOUR_MS,
        # VOLUME: created 10:21 at 8 GiB, 16 GiB from 11:40, destroyed 13:00
        ("VOLUME", vol, h(10), 8 * GIB): minutes(39),
        ("VOLUME", vol, h(11), 8 * GIB): minutes(40),
        ("VOLUME", vol, h(11), 16 * GIB): minutes(20),
        ("VOLUME", vol, h(12), 16 * GIB): HOUR_MS,
        # SNAPSHOT: 11:15 to 12:45
        ("SNAPSHOT", snap, h(11), GIB): minutes(45),
        ("SNAPSHOT", snap, h(12), GIB): minutes(45),
        # TEMPLATE: from 09:10, still registered
        ("TEMPLATE", tpl, h(9), 2 * GIB): minutes(50),
        **{("TEMPLATE", tpl, h(hour), 2 * GIB): HOUR_MS for hour in range(10, 15)},
    }
    assert by_key(found) == expected


def test_records_carry_account_offering_template_and_cloudstack_fields(
    timeline: tuple[str, Timeline, dict[str, Any]],
) -> None:
    url, t, _ = timeline
    found = records(
        url,
        HOURLY,
        RecordQuery(
            start=utc("2024-03-12 11:00"),
            end=utc("2024-03-12 12:00"),
            usage_type=UsageType.RUNNING_VM,
        ),
    )
    (record,) = found
    assert record["usage_type"] == 1 and record["usage_type_name"] == "RUNNING_VM"
    assert record["account_id"] == str(t.account_id) and record["account_name"] == t.account_name
    assert record["domain"] == "ROOT" and record["zone_id"] == str(t.zone_id)
    assert record["offering_id"] == str(t.offering_id)
    assert record["template_id"] == str(t.template_id)
    assert record["resource_name"] == "web-1" and record["description"] == "web-1 running time"
    assert record["raw_usage"] == pytest.approx(35 / 60, abs=1e-9)
    assert record["usage"] == "0.583333 Hrs"
    assert (record["start_date"], record["end_date"]) == (
        "2024-03-12T11:00:00+00:00",
        "2024-03-12T12:00:00+00:00",
    )
    assert record["corrections"] == 0


def test_daily_records_in_a_timezone_sum_the_day(
    timeline: tuple[str, Timeline, dict[str, Any]],
) -> None:
    url, _, ids = timeline
    daily = AggregationWindow(WindowSize.DAILY, "Europe/Paris")
    found = records(url, daily, period("2024-03-11 23:00", "2024-03-12 23:00"))
    got = by_key(found)
    day = "2024-03-12T00:00:00+01:00"
    assert got[("RUNNING_VM", str(ids["vm"]), day, None)] == minutes(45 + 90)
    assert got[("ALLOCATED_VM", str(ids["vm"]), day, None)] == minutes(160)
    assert got[("VOLUME", str(ids["volume"]), day, 8 * GIB)] == minutes(79)
    assert got[("VOLUME", str(ids["volume"]), day, 16 * GIB)] == minutes(80)
    assert got[("SNAPSHOT", str(ids["snapshot"]), day, GIB)] == minutes(90)
    # The template is still registered: 09:10 UTC to the local midnight (23:00 UTC).
    assert got[("TEMPLATE", str(ids["template"]), day, 2 * GIB)] == minutes(50 + 13 * 60)
    assert {r["end_date"] for r in found} == {"2024-03-13T00:00:00+01:00"}


def test_a_vm_snapshot_is_metered_from_ready_until_removed(database_url: str) -> None:
    """VM_SNAPSHOT (25) as declared in `projections.usage_types`: made Ready at 11:15, reverted
    at 11:40 (no break), a delete failing at 12:00 leaves it in Error (still stored, still
    metered), deleted at 12:30. A snapshot whose create failed was never Ready: not metered."""
    snap_event = VmSnapshotEvent
    with own_database(database_url) as url:
        cloud = Cloud(env=postgres_env(url))
        try:
            t = Timeline(cloud)
            t.account(utc("2024-03-12 08:00"))
            vm = t.deploy(utc("2024-03-12 10:00"))

            def snapshot(name: str, at: str) -> VmSnapshot:
                with clock(utc(at)):
                    made = VmSnapshot(
                        vm_id=vm.id,
                        name=name,
                        account_id=t.account_id,
                        zone_id=t.zone_id,
                        memory_requested=True,
                        job_id=uuid.uuid4(),
                    )
                    made.transition(snap_event.CREATE_REQUESTED, f"{name}/create")
                return made

            def step(made: VmSnapshot, at: str, *events: VmSnapshotEvent) -> None:
                with clock(utc(at)):
                    for n, snapshot_event in enumerate(events):
                        made.transition(snapshot_event, f"{made.name}/{at}/{n}")
                cloud.save(made)

            kept = snapshot("vm-snap-1", "2024-03-12 11:14")
            with clock(utc("2024-03-12 11:15")):
                kept.record_created(True, "made")
            cloud.save(kept)
            step(kept, "2024-03-12 11:40", snap_event.REVERT_REQUESTED)
            step(kept, "2024-03-12 11:41", snap_event.OPERATION_SUCCEEDED)
            step(kept, "2024-03-12 12:00", snap_event.EXPUNGE_REQUESTED)
            step(kept, "2024-03-12 12:01", snap_event.OPERATION_FAILED)  # Error, still there
            step(
                kept,
                "2024-03-12 12:30",
                snap_event.EXPUNGE_REQUESTED,
                snap_event.OPERATION_SUCCEEDED,
            )
            failed = snapshot("vm-snap-failed", "2024-03-12 11:20")
            step(failed, "2024-03-12 11:21", snap_event.OPERATION_FAILED)

            project(postgres_env(url), cloud)
            found = records(
                url,
                HOURLY,
                period("2024-03-12 09:00", "2024-03-12 15:00", usage_type=UsageType.VM_SNAPSHOT),
            )
        finally:
            cloud.close()
    h = "2024-03-12T{:02d}:00:00+00:00".format
    assert by_key(found) == {
        ("VM_SNAPSHOT", str(kept.id), h(11), None): minutes(45),
        ("VM_SNAPSHOT", str(kept.id), h(12), None): minutes(30),
    }
    assert {r["usage_type"] for r in found} == {25}
    assert {r["description"] for r in found} == {"VM snapshot vm-snap-1 usage time"}
