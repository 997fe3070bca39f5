"""The usage projection: domain events → intervals of usage, exactly once.

What it keeps (tables, all rebuilt from the event store by replay):

- `usage_resources`: what events said about each metered resource (its facts: owner, zone,
  offering, template, size) and about accounts (name, domain).
- `usage_intervals`: one row per interval of one usage type of one resource: opened at an
  event's time, closed at a later event's time, or still open. Records are cut from these per
  aggregation window when read (`projections.usage_records`): an open interval counts up to
  each window's end and continues in the next one.
- `usage_corrections`: the changes made to windows already served as final (below).

It creates and reads, but never writes, `usage_served` (`projections.usage_served`): how far
usage has been served as final, which rebuilding keeps.

Exactly once: every event is applied in one transaction that writes its rows *and* advances
the tracking position (eventsourcing's single-row tracking refuses a position that is not
ahead), so an event is either fully reflected or not at all. Row ids are derived from the
resource, usage type and interval number, never from wall-clock or process state, so replaying
the same events, restarting anywhere, or losing a race to a second projector process (whose
transaction then fails on tracking and rolls back) writes the same rows. The commit is
asynchronous (`synchronous_commit = off`): a database crash can only lose the latest
transactions as a whole, rows and tracking together, which are then applied again.

Time: an event counts at its `timestamp` (or an explicit `occurred_at`, if an event class ever
carries one), truncated to the millisecond, and never before the previous usage change of the
same resource, so a clock skewed between workers cannot make a stop precede its start.

Late events: notification order is commit order, which can differ from timestamp order across
concurrent writers, and a worker may commit an event long after its time. A window is frozen
once a reader has been served its final record (the served ledger, judged by event position,
not by any clock). An event whose time falls before the served horizon still changes the
intervals (so records are right), and also writes correction rows: one per served window and
variant it changes, saying which resource, usage type and variant, over which part of the
window, by how many milliseconds (signed), because of which event. So the record a reader was
served plus its corrections is always the record now; records of corrected windows show their
number of corrections, and the API lists the corrections: visible, never silent, never counted
twice, since a record is always recomputed from the intervals, not added to. Every change an
event makes is kept until its batch is written, and turned into corrections there, under the
ledger's lock: a reader serving a window while the batch was being computed is still seen.
A correction row per window keeps each one tied to one record; the price is that an event
stamped many windows before the served horizon writes that many rows per changed variant.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid5

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier, Literal

from projections.read_model import ReadModelView, Row, Table, _adapt
from projections.usage_served import SERVED_LOCK, USAGE_SERVED, ServedLedger
from projections.usage_settings import UsageSettings
from projections.usage_types import USAGE_CATALOG, Facts, UsageCatalog, UsageDeclaration
from projections.usage_windows import AggregationWindow, to_ms_precision

log = logging.getLogger("stratus.usage")

USAGE_NAMESPACE = UUID("0b0e5f7a-5d7c-5a43-9c5e-7f2b3c1d4e60")
#: The Cloud application's notification log, which the projection follows.
EVENTS_TABLE = "cloud_events"

USAGE_RESOURCES = Table(
    "usage_resources",
    {
        "id": "uuid PRIMARY KEY",
        "kind": "text NOT NULL",
        "facts": "jsonb NOT NULL",
        "described_by": "bigint NOT NULL",
    },
    indexes=("kind",),
)

USAGE_INTERVALS = Table(
    "usage_intervals",
    {
        "id": "uuid PRIMARY KEY",
        "resource_id": "uuid NOT NULL",
        "usage_type": "smallint NOT NULL",
        "seq": "integer NOT NULL",
        "started_at": "timestamptz NOT NULL",
        "ended_at": "timestamptz",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid",
        "resource_name": "text",
        "offering_id": "uuid",
        "template_id": "uuid",
        "size_bytes": "bigint",
        "opened_by": "bigint NOT NULL",
        "closed_by": "bigint",
    },
    indexes=("started_at", "account_id, started_at", "resource_id, usage_type, seq"),
)

USAGE_CORRECTIONS = Table(
    "usage_corrections",
    {
        "id": "uuid PRIMARY KEY",
        "notification_id": "bigint NOT NULL",
        "resource_id": "uuid NOT NULL",
        "usage_type": "smallint NOT NULL",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid",
        "resource_name": "text",
        "offering_id": "uuid",
        "template_id": "uuid",
        "size_bytes": "bigint",
        "period_start": "timestamptz NOT NULL",
        "period_end": "timestamptz NOT NULL",
        "delta_ms": "bigint NOT NULL",
        "reason": "text NOT NULL",
        "event_topic": "text NOT NULL",
        "event_time": "timestamptz NOT NULL",
        "watermark": "timestamptz NOT NULL",
    },
    indexes=("resource_id, usage_type", "account_id, period_start", "notification_id"),
)


class UsageView(ReadModelView):
    """The usage tables, written together with the tracking position."""

    # The first table names the projection for read-your-writes (`projections.store`).
    tables = (USAGE_INTERVALS, USAGE_RESOURCES, USAGE_CORRECTIONS, USAGE_SERVED)

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = datastore.schema
        # Tables made before corrections named their record's resource. Altered only then:
        # ALTER TABLE waits for every reader of the table, even when it has nothing to do.
        self.sql_create_statements.append(
            SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns "
                "WHERE table_schema = {0} AND table_name = {1} AND column_name = 'resource_name') "
                "THEN ALTER TABLE {2}.{3} ADD COLUMN resource_name text; END IF; END $$"
            ).format(
                Literal(schema),
                Literal(USAGE_CORRECTIONS.name),
                Identifier(schema),
                Identifier(USAGE_CORRECTIONS.name),
            )
        )
        self.ledger = ServedLedger(schema)
        self._select_resource = f'SELECT kind, facts FROM "{schema}".usage_resources WHERE id = %s'
        self._select_intervals = (
            f'SELECT * FROM "{schema}".usage_intervals WHERE resource_id = %s '
            "ORDER BY usage_type, seq"
        )
        self._lock_position = (
            f'SELECT notification_id FROM "{schema}"."{self.tracking_table_name}" '
            "WHERE application_name = %s FOR UPDATE"
        )
        self._select_head = f'SELECT max(notification_id) AS n FROM "{schema}".{EVENTS_TABLE}'

    def apply(
        self,
        writes: Mapping[tuple[str, Any], Row],
        tracking: Tracking,
        base: int | None,
        corrections: Callable[[ServedLedger], Iterable[Row]] | None = None,
    ) -> None:
        """Write a batch's rows, its corrections and its tracking position in one transaction.

        The batch was computed from state as of position `base`; if another process has
        recorded a different position since, the state may be stale and nothing is written
        (IntegrityError, like a lost tracking race). Corrections are made here, from the
        served ledger as it stands under the lock that readers serving final records share
        (`projections.usage_served`). The commit is asynchronous (see module).
        """
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SET LOCAL synchronous_commit = off")
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (SERVED_LOCK,))
            curs.execute(self._lock_position, (tracking.application_name,))
            found = curs.fetchone()
            recorded = None if found is None else found["notification_id"]
            if recorded != base:
                raise IntegrityError(
                    f"usage position moved from {base} to {recorded} under this projector"
                )
            by_table: dict[str, list[Row]] = {}
            for (table, _), row in writes.items():
                by_table.setdefault(table, []).append(_adapt(row))
            if corrections is not None:
                self.ledger.refresh(curs)
                for row in corrections(self.ledger):
                    by_table.setdefault(USAGE_CORRECTIONS.name, []).append(_adapt(row))
            for table, rows in by_table.items():
                curs.executemany(self._upserts[table], rows)
            self._insert_tracking(curs, tracking)

    def position(self, application_name: str) -> int | None:
        return self.max_tracking_id(application_name)

    def head(self) -> int:
        """The id of the last event recorded in the event store."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
            curs.execute(self._select_head)
            found = curs.fetchone()
        return int(found["n"] or 0) if found else 0

    def load_resource(self, resource_id: UUID) -> tuple[str | None, Facts, list[dict[str, Any]]]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
            curs.execute(self._select_resource, (resource_id,))
            found = curs.fetchone()
            curs.execute(self._select_intervals, (resource_id,))
            intervals = list(curs.fetchall())
        if found is None:
            return None, {}, intervals
        return found["kind"], dict(found["facts"]), intervals


