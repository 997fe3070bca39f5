"""What a unit test builds: aggregates in one line each (every argument it does not name a
plausible value), an in-memory cloud, and a walk to any state of a state machine.

Plain functions rather than fixtures, so hypothesis tests (which must not share a
function-scoped fixture between examples) can make fresh ones per example; conftest.py wraps
the cloud as a fixture for the others.
"""

from __future__ import annotations

import uuid
from collections import deque
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from domain import inventory
from domain.cloud import Cloud
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.job import Job
from domain.snapshot import Snapshot
from domain.state_machine import StateMachine, StateMachineAggregate
from domain.storage import PrimaryStorage, SecondaryStorage
from domain.virtual_machine import VirtualMachine
from domain.vm_snapshot import VmSnapshot
from domain.volume import Volume
from domain.zone import Pod

GIB = 1024**3

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


def in_memory_cloud() -> Cloud:
    """A `Cloud` on eventsourcing's in-memory (POPO) store: the same load/decide/save and the
    same optimistic concurrency as on PostgreSQL, in this process only. Settings passed as
    `env` win over the environment, so POSTGRES_* variables cannot leak in."""
    return Cloud(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def seed_pod(cloud: Cloud) -> Pod:
    """A zone with one pod, in `cloud`, for tests that add clusters, hosts and pools to it."""
    zone = inventory.add_zone(cloud, uuid.uuid4(), "z")
    return inventory.add_pod(
        cloud,
        uuid.uuid4(),
        zone.id,
        "p",
        gateway="10.0.0.1",
        netmask="255.255.255.0",
        start_ip="10.0.0.2",
        end_ip="10.0.0.9",
    )


def new_vm(**overrides: Any) -> VirtualMachine:
    return VirtualMachine(
        **{
            "name": "vm",
            "display_name": "vm",
            "account_id": uuid.uuid4(),
            "zone_id": uuid.uuid4(),
            "service_offering_id": uuid.uuid4(),
            "template_id": uuid.uuid4(),
            "network_id": uuid.uuid4(),
            "hypervisor": "Simulator",
            "cpu_count": 1,
            "cpu_speed_mhz": 1000,
            "memory_mib": 512,
            "root_volume_id": uuid.uuid4(),
            "ha_enabled": False,
            "job_id": uuid.uuid4(),
            **overrides,
        }
    )


def new_volume(**overrides: Any) -> Volume:
    return Volume(
        **{
            "name": "v",
            "account_id": uuid.uuid4(),
            "zone_id": uuid.uuid4(),
            "volume_type": "ROOT",
            "size_bytes": GIB,
            **overrides,
        }
    )


def new_snapshot(**overrides: Any) -> Snapshot:
    return Snapshot(
        **{
            "volume_id": uuid.uuid4(),
            "name": "s",
            "account_id": uuid.uuid4(),
            "zone_id": uuid.uuid4(),
            "volume_type": "ROOT",
            "size_bytes": GIB,
            "hypervisor": "Simulator",
            "job_id": uuid.uuid4(),
            **overrides,
        }
    )


def new_vm_snapshot(**overrides: Any) -> VmSnapshot:
    return VmSnapshot(
        **{
            "vm_id": uuid.uuid4(),
            "name": "vs",
            "account_id": uuid.uuid4(),
            "zone_id": uuid.uuid4(),
            "memory_requested": False,
            "job_id": uuid.uuid4(),
            **overrides,
        }
    )


def new_host(**overrides: Any) -> Host:
    """A 4 × 2000 MHz (8000 MHz), 8192 MiB host."""
    return Host(
        **{
            "name": "h",
            "zone_id": uuid.uuid4(),
            "pod_id": uuid.uuid4(),
            "cluster_id": uuid.uuid4(),
            "hypervisor": "Simulator",
            "address": "127.0.0.1",
            "cpu_count": 4,
            "cpu_speed_mhz": 2000,
            "memory_mib": 8192,
            **overrides,
        }
    )


def new_guest_network(**overrides: Any) -> GuestNetwork:
    return GuestNetwork(
        **{
            "name": "guest",
            "zone_id": uuid.uuid4(),
            "network_type": "Shared",
            "cidr": "10.1.0.0/24",
            "gateway": "10.1.0.1",
            "start_ip": "10.1.0.10",
            "end_ip": "10.1.0.20",
            **overrides,
        }
    )


def new_primary_storage(**overrides: Any) -> PrimaryStorage:
    return PrimaryStorage(
        **{
            "name": "pool",
            "zone_id": uuid.uuid4(),
            "scope": "ZONE",
            "path": "nfs://10.0.0.1/export",
            "capacity_bytes": 100 * GIB,
            **overrides,
        }
    )


def new_secondary_storage(**overrides: Any) -> SecondaryStorage:
    return SecondaryStorage(
        **{
            "name": "secondary",
            "zone_id": uuid.uuid4(),
            "url": "nfs://10.0.0.2/secondary",
            "capacity_bytes": 10 * GIB,
            **overrides,
        }
    )


def new_job(**overrides: Any) -> Job:
    return Job(
        **{
            "job_type": "StartVirtualMachine",
            "account_id": uuid.uuid4(),
            "resource_type": "VirtualMachine",
            "resource_id": uuid.uuid4(),
            "zone_id": uuid.uuid4(),
            "summary": "start vm",
            "submitted_at": datetime(2025, 1, 1, tzinfo=UTC),
            **overrides,
        }
    )


def path_to(machine: StateMachine[S, E], start: S, goal: S) -> list[E]:
    """The shortest list of events that takes `machine` from `start` to `goal` (breadth first);
    ValueError when the table has none."""
    came_from: dict[S, tuple[S, E] | None] = {start: None}
    frontier = deque([start])
    while frontier:
        state = frontier.popleft()
        if state == goal:
            events: list[E] = []
            while (step := came_from[state]) is not None:
                state, event = step
                events.append(event)
            return events[::-1]
        for event in sorted(machine.events_from(state)):
            following = machine.next_state(state, event)
            if following not in came_from:
                came_from[following] = (state, event)
                frontier.append(following)
    raise ValueError(f"{machine.resource}: no way from {start} to {goal}")


def bring_to(aggregate: StateMachineAggregate[S, E], state: S, **facts: Any) -> None:
    """Walk `aggregate` to `state` along its own table, through `transition`."""
    for n, event in enumerate(path_to(aggregate.state_machine, aggregate.state, state)):
        aggregate.transition(event, f"setup/{n}", **facts)
