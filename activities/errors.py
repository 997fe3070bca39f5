"""How domain and driver errors cross into Temporal.

Every error becomes an `ApplicationError` whose `type` names it and whose first detail is the
CloudStack code, so the workflow can decide (retry on another host, unwind, fail with 533/534/
530) and the job reports the code. Whether Temporal retries the same activity is decided per
error: a refused decision never changes on retry; a backend timeout might.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from activities.drivers.hypervisor import (
    DriverError,
    InsufficientHostCapacityError,
    ResourceUnavailableError,
)
from domain.errors import ConcurrentChangeConflict, DomainError

P = ParamSpec("P")
T = TypeVar("T")

#: ApplicationError types that mean "this host or pool cannot do it; another one might".
TRY_ELSEWHERE = frozenset(
    {
        "ResourceUnavailable",
        "ResourceUnavailableError",
        "InsufficientCapacity",
        "InsufficientHostCapacityError",
    }
)


def as_application_error(error: DomainError | DriverError) -> ApplicationError:
    if isinstance(error, ConcurrentChangeConflict):
        # Lost races on busy aggregates: the same step will succeed a moment later.
        return ApplicationError(error.message, int(error.code), type=error.kind)
    if isinstance(error, DomainError):
        return ApplicationError(error.message, int(error.code), type=error.kind, non_retryable=True)
    # A host that cannot do it is the workflow's to route elsewhere, not Temporal's to retry;
    # other backend errors say themselves whether the same call may succeed again.
    elsewhere = isinstance(error, ResourceUnavailableError | InsufficientHostCapacityError)
    return ApplicationError(
        str(error),
        int(error.code),
        type=type(error).__name__,
        non_retryable=elsewhere or not error.retryable,
    )


def reports_cloud_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Translate domain and driver errors raised by an activity into ApplicationErrors.

    A refused decision is refused again, so it is not retried; a driver error marked
    retryable (a timeout whose outcome is unknown) is retried by Temporal, the activity being
    idempotent by Stratus id.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except DomainError as error:
            raise as_application_error(error) from error
        except DriverError as error:
            raise as_application_error(error) from error

    return wrapper
