"""Capacity reserved on the host aggregate: overprovisioning, release, idempotency, and the
optimistic concurrency that keeps two racing deployments from overcommitting a host."""

from __future__ import annotations

import uuid
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.cloud import Cloud, Decision
from domain.errors import InsufficientCapacity
from domain.host import Host, HostStatus, Reservation, ResourceState
from tests.unit.builders import new_host

# new_host() is 4 × 2000 MHz = 8000 MHz and 8192 MiB.


def test_a_reservation_takes_room_and_a_release_gives_it_back() -> None:
    host, vm = new_host(), uuid.uuid4()
    host.reserve_capacity(vm, 3000, 2048, 1.0, 1.0, "job/reserve")
    assert (host.cpu_used_mhz, host.memory_used_mib) == (3000, 2048)
    assert host.reservation_for(vm) == Reservation(3000, 2048)
    host.release_capacity(vm, "job/release")
    assert (host.cpu_used_mhz, host.memory_used_mib) == (0, 0)
    assert host.reservation_for(vm) is None


@pytest.mark.parametrize(
    ("cpu_factor", "memory_factor", "cpu_mhz", "memory_mib", "fits"),
    [
        (1.0, 1.0, 8000, 8192, True),  # exactly the host
        (1.0, 1.0, 8001, 1024, False),
        (1.0, 1.0, 1000, 8193, False),
        (2.0, 1.0, 16000, 1024, True),  # cpu overprovisioned twice
        (2.0, 1.0, 16001, 1024, False),
        (1.0, 1.5, 1000, 12288, True),  # memory overprovisioned by half
        (1.0, 1.5, 1000, 12289, False),
    ],
)
def test_a_host_takes_up_to_its_total_times_the_overprovisioning_factor(
    cpu_factor: float, memory_factor: float, cpu_mhz: int, memory_mib: int, fits: bool
) -> None:
    host = new_host()
    if fits:
        host.reserve_capacity(uuid.uuid4(), cpu_mhz, memory_mib, cpu_factor, memory_factor, "r")
        assert (host.cpu_used_mhz, host.memory_used_mib) == (cpu_mhz, memory_mib)
    else:
        with pytest.raises(InsufficientCapacity) as refused:
            host.reserve_capacity(uuid.uuid4(), cpu_mhz, memory_mib, cpu_factor, memory_factor, "r")
        assert refused.value.code == 533 and host.name in refused.value.message
        assert (host.cpu_used_mhz, host.memory_used_mib) == (0, 0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 5), st.integers(1, 6000), st.integers(1, 6000)),
        max_size=30,
    ),
    st.sampled_from([1.0, 1.5, 2.0, 4.0]),
    st.sampled_from([1.0, 1.25, 2.0]),
)
def test_no_sequence_of_reservations_and_releases_overcommits_a_host(
    steps: list[tuple[bool, int, int, int]], cpu_factor: float, memory_factor: float
) -> None:
    host = new_host()
    vms = [uuid.uuid4() for _ in range(6)]
    for n, (reserve, which, cpu_mhz, memory_mib) in enumerate(steps):
        if reserve:
            try:
                host.reserve_capacity(
                    vms[which], cpu_mhz, memory_mib, cpu_factor, memory_factor, f"cmd/{n}"
                )
            except InsufficientCapacity:
                assert not host.fits(cpu_mhz, memory_mib, cpu_factor, memory_factor)
        else:
            host.release_capacity(vms[which], f"cmd/{n}")
        assert host.cpu_used_mhz <= host.cpu_total_mhz * cpu_factor
        assert host.memory_used_mib <= host.memory_mib * memory_factor


def test_a_repeated_reservation_is_not_a_second_one() -> None:
    host, vm = new_host(), uuid.uuid4()
    host.reserve_capacity(vm, 1000, 1024, 1.0, 1.0, "job/reserve")
    version = host.version
    host.reserve_capacity(vm, 1000, 1024, 1.0, 1.0, "job/reserve")  # the activity ran twice
    host.reserve_capacity(vm, 1000, 1024, 1.0, 1.0, "other-job/reserve")  # same VM again
    assert host.version == version and host.cpu_used_mhz == 1000


