"""Which errors Temporal retries, and which the workflow routes to another host."""

from __future__ import annotations

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    ResourceUnavailableError,
    UnsupportedOperationError,
)
from activities.errors import TRY_ELSEWHERE, as_application_error
from domain.errors import ConcurrentChangeConflict, InsufficientCapacity, InvalidParameter


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
