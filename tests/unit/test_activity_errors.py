"""Which errors Temporal retries, and which the workflow routes to another host."""

from __future__ import annotations

import pytest

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    ResourceUnavailableError,
    UnsupportedOperationError,
)
from activities.errors import TRY_ELSEWHERE, as_application_error
from domain import errors
from domain.errors import (
    ConcurrentChangeConflict,
    DomainError,
    InsufficientCapacity,
    InvalidParameter,
    ResourceUnavailable,
)


def test_a_lost_race_on_a_busy_aggregate_is_retried_not_routed_elsewhere() -> None:
    error = as_application_error(ConcurrentChangeConflict("busy"))
    assert not error.non_retryable and error.type not in TRY_ELSEWHERE


def test_a_refused_decision_is_not_retried() -> None:
    error = as_application_error(InvalidParameter("bad", field="name"))
    assert error.non_retryable and error.details == (431,)


def test_no_room_on_a_host_is_routed_elsewhere_not_retried_there() -> None:
    error = as_application_error(InsufficientCapacity("full"))
    assert error.non_retryable and error.type in TRY_ELSEWHERE and error.details == (533,)


def test_a_host_that_cannot_do_it_now_is_routed_elsewhere() -> None:
    error = as_application_error(ResourceUnavailableError("host refused"))
    assert error.non_retryable and error.type in TRY_ELSEWHERE and error.details == (534,)


def test_a_timeout_with_an_unknown_outcome_is_retried() -> None:
    error = as_application_error(DriverTimeoutError("no answer"))
    assert not error.non_retryable and error.type not in TRY_ELSEWHERE


def test_retryability_of_a_backend_error_is_decided_per_error() -> None:
    assert as_application_error(DriverError("busy", retryable=True)).non_retryable is False
    assert as_application_error(DriverError("broken")).non_retryable is True
    assert as_application_error(UnsupportedOperationError("no")).details == (432,)


def test_a_pool_or_host_the_domain_finds_unavailable_is_routed_elsewhere() -> None:
    error = as_application_error(ResourceUnavailable("no host reaches the pool"))
    assert error.non_retryable and error.type in TRY_ELSEWHERE and error.details == (534,)


DOMAIN_ERRORS = sorted(
    (c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DomainError)),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("kind", DOMAIN_ERRORS, ids=lambda c: c.__name__)
def test_of_the_domain_errors_only_a_lost_race_is_retried_by_temporal(
    kind: type[DomainError],
) -> None:
    error = as_application_error(kind("refused"))
    assert error.non_retryable is (kind is not ConcurrentChangeConflict)
    assert error.type == kind.__name__ and error.details == (int(kind.code),)


def test_a_domain_error_that_says_a_retry_could_help_is_retried() -> None:
    """`DomainError.retryable` is what decides, as a driver error's does: a new retryable
    refusal needs no change in activities/errors.py."""

    class HostBusy(DomainError):
        retryable = True

    assert as_application_error(HostBusy("busy")).non_retryable is False


def test_only_no_room_and_unavailable_route_a_job_elsewhere() -> None:
    assert sorted(TRY_ELSEWHERE) == [
        "InsufficientCapacity",
        "InsufficientHostCapacityError",
        "ResourceUnavailable",
        "ResourceUnavailableError",
    ]
