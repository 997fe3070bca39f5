"""The served ledger: up to which window usage has been served as final, and as of which event.

A usage record is *final* once its window ended more than the grace period ago
(`STRATUS_USAGE_GRACE_SECONDS`), *provisional* before. A window whose final record has been
served (listed, summed or exported) must never change silently again: a reader may have billed
it. So every read that serves final records first writes a ledger row, "every window ending at
or before `horizon` has been served as final, as the usage projection stood at `position`",
and from then on an event that changes such a window writes correction rows
(`projections.usage`), one per window and variant, which are the only way a served window
changes.

Why a ledger, and why positions: the projection judges an event at position N against the
highest horizon served before it (a ledger row with position < N). An event already reflected
in what was served (position ≤ P) is never corrected; every later one is. The judgement
depends only on the event log and the ledger, so replaying the log or rebuilding the usage
tables writes the same corrections. Wall-clock time enters only through the readers, who
decide which windows are final, never through the projection.

Why it is race-free: a reader takes `SERVED_LOCK` shared, reads the projection's position,
writes its ledger row and opens its REPEATABLE READ snapshot while holding it; the projector
holds the lock exclusively for each batch and reads the ledger inside that transaction. So a
reader's snapshot is exactly at the position it recorded, and every batch committed after it
sees its row.

Rebuilding: while the projection replays the log behind the latest ledger row, its records are
short of what was served and the events it has yet to replay will not correct them (they come
before the served positions). So nothing is served as final then: listings mark every record
provisional, exports are refused, and the ledger is left alone.

The ledger is not a read model: it records what readers were given, which the events cannot
tell. Rebuilding the usage projection keeps it (and needs it, to write the same corrections).
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from psycopg import Connection, Cursor, sql

from projections.read_model import Table

#: The advisory lock between readers that serve final records (shared) and the usage
#: projector writing a batch (exclusive). Advisory locks are per database.
SERVED_LOCK = 0x5573_6167_6553_7276  # "UsageSrv"
_NAMESPACE = UUID("5f1c8f4e-3b7a-5c2e-9d41-6a0e2b7c9d15")

USAGE_SERVED = Table(
    "usage_served",
    {
        "id": "uuid PRIMARY KEY",
        "horizon": "timestamptz NOT NULL",
        "position": "bigint NOT NULL",
        "served_at": "timestamptz NOT NULL",
    },
    indexes=("position",),
)


class ServedLedger:
    """The projector's copy of the ledger: the served horizon as a step function of position."""

    def __init__(self, schema: str) -> None:
        self._select = sql.SQL(
            "SELECT position, horizon FROM {0}.usage_served WHERE position >= %s "
            "ORDER BY position, horizon"
        ).format(sql.Identifier(schema))
        self._positions: list[int] = []
        #: The highest horizon served at or before each position in `_positions`.
        self._horizons: list[datetime] = []

    def refresh(self, curs: Cursor[Any]) -> None:
        """Read rows added since the last refresh (inside the projector's locked batch)."""
        since = self._positions[-1] if self._positions else -1
        # Rows at the last known position may have been joined by others: read them again.
        while self._positions and self._positions[-1] == since:
            self._positions.pop()
            self._horizons.pop()
        curs.execute(self._select, (since,))
        for row in curs.fetchall():
            position, horizon = _pair(row)
            highest = max(horizon, self._horizons[-1]) if self._horizons else horizon
            if self._positions and self._positions[-1] == position:
                self._horizons[-1] = highest
            else:
                self._positions.append(position)
                self._horizons.append(highest)

    def horizon_before(self, position: int) -> datetime | None:
        """The end of the windows served before the event at `position` was applied."""
        index = bisect_left(self._positions, position)
        return self._horizons[index - 1] if index else None


def _pair(row: Any) -> tuple[int, datetime]:
    if isinstance(row, dict):
        return int(row["position"]), row["horizon"]
    return int(row[0]), row[1]


def projection_position(conn: Connection[Any], tracking_table: str) -> int:
    """How far the usage projection has applied the event log (0: nothing yet)."""
    found = conn.execute(
        sql.SQL("SELECT max(notification_id) AS n FROM {} WHERE application_name = %s").format(
            sql.Identifier(tracking_table)
        ),
        ("Cloud",),
    ).fetchone()
    value = (found["n"] if isinstance(found, dict) else found[0]) if found else None
    return int(value or 0)


@dataclass(frozen=True)
class ServedSnapshot:
    """What a reader's snapshot reflects: the projection's `position`, and whether the
    projection is `rebuilding` (behind a position already served: its tables were dropped and
    are being replayed). A rebuilding projection serves nothing as final: its records are
    short of what was served before, and the events still to replay will not correct them."""

    position: int
    rebuilding: bool


def served_position(conn: Connection[Any]) -> int:
    """The position of the latest ledger row (0: nothing served yet)."""
    found = conn.execute("SELECT coalesce(max(position), 0) AS n FROM usage_served").fetchone()
    return int((found["n"] if isinstance(found, dict) else found[0]) if found else 0)


@contextlib.contextmanager
def served_snapshot(
    conn: Connection[Any], horizon: datetime | None, tracking_table: str
) -> Iterator[ServedSnapshot]:
    """A REPEATABLE READ transaction on `conn` (an autocommit connection) whose snapshot is
    exactly the usage projection's position; with a `horizon`, the ledger says first that
    windows up to it are served as of that position (unless the projection is rebuilding)."""
    conn.execute("SELECT pg_advisory_lock_shared(%s)", (SERVED_LOCK,))
    locked = True
    try:
        position = projection_position(conn, tracking_table)
        rebuilding = position < served_position(conn)
        if horizon is not None and not rebuilding:
            conn.execute(
                "INSERT INTO usage_served (id, horizon, position, served_at) "
                "SELECT %(id)s, %(horizon)s, %(position)s, now() "
                "WHERE NOT EXISTS (SELECT 1 FROM usage_served WHERE horizon >= %(horizon)s) "
                "ON CONFLICT (id) DO NOTHING",
                {
                    "id": uuid5(_NAMESPACE, f"{horizon.isoformat()}/{position}"),
                    "horizon": horizon,
                    "position": position,
                },
            )
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # The snapshot is taken here, while the projector cannot commit.
            snapshot_position = projection_position(conn, tracking_table)
            conn.execute("SELECT pg_advisory_unlock_shared(%s)", (SERVED_LOCK,))
            locked = False
            if snapshot_position != position:
                raise RuntimeError("the usage projector committed while readers held the lock")
            yield ServedSnapshot(position, rebuilding)
    finally:
        if locked and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock_shared(%s)", (SERVED_LOCK,))


def is_rebuilding(conn: Connection[Any], tracking_table: str) -> bool:
    """Whether the usage projection is behind what has already been served."""
    return projection_position(conn, tracking_table) < served_position(conn)


__all__ = [
    "SERVED_LOCK",
    "USAGE_SERVED",
    "ServedLedger",
    "ServedSnapshot",
    "is_rebuilding",
    "projection_position",
    "served_position",
    "served_snapshot",
]