def test_a_repeated_release_or_a_release_of_what_is_not_held_is_a_no_op() -> None:
    host, vm = new_host(), uuid.uuid4()
    host.reserve_capacity(vm, 1000, 1024, 1.0, 1.0, "job/reserve")
    host.release_capacity(vm, "job/undo")
    version = host.version
    host.release_capacity(vm, "job/undo")
    host.release_capacity(uuid.uuid4(), "other-job/undo")
    assert host.version == version and host.cpu_used_mhz == 0


@pytest.mark.parametrize(
    ("status", "resource_state"),
    [
        (HostStatus.DOWN, ResourceState.ENABLED),
        (HostStatus.DISCONNECTED, ResourceState.ENABLED),
        (HostStatus.UP, ResourceState.DISABLED),
        (HostStatus.UP, ResourceState.PREPARE_FOR_MAINTENANCE),
        (HostStatus.UP, ResourceState.MAINTENANCE),
    ],
)
def test_a_host_that_is_not_up_and_enabled_takes_no_vm(
    status: HostStatus, resource_state: ResourceState
) -> None:
    host = new_host()
    host.set_status(status.value)
    host.set_resource_state(resource_state.value)
    assert not host.can_take_deployments()
    with pytest.raises(InsufficientCapacity):
        host.reserve_capacity(uuid.uuid4(), 1, 1, 1.0, 1.0, "job/reserve")


def test_a_vm_the_hypervisor_reports_holds_its_room_whatever_the_books_say() -> None:
    host = new_host()
    host.set_status(HostStatus.DOWN.value)
    host.record_reported_usage(uuid.uuid4(), 9000, 9000, "sync/1")
    assert (host.cpu_used_mhz, host.memory_used_mib) == (9000, 9000)


def test_a_bare_metal_host_takes_a_single_instance_whatever_its_size() -> None:
    machine = new_host(hypervisor="BareMetal", cpu_count=64, memory_mib=524288)
    machine.reserve_capacity(uuid.uuid4(), 1000, 1024, 1.0, 1.0, "job-1/reserve")
    assert not machine.can_take_deployments()
    with pytest.raises(InsufficientCapacity):
        machine.reserve_capacity(uuid.uuid4(), 1000, 1024, 1.0, 1.0, "job-2/reserve")


def saved_host(cloud: Cloud) -> UUID:
    host = new_host()
    cloud.save(host)
    return host.id


def test_a_stale_save_raises_integrity_error_and_stores_nothing(memory_cloud: Cloud) -> None:
    host_id = saved_host(memory_cloud)
    first = memory_cloud.load(Host, host_id)
    second = memory_cloud.load(Host, host_id)
    first.reserve_capacity(uuid.uuid4(), 6000, 1024, 1.0, 1.0, "a/reserve")
    second.reserve_capacity(uuid.uuid4(), 6000, 1024, 1.0, 1.0, "b/reserve")
    memory_cloud.save(first)
    with pytest.raises(IntegrityError):
        memory_cloud.save(second)
    assert memory_cloud.load(Host, host_id).cpu_used_mhz == 6000


@pytest.mark.parametrize(("rival_mhz", "wins"), [(6000, False), (4000, True)])
def test_a_decision_that_lost_a_race_reloads_and_decides_again(
    memory_cloud: Cloud, rival_mhz: int, wins: bool
) -> None:
    """Two deployments reserve 4000 MHz of an 8000 MHz host; the rival saves first, while this
    decision holds the host as it was. Its save fails, it reloads and decides on the new total:
    refused if the rival left no room, granted if it did; never both beyond the host."""
    host_id = saved_host(memory_cloud)
    vm, rival = uuid.uuid4(), uuid.uuid4()
    attempts: list[int] = []

    def reserve(d: Decision) -> None:
        host = d.get(Host, host_id)
        if not attempts:
            raced = memory_cloud.load(Host, host_id)
            raced.reserve_capacity(rival, rival_mhz, 1024, 1.0, 1.0, "rival/reserve")
            memory_cloud.save(raced)
        attempts.append(host.version)
        host.reserve_capacity(vm, 4000, 1024, 1.0, 1.0, "job/reserve")

    if wins:
        memory_cloud.decide(reserve)
    else:
        with pytest.raises(InsufficientCapacity):
            memory_cloud.decide(reserve)
    host = memory_cloud.load(Host, host_id)
    assert attempts == [1, 2], "decided once on the stale host, once on the fresh one"
    assert host.reservation_for(rival) == Reservation(rival_mhz, 1024)
    assert (host.reservation_for(vm) is not None) is wins
    assert host.cpu_used_mhz <= host.cpu_total_mhz
