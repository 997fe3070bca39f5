"""Which projector errors mean another projector got there first (restart at once and go on)
and which are real failures (retry with backoff and say so)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

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


class _Diagnosed(psycopg.errors.UniqueViolation):
    """A duplicate key as PostgreSQL reports it, naming the table (a client-made error has no
    diagnostics)."""

    def __init__(self, table: str) -> None:
        super().__init__(f'duplicate key value violates unique constraint "{table}_pkey"')
        self._table = table

    @property
    def diag(self) -> Any:
        return SimpleNamespace(table_name=self._table, constraint_name=f"{self._table}_pkey")


def from_database(cause: psycopg.Error) -> IntegrityError:
    """As eventsourcing raises a database's integrity error: its own, from psycopg's."""
    error = IntegrityError(str(cause))
    error.__cause__ = cause
    return error


def test_a_duplicate_position_in_a_tracking_table_is_a_lost_race() -> None:
    assert lost_a_race(from_database(_Diagnosed("volumes_projection_tracking")))


def test_two_processes_creating_the_same_table_at_once_is_a_lost_race() -> None:
    """PostgreSQL's IF NOT EXISTS does not guard its catalog: the loser of a concurrent
    CREATE TABLE breaks the unique index of `pg_type`."""
    assert lost_a_race(from_database(_Diagnosed("pg_type")))


def test_a_row_that_breaks_a_read_models_constraint_is_no_race_it_fails_every_time() -> None:
    not_null = psycopg.errors.NotNullViolation('null value in column "name" of relation "volumes"')
    assert not lost_a_race(from_database(not_null))
    assert not lost_a_race(from_database(_Diagnosed("volumes")))
