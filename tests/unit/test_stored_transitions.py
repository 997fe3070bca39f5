"""Events stored before the four aggregates shared `StateMachineAggregate` still load, and the
same commands still store the same events.

The data below was recorded with the code before the mixin (each aggregate had its own
`transition` and `@event("Transitioned")` copy): `record_history` was run on an in-memory
`Cloud` and each stored event's topic and state JSON copied here as they were. The tests load
them with today's code and compare with what that code had loaded (`OLD_STATES`), and run
`record_history` again to compare what today's code stores, byte for byte but the timestamps.
"""

# The recorded JSON is kept exactly as stored, one event per line.
# ruff: noqa: E501

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from domain.cloud import Cloud
from domain.snapshot import Snapshot, SnapshotEvent
from domain.state_machine import StateMachineAggregate
from domain.virtual_machine import VirtualMachine, VmEvent
from domain.vm_snapshot import VmSnapshot, VmSnapshotEvent
from domain.volume import Volume, VolumeEvent, VolumeState


def ids(n: int) -> UUID:
    return UUID(int=n)


AGGREGATE_IDS = {
    "VirtualMachine": ids(1),
    "Volume": ids(2),
    "Snapshot": ids(3),
    "VmSnapshot": ids(4),
}


def record_history(cloud: Cloud) -> None:
    """The commands whose events were recorded below (fixed ids, so the JSON is comparable)."""
    vm = VirtualMachine.create_with_id(
        ids(1),
        name="web-1",
        display_name="web 1",
        account_id=ids(11),
        zone_id=ids(12),
        service_offering_id=ids(13),
        template_id=ids(14),
        network_id=ids(15),
        hypervisor="KVM",
        cpu_count=2,
        cpu_speed_mhz=1000,
        memory_mib=2048,
        root_volume_id=ids(2),
        ha_enabled=True,
        job_id=ids(16),
    )
    vm.transition(VmEvent.START_REQUESTED, "job-a/start-requested", host_id=ids(21))
    vm.transition(VmEvent.OPERATION_SUCCEEDED, "job-a/running", host_id=ids(21))
    vm.transition(VmEvent.STOP_REQUESTED, "job-b/stop-requested")
    vm.transition(VmEvent.OPERATION_FAILED, "job-b/failed", reason="the hypervisor refused")

    volume = Volume.create_with_id(
        ids(2),
        name="ROOT-web-1",
        account_id=ids(11),
        zone_id=ids(12),
        volume_type="ROOT",
        size_bytes=10 * 1024**3,
        vm_id=ids(1),
        template_id=ids(14),
    )
    volume.transition(VolumeEvent.CREATE_REQUESTED, "job-a/volume-create")
    volume.transition(VolumeEvent.OPERATION_FAILED, "job-a/volume-failed", reason="pool full")

    snapshot = Snapshot.create_with_id(
        ids(3),
        volume_id=ids(2),
        name="daily",
        account_id=ids(11),
        zone_id=ids(12),
        volume_type="ROOT",
        size_bytes=10 * 1024**3,
        hypervisor="KVM",
        job_id=ids(17),
        interval_type="DAILY",
        policy_id=ids(18),
    )
    snapshot.transition(SnapshotEvent.CREATE_REQUESTED, "job-c/create-requested")
    snapshot.transition(SnapshotEvent.OPERATION_FAILED, "job-c/snapshot-failed", reason="disk busy")

    vm_snapshot = VmSnapshot.create_with_id(
        ids(4),
        vm_id=ids(1),
        name="before-upgrade",
        account_id=ids(11),
        zone_id=ids(12),
        memory_requested=True,
        job_id=ids(19),
    )
    vm_snapshot.transition(VmSnapshotEvent.CREATE_REQUESTED, "job-d/snapshot-create-requested")
    vm_snapshot.record_created(True, "job-d/created")
    vm_snapshot.transition(VmSnapshotEvent.REVERT_REQUESTED, "job-e/revert-requested")
    vm_snapshot.transition(
        VmSnapshotEvent.OPERATION_FAILED, "job-e/revert-failed", reason="vm busy"
    )

    cloud.save(vm, volume, snapshot, vm_snapshot)