@dataclass
class Interval:
    resource_id: UUID
    usage_type: int
    seq: int
    started_at: datetime
    attributes: Facts
    opened_by: int
    ended_at: datetime | None = None
    closed_by: int | None = None

    @property
    def id(self) -> UUID:
        return uuid5(USAGE_NAMESPACE, f"{self.resource_id}/{self.usage_type}/{self.seq}")

    def row(self) -> Row:
        return {
            "id": self.id,
            "resource_id": self.resource_id,
            "usage_type": self.usage_type,
            "seq": self.seq,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            **self.attributes,
            "opened_by": self.opened_by,
            "closed_by": self.closed_by,
        }


_ATTRIBUTES = ("account_id", "zone_id", "resource_name", "offering_id", "template_id", "size_bytes")


@dataclass
class ResourceState:
    """What the projection knows of one resource between events."""

    kind: str | None
    facts: Facts
    open: dict[int, Interval] = field(default_factory=dict)
    next_seq: dict[int, int] = field(default_factory=dict)
    #: The time of the resource's latest usage change: later changes never go before it.
    last_change: datetime | None = None

    @classmethod
    def loaded(cls, kind: str | None, facts: Facts, rows: list[dict[str, Any]]) -> ResourceState:
        state = cls(kind, facts)
        for row in rows:
            usage_type = int(row["usage_type"])
            state.next_seq[usage_type] = max(state.next_seq.get(usage_type, 0), row["seq"] + 1)
            latest = row["ended_at"] or row["started_at"]
            if state.last_change is None or latest > state.last_change:
                state.last_change = latest
            if row["ended_at"] is None:
                state.open[usage_type] = Interval(
                    resource_id=row["resource_id"],
                    usage_type=usage_type,
                    seq=row["seq"],
                    started_at=row["started_at"],
                    attributes={name: _plain(row[name]) for name in _ATTRIBUTES},
                    opened_by=row["opened_by"],
                )
        return state


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, UUID) else value


