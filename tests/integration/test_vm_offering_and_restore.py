"""Changing a stopped VM's service offering, restoring a VM's root volume from a template, and
expunging a VM with its snapshots: jobs in the VM's queue, against a real PostgreSQL and a real
Temporal dev server."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from api.job_cancellation import cancel as cancel_job
from domain.catalog import GIB
from domain.cloud import Cloud
from domain.host import Host
from domain.ids import named_id
from domain.inventory import add_service_offering, register_template
from domain.job import JobStatus
from domain.job_requests import VmOperation, VolumeOperation
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_operations import restored_root_volume_id_for
from domain.vm_snapshot import VmSnapshot, VmSnapshotState, vm_snapshot_id_for
from domain.volume import Volume, VolumeState
from projections.usage_types import UsageType
from tests.integration.vm_jobs import deploy, fail_in, job_of, problems_of, submit
from tests.integration.volume_jobs import run_volume_job
from tests.support import (
    Harness,
    SlowStep,
    crash_after_first,
    event_names,
    outcome,
    run_twice,
    running_worker,
    started,
    step_reached,
)
from tests.support import seed_zone as seed
from tests.usage_support import project
from workers.demo_cloud import DemoCloud

S = VmOperation
RESTORE_JOB = S.RESTORE.job_type
OFFERING_JOB = S.CHANGE_SERVICE_OFFERING.job_type


def vm(cloud: Cloud, vm_id: uuid.UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, vm_id)


async def job(
    harness: Harness, zone: DemoCloud, vm_id: uuid.UUID, operation: VmOperation, **options: Any
) -> tuple[uuid.UUID, str, Any]:
    job_id = uuid.uuid4()
    if operation is S.SNAPSHOT:
        options = {"snapshot_id": vm_snapshot_id_for(job_id), **options}
    accepted = await submit(harness, zone, vm_id, operation, job_id=job_id, **options)
    status, value = await outcome(harness.client, accepted.job_id)
    return accepted.job_id, status, value


async def ok(
    harness: Harness, zone: DemoCloud, vm_id: uuid.UUID, op: VmOperation, **kw: Any
) -> Any:
    job_id, status, value = await job(harness, zone, vm_id, op, **kw)
    assert status == "succeeded", (op, value)
    return job_id


async def running_vm(harness: Harness, zone: DemoCloud, name: str) -> uuid.UUID:
    deploy_job, vm_id = await deploy(harness, zone, name)
    assert (await outcome(harness.client, deploy_job))[0] == "succeeded"
    return vm_id


def new_template(cloud: Cloud, zone: DemoCloud, size_bytes: int = 3 * GIB) -> uuid.UUID:
    name = f"restore-{uuid.uuid4().hex[:8]}"
    template = register_template(
        cloud,
        named_id("template", name),
        name,
        secondary_storage_id=zone.secondary_storage_id,
        display_text=name,
        hypervisor="Simulator",
        format="QCOW2",
        os_type="Other Linux (64-bit)",
        url=f"http://images.invalid/{name}.qcow2",
        size_bytes=size_bytes,
    )
    return template.id


def volume_leaks(
    cloud: Cloud, zone: DemoCloud, harness: Harness, volume_id: uuid.UUID
) -> list[str]:
    """What a volume that must be gone still holds: pool bytes, disks, a live record."""
    found: list[str] = []
    for pool_id in zone.pool_ids:
        if str(volume_id) in cloud.load(PrimaryStorage, pool_id).allocations:
            found.append(f"pool {pool_id} holds bytes for {volume_id}")
        if any(d.volume_id == str(volume_id) for d in harness.driver.volumes_on(str(pool_id))):
            found.append(f"pool {pool_id} holds the disk of {volume_id}")
    recorded = cloud.find(Volume, volume_id)
    if recorded is not None and recorded.state is not VolumeState.EXPUNGED:
        found.append(f"volume {volume_id} is {recorded.state}")
    return found


# -- change the service offering ---------------------------------------------------------------
async def test_a_stopped_vm_takes_another_offering_and_its_next_start_reserves_the_new_size(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "scaled")
        await ok(harness, zone, vm_id, S.STOP)
        job_id = await ok(
            harness,
            zone,
            vm_id,
            S.CHANGE_SERVICE_OFFERING,
            service_offering_id=zone.medium_offering_id,
        )
        scaled = vm(cloud, vm_id)
        assert scaled.state is VmState.STOPPED
        assert scaled.service_offering_id == zone.medium_offering_id
        assert (scaled.cpu_count, scaled.cpu_speed_mhz, scaled.memory_mib) == (2, 2000, 2048)
        assert job_of(cloud, job_id).job_type == "ScaleVirtualMachine"
        assert "VirtualMachine.ServiceOfferingChanged" in event_names(cloud, vm_id)
        await ok(harness, zone, vm_id, S.START)
        host = cloud.load(Host, vm(cloud, vm_id).host_id)  # type: ignore[arg-type]
        held = host.reservation_for(vm_id)
        assert held is not None and (held.cpu_mhz, held.memory_mib) == (4000, 2048)
        assert problems_of(cloud, zone, harness, vm_id) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("running", "must be Stopped"),
        ("same offering", "already has service offering"),
        ("unknown offering", "no service offering"),
        ("too big for any host", "can run service offering"),
    ],
)
async def test_an_offering_change_the_vm_cannot_take_fails_at_run_time_with_431_and_changes_nothing(
    temporal_client: Client, cloud: Cloud, case: str, expected: str
) -> None:
    zone = seed(cloud)
    offering_id = {
        "running": zone.medium_offering_id,
        "same offering": zone.small_offering_id,
        "unknown offering": uuid.uuid4(),
    }.get(case)
    if case == "too big for any host":
        name = f"huge-{uuid.uuid4().hex[:8]}"
        offering_id = add_service_offering(
            cloud,
            named_id("service_offering", name),
            name,
            display_text=name,
            cpu_count=512,
            cpu_speed_mhz=4000,
            memory_mib=1024 * 1024 * 64,
        ).id
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "unscaled")
        if case != "running":
            await ok(harness, zone, vm_id, S.STOP)
        before = vm(cloud, vm_id).state
        job_id, status, _ = await job(
            harness, zone, vm_id, S.CHANGE_SERVICE_OFFERING, service_offering_id=offering_id
        )
        assert status == "ended"
        failed = job_of(cloud, job_id)
        assert failed.status is JobStatus.FAILED and failed.error_code == 431
        assert expected in (failed.error_text or "")
        assert vm(cloud, vm_id).service_offering_id == zone.small_offering_id
        assert vm(cloud, vm_id).state is before
        assert problems_of(cloud, zone, harness, vm_id) == []


async def test_an_offering_change_splits_allocated_vm_usage_so_each_part_carries_its_offering(
    temporal_client: Client, cloud: Cloud, cloud_env: dict[str, str], database_url: str
) -> None:
    """CloudStack's VM.UPGRADE: ALLOCATED_VM runs on without a gap, its interval cut where the
    offering changed; RUNNING_VM before the stop carries the old offering, after the next
    start the new one."""
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "metered")
        await ok(harness, zone, vm_id, S.STOP)
        await ok(
            harness,
            zone,
            vm_id,
            S.CHANGE_SERVICE_OFFERING,
            service_offering_id=zone.medium_offering_id,
        )
        await ok(harness, zone, vm_id, S.START)
    project(cloud_env, cloud)
    allocated = intervals(database_url, vm_id, UsageType.ALLOCATED_VM)
    running = intervals(database_url, vm_id, UsageType.RUNNING_VM)
    small, medium = str(zone.small_offering_id), str(zone.medium_offering_id)
    assert [r["offering_id"] for r in allocated] == [small, medium]
    assert allocated[0]["ended_at"] == allocated[1]["started_at"]
    assert allocated[1]["ended_at"] is None
    assert [r["offering_id"] for r in running] == [small, medium]
    assert running[0]["ended_at"] is not None and running[1]["ended_at"] is None


def intervals(
    database_url: str, resource_id: uuid.UUID, usage_type: UsageType
) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT started_at, ended_at, offering_id::text, template_id::text, size_bytes "
            "FROM usage_intervals WHERE resource_id = %s AND usage_type = %s ORDER BY seq",
            (resource_id, int(usage_type)),
        ).fetchall()
    return list(rows)


# -- restore ---------------------------------------------------------------------------------
async def test_restoring_a_running_vm_gives_it_a_new_root_volume_and_it_runs_again_on_its_host(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "reset")
        before = vm(cloud, vm_id)
        old_volume_id, host_id = before.root_volume_id, before.host_id
        job_id = await ok(harness, zone, vm_id, S.RESTORE)
        after = vm(cloud, vm_id)
        assert after.state is VmState.RUNNING and after.host_id == host_id
        assert after.root_volume_id == restored_root_volume_id_for(job_id)
        assert after.template_id == zone.template_id
        new = cloud.load(Volume, after.root_volume_id)
        assert new.state is VolumeState.READY and new.vm_id == vm_id
        assert new.pool_id == cloud.load(Volume, old_volume_id).pool_id
        assert cloud.load(Volume, old_volume_id).state is VolumeState.EXPUNGED
        assert volume_leaks(cloud, zone, harness, old_volume_id) == []
        assert problems_of(cloud, zone, harness, vm_id) == []
        assert job_of(cloud, job_id).job_type == "RestoreVirtualMachine"


async def test_restoring_a_stopped_vm_from_another_template_keeps_it_stopped_and_it_starts_from_it(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    template_id = new_template(cloud, zone, 3 * GIB)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "rebased")
        await ok(harness, zone, vm_id, S.STOP)
        old_volume_id = vm(cloud, vm_id).root_volume_id
        await ok(harness, zone, vm_id, S.RESTORE, template_id=template_id)
        after = vm(cloud, vm_id)
        assert after.state is VmState.STOPPED and after.template_id == template_id
        new = cloud.load(Volume, after.root_volume_id)
        assert new.size_bytes == 3 * GIB and new.template_id == template_id
        assert volume_leaks(cloud, zone, harness, old_volume_id) == []
        assert problems_of(cloud, zone, harness, vm_id) == []
        await ok(harness, zone, vm_id, S.START)
        assert problems_of(cloud, zone, harness, vm_id) == []


async def test_a_restore_never_shrinks_the_root_disk_and_refuses_a_template_of_another_hypervisor(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    smaller = new_template(cloud, zone, GIB)
    name = f"kvm-{uuid.uuid4().hex[:8]}"
    kvm = register_template(
        cloud,
        named_id("template", name),
        name,
        display_text=name,
        hypervisor="KVM",
        format="QCOW2",
        os_type="Other Linux (64-bit)",
        url="http://images.invalid/kvm.qcow2",
        size_bytes=GIB,
    ).id
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "sized")
        await ok(harness, zone, vm_id, S.RESTORE, template_id=smaller)
        assert cloud.load(Volume, vm(cloud, vm_id).root_volume_id).size_bytes == 2 * GIB
        root = vm(cloud, vm_id).root_volume_id
        job_id, status, _ = await job(harness, zone, vm_id, S.RESTORE, template_id=kvm)
        assert status == "ended" and job_of(cloud, job_id).error_code == 431
        assert "is for KVM" in (job_of(cloud, job_id).error_text or "")
        assert vm(cloud, vm_id).root_volume_id == root
        assert volume_leaks(cloud, zone, harness, restored_root_volume_id_for(job_id)) == []
        assert problems_of(cloud, zone, harness, vm_id) == []


RESTORE_STEPS = (
    "vm.begin",
    "hypervisor.stop_vm",
    "hypervisor.destroy_vm",
    "vm.begin_restore_volume",
    "hypervisor.create_volume",
    "vm.complete_restore_volume",
    "vm.swap_root_volume",
    "vm.launch_spec",
    "hypervisor.launch_vm",
    "vm.complete_restore",
)
STOPPED_RESTORE_STEPS = (
    "vm.begin",
    "vm.begin_restore_volume",
    "hypervisor.create_volume",
    "vm.complete_restore_volume",
    "vm.swap_root_volume",
    "vm.complete_restore",
)
CASES = [("Running", s) for s in RESTORE_STEPS] + [("Stopped", s) for s in STOPPED_RESTORE_STEPS]


@pytest.mark.parametrize(("state", "step"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
async def test_a_restore_failing_at_each_step_unwinds_to_the_vm_as_it_was_with_nothing_leaked(
    temporal_client: Client, cloud: Cloud, state: str, step: str
) -> None:
    zone = seed(cloud)
    async with running_worker(
        temporal_client, cloud, around=fail_in(RESTORE_JOB, step, once=True)
    ) as harness:
        vm_id = await running_vm(harness, zone, "unrestored")
        if state == "Stopped":
            await ok(harness, zone, vm_id, S.STOP)
        before = vm(cloud, vm_id)
        job_id, status, _ = await job(harness, zone, vm_id, S.RESTORE)
        assert status == "ended"
        failed = job_of(cloud, job_id)
        assert failed.status is JobStatus.FAILED and failed.error_code == 530
        after = vm(cloud, vm_id)
        assert after.state is before.state and after.host_id == before.host_id
        assert (after.root_volume_id, after.template_id) == (
            before.root_volume_id,
            before.template_id,
        )
        assert cloud.load(Volume, before.root_volume_id).state is VolumeState.READY
        assert volume_leaks(cloud, zone, harness, restored_root_volume_id_for(job_id)) == []
        assert problems_of(cloud, zone, harness, vm_id) == []


@pytest.mark.parametrize("step", RESTORE_STEPS[:-1])
async def test_a_restore_cancelled_during_each_step_unwinds_after_the_step_ends(
    temporal_client: Client, cloud: Cloud, step: str
) -> None:
    """The step finishes after the cancel came (it never learns of it): the job unwinds at the
    next safe point instead of going on, and leaves the VM Running as it was."""
    zone = seed(cloud)
    slow = SlowStep(step, workflow_type=RESTORE_JOB)
    async with running_worker(temporal_client, cloud, around=slow) as harness:
        vm_id = await running_vm(harness, zone, "uncancelled")
        before = vm(cloud, vm_id)
        restore = await submit(harness, zone, vm_id, S.RESTORE)
        await slow.wait_started()
        await started(temporal_client, restore.job_id)
        assert await cancel_job(temporal_client, cloud, restore.job_id, "test") == "running"
        slow.release()  # the job has the cancel: now the step ends
        assert (await outcome(temporal_client, restore.job_id))[0] == "ended"
        assert job_of(cloud, restore.job_id).status is JobStatus.CANCELLED
        after = vm(cloud, vm_id)
        assert (after.state, after.host_id, after.root_volume_id) == (
            VmState.RUNNING,
            before.host_id,
            before.root_volume_id,
        )
        assert volume_leaks(cloud, zone, harness, restored_root_volume_id_for(restore.job_id)) == []
        assert problems_of(cloud, zone, harness, vm_id) == []


async def test_an_old_root_volume_that_cannot_be_deleted_stays_detached_and_deleting_it_finishes(
    temporal_client: Client, cloud: Cloud
) -> None:
    """Past the point of no return the VM keeps its new root volume; the old one, whose disk
    could not be deleted, is left Expunging, detached, and an ordinary delete finishes it."""
    zone = seed(cloud)
    around = fail_in(RESTORE_JOB, "hypervisor.delete_volume")
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "half-cleaned")
        before = vm(cloud, vm_id)
        job_id, status, _ = await job(harness, zone, vm_id, S.RESTORE)
        assert status == "ended"
        failed = job_of(cloud, job_id)
        assert failed.status is JobStatus.FAILED and failed.error_code == 530
        assert "the VM was restored" in (failed.error_text or "")
        assert "delete the volume again" in (failed.error_text or "")
        after = vm(cloud, vm_id)
        assert after.state is VmState.RUNNING and after.host_id == before.host_id
        assert after.root_volume_id == restored_root_volume_id_for(job_id)
        old = cloud.load(Volume, before.root_volume_id)
        assert (old.state, old.vm_id) == (VolumeState.EXPUNGING, None)
        assert volume_leaks(cloud, zone, harness, old.id) != []

        _, status, value = await run_volume_job(harness, zone, old.id, VolumeOperation.DELETE)
        assert status == "succeeded", value
        assert volume_leaks(cloud, zone, harness, old.id) == []
        assert problems_of(cloud, zone, harness, vm_id) == []


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_offering_and_restore_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "twice")
        roots = [vm(cloud, vm_id).root_volume_id]
        jobs = [await ok(harness, zone, vm_id, S.RESTORE)]
        roots.append(vm(cloud, vm_id).root_volume_id)
        jobs.append(await ok(harness, zone, vm_id, S.STOP))
        jobs.append(
            await ok(
                harness,
                zone,
                vm_id,
                S.CHANGE_SERVICE_OFFERING,
                service_offering_id=zone.medium_offering_id,
            )
        )
        jobs.append(await ok(harness, zone, vm_id, S.RESTORE))
        roots.append(vm(cloud, vm_id).root_volume_id)
        for job_id in jobs:
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
        assert len(set(roots)) == 3
        for old in roots[:-1]:
            assert volume_leaks(cloud, zone, harness, old) == []
        assert problems_of(cloud, zone, harness, vm_id) == []
    names = Counter(event_names(cloud, vm_id))
    assert names["VirtualMachine.ServiceOfferingChanged"] == 1
    assert names["VirtualMachine.RootVolumeReplaced"] == 2
    reserved = Counter(
        type(e).__qualname__
        for host_id in zone.host_ids
        for e in cloud.events.get(host_id)
        if getattr(e, "vm_id", None) == vm_id
    )
    # deploy reserved; the restore of the running VM kept its capacity; the stop released it.
    assert reserved["Host.CapacityReserved"] == 1
    assert reserved["Host.CapacityReleased"] == 1
    for root in roots:
        allocated = Counter(
            type(e).__qualname__
            for pool_id in zone.pool_ids
            for e in cloud.events.get(pool_id)
            if getattr(e, "volume_id", None) == root
        )
        assert allocated["PrimaryStorage.CapacityAllocated"] == 1
        assert allocated["PrimaryStorage.CapacityReleased"] == (0 if root == roots[-1] else 1)


async def test_a_restore_closes_volume_usage_of_the_old_root_and_opens_it_for_the_new_one(
    temporal_client: Client, cloud: Cloud, cloud_env: dict[str, str], database_url: str
) -> None:
    zone = seed(cloud)
    template_id = new_template(cloud, zone)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "revolumed")
        old = vm(cloud, vm_id).root_volume_id
        job_id = await ok(harness, zone, vm_id, S.RESTORE, template_id=template_id)
    project(cloud_env, cloud)
    new = restored_root_volume_id_for(job_id)
    (old_usage,) = intervals(database_url, old, UsageType.VOLUME)
    (new_usage,) = intervals(database_url, new, UsageType.VOLUME)
    assert old_usage["ended_at"] is not None and new_usage["ended_at"] is None
    assert old_usage["ended_at"] >= new_usage["started_at"]
    assert new_usage["template_id"] == str(template_id) and new_usage["size_bytes"] == 3 * GIB
    # the VM's own usage follows its template: split where the root volume was replaced
    allocated = intervals(database_url, vm_id, UsageType.ALLOCATED_VM)
    assert [r["template_id"] for r in allocated] == [str(zone.template_id), str(template_id)]


async def test_a_cancelled_restore_unwinds_until_the_old_root_volume_is_being_deleted(
    temporal_client: Client, cloud: Cloud
) -> None:
    """Cancelled while the new disk is being made, a restore leaves the VM Running on its old
    root volume; once the old root volume is being deleted, cancel is refused (409)."""
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "cancelled")
        before = vm(cloud, vm_id)
        harness.faults.append(
            {"operation": "create_volume", "action": "delay", "delay_seconds": 30, "host_id": None}
        )
        restore = await submit(harness, zone, vm_id, S.RESTORE)
        handle = await step_reached(temporal_client, restore.job_id, "creating the new root volume")
        assert await cancel_job(temporal_client, cloud, restore.job_id, "test") == "running"
        assert (await outcome(temporal_client, restore.job_id))[0] == "ended"
        harness.faults.clear()
        assert job_of(cloud, restore.job_id).status is JobStatus.CANCELLED
        after = vm(cloud, vm_id)
        assert (after.state, after.host_id, after.root_volume_id) == (
            VmState.RUNNING,
            before.host_id,
            before.root_volume_id,
        )
        assert volume_leaks(cloud, zone, harness, restored_root_volume_id_for(restore.job_id)) == []
        assert problems_of(cloud, zone, harness, vm_id) == []

        harness.faults.append(
            {"operation": "delete_volume", "action": "delay", "delay_seconds": 6, "host_id": None}
        )
        restore = await submit(harness, zone, vm_id, S.RESTORE)
        handle = await step_reached(temporal_client, restore.job_id, "deleting the old root volume")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("cancel", "test")
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and "old root volume" in cause.message
        assert (await outcome(temporal_client, restore.job_id))[0] == "succeeded"
        harness.faults.clear()
        assert volume_leaks(cloud, zone, harness, before.root_volume_id) == []
        assert problems_of(cloud, zone, harness, vm_id) == []


# -- expunge deletes the VM's snapshots --------------------------------------------------------
@pytest.mark.parametrize("around", [None, run_twice], ids=["once", "twice"])
async def test_expunging_a_vm_removes_its_snapshots(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "snapped")
        made = []
        for memory in (True, False):
            snap_job = await ok(harness, zone, vm_id, S.SNAPSHOT, memory=memory)
            made.append(vm_snapshot_id_for(snap_job))
        deleted_job = await ok(harness, zone, vm_id, S.SNAPSHOT, memory=False)
        deleted = vm_snapshot_id_for(deleted_job)
        await ok(harness, zone, vm_id, S.DELETE_SNAPSHOT, snapshot_id=deleted)
        await ok(harness, zone, vm_id, S.DESTROY, expunge=True)
        assert vm(cloud, vm_id).is_removed
        for snapshot_id in (*made, deleted):
            assert cloud.load(VmSnapshot, snapshot_id).state is VmSnapshotState.REMOVED
        for snapshot_id in made:
            assert (
                Counter(
                    getattr(e, "new_state", None)
                    for e in cloud.events.get(snapshot_id)
                    if type(e).__qualname__ == "VmSnapshot.Transitioned"
                )[VmSnapshotState.REMOVED.value]
                == 1
            )
        assert problems_of(cloud, zone, harness, vm_id) == []
