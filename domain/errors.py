"""Domain errors, each carrying the CloudStack error code a failed job or a 4xx reports.

Keeping CloudStack's codes lets existing clients and operators read Stratus failures the way
they read CloudStack's: 431 for a bad parameter, 533 when no host fits, 534 when a resource is
unavailable, 536 when a resource is in use, 530 for everything Stratus did not foresee.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    UNAUTHORIZED = 401
    METHOD_NOT_ALLOWED = 405
    API_LIMIT_EXCEEDED = 429
    MALFORMED_PARAMETER = 430
    PARAM_ERROR = 431
    UNSUPPORTED_ACTION = 432
    INTERNAL_ERROR = 530
    ACCOUNT_ERROR = 531
    RESOURCE_LIMIT = 532
    INSUFFICIENT_CAPACITY = 533
    RESOURCE_UNAVAILABLE = 534
    RESOURCE_ALLOCATION_ERROR = 535
    RESOURCE_IN_USE = 536
    NETWORK_RULE_CONFLICT = 537


class DomainError(Exception):
    """A decision the domain refused.

    `retryable` says whether making the same decision again, a moment later, could turn out
    otherwise: False for a refusal that follows from the request or the state (the same facts
    give the same answer), True when it follows from something passing (a lost race, a
    resource that is busy). activities/errors.py reads it, as it reads a driver error's, to
    decide whether Temporal retries the activity.
    """

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field the error is about, when there is one, so a 4xx can name it.
        self.field = field

    @property
    def kind(self) -> str:
        """A stable name for the error, used as the Temporal ApplicationError type."""
        return type(self).__name__


class InvalidParameter(DomainError):
    code = ErrorCode.PARAM_ERROR


class NotFound(InvalidParameter):
    """An id that names nothing. CloudStack answers 431 ("Unable to find ...")."""


class IllegalStateTransition(InvalidParameter):
    """The resource's state does not allow the operation (stop a Stopped VM, ...)."""


class UnsupportedAction(DomainError):
    code = ErrorCode.UNSUPPORTED_ACTION


class InsufficientCapacity(DomainError):
    code = ErrorCode.INSUFFICIENT_CAPACITY


class ResourceUnavailable(DomainError):
    """The host or pool cannot do it now. Retryable, but the workflow tries another one
    rather than waiting for this one (activities.errors.TRY_ELSEWHERE)."""

    code = ErrorCode.RESOURCE_UNAVAILABLE
    retryable = True


class ResourceAllocationError(DomainError):
    """A pool (IPs, VLANs) has nothing left to hand out."""

    code = ErrorCode.RESOURCE_ALLOCATION_ERROR


class ResourceInUse(DomainError):
    code = ErrorCode.RESOURCE_IN_USE


class ConcurrentChangeConflict(DomainError):
    """Others kept changing the same aggregates while this decision was made. Nothing is wrong
    with the host or the request: the same step is retried (by Temporal), not routed
    elsewhere."""

    code = ErrorCode.RESOURCE_UNAVAILABLE
    retryable = True
