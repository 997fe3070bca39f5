"""What each projection is doing, shared through the database.

The projector and the API may be separate processes (`stratus projector`, `stratus api`), and
several projectors may follow one event store: so every projector upserts one row per
projection into `projection_status` (its state, its position and lag, the event it is blocked
on and why), with a heartbeat taken from the database's clock. Readers (`/healthz`, consistent
reads, `stratus projections status`) read those rows, and a projection whose rows have all
gone stale is *stopped*: its projector died or hangs. Reading is one small query, cheap enough
for a health check that is polled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import dict_row

#: The event store's notification log and the name projections track it by.
EVENTS_TABLE = "cloud_events"
APPLICATION_NAME = "Cloud"
#: A projector reports about once a second; rows older than this mean it has stopped.
STALE_AFTER = timedelta(seconds=30)
#: Serializes the bookkeeping DDL of projectors and API processes starting at the same moment
#: (CREATE ... IF NOT EXISTS does not guard the catalog against concurrent DDL).
DDL_LOCK = 0x5354_5241_5455_53  # "STRATUS"

STATUS_DDL = """
CREATE TABLE IF NOT EXISTS projection_status (
    projection text NOT NULL,
    projector text NOT NULL,
    state text NOT NULL,
    position bigint,
    head bigint,
    seconds_behind double precision,
    event_notification_id bigint,
    event_topic text,
    event_originator_id text,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    failing_since timestamptz,
    next_attempt_at timestamptz,
    heartbeat_at timestamptz NOT NULL,
    PRIMARY KEY (projection, projector)
)
"""


class ProjectionState(StrEnum):
    #: Following the event store.
    RUNNING = "running"
    #: Blocked: an event it cannot write, or it cannot start; trying again with backoff.
    RETRYING = "retrying"
    #: No projector has reported on it recently: none runs, or the one that did has died.
    STOPPED = "stopped"


@dataclass(frozen=True)
class BlockingEvent:
    """The event a projection cannot get past."""

    notification_id: int
    topic: str | None
    originator_id: str | None


@dataclass(frozen=True)
class ProjectionReport:
    """One projector's account of one projection, as it publishes it."""

    projection: str
    state: ProjectionState
    position: int | None
    head: int | None
    seconds_behind: float | None
    blocking_event: BlockingEvent | None = None
    error: str | None = None
    attempts: int = 0
    failing_since: datetime | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class ProjectionHealth:
    """What an operator needs to know about one projection, from every projector's reports."""

    projection: str
    state: ProjectionState
    detail: str
    position: int | None = None
    head: int | None = None
    behind: int | None = None
    seconds_behind: float | None = None
    blocking_event: BlockingEvent | None = None
    error: str | None = None
    attempts: int = 0
    failing_since: datetime | None = None
    next_attempt_at: datetime | None = None
    projector: str | None = None
    heartbeat_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.state is ProjectionState.RUNNING


