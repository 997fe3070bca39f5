"""A job terminated from outside its VM's queue (an operator's `temporal workflow terminate`)
does not block the queue: the queue records the job failed (530, "terminated") and runs the next.

Without this, a terminated child never runs its own failure step and the queue would wait for it
for ever, which is CloudStack's "a stuck job blocks every later operation on the VM".
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.client import Client

from domain.cloud import Cloud
from domain.job import JobStatus
from domain.job_requests import VmOperation, vm_queue_id
from domain.virtual_machine import VirtualMachine, VmState
from tests.integration.vm_jobs import deploy, job_of, outcome, problems_of, submit
from tests.support import running_worker, seed_zone


async def _step_of(client: Client, job_id: uuid.UUID) -> str:
    step: str = await client.get_workflow_handle(str(job_id)).query("current_step")
    return step


async def _wait_for_step(client: Client, job_id: uuid.UUID, prefix: str) -> None:
    for _ in range(200):
        if (await _step_of(client, job_id)).startswith(prefix):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached step {prefix!r}")


async def _wait_for_queue(client: Client, vm_id: uuid.UUID, expected: list[str]) -> None:
    """The queue hears of a job's end a moment after the job's own result is readable."""
    for _ in range(100):
        if await _queued_ids(client, vm_id) == expected:
            return
        await asyncio.sleep(0.05)
    assert await _queued_ids(client, vm_id) == expected


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
        reboot = await submit(temporal_client, harness.task_queue, zone, vm_id, VmOperation.REBOOT)
        destroy = await submit(
            temporal_client, harness.task_queue, zone, vm_id, VmOperation.DESTROY
        )
        stop = await submit(temporal_client, harness.task_queue, zone, vm_id, VmOperation.STOP)
        await _wait_for_step(temporal_client, reboot.job_id, "rebooting")
        assert await _queued_ids(temporal_client, vm_id) == [
            str(reboot.job_id),
            str(destroy.job_id),
            str(stop.job_id),
        ]

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