def _uuid(value: Any) -> UUID | None:
    return None if value is None else UUID(str(value))


def _typed(attributes: Mapping[str, Any]) -> Facts:
    """Attributes as the table stores them (uuid columns as UUIDs)."""
    return {
        name: (_uuid(value) if name.endswith("_id") else value)
        for name, value in attributes.items()
    }


@dataclass(frozen=True)
class UsageChange:
    """Usage an event added (+1) to or took away (-1) from one variant of a resource's usage
    type, from `at` on. If a reader had been served windows after `at` when the event was
    applied, each of those windows gets a correction (`UsageProjection.corrections`)."""

    notification_id: int
    resource_id: UUID
    usage_type: int
    attributes: Facts
    at: datetime
    sign: int
    reason: str
    topic: str


class UsageProjection(Projection[UsageView]):
    name = "usage_projection"
    #: Every event: events that meter nothing still advance the tracking position, so a
    #: read-your-writes wait on usage tables ends (see `projections.store.wait_until_current`).
    topics: tuple[str, ...] = ()
    catalog: ClassVar[UsageCatalog] = USAGE_CATALOG
    cloud_env: ClassVar[Mapping[str, str] | None] = None
    CACHE_SIZE = 100_000
    #: Events applied per transaction while catching up; at the head of the log every event
    #: is committed at once, so read-your-writes waits no longer than one event.
    BATCH_SIZE = 1000
    APPLICATION_NAME = "Cloud"

    def __init__(self, view: UsageView) -> None:
        super().__init__(view)
        self.window: AggregationWindow = UsageSettings.from_env(self.cloud_env).aggregation
        self._cache: OrderedDict[UUID, ResourceState] = OrderedDict()
        #: The position the in-memory state reflects; a batch commits only on top of it.
        self._base: int | None = view.position(self.APPLICATION_NAME)
        self._head = 0
        self._pending: dict[tuple[str, Any], Row] = {}
        self._changes: list[UsageChange] = []
        self._pending_events = 0

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        try:
            self._process(domain_event, tracking)
            self._pending_events += 1
            if self._pending_events >= self.BATCH_SIZE or self._at_head(tracking):
                self.view.apply(self._pending, tracking, self._base, self.corrections)
                self._base = tracking.notification_id
                self._pending = {}
                self._changes = []
                self._pending_events = 0
        except BaseException:
            # In-memory state may be ahead of what was committed: forget it all. The runner
            # stops on the error; a new projection starts from the recorded position.
            self._cache.clear()
            self._pending = {}
            self._changes = []
            raise

    def corrections(self, ledger: ServedLedger) -> list[Row]:
        """The correction rows of the pending batch: for each change made before the horizon
        served ahead of its event, one row per served window it changes."""
        rows: list[Row] = []
        numbers: dict[int, int] = {}
        for change in self._changes:
            horizon = ledger.horizon_before(change.notification_id)
            if horizon is None or change.at >= horizon:
                continue
            for window_start, window_end, ms in self.window.cut(
                change.at, horizon, change.at, horizon
            ):
                number = numbers.get(change.notification_id, 0)
                numbers[change.notification_id] = number + 1
                rows.append(
                    {
                        "id": uuid5(
                            USAGE_NAMESPACE, f"correction/{change.notification_id}/{number}"
                        ),
                        "notification_id": change.notification_id,
                        "resource_id": change.resource_id,
                        "usage_type": change.usage_type,
                        **_typed({k: change.attributes.get(k) for k in _ATTRIBUTES}),
                        "period_start": max(change.at, window_start),
                        "period_end": min(window_end, horizon),
                        "delta_ms": change.sign * ms,
                        "reason": change.reason,
                        "event_topic": change.topic,
                        "event_time": change.at,
                        "watermark": horizon,
                    }
                )
        return rows

    def _at_head(self, tracking: Tracking) -> bool:
        if tracking.notification_id >= self._head:
            self._head = self.view.head()
        return tracking.notification_id >= self._head

    def _process(self, event: Any, tracking: Tracking) -> None:
        fact_rules = self.catalog.facts_for(type(event))
        edges = [
            (declaration, opens)
            for declaration, rule, opens in self.catalog.edges_for(type(event))
            if rule.when(event)
        ]
        if not fact_rules and not edges:
            return

        resource_id: UUID = event.originator_id
        state = self._state_of(resource_id)
        writes: list[tuple[str, Row]] = []
        when = to_ms_precision(getattr(event, "occurred_at", None) or event.timestamp)
        if state.last_change is not None and when < state.last_change:
            when = state.last_change

        facts_changed = False
        for rule in fact_rules:
            stated = {k: v for k, v in rule.extract(event).items() if v is not None}
            merged = {**state.facts, **stated, "id": str(resource_id)}
            if merged != state.facts or state.kind != rule.kind:
                state.facts, state.kind, facts_changed = merged, rule.kind, True
        if facts_changed:
            writes.append(
                (
                    USAGE_RESOURCES.name,
                    {
                        "id": resource_id,
                        "kind": state.kind,
                        "facts": state.facts,
                        "described_by": tracking.notification_id,
                    },
                )
            )

        topic = get_topic(type(event))

        def changed_usage(usage_type: int, attributes: Facts, sign: int, reason: str) -> None:
            self._changes.append(
                UsageChange(
                    tracking.notification_id,
                    resource_id,
                    usage_type,
                    dict(attributes),
                    when,
                    sign,
                    reason,
                    topic,
                )
            )

        changed = False
        touched: set[int] = set()
        for declaration, opens in edges:
            usage_type = int(declaration.usage_type)
            touched.add(usage_type)
            current = state.open.get(usage_type)
            if opens and current is None and declaration.meters(state.facts):
                interval = self._open(state, declaration, resource_id, when, tracking)
                writes.append((USAGE_INTERVALS.name, self._row(interval)))
                changed_usage(usage_type, interval.attributes, +1, "late start")
                changed = True
            elif not opens and current is not None:
                closed = self._close(state, current, when, tracking)
                writes.append((USAGE_INTERVALS.name, self._row(closed)))
                changed_usage(usage_type, closed.attributes, -1, "late stop")
                changed = True

        if facts_changed:
            for usage_type, current in list(state.open.items()):
                if usage_type in touched:
                    continue
                declaration = self._declaration(state.kind, usage_type)
                attributes = declaration.attributes(state.facts)
                if attributes == current.attributes:
                    continue
                changed_usage(usage_type, current.attributes, -1, "late change (before)")
                changed_usage(usage_type, attributes, +1, "late change (after)")
                if current.started_at == when:
                    current.attributes = attributes
                    writes.append((USAGE_INTERVALS.name, self._row(current)))
                    continue
                closed = self._close(state, current, when, tracking)
                reopened = self._open(state, declaration, resource_id, when, tracking)
                writes += [
                    (USAGE_INTERVALS.name, self._row(closed)),
                    (USAGE_INTERVALS.name, self._row(reopened)),
                ]
                changed = True

        if changed:
            state.last_change = when
        for table, row in writes:
            self._pending[(table, row["id"])] = row

    def _declaration(self, kind: str | None, usage_type: int) -> UsageDeclaration:
        for declaration in self.catalog.declarations_of(kind or ""):
            if declaration.usage_type == usage_type:
                return declaration
        raise LookupError(f"no usage declaration of type {usage_type} for {kind}")

    @staticmethod
    def _open(
        state: ResourceState,
        declaration: UsageDeclaration,
        resource_id: UUID,
        when: datetime,
        tracking: Tracking,
    ) -> Interval:
        usage_type = int(declaration.usage_type)
        seq = state.next_seq.get(usage_type, 0)
        state.next_seq[usage_type] = seq + 1
        interval = Interval(
            resource_id=resource_id,
            usage_type=usage_type,
            seq=seq,
            started_at=when,
            attributes=declaration.attributes(state.facts),
            opened_by=tracking.notification_id,
        )
        state.open[usage_type] = interval
        return interval

    @staticmethod
    def _close(
        state: ResourceState, interval: Interval, when: datetime, tracking: Tracking
    ) -> Interval:
        del state.open[interval.usage_type]
        return replace(interval, ended_at=when, closed_by=tracking.notification_id)

    @staticmethod
    def _row(interval: Interval) -> Row:
        row = interval.row()
        row.update(_typed({k: row[k] for k in _ATTRIBUTES if k.endswith("_id")}))
        return row

    def _state_of(self, resource_id: UUID) -> ResourceState:
        state = self._cache.pop(resource_id, None)
        if state is None:
            state = ResourceState.loaded(*self.view.load_resource(resource_id))
        self._cache[resource_id] = state
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return state
