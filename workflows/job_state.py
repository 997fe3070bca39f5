"""Search attributes and failure descriptions shared by every job workflow."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)

with workflow.unsafe.imports_passed_through():
    from domain.errors import ErrorCode
    from domain.job_requests import JobAttribute

JOB_STATE = SearchAttributeKey.for_keyword(JobAttribute.JOB_STATE.value)


def set_job_state(state: str) -> None:
    workflow.upsert_search_attributes([JOB_STATE.value_set(state)])


def is_cancellation(error: BaseException) -> bool:
    if isinstance(error, CancelledError | asyncio.CancelledError):
        return True
    return isinstance(error, ActivityError | ChildWorkflowError) and isinstance(
        error.cause, CancelledError
    )


def failure_of(error: BaseException) -> tuple[int, str, str]:
    """(CloudStack code, readable text, error type) of whatever ended a job."""
    cause: BaseException | None = error
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        code = cause.details[0] if cause.details and isinstance(cause.details[0], int) else None
        return int(code or ErrorCode.INTERNAL_ERROR), cause.message, cause.type or "Error"
    if is_cancellation(error):
        return int(ErrorCode.INTERNAL_ERROR), "cancelled", "Cancelled"
    return int(ErrorCode.INTERNAL_ERROR), f"internal error: {cause}", type(cause).__name__


def error_type(error: BaseException) -> str | None:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.type if isinstance(cause, ApplicationError) else None
