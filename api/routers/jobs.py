"""/v1/jobs: every operation's job, from the job read model.

A job submitted a moment ago may not be projected yet: it is read from its record in the event
store (written before the 202), or, for jobs started without one, from Temporal, so a client
polling right after a 202 never sees a 404.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey

from api.auth import CurrentCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import not_found
from api.job_cancellation import cancel
from api.job_submission import describe
from api.models import JobCancelled, JobPublic, Listing
from api.reads import consistent_read, scoped_account
from api.services import CloudServices
from domain.errors import ErrorCode
from domain.job import Job, JobStatus
from domain.job_requests import JobAttribute
from projections.jobs import JobsProjection

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
TABLE = "jobs"

_TEMPORAL_STATUS = {
    WorkflowExecutionStatus.RUNNING: JobStatus.QUEUED,
    WorkflowExecutionStatus.COMPLETED: JobStatus.SUCCEEDED,
    WorkflowExecutionStatus.FAILED: JobStatus.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: JobStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED: JobStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: JobStatus.CANCELLED,
}


def job_public(services: CloudServices, row: dict[str, Any]) -> JobPublic:
    status = JobStatus(row["status"])
    return JobPublic(
        id=row["id"],
        job_type=row["job_type"],
        status=status.value,
        jobstatus=status.cloudstack_jobstatus,
        step=row["step"],
        summary=row["summary"],
        result=row["result"],
        error_code=row["error_code"],
        error_text=row["error_text"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        account_id=row["account_id"],
        zone_id=row["zone_id"],
        created=row["created"],
        completed=row["completed"],
        temporal_url=services.job_url(row["id"]),
    )


@router.get("", response_model=Listing[JobPublic], summary="List jobs")
def list_jobs(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    status: JobStatus | None = None,
    job_type: str | None = None,
    resource_id: UUID | None = None,
    account_id: UUID | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[JobPublic]:
    consistent_read(services, TABLE, consistent, response)
    filters = {
        "status": status.value if status else None,
        "job_type": job_type,
        "resource_id": resource_id,
        "account_id": scoped_account(caller, account_id),
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[JobPublic](
        data=[job_public(services, row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{job_id}", response_model=JobPublic, summary="Show a job (queryAsyncJobResult)")
async def get_job(
    job_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> JobPublic:
    await run_in_threadpool(consistent_read, services, TABLE, consistent, response)
    row = await run_in_threadpool(services.reads.get, TABLE, job_id)
    if row is None:
        # Not projected yet (a job submitted a moment ago): its record in the event store.
        recorded = await run_in_threadpool(services.cloud.find, Job, job_id)
        row = JobsProjection.row_of_job(recorded) if recorded is not None else None
    if row is not None:
        if not caller.may_see(row["account_id"]):
            raise not_found(f"job {job_id}", ("path", "job_id"))
        return job_public(services, row)
    return await _job_from_temporal(services, caller, job_id)


async def _job_from_temporal(services: CloudServices, caller: Any, job_id: UUID) -> JobPublic:
    description = await describe(services, job_id)
    if description is None:
        raise not_found(f"job {job_id}", ("path", "job_id"))
    attributes = description.typed_search_attributes

    def attribute(name: JobAttribute) -> str | None:
        return attributes.get(SearchAttributeKey.for_keyword(name.value))

    def uuid_attribute(name: JobAttribute) -> UUID | None:
        value = attribute(name)
        return UUID(value) if value else None

    if not caller.may_see(attribute(JobAttribute.ACCOUNT_ID)):
        raise not_found(f"job {job_id}", ("path", "job_id"))
    status = _TEMPORAL_STATUS.get(
        description.status or WorkflowExecutionStatus.RUNNING, JobStatus.FAILED
    )
    ended_unrecorded = status.is_final
    return JobPublic(
        id=job_id,
        job_type=description.workflow_type,
        status=status.value,
        jobstatus=status.cloudstack_jobstatus,
        step=None,
        summary=None,
        result=None,
        error_code=int(ErrorCode.INTERNAL_ERROR) if ended_unrecorded else None,
        error_text=(
            f"the job ended ({description.status.name if description.status else '?'}) "
            "before it was recorded"
            if ended_unrecorded
            else None
        ),
        resource_type=attribute(JobAttribute.RESOURCE_TYPE),
        resource_id=uuid_attribute(JobAttribute.RESOURCE_ID),
        account_id=uuid_attribute(JobAttribute.ACCOUNT_ID),
        zone_id=uuid_attribute(JobAttribute.ZONE_ID),
        created=description.start_time,
        completed=description.close_time,
        temporal_url=services.job_url(job_id),
    )


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobCancelled,
    summary="Cancel a job: a queued one leaves its queue, a running one unwinds",
    responses={409: {"description": "the job ended, or is past its point of no return"}},
)
async def cancel_job(job_id: UUID, caller: CurrentCaller, services: Services) -> JobCancelled:
    was = await cancel(
        services.temporal, services.cloud, job_id, f"cancelled by {caller.name}", caller.may_see
    )
    return JobCancelled(job_id=job_id, was=was, job_url=f"/v1/jobs/{job_id}")
