"""Starting jobs in Temporal: the job id is the workflow id.

A request with an `Idempotency-Key` gets a job id derived from the caller and the key, so a
repeat finds the same workflow (running: USE_EXISTING; closed: REJECT_DUPLICATE) instead of
starting a second one. The request's fingerprint rides in the workflow memo: reusing a key for a
different request is refused with 409 rather than silently answered with the first job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowExecutionDescription,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.auth import Caller
from api.errors import ApiError
from api.models import Listing, VmJobPublic
from api.services import CloudServices
from domain.errors import ErrorCode
from domain.ids import STRATUS_NAMESPACE
from domain.job import Job
from domain.job_requests import (
    VM_QUEUE_WORKFLOW,
    JobAttribute,
    VmJobAccepted,
    VmJobSubmission,
    VmQueueEntry,
    VmQueueState,
    vm_queue_id,
)

MAX_IDEMPOTENCY_KEY = 255


def job_id_for(caller: Caller, idempotency_key: str | None) -> UUID:
    if idempotency_key is None:
        return uuid4()
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            422,
            f"must be 1-{MAX_IDEMPOTENCY_KEY} characters",
            code=ErrorCode.MALFORMED_PARAMETER,
            loc=("header", "Idempotency-Key"),
            kind="value_error",
        )
    return uuid5(STRATUS_NAMESPACE, f"idempotency/{caller.account_id}/{idempotency_key}")


def fingerprint(request: BaseModel) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class JobSubmission:
    workflow: str
    request: BaseModel
    job_id: UUID
    attributes: Mapping[JobAttribute, str]
    summary: str
    details: str
    fingerprint: str


async def submit(services: CloudServices, job: JobSubmission, *, idempotent: bool) -> None:
    pairs = [
        SearchAttributePair(SearchAttributeKey.for_keyword(attribute.value), value)
        for attribute, value in job.attributes.items()
    ]
    try:
        handle = await services.temporal.start_workflow(
            job.workflow,
            job.request,
            id=str(job.job_id),
            task_queue=services.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(pairs),
            static_summary=job.summary,
            static_details=job.details,
            memo={"request_fingerprint": job.fingerprint},
        )
        description = await handle.describe() if idempotent else None
    except WorkflowAlreadyStartedError:
        description = await describe(services, job.job_id)
    if description is not None:
        memo = await description.memo()
        if memo.get("request_fingerprint") != job.fingerprint:
            raise idempotency_conflict()


def idempotency_conflict() -> ApiError:
    return ApiError(
        409,
        "this Idempotency-Key was already used for a different request",
        code=ErrorCode.PARAM_ERROR,
        loc=("header", "Idempotency-Key"),
        kind="idempotency_conflict",
    )


async def describe(services: CloudServices, job_id: UUID) -> WorkflowExecutionDescription | None:
    try:
        return await services.temporal.get_workflow_handle(str(job_id)).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def submit_to_vm_queue(
    services: CloudServices, vm_id: UUID, submission: VmJobSubmission
) -> VmJobAccepted:
    """Hand a job to its VM's queue (`vm/<vm_id>`), starting the queue if it is not running.

    The queue starts the job's workflow (id = job id) before it answers, so the job can be
    followed and cancelled as soon as this returns. It answers the job id that will do the
    work: this one, or the identical pending job it joined.
    """
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        VM_QUEUE_WORKFLOW,
        VmQueueState(vm_id=vm_id, account_id=submission.account_id, zone_id=submission.zone_id),
        id=vm_queue_id(vm_id),
        task_queue=services.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SearchAttributeKey.for_keyword(attribute.value), value)
                for attribute, value in {
                    JobAttribute.JOB_TYPE: VM_QUEUE_WORKFLOW,
                    JobAttribute.ACCOUNT_ID: str(submission.account_id),
                    JobAttribute.RESOURCE_TYPE: "VirtualMachine",
                    JobAttribute.RESOURCE_ID: str(vm_id),
                    **(
                        {JobAttribute.ZONE_ID: str(submission.zone_id)}
                        if submission.zone_id
                        else {}
                    ),
                }.items()
            ]
        ),
        static_summary=f"Job queue of VM {vm_id}: its operations, one at a time",
    )
    try:
        accepted: VmJobAccepted = await services.temporal.execute_update_with_start_workflow(
            "submit", submission, start_workflow_operation=start, result_type=VmJobAccepted
        )
    except WorkflowUpdateFailedError as error:
        raise ApiError(
            409,
            f"the VM's queue refused the job: {error.cause}",
            code=ErrorCode.PARAM_ERROR,
            kind="refused",
        ) from None
    if accepted.conflict:
        raise idempotency_conflict()
    return accepted


async def queued_jobs(services: CloudServices, queue_id: str) -> list[VmQueueEntry]:
    """A queue's running and queued jobs (none if there is no queue). A job whose end is
    already recorded is left out: its queue learns of the end a moment later, on its next
    workflow task, and the listing must not contradict `GET /v1/jobs/{id}`."""
    handle = services.temporal.get_workflow_handle(queue_id)
    try:
        entries: list[VmQueueEntry] = await handle.query("jobs", result_type=list[VmQueueEntry])
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
    except WorkflowQueryRejectedError:
        return []
    ended = await run_in_threadpool(_recorded_ended, services, [e.job_id for e in entries])
    return [entry for entry in entries if entry.job_id not in ended]


def _recorded_ended(services: CloudServices, job_ids: list[UUID]) -> set[UUID]:
    jobs = (services.cloud.find(Job, job_id) for job_id in job_ids)
    return {job.id for job in jobs if job is not None and job.status.is_final}


def queue_listing(entries: list[VmQueueEntry]) -> Listing[VmJobPublic]:
    """The queue as the API shows it: position 0 is the running job, then 1, 2, ... in the
    order the queued ones will run."""
    first = 0 if entries and entries[0].status == "running" else 1
    data = [
        VmJobPublic(
            job_id=entry.job_id,
            job_type=entry.job_type,
            status=entry.status,
            position=position + first,
            summary=entry.summary,
            submitted_at=entry.submitted_at,
            job_url=f"/v1/jobs/{entry.job_id}",
        )
        for position, entry in enumerate(entries)
    ]
    return Listing[VmJobPublic](data=data, count=len(data))
