"""The expunge delay (CloudStack's `expunge.delay`, a day) as the VM's queue keeps it: a durable
timer, proved with Temporal's per-workflow time skipping instead of a day's wait or a shortened
delay, so the test runs the production delay of 86400 s through the real queue and jobs.

The dev server is started with `frontend.WorkflowTimeSkippingEnabled=true`; the environment's
client stamps `TimeSkippingConfig(enabled=False)` on the queue it starts, so its clock is real
time until the test calls `env.fast_forward(queue, duration)`, which lets the server jump that
workflow's virtual clock over idle time (timers fire at once) until `duration` has passed, then
turns skipping off again. Job workflows started by the queue inherit its config.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from api.job_submission import enqueue_job
from domain.cloud import Cloud
from domain.deployment import virtual_machine_id_for
from domain.ids import derived_id
from domain.job import JobStatus
from domain.job_requests import (
    EXPUNGE_DELAY_SECONDS,
    DeploymentOrder,
    DeployVirtualMachineRequest,
    JobAttribute,
    JobQueue,
    VmJobSubmission,
    VmOperation,
    vm_queue_id,
)
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_requests import DestroyVmRequest, vm_operation_request
from domain.volume import Volume, VolumeState
from tests.conftest import temporal_binary
from tests.integration.vm_jobs import job_of, problems_of
from tests.support import Harness, outcome, running_worker, seed_zone, wait_until
from workers.demo_cloud import DemoCloud

PAST_THE_DELAY = timedelta(seconds=EXPUNGE_DELAY_SECONDS, minutes=5)


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping_v2(
        ts_config=TimeSkippingConfig(enabled=False),
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
    )
    assert env.supports_time_skipping_v2
    yield env
    await env.shutdown()


async def _submit(client: Client, harness: Harness, zone: DemoCloud, submission: Any) -> UUID:
    """Submit to the VM's queue as the API does, with the environment's client (its starts
    carry the time-skipping config) and no execution timeout: the queue must outlive a skipped
    day whichever clock a timeout is measured on."""
    vm_id = (
        virtual_machine_id_for(submission.job_id)
        if submission.deployment is not None
        else submission.operation.vm_id
    )
    queue = JobQueue.of_vm(vm_id, zone.admin_account_id, zone.zone_id)
    return await enqueue_job(client, harness.task_queue, harness.cloud, queue, submission)


async def _deployed(client: Client, harness: Harness, zone: DemoCloud) -> UUID:
    job_id = uuid.uuid4()
    order = DeploymentOrder(
        account_id=zone.admin_account_id,
        zone_id=zone.zone_id,
        service_offering_id=zone.small_offering_id,
        template_id=zone.template_id,
        network_id=zone.network_id,
        name="delayed",
        display_name="delayed",
    )
    request = DeployVirtualMachineRequest(
        job_id=job_id, order=order, summary="deploy delayed", waits_for_turn=True
    )
    submission = VmJobSubmission(
        job_id=job_id,
        job_type="DeployVirtualMachine",
        account_id=zone.admin_account_id,
        zone_id=zone.zone_id,
        summary=request.summary,
        deployment=request,
    )
    await _submit(client, harness, zone, submission)
    status, value = await outcome(client, job_id)
    assert status == "succeeded", value
    return virtual_machine_id_for(job_id)


async def _operate(
    client: Client, harness: Harness, zone: DemoCloud, vm_id: UUID, operation: VmOperation
) -> UUID:
    """Run one operation through the queue (production expunge delay); its job id once done."""
    job_id = uuid.uuid4()
    request = vm_operation_request(
        operation,
        job_id=job_id,
        vm_id=vm_id,
        account_id=zone.admin_account_id,
        summary=f"{operation.value} {vm_id}",
    )
    # A destroy asks for the production expunge delay.
    assert (
        not isinstance(request, DestroyVmRequest)
        or request.expunge_delay_seconds == EXPUNGE_DELAY_SECONDS
    )
    submission = VmJobSubmission(
        job_id=job_id,
        job_type=operation.job_type,
        account_id=zone.admin_account_id,
        zone_id=zone.zone_id,
        summary=request.summary,
        operation=request,
    )
    await _submit(client, harness, zone, submission)
    status, value = await outcome(client, job_id)
    assert status == "succeeded", value
    return job_id


async def _expunge_at(queue: WorkflowHandle[Any, Any], *, expected: bool) -> datetime | None:
    """The queue's expunge time, once it has taken in the last job's end (a moment after the
    job's own result is readable)."""

    async def expunge_at() -> datetime | None:
        raw = await queue.query("expunge_at")
        return datetime.fromisoformat(raw) if raw is not None else None

    return await wait_until(
        expunge_at,
        lambda at: (at is not None) is expected,
        timeout=5,
        what=f"the queue's expunge time to be {'set' if expected else 'None'}",
    )


async def _exists(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        await handle.describe()
    except RPCError:
        return False
    return True


async def test_a_destroyed_vm_is_expunged_by_its_queue_once_the_expunge_delay_has_passed(
    skipping_env: WorkflowEnvironment, cloud: Cloud
) -> None:
    client = skipping_env.client
    zone = seed_zone(cloud)
    async with running_worker(client, cloud) as harness:
        vm_id = await _deployed(client, harness, zone)
        destroy = await _operate(client, harness, zone, vm_id, VmOperation.DESTROY)
        queue = client.get_workflow_handle(vm_queue_id(vm_id))
        expunge_at = await _expunge_at(queue, expected=True)
        assert expunge_at is not None
        destroyed_at = await skipping_env.get_current_time(queue)
        assert timedelta(days=1) - timedelta(minutes=1) <= expunge_at - destroyed_at
        assert expunge_at - destroyed_at <= timedelta(days=1)
        assert cloud.load(VirtualMachine, vm_id).state is VmState.DESTROYED
        expunge_job = client.get_workflow_handle(str(derived_id(destroy, "expunge/0")))
        assert not await _exists(expunge_job)  # nothing before the day is up

        # A day (and a little) passes on the queue's clock: its timer fires and it expunges.
        await skipping_env.fast_forward(queue, PAST_THE_DELAY)
        await queue.result()  # the queue ends once its VM is removed
        assert (await expunge_job.result())["removed"] is True
        assert await skipping_env.get_current_time(queue) - destroyed_at >= timedelta(days=1)

    vm = cloud.load(VirtualMachine, vm_id)
    assert vm.is_removed
    assert cloud.load(Volume, vm.root_volume_id).state is VolumeState.EXPUNGED
    assert job_of(cloud, derived_id(destroy, "expunge/0")).status is JobStatus.SUCCEEDED
    # No IP, capacity, pool bytes, hypervisor VM or disk left anywhere.
    assert problems_of(cloud, zone, harness, vm_id) == []


async def test_a_vm_recovered_within_the_expunge_delay_is_not_expunged_when_it_passes(
    skipping_env: WorkflowEnvironment, cloud: Cloud
) -> None:
    client = skipping_env.client
    zone = seed_zone(cloud)
    async with running_worker(client, cloud) as harness:
        vm_id = await _deployed(client, harness, zone)
        destroy = await _operate(client, harness, zone, vm_id, VmOperation.DESTROY)
        queue = client.get_workflow_handle(vm_queue_id(vm_id))
        await _expunge_at(queue, expected=True)
        await _operate(client, harness, zone, vm_id, VmOperation.RECOVER)
        await _expunge_at(queue, expected=False)
        recovered_at = await skipping_env.get_current_time(queue)

        assert await skipping_env.fast_forward(queue, PAST_THE_DELAY)
        # The queue's clock is past the day, the queue still serves the VM, and no expunge ran.
        assert await skipping_env.get_current_time(queue) - recovered_at >= PAST_THE_DELAY
        assert await queue.query("jobs") == []
        assert not await _exists(client.get_workflow_handle(str(derived_id(destroy, "expunge/0"))))
        # The VM still takes operations: the queue is alive after the skip.
        await _operate(client, harness, zone, vm_id, VmOperation.START)
        await queue.terminate("test over")

    vm = cloud.load(VirtualMachine, vm_id)
    assert vm.state is VmState.RUNNING and not vm.is_removed
    assert problems_of(cloud, zone, harness, vm_id) == []
