"""Data volumes (create, attach, detach, resize, migrate, delete) as jobs in their VM's queue
or their own, against a real PostgreSQL and a real Temporal dev server."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.drivers.hypervisor import HostRef
from api.job_cancellation import cancel as cancel_job
from domain.cloud import Cloud
from domain.job import JobStatus
from domain.job_requests import VmOperation, VolumeOperation, vm_queue_id, volume_queue_id
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume, VolumeState
from tests.integration.vm_jobs import deploy, fail_in, job_of, problems_of
from tests.integration.vm_jobs import submit as submit_vm_job
from tests.integration.volume_jobs import (
    GIB,
    create_volume,
    defined_vms,
    devices_of,
    run_volume_job,
    submit_volume_job,
    volume,
    volume_problems,
)
from tests.support import (
    crash_after_first,
    event_names,
    outcome,
    run_twice,
    running_worker,
    seed_zone,
    started,
    step_reached,
    wait_until,
)

V = VolumeOperation


def plugged_into(harness: Any, volume_id: uuid.UUID) -> list[str]:
    return [
        vm_id
        for vm_id, attached in harness.driver.__dict__.get("_attachments", {}).items()
        if str(volume_id) in attached and vm_id in defined_vms(harness)
    ]


async def running_vm(harness: Any, zone: Any, name: str) -> uuid.UUID:
    deploy_job, vm_id = await deploy(harness, zone, name)
    assert (await outcome(harness.client, deploy_job))[0] == "succeeded"
    return vm_id


async def test_a_data_volume_lives_through_every_operation_and_its_books_stay_true(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "holder")
        volume_id = await create_volume(harness, zone, "data-1")
        # Allocated lazily: no disk anywhere until it is first attached.
        assert volume(cloud, volume_id).state is VolumeState.ALLOCATED
        assert volume_problems(cloud, zone, harness, volume_id) == []

        job_id, status, value = await run_volume_job(
            harness, zone, volume_id, V.ATTACH, vm_id=vm_id
        )
        assert status == "succeeded", value
        vol = volume(cloud, volume_id)
        root = cloud.load(Volume, cloud.load(VirtualMachine, vm_id).root_volume_id)
        assert (vol.state, vol.vm_id, vol.device_id) == (VolumeState.READY, vm_id, 1)
        assert vol.pool_id == root.pool_id  # made next to the root disk
        assert plugged_into(harness, volume_id) == [str(vm_id)]
        assert job_of(cloud, job_id).resource_type == "Volume"
        assert volume_problems(cloud, zone, harness, volume_id) == []

        # Grow while attached to the running VM (through the VM's queue).
        _, status, value = await run_volume_job(
            harness, zone, volume_id, V.RESIZE, size_bytes=8 * GIB
        )
        assert status == "succeeded", value
        assert volume(cloud, volume_id).size_bytes == 8 * GIB
        assert volume_problems(cloud, zone, harness, volume_id) == []

        # Shrinking without the flag: refused at run time with 431, nothing changed.
        job_id, status, _ = await run_volume_job(
            harness, zone, volume_id, V.RESIZE, size_bytes=2 * GIB
        )
        assert status == "ended"
        assert job_of(cloud, job_id).error_code == 431
        assert "shrink_ok" in (job_of(cloud, job_id).error_text or "")
        assert volume(cloud, volume_id).size_bytes == 8 * GIB

        _, status, value = await run_volume_job(harness, zone, volume_id, V.DETACH)
        assert status == "succeeded", value
        assert volume(cloud, volume_id).vm_id is None
        assert plugged_into(harness, volume_id) == []
        assert devices_of(cloud, vm_id) == {}
        assert volume_problems(cloud, zone, harness, volume_id) == []

        # Detached: its own queue. Move it to the other cluster's pool.
        source = volume(cloud, volume_id).pool_id
        target = next(p for p in zone.pool_ids if p != source)
        _, status, value = await run_volume_job(harness, zone, volume_id, V.MIGRATE, pool_id=target)
        assert status == "succeeded", value
        assert volume(cloud, volume_id).pool_id == target
        assert volume_problems(cloud, zone, harness, volume_id) == []

        job_id, status, value = await run_volume_job(harness, zone, volume_id, V.DELETE)
        assert status == "succeeded", value
        assert volume(cloud, volume_id).state is VolumeState.EXPUNGED
        assert volume_problems(cloud, zone, harness, volume_id) == []
        # Its queue ends once the volume is gone.
        await temporal_client.get_workflow_handle(volume_queue_id(volume_id)).result()
        assert problems_of(cloud, zone, harness, vm_id) == []
    names = event_names(cloud, volume_id)
    for expected in ("Volume.Attached", "Volume.Resized", "Volume.Detached", "Volume.Migrated"):
        assert expected in names
    assert names[-1] == "Volume.Expunged"


#: Every step of each operation that changes the world, in the order its workflow runs them,
#: with the operations that bring a fresh data volume to where the operation starts.
STEPS: dict[VolumeOperation, tuple[list[VolumeOperation], list[str]]] = {
    V.ATTACH: (
        [],
        [
            "volume.begin_attach",
            "hypervisor.create_volume",
            "hypervisor.attach_volume",
            "volume.complete_attach",
        ],
    ),
    V.DETACH: (
        [V.ATTACH],
        ["volume.begin_detach", "hypervisor.detach_volume", "volume.complete_detach"],
    ),
    V.RESIZE: (
        [V.ATTACH],
        ["volume.begin_resize", "hypervisor.resize_volume", "volume.complete_resize"],
    ),
    V.MIGRATE: (
        [V.ATTACH, V.DETACH],
        ["volume.begin_migrate", "hypervisor.copy_volume", "volume.complete_migrate"],
    ),
    V.DELETE: (
        [V.ATTACH, V.DETACH],
        ["volume.begin_delete", "hypervisor.delete_volume", "volume.finish_delete"],
    ),
}
CASES = [(op, step) for op, (_, steps) in STEPS.items() for step in steps]


def options_for(op: VolumeOperation, cloud: Cloud, zone: Any, vm_id: Any, volume_id: Any) -> Any:
    if op is V.ATTACH:
        return {"vm_id": vm_id}
    if op is V.RESIZE:
        return {"size_bytes": volume(cloud, volume_id).size_bytes + GIB}
    if op is V.MIGRATE:
        return {"pool_id": next(p for p in zone.pool_ids if p != volume(cloud, volume_id).pool_id)}
    return {}


@pytest.mark.parametrize(("operation", "step"), CASES, ids=[f"{o.value}-{s}" for o, s in CASES])
async def test_a_failure_at_each_step_unwinds_without_leaks(
    temporal_client: Client, cloud: Cloud, operation: VolumeOperation, step: str
) -> None:
    setup, _ = STEPS[operation]
    zone = seed_zone(cloud)
    around = fail_in(operation.job_type, step, once=operation is V.DELETE)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "doomed")
        volume_id = await create_volume(harness, zone)
        for op in setup:
            kw = options_for(op, cloud, zone, vm_id, volume_id)
            assert (await run_volume_job(harness, zone, volume_id, op, **kw))[1] == "succeeded"
        before = volume(cloud, volume_id)
        state, vm_before, size_before = before.state, before.vm_id, before.size_bytes
        plugged_before = plugged_into(harness, volume_id)
        kw = options_for(operation, cloud, zone, vm_id, volume_id)
        job_id, status, _ = await run_volume_job(harness, zone, volume_id, operation, **kw)
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 530
        assert "injected failure" in (job.error_text or "")
        after = volume(cloud, volume_id)
        if operation is V.DELETE and step != "volume.begin_delete":
            # Past its point of no return: the volume stays Expunging; deleting again ends it.
            assert after.state is VolumeState.EXPUNGING
            again = await run_volume_job(harness, zone, volume_id, V.DELETE)
            assert again[1] == "succeeded", again[2]
            assert volume(cloud, volume_id).state is VolumeState.EXPUNGED
        elif operation is V.RESIZE and step == "volume.complete_resize":
            # The disk was grown (never shrunk back): the books follow the disk.
            assert (after.state, after.size_bytes) == (VolumeState.READY, size_before + GIB)
        else:
            assert (after.state, after.vm_id, after.size_bytes) == (state, vm_before, size_before)
            assert plugged_into(harness, volume_id) == plugged_before
        assert volume_problems(cloud, zone, harness, volume_id) == []
        assert problems_of(cloud, zone, harness, vm_id) == []


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "twice")
        volume_id = await create_volume(harness, zone)
        for op in (V.ATTACH, V.RESIZE, V.DETACH, V.MIGRATE, V.DELETE):
            kw = options_for(op, cloud, zone, vm_id, volume_id)
            job_id, status, value = await run_volume_job(harness, zone, volume_id, op, **kw)
            assert status == "succeeded", (op, value)
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
            assert volume_problems(cloud, zone, harness, volume_id) == [], op
    names = Counter(event_names(cloud, volume_id))
    assert names == {
        "Volume.Allocated": 1,
        # Create, Attach, Resize, Migration, Destroy and Expunging requested: once each.
        "Volume.Transitioned": 6,
        "Volume.Created": 1,
        "Volume.HypervisorRecorded": 1,
        "Volume.Attached": 1,
        "Volume.Resized": 1,
        "Volume.Detached": 1,
        "Volume.Migrated": 1,
        "Volume.Expunged": 1,
    }
    allocated = Counter(
        type(e).__qualname__
        for pool_id in zone.pool_ids
        for e in cloud.events.get(pool_id)
        if getattr(e, "volume_id", None) == volume_id
    )
    # made; resized (release + allocate); migrated (target, source released); deleted.
    assert allocated == {
        "PrimaryStorage.CapacityAllocated": 3,
        "PrimaryStorage.CapacityReleased": 3,
    }


async def test_a_destroyed_vms_data_volume_stays_attached_and_survives_its_expunge(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "short-lived")
        volume_id = await create_volume(harness, zone)
        job = await run_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
        assert job[1] == "succeeded", job[2]
        destroyed = await submit_vm_job(harness, zone, vm_id, VmOperation.DESTROY)
        assert (await outcome(temporal_client, destroyed.job_id))[0] == "succeeded"
        # Destroyed: the data volume stays attached (the VM can still be recovered).
        assert volume(cloud, volume_id).vm_id == vm_id

        # Attaching another volume to the destroyed VM fails at run time with 431.
        other = await create_volume(harness, zone, "other")
        job_id, status, _ = await run_volume_job(harness, zone, other, V.ATTACH, vm_id=vm_id)
        assert status == "ended" and job_of(cloud, job_id).error_code == 431
        assert "Destroyed" in (job_of(cloud, job_id).error_text or "")
        assert volume(cloud, other).state is VolumeState.ALLOCATED

        expunged = await submit_vm_job(harness, zone, vm_id, VmOperation.EXPUNGE)
        assert (await outcome(temporal_client, expunged.job_id))[0] == "succeeded"
        # The VM's queue detaches its data volumes before it ends: they survive, detached.
        await temporal_client.get_workflow_handle(vm_queue_id(vm_id)).result()
        survivor = volume(cloud, volume_id)
        assert (survivor.state, survivor.vm_id) == (VolumeState.READY, None)
        assert volume_problems(cloud, zone, harness, volume_id) == []
        assert problems_of(cloud, zone, harness, vm_id) == []
        # And it can be deleted now, through its own queue.
        assert (await run_volume_job(harness, zone, volume_id, V.DELETE))[1] == "succeeded"
        assert volume_problems(cloud, zone, harness, volume_id) == []


async def test_volume_jobs_queue_join_cancel_and_refuse_cancel_past_no_return(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "cancels")
        volume_id = await create_volume(harness, zone)
        harness.faults.append(
            {"operation": "attach_volume", "action": "delay", "delay_seconds": 30, "host_id": None}
        )
        # The running attach stops at its hypervisor step and unwinds: no disk, no device.
        attach = await submit_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
        await step_reached(temporal_client, attach.job_id, "plugging in")
        assert await cancel_job(temporal_client, cloud, attach.job_id, "test") == "running"
        assert (await outcome(temporal_client, attach.job_id))[0] == "ended"
        harness.faults.clear()
        assert job_of(cloud, attach.job_id).status is JobStatus.CANCELLED
        assert volume(cloud, volume_id).state is VolumeState.ALLOCATED
        assert devices_of(cloud, vm_id) == {}
        assert volume_problems(cloud, zone, harness, volume_id) == []

        attached = await run_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
        assert attached[1] == "succeeded", attached[2]
        harness.faults.append(
            {"operation": "resize_volume", "action": "delay", "delay_seconds": 6, "host_id": None}
        )
        # Attached: its jobs queue in its VM's queue; a repeat of the last one joins it.
        resize = await submit_volume_job(harness, zone, volume_id, V.RESIZE, size_bytes=9 * GIB)
        queued = await submit_volume_job(harness, zone, volume_id, V.DETACH)
        again = await submit_volume_job(harness, zone, volume_id, V.DETACH)
        assert again.job_id != queued.job_id
        queue = temporal_client.get_workflow_handle(vm_queue_id(vm_id))
        expected = [str(resize.job_id), str(queued.job_id)]
        await wait_until(
            lambda: queue.query("jobs"),
            lambda jobs: [str(j["job_id"]) for j in jobs] == expected,
            what="the resize running and the detach queued",
        )
        await started(temporal_client, queued.job_id)
        assert await cancel_job(temporal_client, cloud, queued.job_id, "test") == "queued"
        assert (await outcome(temporal_client, queued.job_id))[0] == "ended"
        assert job_of(cloud, queued.job_id).status is JobStatus.CANCELLED
        # The repeat joined the queued detach, so it ends as that one did.
        assert (await outcome(temporal_client, again.job_id, cloud=cloud))[0] == "ended"
        assert job_of(cloud, again.job_id).status is JobStatus.CANCELLED

        # The resize is past its point of no return once the disk is being grown.
        resizing = await step_reached(temporal_client, resize.job_id, "resizing the disk")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await resizing.execute_update("cancel", "test")
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and "point of no return" in cause.message
        assert (await outcome(temporal_client, resize.job_id))[0] == "succeeded"
        harness.faults.clear()
        vol = volume(cloud, volume_id)
        assert (vol.size_bytes, vol.vm_id) == (9 * GIB, vm_id)
        assert volume_problems(cloud, zone, harness, volume_id) == []


async def test_attach_checks_hypervisor_and_reach_at_run_time_and_a_stopped_vm_gets_the_disk(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "picky")
        stop = await submit_vm_job(harness, zone, vm_id, VmOperation.STOP)
        assert (await outcome(temporal_client, stop.job_id))[0] == "succeeded"

        # A stopped VM is defined on no hypervisor: the disk is made, plugged in nowhere.
        volume_id = await create_volume(harness, zone)
        job = await run_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
        assert job[1] == "succeeded", job[2]
        root = cloud.load(Volume, cloud.load(VirtualMachine, vm_id).root_volume_id)
        vol = volume(cloud, volume_id)
        assert (vol.state, vol.vm_id, vol.pool_id) == (VolumeState.READY, vm_id, root.pool_id)
        assert vol.hypervisor == "Simulator"
        assert plugged_into(harness, volume_id) == []
        assert volume_problems(cloud, zone, harness, volume_id) == []
        assert (await run_volume_job(harness, zone, volume_id, V.DETACH))[1] == "succeeded"

        # On a pool the VM's cluster does not reach: 431 at run time, nothing changed.
        far = next(p for p in zone.pool_ids if p != root.pool_id)
        assert (await run_volume_job(harness, zone, volume_id, V.MIGRATE, pool_id=far))[1] == (
            "succeeded"
        )
        job_id, status, _ = await run_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
        assert status == "ended" and job_of(cloud, job_id).error_code == 431
        assert "does not reach" in (job_of(cloud, job_id).error_text or "")
        assert volume_problems(cloud, zone, harness, volume_id) == []

        # A disk made for another hypervisor: 431 at run time.
        kvm_disk = await create_volume(harness, zone, "kvm-disk")
        other = await running_vm(harness, zone, "other")
        attached = await run_volume_job(harness, zone, kvm_disk, V.ATTACH, vm_id=other)
        assert attached[1] == "succeeded", attached[2]
        assert (await run_volume_job(harness, zone, kvm_disk, V.DETACH))[1] == "succeeded"
        # As if the disk had been made by a KVM cluster (the demo zone has only simulators).
        cloud.decide(lambda d: d.get(Volume, kvm_disk).record_hypervisor("KVM", "test/kvm"))
        job_id, status, _ = await run_volume_job(harness, zone, kvm_disk, V.ATTACH, vm_id=other)
        assert status == "ended" and job_of(cloud, job_id).error_code == 431
        assert "created for KVM" in (job_of(cloud, job_id).error_text or "")
        assert volume(cloud, kvm_disk).vm_id is None


async def test_a_stopped_vm_started_again_comes_back_with_its_data_disks(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "keeper")
        volume_id = await create_volume(harness, zone, "data-kept")
        attached = await run_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
        assert attached[1] == "succeeded", attached[2]
        for operation in (VmOperation.STOP, VmOperation.START):
            job = await submit_vm_job(harness, zone, vm_id, operation)
            assert (await outcome(temporal_client, job.job_id))[0] == "succeeded"

        vm = cloud.load(VirtualMachine, vm_id)
        host = next(h for h in zone.host_ids if str(h) == str(vm.host_id))
        host_ref = HostRef(str(host), "h", "a", "c", "Simulator")
        on_hypervisor = harness.driver.list_volume_attachments(host_ref, str(vm_id))
        assert str(volume_id) in {a.volume_id for a in on_hypervisor}
        assert volume_problems(cloud, zone, harness, volume_id) == []