OLD_EVENTS: dict[str, list[tuple[str, str]]] = {
    "VirtualMachine": [
        (
            "domain.virtual_machine:VirtualMachine.Registered",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.647154+00:00"},"originator_topic":"domain.virtual_machine:VirtualMachine","name":"web-1","display_name":"web 1","account_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000b"},"zone_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000c"},"service_offering_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000d"},"template_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000e"},"network_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000f"},"hypervisor":"KVM","cpu_count":2,"cpu_speed_mhz":1000,"memory_mib":2048,"root_volume_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000002"},"ha_enabled":true,"job_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000010"}}',
        ),
        (
            "domain.virtual_machine:VirtualMachine.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.647668+00:00"},"vm_event":"StartRequested","old_state":"Stopped","new_state":"Starting","host_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000015"},"reason":null,"command_id":"job-a/start-requested"}',
        ),
        (
            "domain.virtual_machine:VirtualMachine.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.647880+00:00"},"vm_event":"OperationSucceeded","old_state":"Starting","new_state":"Running","host_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000015"},"reason":null,"command_id":"job-a/running"}',
        ),
        (
            "domain.virtual_machine:VirtualMachine.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.647926+00:00"},"vm_event":"StopRequested","old_state":"Running","new_state":"Stopping","host_id":null,"reason":null,"command_id":"job-b/stop-requested"}',
        ),
        (
            "domain.virtual_machine:VirtualMachine.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.647959+00:00"},"vm_event":"OperationFailed","old_state":"Stopping","new_state":"Running","host_id":null,"reason":"the hypervisor refused","command_id":"job-b/failed"}',
        ),
    ],
    "Volume": [
        (
            "domain.volume:Volume.Allocated",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648085+00:00"},"originator_topic":"domain.volume:Volume","name":"ROOT-web-1","account_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000b"},"zone_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000c"},"volume_type":"ROOT","size_bytes":10737418240,"vm_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000001"},"template_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000e"},"disk_offering_id":null,"device_id":null}',
        ),
        (
            "domain.volume:Volume.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648263+00:00"},"volume_event":"CreateRequested","old_state":"Allocated","new_state":"Creating","reason":null,"command_id":"job-a/volume-create"}',
        ),
        (
            "domain.volume:Volume.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648334+00:00"},"volume_event":"OperationFailed","old_state":"Creating","new_state":"Allocated","reason":"pool full","command_id":"job-a/volume-failed"}',
        ),
    ],
    "Snapshot": [
        (
            "domain.snapshot:Snapshot.Allocated",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648438+00:00"},"originator_topic":"domain.snapshot:Snapshot","volume_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000002"},"name":"daily","account_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000b"},"zone_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000c"},"volume_type":"ROOT","size_bytes":10737418240,"hypervisor":"KVM","job_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000011"},"interval_type":"DAILY","policy_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000012"}}',
        ),
        (
            "domain.snapshot:Snapshot.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648603+00:00"},"snapshot_event":"CreateRequested","old_state":"Allocated","new_state":"Creating","reason":null,"command_id":"job-c/create-requested"}',
        ),
        (
            "domain.snapshot:Snapshot.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648678+00:00"},"snapshot_event":"OperationFailed","old_state":"Creating","new_state":"Error","reason":"disk busy","command_id":"job-c/snapshot-failed"}',
        ),
    ],
    "VmSnapshot": [
        (
            "domain.vm_snapshot:VmSnapshot.Allocated",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648761+00:00"},"originator_topic":"domain.vm_snapshot:VmSnapshot","vm_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000001"},"name":"before-upgrade","account_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000b"},"zone_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000c"},"memory_requested":true,"job_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000013"}}',
        ),
        (
            "domain.vm_snapshot:VmSnapshot.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648885+00:00"},"snapshot_event":"CreateRequested","old_state":"Allocated","new_state":"Creating","reason":null,"command_id":"job-d/snapshot-create-requested"}',
        ),
        (
            "domain.vm_snapshot:VmSnapshot.Created",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.648985+00:00"},"memory":true,"old_state":"Creating","new_state":"Ready","command_id":"job-d/created"}',
        ),
        (
            "domain.vm_snapshot:VmSnapshot.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.649039+00:00"},"snapshot_event":"RevertRequested","old_state":"Ready","new_state":"Reverting","reason":null,"command_id":"job-e/revert-requested"}',
        ),
        (
            "domain.vm_snapshot:VmSnapshot.Transitioned",
            '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:12.649064+00:00"},"snapshot_event":"OperationFailed","old_state":"Reverting","new_state":"Ready","reason":"vm busy","command_id":"job-e/revert-failed"}',
        ),
    ],
}

