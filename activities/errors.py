"""How domain and driver errors cross into Temporal.

Every error becomes an `ApplicationError` whose `type` names it and whose first detail is the
CloudStack code, so the workflow can decide (retry on another host, unwind, fail with 533/534/
530) and the job reports the code. Whether Temporal retries the same activity is decided per
error by its `retryable`, for domain and driver errors alike: a refused decision never changes
on retry; a lost race or a backend timeout might.
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
from domain.errors import DomainError, InsufficientCapacity, ResourceUnavailable

P = ParamSpec("P")
T = TypeVar("T")

#: Errors that mean "this host or pool cannot do it; another one might": the workflow's to
#: route elsewhere, never Temporal's to retry on the same one.
_ELSEWHERE: tuple[type[Exception], ...] = (
    ResourceUnavailable,
    InsufficientCapacity,
    ResourceUnavailableError,
    InsufficientHostCapacityError,
)
#: The ApplicationError types of those, as a workflow sees them.
TRY_ELSEWHERE = frozenset(kind.__name__ for kind in _ELSEWHERE)


def as_application_error(error: DomainError | DriverError) -> ApplicationError:
    """One rule for domain and driver errors: Temporal retries the activity only when the error
    says the same call could turn out otherwise (`retryable`: a lost race on a busy aggregate,
    a backend timeout) and it is not one the workflow routes to another host."""
    elsewhere = isinstance(error, _ELSEWHERE)
    return ApplicationError(
        str(error),
        int(error.code),
        type=type(error).__name__,
        non_retryable=elsewhere or not error.retryable,
    )


def reports_cloud_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Translate domain and driver errors raised by an activity into ApplicationErrors.

    A refused decision is refused again, so it is not retried; an error marked retryable (a
    decision that lost a race, a timeout whose outcome is unknown) is retried by Temporal, the
    activity being idempotent by command id and Stratus id.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (DomainError, DriverError) as error:
            raise as_application_error(error) from error

    return wrapper
