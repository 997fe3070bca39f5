"""Which projector errors mean another projector got there first (restart and go on) and
which are real failures (stop and say so)."""

from __future__ import annotations

import psycopg.errors
from eventsourcing.persistence import IntegrityError, InternalError, OperationalError

from projections.runner import lost_a_race


def wrapped(error: OperationalError, cause: BaseException) -> OperationalError:
    """As eventsourcing raises it: its own error, from psycopg's."""
    error.__cause__ = cause
    return error


def test_a_duplicate_tracking_position_or_a_concurrent_catalog_change_is_a_lost_race() -> None:
    assert lost_a_race(IntegrityError("duplicate key value violates unique constraint"))
    assert lost_a_race(InternalError("tuple concurrently updated"))


def test_a_deadlock_with_another_projectors_ddl_is_a_lost_race() -> None:
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert lost_a_race(wrapped(OperationalError("deadlock detected"), deadlock))


def test_a_lost_connection_or_any_other_error_is_not_a_race() -> None:
    gone = psycopg.OperationalError("server closed the connection unexpectedly")
    assert not lost_a_race(wrapped(OperationalError("server closed the connection"), gone))
    assert not lost_a_race(OperationalError("no cause"))
    assert not lost_a_race(ValueError("a bug in a projection"))
