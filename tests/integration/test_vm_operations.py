"""VM operations (start, stop, reboot, destroy, recover, expunge) as jobs in the VM's queue,
against a real PostgreSQL and a real Temporal dev server."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from typing import Any

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from api.job_cancellation import cancel as cancel_job
from domain.cloud import Cloud
from domain.job import JobStatus
from domain.job_requests import VmOperation, vm_queue_id
from domain.virtual_machine import VirtualMachine, VmState
from tests.integration.vm_jobs import deploy, fail_in, job_of, problems_of, submit
from tests.support import (
    crash_after_first,
    event_names,
    outcome,
    queue_drained,
    queue_settled_to,
    run_twice,
    running_worker,
    seed_zone,
    started,
    step_reached,
    wait_until,
)

S = VmOperation


def vm(cloud: Cloud, vm_id: uuid.UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, vm_id)


async def run_job(harness: Any, zone: Any, vm_id: uuid.UUID, op: VmOperation, **kw: Any) -> Any:
    accepted = await submit(harness, zone, vm_id, op, **kw)
    status, value = await outcome(harness.client, accepted.job_id)
    return accepted.job_id, status, value


async def test_a_vm_lives_through_every_operation_and_its_books_stay_true(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "life")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        first_host = vm(cloud, vm_id).host_id

        for op, expected in (
            (S.STOP, VmState.STOPPED),
            (S.START, VmState.RUNNING),
            (S.REBOOT, VmState.RUNNING),
            (S.DESTROY, VmState.DESTROYED),
            (S.RECOVER, VmState.STOPPED),
            (S.START, VmState.RUNNING),
        ):
            job_id, status, value = await run_job(harness, zone, vm_id, op)
            assert status == "succeeded", (op, value)
            assert vm(cloud, vm_id).state is expected, op
            assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
            assert job_of(cloud, job_id).job_type == op.job_type
            assert problems_of(cloud, zone, harness, vm_id) == [], op
        assert vm(cloud, vm_id).host_id == first_host  # start goes back to the last host

        job_id, status, value = await run_job(harness, zone, vm_id, S.DESTROY, expunge=True)
        assert status == "succeeded", value
        assert value["removed"] is True
        assert vm(cloud, vm_id).is_removed
        assert problems_of(cloud, zone, harness, vm_id) == []
        names = event_names(cloud, vm_id)
        assert names[-1] == "VirtualMachine.Removed" and "VirtualMachine.Rebooted" in names
        # Its queue ends once the VM is gone.
        await temporal_client.get_workflow_handle(vm_queue_id(vm_id)).result()


#: Every step of each operation that changes the world, in the order its workflow runs them,
#: with the operations that bring a freshly deployed VM to where the operation starts.
STEPS: dict[VmOperation, tuple[list[VmOperation], VmState, list[str]]] = {
    S.START: (
        [S.STOP],
        VmState.STOPPED,
        [
            "vm.begin",
            "vm.plan_start",
            "vm.reserve_capacity",
            "vm.prepare_launch",
            "hypervisor.launch_vm",
            "vm.complete_start",
        ],
    ),
    S.STOP: (
        [],
        VmState.RUNNING,
        ["vm.begin", "hypervisor.stop_vm", "hypervisor.destroy_vm", "vm.complete_stop"],
    ),
    S.REBOOT: ([], VmState.RUNNING, ["vm.begin", "hypervisor.reboot_vm", "vm.complete_reboot"]),
    S.DESTROY: (
        [],
        VmState.RUNNING,
        ["vm.begin", "hypervisor.stop_vm", "hypervisor.destroy_vm", "vm.complete_destroy"],
    ),
    S.RECOVER: ([S.DESTROY], VmState.DESTROYED, ["vm.begin", "vm.recover"]),
    S.EXPUNGE: (
        [S.DESTROY],
        VmState.DESTROYED,
        [
            "vm.begin",
            "vm.begin_expunge",
            "hypervisor.destroy_vm",
            "hypervisor.delete_volume",
            "vm.finish_expunge",
        ],
    ),
}
CASES = [(op, step) for op, (_, _, steps) in STEPS.items() for step in steps]


@pytest.mark.parametrize(("operation", "step"), CASES, ids=[f"{o.value}-{s}" for o, s in CASES])
async def test_a_failure_at_each_step_unwinds_without_leaks(
    temporal_client: Client, cloud: Cloud, operation: VmOperation, step: str
) -> None:
    setup, before, _ = STEPS[operation]
    zone = seed_zone(cloud)
    around = fail_in(operation.job_type, step, once=operation is S.EXPUNGE)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "doomed")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        for op in setup:
            assert (await run_job(harness, zone, vm_id, op))[1] == "succeeded"
        job_id, status, _ = await run_job(harness, zone, vm_id, operation)
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 530
        assert "injected failure" in (job.error_text or "")
        if operation is S.EXPUNGE and step != "vm.begin":
            # Past its point of no return: the VM stays Expunging and its queue tries again.
            await wait_until(lambda: vm(cloud, vm_id).is_removed, what="the VM removed")
        else:
            assert vm(cloud, vm_id).state is before
        assert problems_of(cloud, zone, harness, vm_id) == []


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "twice")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        for op in (S.STOP, S.START, S.REBOOT, S.DESTROY, S.RECOVER, S.EXPUNGE):
            if op is S.EXPUNGE:
                assert (await run_job(harness, zone, vm_id, S.DESTROY))[1] == "succeeded"
            job_id, status, value = await run_job(harness, zone, vm_id, op)
            assert status == "succeeded", (op, value)
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
        assert problems_of(cloud, zone, harness, vm_id) == []
    transitions = [
        (e.vm_event, e.new_state)
        for e in cloud.events.get(vm_id)
        if isinstance(e, VirtualMachine.Transitioned)
    ]
    reserved = Counter(
        type(e).__qualname__
        for host_id in zone.host_ids
        for e in cloud.events.get(host_id)
        if getattr(e, "vm_id", None) == vm_id
    )
    # deploy, start: reserved twice; stop, destroy (of a running VM), expunge: released.
    assert reserved["Host.CapacityReserved"] == 2
    assert reserved["Host.CapacityReleased"] == 2
    assert Counter(t[0] for t in transitions) == {
        "StartRequested": 2,
        "StopRequested": 2,
        "OperationSucceeded": 4,
        "DestroyRequested": 2,
        "RecoveryRequested": 1,
        "ExpungeOperation": 1,
    }


async def test_a_queued_job_cancelled_leaves_the_queue_and_a_running_start_unwinds(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "cancel-me")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        assert (await run_job(harness, zone, vm_id, S.STOP))[1] == "succeeded"
        harness.faults.append(
            # Long enough that the cancel lands mid-call on a busy machine; it cuts it short.
            {"operation": "start_vm", "action": "delay", "delay_seconds": 30, "host_id": None}
        )
        start = await submit(harness, zone, vm_id, S.START)
        queued = await submit(harness, zone, vm_id, S.REBOOT)
        expected = [start.job_id, queued.job_id]
        assert await queue_settled_to(temporal_client, vm_id, expected) == [
            str(j) for j in expected
        ]

        # The queued job leaves the queue at once, without running.
        await started(temporal_client, queued.job_id)
        assert await cancel_job(temporal_client, cloud, queued.job_id, "test") == "queued"
        assert (await outcome(temporal_client, queued.job_id))[0] == "ended"
        assert job_of(cloud, queued.job_id).status is JobStatus.CANCELLED

        # The running start stops at its hypervisor step and unwinds: Stopped, nothing held.
        await wait_until(
            lambda: "starting" in (job_of_or_none(cloud, start.job_id) or ""),
            what="the start on the hypervisor",
        )
        await started(temporal_client, start.job_id)
        assert await cancel_job(temporal_client, cloud, start.job_id, "test") == "running"
        assert (await outcome(temporal_client, start.job_id))[0] == "ended"
        harness.faults.clear()
        assert job_of(cloud, start.job_id).status is JobStatus.CANCELLED
        assert vm(cloud, vm_id).state is VmState.STOPPED
        assert problems_of(cloud, zone, harness, vm_id) == []
        assert await queue_drained(temporal_client, vm_id) == []

        # Past its point of no return (a reboot once the hypervisor is asked), cancel is refused.
        assert (await run_job(harness, zone, vm_id, S.START))[1] == "succeeded"
        harness.faults.append(
            {"operation": "reboot_vm", "action": "delay", "delay_seconds": 5, "host_id": None}
        )
        reboot = await submit(harness, zone, vm_id, S.REBOOT)
        rebooting = await step_reached(temporal_client, reboot.job_id, "rebooting", timeout=20)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await rebooting.execute_update("cancel", "test")
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and "point of no return" in cause.message
        assert (await outcome(temporal_client, reboot.job_id))[0] == "succeeded"
        harness.faults.clear()


def job_of_or_none(cloud: Cloud, job_id: uuid.UUID) -> str | None:
    from domain.job import Job

    job = cloud.find(Job, job_id)
    return job.step if job is not None else None


async def test_identical_pending_requests_join_and_operations_run_in_submission_order(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        jobs = [await deploy(harness, zone, f"order-{n}") for n in range(2)]
        for deploy_job, _ in jobs:
            assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        (_, vm_id), (_, other_vm) = jobs
        harness.faults.append(
            {"operation": "*", "action": "delay", "delay_seconds": 0.2, "host_id": None}
        )
        mixed = [S.REBOOT, S.STOP, S.START, S.REBOOT, S.STOP, S.START]
        mixed += [S.REBOOT, S.STOP, S.START, S.REBOOT]
        # Submitted back to back: all are queued long before the first one ends.
        theirs = await submit(harness, zone, other_vm, S.REBOOT)
        ours = [await submit(harness, zone, vm_id, op) for op in mixed]
        # A repeat of the queue's last request joins it instead of queuing a duplicate: it
        # has a job id of its own (the API answers before the queue runs), never runs, and
        # ends as the job it joined ends.
        again = await submit(harness, zone, vm_id, mixed[-1])
        assert again.job_id != ours[-1].job_id
        queue = temporal_client.get_workflow_handle(vm_queue_id(vm_id))
        ids = [str(a.job_id) for a in ours]
        queued = await wait_until(
            lambda: queue.query("jobs"),
            lambda jobs: len(jobs) >= 5 and str(jobs[-1]["job_id"]) == ids[-1],
            what="the queue listing every submitted job",
        )
        # The queue shows the running job and the queued ones, in submission order.
        assert [str(j["job_id"]) for j in queued] == ids[-len(queued) :]
        assert [j["status"] for j in queued][1:] == ["queued"] * (len(queued) - 1)
        results = await asyncio.gather(*(outcome(temporal_client, a.job_id) for a in ours))
        other = await outcome(temporal_client, theirs.job_id)
        joined = await outcome(temporal_client, again.job_id, cloud=cloud)
        harness.faults.clear()
    assert joined[0] == "succeeded", joined
    assert joined[1]["joined_job_id"] == str(ours[-1].job_id)
    spans = [(job_of(cloud, a.job_id).began_at, job_of(cloud, a.job_id).modified_on) for a in ours]
    for (_, previous_end), (start, _) in itertools.pairwise(spans):
        assert start >= previous_end  # one after another, never overlapping
    assert all(status == "succeeded" for status, _ in results), results
    # The other VM's reboot ran while this VM's jobs did, not after them.
    assert other[0] == "succeeded"
    other_job = job_of(cloud, theirs.job_id)
    assert other_job.created_on < spans[-1][0]
    assert problems_of(cloud, zone, harness, vm_id) == []