OLD_STATES: dict[str, dict[str, object]] = {
    "VirtualMachine": {
        "_id": "00000000-0000-0000-0000-000000000001",
        "_version": 5,
        "name": "web-1",
        "display_name": "web 1",
        "account_id": "00000000-0000-0000-0000-00000000000b",
        "zone_id": "00000000-0000-0000-0000-00000000000c",
        "service_offering_id": "00000000-0000-0000-0000-00000000000d",
        "template_id": "00000000-0000-0000-0000-00000000000e",
        "network_id": "00000000-0000-0000-0000-00000000000f",
        "hypervisor": "KVM",
        "cpu_count": 2,
        "cpu_speed_mhz": 1000,
        "memory_mib": 2048,
        "root_volume_id": "00000000-0000-0000-0000-000000000002",
        "ha_enabled": True,
        "created_by_job": "00000000-0000-0000-0000-000000000010",
        "state": "Running",
        "host_id": "00000000-0000-0000-0000-000000000015",
        "last_host_id": "00000000-0000-0000-0000-000000000015",
        "ip_address": None,
        "mac_address": None,
        "last_reason": "the hypervisor refused",
        "applied_commands": [
            "job-a/start-requested",
            "job-a/running",
            "job-b/stop-requested",
            "job-b/failed",
        ],
    },
    "Volume": {
        "_id": "00000000-0000-0000-0000-000000000002",
        "_version": 3,
        "name": "ROOT-web-1",
        "account_id": "00000000-0000-0000-0000-00000000000b",
        "zone_id": "00000000-0000-0000-0000-00000000000c",
        "volume_type": "ROOT",
        "size_bytes": 10737418240,
        "vm_id": "00000000-0000-0000-0000-000000000001",
        "template_id": "00000000-0000-0000-0000-00000000000e",
        "disk_offering_id": None,
        "device_id": None,
        "state": "Allocated",
        "pool_id": None,
        "path": None,
        "applied_commands": ["job-a/volume-create", "job-a/volume-failed"],
    },
    "Snapshot": {
        "_id": "00000000-0000-0000-0000-000000000003",
        "_version": 3,
        "volume_id": "00000000-0000-0000-0000-000000000002",
        "name": "daily",
        "account_id": "00000000-0000-0000-0000-00000000000b",
        "zone_id": "00000000-0000-0000-0000-00000000000c",
        "volume_type": "ROOT",
        "size_bytes": 10737418240,
        "hypervisor": "KVM",
        "created_by_job": "00000000-0000-0000-0000-000000000011",
        "interval_type": "DAILY",
        "policy_id": "00000000-0000-0000-0000-000000000012",
        "state": "Error",
        "primary_pool_id": None,
        "primary_path": None,
        "secondary_storage_id": None,
        "backup_path": None,
        "physical_size_bytes": 0,
        "last_reason": "disk busy",
        "applied_commands": ["job-c/create-requested", "job-c/snapshot-failed"],
    },
    "VmSnapshot": {
        "_id": "00000000-0000-0000-0000-000000000004",
        "_version": 5,
        "vm_id": "00000000-0000-0000-0000-000000000001",
        "name": "before-upgrade",
        "account_id": "00000000-0000-0000-0000-00000000000b",
        "zone_id": "00000000-0000-0000-0000-00000000000c",
        "memory_requested": True,
        "memory": True,
        "created_by_job": "00000000-0000-0000-0000-000000000013",
        "state": "Ready",
        "last_reason": "vm busy",
        "applied_commands": [
            "job-d/snapshot-create-requested",
            "job-d/created",
            "job-e/revert-requested",
            "job-e/revert-failed",
        ],
    },
}

OLD_VOLUME_SNAPSHOT = (
    "domain.aggregate:TypedSnapshot",
    3,
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:16.360184+00:00"},"topic":"domain.volume:Volume","state":{"_created_on":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:16.358362+00:00"},"_modified_on":{"_type_":"datetime_iso","_data_":"2026-12-02T14:45:16.358497+00:00"},"name":"ROOT-web-1","account_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000b"},"zone_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000c"},"volume_type":"ROOT","size_bytes":10737418240,"vm_id":{"_type_":"uuid_hex","_data_":"00000000000000000000000000000001"},"template_id":{"_type_":"uuid_hex","_data_":"0000000000000000000000000000000e"},"disk_offering_id":null,"device_id":null,"state":"Allocated","pool_id":null,"path":null,"applied_commands":["job-a/volume-create","job-a/volume-failed"],"__enum_types__":{"volume_type":"domain.volume:VolumeType","state":"domain.volume:VolumeState"}}}',
)

