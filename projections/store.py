"""Reading the read models: the queries behind the API's listings.

Listings page by keyset (`cursor`, stable under concurrent inserts) or by `page` number, filter
on indexed columns only, and return the total `count` as CloudStack's list responses do.
A read can wait for the projections to reach a position in the event store (read-your-writes),
except for a projection known to be stuck (`projections.status`): that read answers at once.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from projections.alerts import ALERTS
from projections.events import EVENT_LOG
from projections.host_capacity import HOST_CAPACITY
from projections.inventory import INVENTORY
from projections.jobs import JOBS
from projections.read_model import Table
from projections.runner import EVENT_TOPIC_INDEX, PROJECTIONS
from projections.snapshot_policies import SNAPSHOT_POLICIES
from projections.snapshots import SNAPSHOTS
from projections.status import ProjectionHealth, create_tables, head_of, health_of, is_stuck
from projections.usage import USAGE_INTERVALS
from projections.virtual_machines import VIRTUAL_MACHINES
from projections.vm_snapshots import VM_SNAPSHOTS
from projections.volumes import VOLUMES

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        VIRTUAL_MACHINES,
        VOLUMES,
        JOBS,
        HOST_CAPACITY,
        INVENTORY,
        USAGE_INTERVALS,
        EVENT_LOG,
        ALERTS,
        VM_SNAPSHOTS,
        SNAPSHOTS,
        SNAPSHOT_POLICIES,
    )
}
PROJECTION_OF_TABLE = {
    table.name: projection.name for projection, view in PROJECTIONS for table in view.tables
}
TOPICS_OF_PROJECTION: dict[str, list[str]] = {
    projection.name: list(projection.topics) for projection, _ in PROJECTIONS
}
APPLICATION_NAME = "Cloud"


class InvalidCursor(ValueError):
    """A cursor that this API did not hand out."""


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    count: int
    next_cursor: str | None


def encode_cursor(created: datetime, row_id: UUID) -> str:
    raw = json.dumps([created.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), UUID(row_id)
    except (ValueError, TypeError) as error:
        raise InvalidCursor("cursor: not a cursor returned by this API") from error


class ReadStore:
    def __init__(self, conninfo: str, *, max_size: int = 10) -> None:
        self.pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=True,
        )

    def close(self) -> None:
        self.pool.close()

    def index_event_topics(self) -> None:
        """Index the event store by topic, so finding a projection's last event is cheap
        (under the lock the projectors' start-up DDL takes too)."""
        with self.pool.connection() as conn:
            create_tables(conn, EVENT_TOPIC_INDEX)

    def get(self, table: str, row_id: UUID) -> dict[str, Any] | None:
        query = sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(table))
        with self.pool.connection() as conn:
            row: dict[str, Any] | None = conn.execute(query, (row_id,)).fetchone()
            return row

    def find_one(self, table: str, filters: Mapping[str, Any]) -> dict[str, Any] | None:
        where, params = _where(TABLES[table], filters)
        query = sql.SQL("SELECT * FROM {} {} LIMIT 1").format(sql.Identifier(table), where)
        with self.pool.connection() as conn:
            row: dict[str, Any] | None = conn.execute(query, params).fetchone()
            return row

    def page(
        self,
        table: str,
        filters: Mapping[str, Any],
        *,
        limit: int,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page:
        """Rows oldest first; `cursor` continues after the last row of the previous page."""
        where, params = _where(TABLES[table], filters)
        count_query = sql.SQL("SELECT count(*) AS n FROM {} {}").format(
            sql.Identifier(table), where
        )
        after = sql.SQL("")
        page_params = list(params)
        if cursor:
            created, row_id = decode_cursor(cursor)
            after = sql.SQL(
                " AND (created, id) > (%s, %s)" if params else " WHERE (created, id) > (%s, %s)"
            )
            page_params += [created, row_id]
        offset = (page - 1) * limit if page and not cursor else 0
        rows_query = sql.SQL(
            "SELECT * FROM {} {}{} ORDER BY created, id LIMIT %s OFFSET %s"
        ).format(sql.Identifier(table), where, after)
        with self.pool.connection() as conn:
            count = conn.execute(count_query, params).fetchone()["n"]  # type: ignore[index]
            rows = conn.execute(rows_query, [*page_params, limit + 1, offset]).fetchall()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1]["created"], rows[-1]["id"])
        return Page(data=rows, count=count, next_cursor=next_cursor)

    def position_of(self, projection: str) -> int:
        table = sql.Identifier(f"{projection}_tracking")
        query = sql.SQL("SELECT max(notification_id) AS n FROM {} WHERE application_name = %s")
        with self.pool.connection() as conn:
            try:
                row = conn.execute(query.format(table), (APPLICATION_NAME,)).fetchone()
            except Exception:
                return 0
        return int(row["n"] or 0) if row else 0

    def target_position(self, projection: str) -> int:
        """The last recorded event this projection follows.

        Projections subscribe to their own topics, so their tracking position only moves on
        those events: the store's overall last event may be one they never see.
        """
        with self.pool.connection() as conn:
            return head_of(conn, TOPICS_OF_PROJECTION[projection])

    def is_current(self, table: str) -> bool:
        projection = PROJECTION_OF_TABLE[table]
        return self.position_of(projection) >= self.target_position(projection)

    def wait_until_current(self, table: str, timeout: float = 5.0) -> bool:
        """Read-your-writes: wait until the table's projection has processed every event of
        its topics recorded before this call. False if it did not within `timeout`, and False
        at once if its projection is known to be stuck (blocked on an event, or its projector
        gone): waiting would only hold a worker thread for nothing."""
        projection = PROJECTION_OF_TABLE[table]
        target = self.target_position(projection)
        deadline = time.monotonic() + timeout
        delay = 0.005
        while self.position_of(projection) < target:
            if time.monotonic() >= deadline or self.is_stuck(projection):
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True

    def is_stuck(self, projection: str) -> bool:
        with self.pool.connection() as conn:
            return is_stuck(conn, projection)

    def projection_health(self) -> list[ProjectionHealth]:
        """Every projection's state and lag, from the projectors' heartbeat rows."""
        with self.pool.connection() as conn:
            return health_of(conn, list(TOPICS_OF_PROJECTION))


def _where(table: Table, filters: Mapping[str, Any]) -> tuple[sql.Composable, list[Any]]:
    clauses = []
    params: list[Any] = []
    for column, value in filters.items():
        if value is None:
            continue
        if column not in table.columns:
            raise KeyError(f"{table.name} has no column {column}")
        if isinstance(value, list | tuple | frozenset | set):
            clauses.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)))
            params.append(list(value))
        else:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if not clauses:
        return sql.SQL(""), params
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses), params
