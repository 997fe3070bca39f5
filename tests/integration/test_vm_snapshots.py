"""VM snapshots (create, revert to, delete) as jobs in the VM's queue, against a real
PostgreSQL and a real Temporal dev server."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from temporalio.client import Client

from domain.cloud import Cloud
from domain.host import Host
from domain.job import JobStatus
from domain.job_requests import VmOperation
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_snapshot import IN_PROGRESS, VmSnapshot, VmSnapshotState, vm_snapshot_id_for
from tests.integration.vm_jobs import deploy, fail_in, job_of, problems_of, submit
from tests.support import (
    Harness,
    crash_after_first,
    event_names,
    outcome,
    run_twice,
    running_worker,
)
from tests.support import seed_zone as seed
from workers.demo_cloud import DemoCloud

S = VmOperation
SS = VmSnapshotState


def vm(cloud: Cloud, vm_id: uuid.UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, vm_id)


async def job(
    harness: Harness,
    zone: DemoCloud,
    vm_id: uuid.UUID,
    operation: VmOperation,
    **options: Any,
) -> tuple[uuid.UUID, str, Any]:
    job_id = uuid.uuid4()
    if operation is S.SNAPSHOT:
        options = {"snapshot_id": vm_snapshot_id_for(job_id), **options}
    accepted = await submit(harness, zone, vm_id, operation, job_id=job_id, **options)
    status, value = await outcome(harness.client, accepted.job_id)
    return accepted.job_id, status, value


async def snapshot(
    harness: Harness, zone: DemoCloud, vm_id: uuid.UUID, *, memory: bool
) -> uuid.UUID:
    job_id, status, value = await job(harness, zone, vm_id, S.SNAPSHOT, memory=memory)
    assert status == "succeeded", value
    return vm_snapshot_id_for(job_id)


def snapshot_problems(
    cloud: Cloud, harness: Harness, vm_id: uuid.UUID, made: Iterable[uuid.UUID]
) -> list[str]:
    """Where the VM's snapshots (`made`: every one its jobs may have made) and the
    hypervisor's disagree. Empty when consistent: none left in progress, a Ready one held by
    the hypervisor, a removed one not, and nothing on the hypervisor Stratus does not know."""
    on_hypervisor = {s.snapshot_id for s in harness.driver.snapshots_of(str(vm_id))}
    found: list[str] = []
    for snapshot_id in on_hypervisor | {str(m) for m in made}:
        recorded = cloud.find(VmSnapshot, uuid.UUID(snapshot_id))
        held = snapshot_id in on_hypervisor
        if recorded is None:
            if held:
                found.append(f"snapshot {snapshot_id} on the hypervisor is not recorded")
            continue
        if recorded.state in IN_PROGRESS:
            found.append(f"snapshot {snapshot_id} left in {recorded.state}")
        if recorded.state is SS.READY and not held:
            found.append(f"snapshot {snapshot_id} is Ready but not on the hypervisor")
        if recorded.state is SS.REMOVED and held:
            found.append(f"snapshot {snapshot_id} is Removed but still on the hypervisor")
    return found


async def running_vm(harness: Harness, zone: DemoCloud, name: str) -> uuid.UUID:
    deploy_job, vm_id = await deploy(harness, zone, name)
    assert (await outcome(harness.client, deploy_job))[0] == "succeeded"
    return vm_id


async def test_snapshots_are_made_reverted_to_and_deleted_with_the_vm_state_following(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "snapper")
        host = vm(cloud, vm_id).host_id
        with_memory = await snapshot(harness, zone, vm_id, memory=True)
        disks_only = await snapshot(harness, zone, vm_id, memory=False)
        made = (with_memory, disks_only)
        assert cloud.load(VmSnapshot, with_memory).memory is True
        assert cloud.load(VmSnapshot, disks_only).memory is False
        assert {cloud.load(VmSnapshot, i).state for i in made} == {SS.READY}
        assert snapshot_problems(cloud, harness, vm_id, made) == []

        # Back to the memory snapshot: still Running on its host.
        _, status, value = await job(
            harness, zone, vm_id, S.REVERT_TO_SNAPSHOT, snapshot_id=with_memory
        )
        assert status == "succeeded", value
        assert vm(cloud, vm_id).state is VmState.RUNNING and vm(cloud, vm_id).host_id == host

        # Back to the disk-only one: Stopped, its host's room given back, on no hypervisor.
        _, status, value = await job(
            harness, zone, vm_id, S.REVERT_TO_SNAPSHOT, snapshot_id=disks_only
        )
        assert status == "succeeded", value
        assert vm(cloud, vm_id).state is VmState.STOPPED
        assert cloud.load(Host, host).reservation_for(vm_id) is None  # type: ignore[arg-type]
        assert problems_of(cloud, zone, harness, vm_id) == []

        # A stopped VM cannot be snapshot (431, "must be Running"), but its snapshot deleted.
        refused_job, status, _ = await job(harness, zone, vm_id, S.SNAPSHOT, memory=False)
        assert status == "ended"
        refused = job_of(cloud, refused_job)
        assert refused.error_code == 431 and "must be Running" in (refused.error_text or "")
        _, status, value = await job(
            harness, zone, vm_id, S.DELETE_SNAPSHOT, snapshot_id=with_memory
        )
        assert status == "succeeded", value
        assert cloud.load(VmSnapshot, with_memory).state is SS.REMOVED

        # Started again; the other one deleted; a removed snapshot cannot be reverted to.
        assert (await job(harness, zone, vm_id, S.START))[1] == "succeeded"
        _, status, value = await job(
            harness, zone, vm_id, S.DELETE_SNAPSHOT, snapshot_id=disks_only
        )
        assert status == "succeeded", value
        again, status, _ = await job(
            harness, zone, vm_id, S.REVERT_TO_SNAPSHOT, snapshot_id=disks_only
        )
        assert status == "ended" and job_of(cloud, again).error_code == 431
        assert vm(cloud, vm_id).state is VmState.RUNNING
        assert harness.driver.snapshots_of(str(vm_id)) == []
        assert problems_of(cloud, zone, harness, vm_id) == []
        assert snapshot_problems(cloud, harness, vm_id, made) == []


#: Each snapshot operation's world-changing steps, in order, with the kind of snapshot it
#: starts from (None: no snapshot yet) and the state a failure leaves that snapshot in.
STEPS: dict[VmOperation, tuple[bool | None, list[str]]] = {
    S.SNAPSHOT: (
        None,
        ["vm.begin", "vm.begin_snapshot", "hypervisor.create_snapshot", "vm.complete_snapshot"],
    ),
    S.REVERT_TO_SNAPSHOT: (
        False,
        [
            "vm.begin",
            "vm.begin_revert",
            "hypervisor.revert_snapshot",
            "hypervisor.destroy_vm",
            "vm.complete_revert",
        ],
    ),
    S.DELETE_SNAPSHOT: (
        True,
        [
            "vm.begin",
            "vm.begin_delete_snapshot",
            "hypervisor.delete_snapshot",
            "vm.complete_delete_snapshot",
        ],
    ),
}
CASES = [(op, step) for op, (_, steps) in STEPS.items() for step in steps]


@pytest.mark.parametrize(("operation", "step"), CASES, ids=[f"{o.job_type}-{s}" for o, s in CASES])
async def test_a_failure_at_each_snapshot_step_unwinds_without_leaks(
    temporal_client: Client, cloud: Cloud, operation: VmOperation, step: str
) -> None:
    memory, _ = STEPS[operation]
    zone = seed(cloud)
    around = fail_in(operation.job_type, step, once=True)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "doomed")
        host = vm(cloud, vm_id).host_id
        existing = None if memory is None else await snapshot(harness, zone, vm_id, memory=memory)
        options: dict[str, Any] = {} if existing is None else {"snapshot_id": existing}
        job_id, status, _ = await job(harness, zone, vm_id, operation, **options)
        made = vm_snapshot_id_for(job_id) if existing is None else existing
        assert status == "ended"
        failed = job_of(cloud, job_id)
        assert failed.status is JobStatus.FAILED and failed.error_code == 530
        assert "injected failure" in (failed.error_text or "")
        assert "could not undo" not in (failed.error_text or "")
        # The VM runs on as before, its books and the hypervisor in agreement.
        assert vm(cloud, vm_id).state is VmState.RUNNING and vm(cloud, vm_id).host_id == host
        assert problems_of(cloud, zone, harness, vm_id) == []
        assert snapshot_problems(cloud, harness, vm_id, [made]) == []
        recorded = cloud.find(VmSnapshot, made)
        if operation is S.SNAPSHOT:  # never made (failed before the record) or Error
            assert recorded is None or recorded.state is SS.ERROR
            assert harness.driver.snapshots_of(str(vm_id)) == []
        elif operation is S.REVERT_TO_SNAPSHOT:
            assert recorded is not None and recorded.state is SS.READY
        else:  # CloudStack: a failed delete leaves it in Error (Ready if it never began)
            assert recorded is not None
            never_began = step in ("vm.begin", "vm.begin_delete_snapshot")
            assert recorded.state is (SS.READY if never_began else SS.ERROR)
            # ...from where it is deleted again, for good.
            _, status, value = await job(harness, zone, vm_id, S.DELETE_SNAPSHOT, snapshot_id=made)
            assert status == "succeeded", value
            assert cloud.load(VmSnapshot, made).state is SS.REMOVED
            assert snapshot_problems(cloud, harness, vm_id, [made]) == []


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_snapshot_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "twice")
        with_memory = await snapshot(harness, zone, vm_id, memory=True)
        disks_only = await snapshot(harness, zone, vm_id, memory=False)
        assert len(harness.driver.snapshots_of(str(vm_id))) == 2
        jobs = [
            (S.REVERT_TO_SNAPSHOT, {"snapshot_id": with_memory}, VmState.RUNNING),
            (S.REVERT_TO_SNAPSHOT, {"snapshot_id": disks_only}, VmState.STOPPED),
            (S.DELETE_SNAPSHOT, {"snapshot_id": with_memory}, VmState.STOPPED),
            (S.START, {}, VmState.RUNNING),
            (S.DELETE_SNAPSHOT, {"snapshot_id": disks_only}, VmState.RUNNING),
        ]
        for operation, options, state in jobs:
            job_id, status, value = await job(harness, zone, vm_id, operation, **options)
            assert status == "succeeded", (operation, value)
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
            assert vm(cloud, vm_id).state is state, operation
            assert problems_of(cloud, zone, harness, vm_id) == [], operation
        assert harness.driver.snapshots_of(str(vm_id)) == []
        assert snapshot_problems(cloud, harness, vm_id, (with_memory, disks_only)) == []
    for snapshot_id in (with_memory, disks_only):
        # Allocated; CreateRequested, Created (Ready); RevertRequested, OperationSucceeded;
        # ExpungeRequested, OperationSucceeded (Removed): each once.
        assert Counter(event_names(cloud, snapshot_id)) == {
            "VmSnapshot.Allocated": 1,
            "VmSnapshot.Transitioned": 5,
            "VmSnapshot.Created": 1,
        }
    transitions = Counter(
        e.vm_event for e in cloud.events.get(vm_id) if isinstance(e, VirtualMachine.Transitioned)
    )
    # The deployment's start, the disk-only revert's stop, the start after it.
    assert transitions == {
        "StartRequested": 2,
        "OperationSucceeded": 3,
        "StopRequested": 1,
    }
