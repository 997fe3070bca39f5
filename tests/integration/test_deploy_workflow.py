"""The DeployVirtualMachine saga against a real PostgreSQL and a real Temporal dev server."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from domain.cloud import Cloud
from domain.host import Host
from domain.inventory import add_service_offering
from domain.job import JobStatus
from domain.virtual_machine import VirtualMachine, VmState
from domain.volume import VolumeState
from tests.support import (
    SlowStep,
    cancel_seen,
    crash_after_first,
    event_names,
    fail_before,
    job_of,
    leaks_of,
    run_twice,
    running_worker,
    seed_zone,
    vm_of,
    volume_of,
)

#: Every step of the saga that changes the world, in the order the workflow runs them.
STEPS = [
    "deployment.register",
    "deployment.plan",
    "deployment.reserve_capacity",
    "deployment.begin_root_volume",
    "hypervisor.create_volume",
    "deployment.complete_root_volume",
    "deployment.allocate_nic",
    "deployment.prepare_launch",
    "hypervisor.launch_vm",
    "deployment.complete",
]


def failure_code(error: WorkflowFailureError) -> int:
    cause = error.cause
    assert isinstance(cause, ApplicationError), cause
    return int(cause.details[0])


async def test_deploy_runs_the_vm_on_a_host_with_ip_and_root_volume(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        handle = await harness.deploy(zone, "web-1")
        result = await handle.result()
        job_id = uuid.UUID(handle.id)

    vm = vm_of(cloud, job_id)
    assert vm.state is VmState.RUNNING
    assert vm.host_id in zone.host_ids and vm.last_host_id == vm.host_id
    assert vm.ip_address is not None and vm.ip_address.startswith("10.1.")
    assert result["ip_address"] == vm.ip_address
    assert volume_of(cloud, job_id).state is VolumeState.READY
    host = cloud.load(Host, vm.host_id)
    assert host.reservation_for(vm.id) is not None
    assert [v.vm_id for v in harness.driver.vms_on(str(vm.host_id))] == [str(vm.id)]
    job = job_of(cloud, job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result == result


@pytest.mark.parametrize("step", STEPS)
async def test_a_failure_at_each_step_unwinds_without_leaks(
    temporal_client: Client, cloud: Cloud, step: str
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=fail_before(step)) as harness:
        handle = await harness.deploy(zone, "doomed")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        job_id = uuid.UUID(handle.id)

    assert failure_code(failure.value) == 530
    leaks = leaks_of(cloud, zone, harness.driver, job_id)
    assert leaks.none, leaks
    job = job_of(cloud, job_id)
    assert job.status is JobStatus.FAILED and job.error_code == 530
    assert "injected failure" in (job.error_text or "")
    if step != "deployment.register":
        assert vm_of(cloud, job_id).state is VmState.ERROR
        assert volume_of(cloud, job_id).state is VolumeState.EXPUNGED


@pytest.mark.parametrize("step", STEPS)
async def test_a_deploy_cancelled_during_each_step_unwinds_without_leaks(
    temporal_client: Client, cloud: Cloud, step: str
) -> None:
    """The step finishes after the cancel came (it never learns of it); the job still unwinds,
    and no undo runs before the step it undoes has ended. Recording Running is too late to
    cancel: the VM stays Running."""
    zone = seed_zone(cloud)
    slow = SlowStep(step)
    async with running_worker(temporal_client, cloud, around=slow) as harness:
        handle = await harness.deploy(zone, "cancelled")
        job_id = uuid.UUID(handle.id)
        await slow.wait_started()
        await handle.cancel()
        await cancel_seen(handle)
        slow.release()
        if step == "deployment.complete":
            await handle.result()
            assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
            assert vm_of(cloud, job_id).state is VmState.RUNNING
            return
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    leaks = leaks_of(cloud, zone, harness.driver, job_id)
    assert leaks.none, leaks
    assert job_of(cloud, job_id).status is JobStatus.CANCELLED
    if step != "deployment.register":
        assert volume_of(cloud, job_id).state is VolumeState.EXPUNGED


async def test_every_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=run_twice) as harness:
        handle = await harness.deploy(zone, "twice")
        await handle.result()
        job_id = uuid.UUID(handle.id)
    vm = vm_of(cloud, job_id)
    assert vm.state is VmState.RUNNING
    _assert_single_effects(cloud, vm.id, vm.network_id, vm.host_id, job_id)
    assert len(harness.driver.vms_on(str(vm.host_id))) == 1


async def test_a_worker_lost_after_each_step_is_retried_without_duplicates(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=crash_after_first()) as harness:
        handle = await harness.deploy(zone, "crashy")
        await handle.result()
        job_id = uuid.UUID(handle.id)
    vm = vm_of(cloud, job_id)
    assert vm.state is VmState.RUNNING
    _assert_single_effects(cloud, vm.id, vm.network_id, vm.host_id, job_id)


def _assert_single_effects(
    cloud: Cloud,
    vm_id: uuid.UUID,
    network_id: uuid.UUID,
    host_id: uuid.UUID | None,
    job_id: uuid.UUID,
) -> None:
    assert host_id is not None  # the VM is running, so on a host
    vm_events = Counter(event_names(cloud, vm_id))
    assert vm_events["VirtualMachine.Registered"] == 1
    assert vm_events["VirtualMachine.NicAttached"] == 1
    assert vm_events["VirtualMachine.Transitioned"] == 2  # StartRequested, OperationSucceeded
    # eventsourcing makes these two event classes from @event methods: no class to narrow to.
    network_events = [
        e
        for e in cloud.events.get(network_id)
        if type(e).__qualname__ == "GuestNetwork.IpAllocated"
        and getattr(e, "owner_id", None) == vm_id
    ]
    assert len(network_events) == 1
    host_events = [
        e
        for e in cloud.events.get(host_id)
        if type(e).__qualname__ == "Host.CapacityReserved" and getattr(e, "vm_id", None) == vm_id
    ]
    assert len(host_events) == 1
    job_events = Counter(event_names(cloud, job_id))
    assert job_events["Job.Started"] == 1 and job_events["Job.Succeeded"] == 1


async def test_a_host_that_fails_to_start_the_vm_is_avoided_and_the_next_host_used(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    broken_host = zone.host_ids[0]
    async with running_worker(temporal_client, cloud) as harness:
        harness.faults.append(
            {
                "operation": "start_vm",
                "action": "fail",
                "host_id": str(broken_host),
                "error_code": 534,
                "message": "simulated: host refused",
                "delay_seconds": 0,
            }
        )
        handle = await harness.deploy(zone, "retry-me")
        await handle.result()
        job_id = uuid.UUID(handle.id)
    vm = vm_of(cloud, job_id)
    assert vm.state is VmState.RUNNING and vm.host_id != broken_host
    assert cloud.load(Host, broken_host).reservation_for(vm.id) is None
    assert harness.driver.vms_on(str(broken_host)) == []
    transitions = [
        e.vm_event for e in cloud.events.get(vm.id) if isinstance(e, VirtualMachine.Transitioned)
    ]
    assert transitions == ["StartRequested", "OperationRetry", "OperationSucceeded"]


async def test_when_every_host_fails_the_job_fails_533_naming_the_last_failure_and_leaks_nothing(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        harness.faults.append(
            {
                "operation": "start_vm",
                "action": "fail",
                "host_id": None,
                "error_code": 534,
                "message": "simulated: no hypervisor answers",
                "delay_seconds": 0,
            }
        )
        handle = await harness.deploy(zone, "nowhere")
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        job_id = uuid.UUID(handle.id)
    assert failure_code(failure.value) == 533
    job = job_of(cloud, job_id)
    assert job.error_code == 533 and "no hypervisor answers" in (job.error_text or "")
    assert leaks_of(cloud, zone, harness.driver, job_id).none
    assert vm_of(cloud, job_id).state is VmState.ERROR


async def test_a_storage_pool_that_fails_is_avoided_and_the_other_cluster_used(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        # The first cluster's hosts can only create volumes on its pool: fail both its hosts.
        for host_id in zone.host_ids[:2]:
            harness.faults.append(
                {
                    "operation": "create_volume",
                    "action": "fail",
                    "host_id": str(host_id),
                    "error_code": 534,
                    "message": "simulated: pool offline",
                    "delay_seconds": 0,
                }
            )
        handle = await harness.deploy(zone, "elsewhere")
        await handle.result()
        job_id = uuid.UUID(handle.id)
    volume = volume_of(cloud, job_id)
    assert volume.state is VolumeState.READY and volume.pool_id == zone.pool_ids[1]
    assert vm_of(cloud, job_id).host_id in zone.host_ids[2:]


async def test_an_offering_bigger_than_any_host_fails_533_and_leaves_the_vm_in_error(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud, host_memory_mib=4096)
    huge = add_service_offering(
        cloud,
        uuid.uuid4(),
        "Huge",
        display_text="too big",
        cpu_count=1,
        cpu_speed_mhz=500,
        memory_mib=8192,
    )
    async with running_worker(temporal_client, cloud) as harness:
        handle = await harness.deploy(zone, "huge", offering_id=huge.id)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        job_id = uuid.UUID(handle.id)
    assert failure_code(failure.value) == 533
    assert vm_of(cloud, job_id).state is VmState.ERROR
    assert leaks_of(cloud, zone, harness.driver, job_id).none


async def test_concurrent_deploys_racing_for_the_last_capacity_never_overcommit(
    temporal_client: Client, cloud: Cloud
) -> None:
    # 4 hosts x 2048 MiB, 512 MiB per VM, disable threshold 1.0: exactly 16 VMs fit.
    zone = seed_zone(cloud, host_memory_mib=2048, disable_threshold=1.0)
    async with running_worker(temporal_client, cloud) as harness:
        handles = [await harness.deploy(zone, f"race-{n}") for n in range(22)]
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    succeeded = [o for o in outcomes if isinstance(o, dict)]
    failed = [o for o in outcomes if isinstance(o, WorkflowFailureError)]
    assert len(succeeded) == 16 and len(failed) == 6
    assert all(failure_code(f) == 533 for f in failed)
    for host_id in zone.host_ids:
        host = cloud.load(Host, host_id)
        assert host.memory_used_mib <= host.memory_mib
        assert len(host.reservations) == 4