# -- the projector's side --------------------------------------------------------------------
def create_tables(conn: psycopg.Connection[Any], *statements: str) -> None:
    """Create bookkeeping tables (and anything else idempotent) under the DDL lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def publish(
    conn: psycopg.Connection[Any], projector: str, reports: Iterable[ProjectionReport]
) -> None:
    """Upsert this projector's rows, stamped with the database's clock."""
    rows = [
        {
            "projection": r.projection,
            "projector": projector,
            "state": r.state.value,
            "position": r.position,
            "head": r.head,
            "seconds_behind": r.seconds_behind,
            "event_notification_id": r.blocking_event.notification_id if r.blocking_event else None,
            "event_topic": r.blocking_event.topic if r.blocking_event else None,
            "event_originator_id": r.blocking_event.originator_id if r.blocking_event else None,
            "error": r.error,
            "attempts": r.attempts,
            "failing_since": r.failing_since,
            "next_attempt_at": r.next_attempt_at,
        }
        for r in reports
    ]
    if not rows:
        return
    columns = list(rows[0])
    statement = (
        f"INSERT INTO projection_status ({', '.join(columns)}, heartbeat_at) "
        f"VALUES ({', '.join(f'%({c})s' for c in columns)}, now()) "
        "ON CONFLICT (projection, projector) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in ("projection", "projector"))
        + ", heartbeat_at = EXCLUDED.heartbeat_at"
    )
    with conn.cursor() as cursor:
        cursor.executemany(statement, rows)  # type: ignore[arg-type]


def withdraw(conn: psycopg.Connection[Any], projector: str) -> None:
    """A projector that stops cleanly takes its rows away: it no longer vouches for them."""
    conn.execute("DELETE FROM projection_status WHERE projector = %s", (projector,))


def forget_dead_projectors(conn: psycopg.Connection[Any], older_than: timedelta) -> None:
    """Drop rows of projectors long gone (killed, so they never withdrew)."""
    conn.execute(
        "DELETE FROM projection_status WHERE heartbeat_at < now() - %s::interval", (older_than,)
    )


def position_of(conn: psycopg.Connection[Any], projection: str) -> int | None:
    """The last event the projection has written (its tracking position), None before any."""
    query = sql.SQL("SELECT max(notification_id) AS n FROM {} WHERE application_name = %s").format(
        sql.Identifier(f"{projection}_tracking")
    )
    try:
        return _number(conn, query, (APPLICATION_NAME,))
    except psycopg.errors.UndefinedTable:
        return None


def head_of(conn: psycopg.Connection[Any], topics: Sequence[str]) -> int:
    """The last recorded event of these topics (of any topic when there are none).

    One index lookup per topic on (topic, notification_id): a plain `topic = ANY(...)` scans
    the log backwards until it meets one of them, which is slow for a rarely used topic."""
    if not topics:
        return _number(conn, f"SELECT max(notification_id) AS n FROM {EVENTS_TABLE}", ()) or 0
    query = (
        "SELECT max(last.n) AS n FROM unnest(%s::text[]) AS t(topic) CROSS JOIN LATERAL "
        f"(SELECT max(e.notification_id) AS n FROM {EVENTS_TABLE} e WHERE e.topic = t.topic)"
        " AS last"
    )
    return _number(conn, query, (list(topics),)) or 0


def event_after(
    conn: psycopg.Connection[Any], position: int | None, topics: Sequence[str]
) -> BlockingEvent | None:
    """The first event of these topics after `position`: the one a projection that failed
    outside its own code (decoding the event) could not get past."""
    where = "notification_id > %s" + (" AND topic = ANY(%s)" if topics else "")
    params: list[Any] = [position or 0] + ([list(topics)] if topics else [])
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(
            f"SELECT notification_id, topic, originator_id FROM {EVENTS_TABLE} WHERE {where} "
            "ORDER BY notification_id LIMIT 1",
            params,
        ).fetchone()
    if row is None:
        return None
    return BlockingEvent(row["notification_id"], row["topic"], str(row["originator_id"]))


def _number(conn: psycopg.Connection[Any], query: Any, params: Sequence[Any]) -> int | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(query, params).fetchone()
    return None if row is None or row["n"] is None else int(row["n"])


# -- the readers' side -----------------------------------------------------------------------
_SELECT_REPORTS = (
    "SELECT projection, projector, state, position, head, seconds_behind, "
    "event_notification_id, event_topic, event_originator_id, error, attempts, failing_since, "
    "next_attempt_at, heartbeat_at, now() - heartbeat_at AS age FROM projection_status"
)


def read_reports(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every projector's rows; none before any projector has run."""
    try:
        with conn.cursor(row_factory=dict_row) as cursor:
            return list(cursor.execute(_SELECT_REPORTS).fetchall())
    except psycopg.errors.UndefinedTable:
        return []


def health_of(conn: psycopg.Connection[Any], projections: Sequence[str]) -> list[ProjectionHealth]:
    return summarize(projections, read_reports(conn))


