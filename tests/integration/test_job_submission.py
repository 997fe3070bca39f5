"""Submitting a job never waits for a worker (ARCHITECTURE rule 12): the API's submission is a
signal-with-start the Temporal server records by itself, and the job's record in the event store.
Proven with no worker at all on the task queue, where a submission that needed one would hang:
the jobs are answered, recorded queued, cancellable, and run (or not) once a worker comes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from api.errors import ApiError
from api.job_cancellation import cancel
from api.job_submission import enqueue_job
from domain.cloud import Cloud
from domain.deployment import virtual_machine_id_for
from domain.job import Job, JobStatus
from domain.job_requests import (
    DeploymentOrder,
    DeployVirtualMachineRequest,
    JobQueue,
    VmJobSubmission,
)
from domain.virtual_machine import VirtualMachine, VmState
from tests.support import outcome, running_worker, seed_zone
from workers.demo_cloud import DemoCloud

#: Far longer than a submission takes, far shorter than "for ever": with no worker polling, a
#: submission that waited for one would never return.
ANSWERED_WITHIN = 30.0


def deployment(zone: DemoCloud, name: str, *, fingerprint: str = "") -> VmJobSubmission:
    job_id = uuid.uuid4()
    order = DeploymentOrder(
        account_id=zone.admin_account_id,
        zone_id=zone.zone_id,
        service_offering_id=zone.small_offering_id,
        template_id=zone.template_id,
        network_id=zone.network_id,
        name=name,
        display_name=name,
    )
    return VmJobSubmission(
        job_id=job_id,
        job_type="DeployVirtualMachine",
        account_id=zone.admin_account_id,
        zone_id=zone.zone_id,
        summary=f"deploy {name}",
        fingerprint=fingerprint or name,
        deployment=DeployVirtualMachineRequest(
            job_id=job_id, order=order, summary=f"deploy {name}", waits_for_turn=True
        ),
    )


async def submit(
    client: Client, cloud: Cloud, task_queue: str, zone: DemoCloud, submission: VmJobSubmission
) -> uuid.UUID:
    queue = JobQueue.of_vm(
        virtual_machine_id_for(submission.job_id), zone.admin_account_id, zone.zone_id
    )
    return await asyncio.wait_for(
        enqueue_job(client, task_queue, cloud, queue, submission), ANSWERED_WITHIN
    )


async def test_jobs_submitted_while_no_worker_runs_are_answered_queued_cancellable_and_run_later(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    task_queue = f"no-worker-{uuid.uuid4().hex[:8]}"
    withdrawn = deployment(zone, "withdrawn")
    kept = deployment(zone, "kept")

    # No worker polls this task queue: both submissions are still answered, and recorded.
    for submission in (withdrawn, kept):
        assert await submit(temporal_client, cloud, task_queue, zone, submission) == (
            submission.job_id
        )
        job = cloud.load(Job, submission.job_id)
        assert (job.status, job.queue_id) == (
            JobStatus.QUEUED,
            f"vm/{virtual_machine_id_for(submission.job_id)}",
        )
    # Its queue has not even started its workflow: the cancel goes through the queue.
    assert await cancel(temporal_client, cloud, withdrawn.job_id, "changed my mind") == "queued"

    async with running_worker(temporal_client, cloud, task_queue=task_queue):
        ended, _ = await outcome(temporal_client, withdrawn.job_id, cloud=cloud)
        deployed, result = await outcome(temporal_client, kept.job_id, cloud=cloud)

    assert ended == "ended" and cloud.load(Job, withdrawn.job_id).status is JobStatus.CANCELLED
    # Cancelled before its turn, it never ran: no VM was ever registered.
    assert cloud.find(VirtualMachine, virtual_machine_id_for(withdrawn.job_id)) is None
    described = await temporal_client.get_workflow_handle(str(withdrawn.job_id)).describe()
    assert described.status is WorkflowExecutionStatus.CANCELED
    assert deployed == "succeeded", result
    vm = cloud.load(VirtualMachine, virtual_machine_id_for(kept.job_id))
    assert vm.state is VmState.RUNNING


async def test_an_idempotent_resubmission_is_the_same_job_and_another_request_is_refused(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    task_queue = f"no-worker-{uuid.uuid4().hex[:8]}"
    first = deployment(zone, "once", fingerprint="request-a")
    again = first.model_copy()
    other = first.model_copy(update={"fingerprint": "request-b"})

    assert await submit(temporal_client, cloud, task_queue, zone, first) == first.job_id
    assert await submit(temporal_client, cloud, task_queue, zone, again) == first.job_id
    with pytest.raises(ApiError) as refused:
        await submit(temporal_client, cloud, task_queue, zone, other)
    assert refused.value.status == 409
    assert cloud.load(Job, first.job_id).fingerprint == "request-a"
    await cancel(temporal_client, cloud, first.job_id, "test over")