#: What the old code's aggregate held besides: a volume now keeps the reason of its last
#: transition, as the other three always did (it was stored in the event, not kept).
ADDED_STATE: dict[str, dict[str, object]] = {"Volume": {"last_reason": "pool full"}}

TIMESTAMP = re.compile(r'"timestamp":\{"_type_":"datetime_iso","_data_":"[^"]+"\}')


def plain(value: Any) -> Any:
    """An attribute as the recording wrote it down."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    return value


def state_of(aggregate: Any) -> dict[str, object]:
    skipped = {"_created_on", "_modified_on", "_pending_events"}
    return {k: plain(v) for k, v in vars(aggregate).items() if k not in skipped}


def store_old_events(cloud: Cloud, name: str) -> UUID:
    aggregate_id = AGGREGATE_IDS[name]
    cloud.recorder.insert_events(
        [
            StoredEvent(aggregate_id, version, topic, state.encode())
            for version, (topic, state) in enumerate(OLD_EVENTS[name], start=1)
        ]
    )
    return aggregate_id


@pytest.mark.parametrize("name", OLD_EVENTS)
def test_events_stored_before_the_mixin_load_to_the_same_aggregate(
    memory_cloud: Cloud, name: str
) -> None:
    aggregate: StateMachineAggregate[Any, Any] = memory_cloud.repository.get(
        store_old_events(memory_cloud, name)
    )
    assert type(aggregate).__name__ == name
    assert state_of(aggregate) == {**OLD_STATES[name], **ADDED_STATE.get(name, {})}


@pytest.mark.parametrize("name", OLD_EVENTS)
def test_a_stored_transition_reads_as_the_shared_event_under_its_old_names(
    memory_cloud: Cloud, name: str
) -> None:
    aggregate_id = store_old_events(memory_cloud, name)
    loaded = [
        e for e in memory_cloud.events.get(aggregate_id) if type(e).__name__ == "Transitioned"
    ]
    stored = [json.loads(s) for t, s in OLD_EVENTS[name] if t.endswith(".Transitioned")]
    assert loaded and len(loaded) == len(stored)
    for event, state in zip(loaded, stored, strict=True):
        assert isinstance(event, StateMachineAggregate.Transitioned)
        assert event.machine_event == state[event.EVENT_FIELD]
        assert (event.old_state, event.new_state, event.reason, event.command_id) == (
            state["old_state"],
            state["new_state"],
            state["reason"],
            state["command_id"],
        )


def test_the_same_commands_store_the_same_events_byte_for_byte_but_the_time(
    memory_cloud: Cloud,
) -> None:
    record_history(memory_cloud)
    for name, aggregate_id in AGGREGATE_IDS.items():
        stored = memory_cloud.recorder.select_events(aggregate_id)
        assert [(e.topic, TIMESTAMP.sub("T", e.state.decode())) for e in stored] == [
            (topic, TIMESTAMP.sub("T", state)) for topic, state in OLD_EVENTS[name]
        ], name


@pytest.mark.parametrize("aggregate", [VirtualMachine, Volume, Snapshot, VmSnapshot])
def test_every_class_an_event_derives_from_has_a_topic_of_its_own(aggregate: type) -> None:
    """The usage projection asks the topic of every class in an event's MRO: two classes of
    one name there (an event class eventsourcing redefined) make it fail."""
    for value in vars(aggregate).values():
        if isinstance(value, type) and issubclass(value, CanMutateAggregate):
            for cls in value.__mro__:
                assert resolve_topic(get_topic(cls)) is cls


def test_a_volume_restored_from_a_snapshot_taken_before_it_kept_a_reason_answers_none(
    memory_cloud: Cloud,
) -> None:
    volume_id = store_old_events(memory_cloud, "Volume")
    topic, version, state = OLD_VOLUME_SNAPSHOT
    memory_cloud.snapshots.recorder.insert_events(  # type: ignore[union-attr]
        [StoredEvent(volume_id, version, topic, state.encode())]
    )
    volume: Volume = memory_cloud.repository.get(volume_id)
    assert "last_reason" not in vars(volume) and volume.last_reason is None
    assert volume.state is VolumeState.ALLOCATED
    volume.transition(VolumeEvent.CREATE_REQUESTED, "job-f/create", reason="again")
    assert volume.last_reason == "again"
