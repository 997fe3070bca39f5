"""The operator's mends for a blocked projection: skip the event it cannot write, or retry now.

A skip is a durable, audited decision (who, when, why, and which event with which error), never
a silent one: it is recorded only for the event a running projector reports the projection
blocked on, it is listed for ever (`stratus projections skips`), and the projector logs it when
it applies it. It belongs to the read model's definition: a rebuild from the events skips the
same event again, so replaying still gives the same rows. The projector applies a skip by
recording the event's tracking position without writing its rows, in one transaction with
`applied_at` (see `projections.runner`).

For a projection that keeps one row per aggregate the skipped event's effect is not lost for
good: the aggregate's next event rewrites its row from the aggregate's full state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import psycopg.errors
from psycopg.rows import dict_row

from projections.status import ProjectionState, health_of

SKIPS_DDL = """
CREATE TABLE IF NOT EXISTS projection_skips (
    projection text NOT NULL,
    notification_id bigint NOT NULL,
    event_topic text,
    event_originator_id text,
    error text,
    reason text NOT NULL,
    skipped_by_account_id uuid,
    skipped_by text NOT NULL,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    applied_at timestamptz,
    PRIMARY KEY (projection, notification_id)
)
"""
RETRY_REQUESTS_DDL = """
CREATE TABLE IF NOT EXISTS projection_retry_requests (
    projection text PRIMARY KEY,
    requested_by_account_id uuid,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL
)
"""
#: Run by the projector in the transaction that moves the tracking position past the event.
MARK_APPLIED = (
    "UPDATE projection_skips SET applied_at = now() "
    "WHERE projection = %s AND notification_id = %s AND applied_at IS NULL"
)


class MendRefused(Exception):
    """A skip or retry that cannot be recorded, and why (the API answers 409)."""


@dataclass(frozen=True)
class Skip:
    projection: str
    notification_id: int
    event_topic: str | None
    event_originator_id: str | None
    error: str | None
    reason: str
    skipped_by_account_id: UUID | None
    skipped_by: str
    skipped_at: datetime
    applied_at: datetime | None


@dataclass(frozen=True)
class RetryRequest:
    projection: str
    requested_by_account_id: UUID | None
    requested_by: str
    requested_at: datetime


def record_skip(
    conn: psycopg.Connection[Any],
    projection: str,
    notification_id: int,
    *,
    reason: str,
    by_account_id: UUID | None,
    by: str,
) -> Skip:
    """Record that `projection` skips event `notification_id`: only the event it is blocked on
    now, as a running projector reports it, so a typo cannot skip an event that was fine."""
    (health,) = health_of(conn, [projection])
    event = health.blocking_event
    if health.state is not ProjectionState.RETRYING or event is None:
        raise MendRefused(
            f"{projection} is {health.state.value} ({health.detail}): "
            "only the event a running projector reports it blocked on can be skipped"
        )
    if event.notification_id != notification_id:
        raise MendRefused(
            f"{projection} is blocked on event {event.notification_id}, not {notification_id}"
        )
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            "INSERT INTO projection_skips (projection, notification_id, event_topic, "
            "event_originator_id, error, reason, skipped_by_account_id, skipped_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (projection, notification_id) DO NOTHING RETURNING *",
            (
                projection,
                notification_id,
                event.topic,
                event.originator_id,
                health.error,
                reason,
                by_account_id,
                by,
            ),
        ).fetchone()
    if row is None:
        raise MendRefused(
            f"a skip of event {notification_id} by {projection} is already recorded; "
            "the projector applies it at its next attempt"
        )
    return Skip(**row)


def skips(conn: psycopg.Connection[Any], projection: str | None = None) -> list[Skip]:
    """The skips recorded, oldest first: the audit trail."""
    where = "" if projection is None else " WHERE projection = %s"
    params = () if projection is None else (projection,)
    try:
        with conn.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(
                f"SELECT * FROM projection_skips{where} ORDER BY skipped_at, notification_id",
                params,
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return []
    return [Skip(**row) for row in rows]


def request_retry(
    conn: psycopg.Connection[Any], projection: str, *, by_account_id: UUID | None, by: str
) -> RetryRequest:
    """Ask the projectors to try a blocked projection again now rather than after its backoff
    (say, once the database is mended)."""
    try:
        with conn.cursor(row_factory=dict_row) as cursor:
            row = cursor.execute(
                "INSERT INTO projection_retry_requests "
                "(projection, requested_by_account_id, requested_by, requested_at) "
                "VALUES (%s, %s, %s, clock_timestamp()) ON CONFLICT (projection) DO UPDATE SET "
                "requested_by_account_id = EXCLUDED.requested_by_account_id, "
                "requested_by = EXCLUDED.requested_by, requested_at = EXCLUDED.requested_at "
                "RETURNING *",
                (projection, by_account_id, by),
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        raise MendRefused("no projector has run against this database yet") from None
    assert row is not None
    return RetryRequest(**row)


def retry_requests(conn: psycopg.Connection[Any]) -> dict[str, RetryRequest]:
    """The last retry request for each projection."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute("SELECT * FROM projection_retry_requests").fetchall()
    return {row["projection"]: RetryRequest(**row) for row in rows}
