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
from datetime import UTC, datetime
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowQueryRejectedError
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
from domain.cloud import Cloud
from domain.errors import ErrorCode
from domain.ids import STRATUS_NAMESPACE
from domain.job import Job
from domain.job_requests import (
    ENQUEUE_SIGNAL,
    VM_QUEUE_WORKFLOW,
    JobAttribute,
    JobQueue,
    VmJobSubmission,
    VmQueueEntry,
)
from domain.job_submission import record_submitted

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


def keyword_attributes(values: Mapping[JobAttribute, str]) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(attribute.value), value)
            for attribute, value in values.items()
        ]
    )


async def submit(services: CloudServices, job: JobSubmission, *, idempotent: bool) -> None:
    """Start a job that waits in no queue (inventory, policies, simulator faults)."""
    try:
        handle = await services.temporal.start_workflow(
            job.workflow,
            job.request,
            id=str(job.job_id),
            task_queue=services.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=keyword_attributes(job.attributes),
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
    return await _describe(services.temporal, job_id)


async def _describe(temporal: Client, job_id: UUID) -> WorkflowExecutionDescription | None:
    try:
        return await temporal.get_workflow_handle(str(job_id)).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def submit_to_queue(
    services: CloudServices, queue: JobQueue, submission: VmJobSubmission
) -> UUID:
    return await enqueue_job(
        services.temporal, services.task_queue, services.cloud, queue, submission
    )


async def enqueue_job(
    temporal: Client, task_queue: str, cloud: Cloud, queue: JobQueue, submission: VmJobSubmission
) -> UUID:
    """Hand a job to its queue, and answer as soon as it is durably recorded: never after a
    worker's round trip (ARCHITECTURE rule 12).

    The queue's `enqueue` signal goes with signal-with-start, which the Temporal server records
    (and starts the queue if none runs) without any worker; then the job is recorded queued in
    the event store, so `GET /v1/jobs/{id}` shows it at once. The queue gives the job its place
    (or joins it to the identical job it repeats) when its worker next runs. An Idempotency-Key
    repeat finds the job already recorded and is answered with it, or refused with 409 when the
    key came with another request.
    """
    submission = submission.model_copy(update={"queue_id": queue.workflow_id})
    recorded = await run_in_threadpool(cloud.find, Job, submission.job_id)
    if recorded is not None:
        await _check_same_request(temporal, recorded, submission)
        return submission.job_id
    await temporal.start_workflow(
        VM_QUEUE_WORKFLOW,
        queue.state,
        id=queue.workflow_id,
        task_queue=task_queue,
        search_attributes=keyword_attributes(queue.attributes()),
        static_summary=queue.summary,
        start_signal=ENQUEUE_SIGNAL,
        start_signal_args=[submission],
    )
    recorded = await run_in_threadpool(record_submitted, cloud, submission, datetime.now(UTC))
    await _check_same_request(temporal, recorded, submission)
    return submission.job_id


async def _check_same_request(temporal: Client, recorded: Job, submission: VmJobSubmission) -> None:
    """A job id already recorded (an Idempotency-Key seen before) must come with the same
    request. Jobs recorded before submissions carried their fingerprint keep it in their
    workflow's memo."""
    known = recorded.fingerprint
    if not known:
        description = await _describe(temporal, submission.job_id)
        known = (await description.memo()).get("request_fingerprint", "") if description else ""
    if known and known != submission.fingerprint:
        raise idempotency_conflict()


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