def is_stuck(conn: psycopg.Connection[Any], projection: str) -> bool:
    """Whether the projection is known not to be moving: a projector reports it blocked, its
    reports are all stale (its projector died), or no projector reports it at all (none runs:
    a projector publishes its rows before it serves anything, and withdraws them when it
    stops)."""
    query = (
        "SELECT coalesce(bool_or(fresh), false) AS fresh, "
        "coalesce(bool_or(fresh AND state = %(retrying)s), false) AS blocked FROM "
        "(SELECT state, now() - heartbeat_at <= %(stale)s AS fresh FROM projection_status "
        "WHERE projection = %(projection)s) AS reports"
    )
    params = {
        "stale": STALE_AFTER,
        "retrying": ProjectionState.RETRYING.value,
        "projection": projection,
    }
    try:
        with conn.cursor(row_factory=dict_row) as cursor:
            row = cursor.execute(query, params).fetchone()
    except psycopg.errors.UndefinedTable:
        return True
    if row is None:
        return True
    return bool(row["blocked"]) or not row["fresh"]


def summarize(
    projections: Sequence[str],
    reports: Sequence[Mapping[str, Any]],
    stale_after: timedelta = STALE_AFTER,
) -> list[ProjectionHealth]:
    """One verdict per projection from all projectors' rows (each with its `age`).

    Among fresh rows the worst wins (one projector blocked means the event cannot be written),
    then the furthest ahead; with none fresh the projection is stopped, and the last report
    says where it was and what it was blocked on.
    """
    verdicts = []
    for name in projections:
        rows = [r for r in reports if r["projection"] == name]
        fresh = [r for r in rows if r["age"] <= stale_after]
        if fresh:
            row = max(
                fresh,
                key=lambda r: (r["state"] == ProjectionState.RETRYING.value, r["position"] or 0),
            )
            state = ProjectionState(row["state"])
            verdicts.append(_health(name, state, _detail(state, row), row))
        elif rows:
            row = max(rows, key=lambda r: r["heartbeat_at"])
            seconds = int(row["age"].total_seconds())
            detail = (
                f"no heartbeat from projector {row['projector']} for {seconds} s "
                f"(it last said {row['state']})"
            )
            verdicts.append(_health(name, ProjectionState.STOPPED, detail, row))
        else:
            verdicts.append(
                ProjectionHealth(
                    projection=name,
                    state=ProjectionState.STOPPED,
                    detail="no projector has reported on this projection",
                )
            )
    return verdicts


def _health(
    name: str, state: ProjectionState, detail: str, row: Mapping[str, Any]
) -> ProjectionHealth:
    position, head = row["position"], row["head"]
    behind = None if head is None else max(0, head - (position or 0))
    event = None
    if row["event_notification_id"] is not None:
        event = BlockingEvent(
            row["event_notification_id"], row["event_topic"], row["event_originator_id"]
        )
    return ProjectionHealth(
        projection=name,
        state=state,
        detail=detail,
        position=position,
        head=head,
        behind=behind,
        seconds_behind=row["seconds_behind"],
        blocking_event=event,
        error=row["error"],
        attempts=row["attempts"],
        failing_since=row["failing_since"],
        next_attempt_at=row["next_attempt_at"],
        projector=row["projector"],
        heartbeat_at=row["heartbeat_at"],
    )


def _detail(state: ProjectionState, row: Mapping[str, Any]) -> str:
    if state is ProjectionState.RUNNING:
        head, position = row["head"], row["position"] or 0
        behind = 0 if head is None else max(0, head - position)
        return "up to date" if behind == 0 else f"catching up: {behind} notification ids behind"
    if row["event_notification_id"] is None:
        return f"cannot run: {row['error']}; attempt {row['attempts']}"
    return (
        f"cannot write event {row['event_notification_id']} ({row['event_topic']}, "
        f"originator {row['event_originator_id']}): {row['error']}; attempt {row['attempts']}"
    )
