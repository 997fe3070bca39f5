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
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel
from temporalio.client import WorkflowExecutionDescription
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
from api.services import CloudServices
from domain.errors import ErrorCode
from domain.ids import STRATUS_NAMESPACE
from domain.job_requests import JobAttribute

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
            raise ApiError(
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
