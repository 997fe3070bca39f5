"""A job terminated from outside its VM's queue (an operator's `temporal workflow terminate`)
does not block the queue: the queue records the job failed (530, "terminated") and runs the next.

Without this, a terminated child never runs its own failure step and the queue would wait for it
for ever, which is CloudStack's "a stuck job blocks every later operation on the VM".
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client

from domain.cloud import Cloud
from domain.job import JobStatus
from domain.job_requests import VmOperation, vm_queue_id
from domain.virtual_machine import VirtualMachine, VmState
from tests.integration.vm_jobs import deploy, job_of, problems_of, submit
from tests.support import outcome, running_worker, seed_zone, step_reached, wait_until


async def _wait_for_queue(client: Client, vm_id: uuid.UUID, expected: list[str]) -> None:
    """The queue hears of a job's end (and of a submission) on its next workflow task."""
    await wait_until(
        lambda: _queued_ids(client, vm_id),
        lambda ids: ids == expected,
        what=f"the queue to list {expected}",
    )


async def _queued_ids(client: Client, vm_id: uuid.UUID) -> list[str]:
    jobs: list[dict[str, Any]] = await client.get_workflow_handle(vm_queue_id(vm_id)).query("jobs")
    return [str(j["job_id"]) for j in jobs]


async def test_terminated_queued_and_running_jobs_are_recorded_failed_and_the_next_job_runs(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "terminated")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        # The reboot holds the queue at its hypervisor step while the others wait behind it.
        harness.faults.append(
            {"operation": "reboot_vm", "action": "delay", "delay_seconds": 10, "host_id": None}
        )
        reboot = await submit(harness, zone, vm_id, VmOperation.REBOOT)
        destroy = await submit(harness, zone, vm_id, VmOperation.DESTROY)
        stop = await submit(harness, zone, vm_id, VmOperation.STOP)
        await step_reached(temporal_client, reboot.job_id, "rebooting")
        await _wait_for_queue(
            temporal_client, vm_id, [str(reboot.job_id), str(destroy.job_id), str(stop.job_id)]
        )

        # A queued job terminated: it leaves the queue, recorded failed, and never ran.
        await temporal_client.get_workflow_handle(str(destroy.job_id)).terminate("operator")
        await _wait_for_queue(temporal_client, vm_id, [str(reboot.job_id), str(stop.job_id)])

        # The running job terminated mid-step: the queue moves on to the stop, which runs.
        await temporal_client.get_workflow_handle(str(reboot.job_id)).terminate("operator")
        status, value = await outcome(temporal_client, stop.job_id)
        assert status == "succeeded", value
        harness.faults.clear()
        await _wait_for_queue(temporal_client, vm_id, [])
    # The worker has finished the terminated reboot's activity by now: the books are final.
    for terminated in (destroy.job_id, reboot.job_id):
        job = job_of(cloud, terminated)
        assert (job.status, job.error_code, job.error_text) == (
            JobStatus.FAILED,
            530,
            "terminated",
        )
    assert job_of(cloud, stop.job_id).status is JobStatus.SUCCEEDED
    assert cloud.load(VirtualMachine, vm_id).state is VmState.STOPPED
    assert problems_of(cloud, zone, harness, vm_id) == []
