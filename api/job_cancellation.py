"""Cancelling a job: one path for every kind, shared by `POST /v1/jobs/{id}/cancel` and the
tests that cancel jobs as a user would.

The job's `cancel` update comes first: its validator refuses a job past its point of no return
(409 with the reason), and it answers whether the job was queued or running. Temporal's own
cancel request follows, so the job closes as Canceled in Temporal, as when an operator presses
Cancel in its web UI (the workflow treats both the same). A job its queue has not started yet
(the queue's worker has not run since the submission), or one that joined an identical job and
has no workflow of its own, is withdrawn through its queue.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, not_found
from domain.cloud import Cloud
from domain.errors import ErrorCode
from domain.job import Job
from domain.job_requests import VOLUME_RESOURCE, JobAttribute, vm_queue_id, volume_queue_id

#: How a closed workflow's status reads as a job's end.
ENDED_AS = {
    WorkflowExecutionStatus.COMPLETED: "succeeded",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "failed",
    WorkflowExecutionStatus.TERMINATED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
}


async def cancel(
    temporal: Client,
    cloud: Cloud,
    job_id: UUID,
    reason: str,
    may_see: Callable[[object], bool] = lambda _: True,
) -> str:
    """Cancel the job; answers what it was ("queued" or "running"). Raises ApiError 404 for a
    job the caller may not see, 409 for one that ended or is past its point of no return."""
    handle = temporal.get_workflow_handle(str(job_id))
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        description = None
    recorded = await run_in_threadpool(cloud.find, Job, job_id)
    if description is None:
        if recorded is None or not may_see(recorded.account_id):
            raise not_found(f"job {job_id}", ("path", "job_id"))
        if recorded.status.is_final:
            raise not_cancellable(f"the job already ended ({recorded.status.value})")
        await _withdraw(temporal, recorded)
        return "queued"
    account = description.typed_search_attributes.get(
        SearchAttributeKey.for_keyword(JobAttribute.ACCOUNT_ID.value)
    )
    if not may_see(account):
        raise not_found(f"job {job_id}", ("path", "job_id"))
    if description.status is not WorkflowExecutionStatus.RUNNING:
        ended = ENDED_AS.get(description.status or WorkflowExecutionStatus.FAILED, "failed")
        raise not_cancellable(f"the job already ended ({ended})")
    if recorded is not None and recorded.status.is_final:
        # Its end is recorded; its workflow closes a moment later. A cancel now changes nothing.
        raise not_cancellable(f"the job already ended ({recorded.status.value})")
    try:
        was: str = await handle.execute_update("cancel", reason, result_type=str)
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        raise not_cancellable(getattr(cause, "message", None) or str(cause)) from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise not_cancellable("the job already ended") from None
        raise
    await handle.cancel()
    return was


async def _withdraw(temporal: Client, job: Job) -> None:
    queue_id = job.queue_id or (
        volume_queue_id(job.resource_id)
        if job.resource_type == VOLUME_RESOURCE
        else vm_queue_id(job.resource_id)
    )
    try:
        await temporal.get_workflow_handle(queue_id).signal("withdraw", job.id)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise not_cancellable("its queue no longer runs") from None
        raise


def not_cancellable(why: str) -> ApiError:
    return ApiError(
        409,
        f"the job cannot be cancelled: {why}",
        code=ErrorCode.RESOURCE_IN_USE,
        loc=("path", "job_id"),
        kind="not_cancellable",
    )
