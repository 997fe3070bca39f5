"""The projector: runs every read-model projection against the event store, and keeps each one
going on its own.

Each projection follows the `cloud_events` notification log through eventsourcing's
ProjectionRunner (LISTEN/NOTIFY on PostgreSQL) and resumes from its own tracking position, so
several projector processes may run (see `Projector`). A projection that meets an event it
cannot write stops alone: the others keep up, and the projector tries it again with capped
exponential backoff, logs every attempt (projection, notification id, topic, originator,
error), and publishes its state for `/healthz` and `stratus projections status`
(`projections.status`) until it gets past the event or an operator skips it
(`projections.skips`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar, cast

import psycopg
import psycopg.errors
from eventsourcing.persistence import IntegrityError, InternalError, OperationalError, Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import get_topic
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from domain.cloud import Cloud
from projections import status
from projections.events import EventLogProjection, EventLogView
from projections.host_capacity import HostCapacityProjection, HostCapacityView
from projections.inventory import InventoryProjection, InventoryView
from projections.jobs import JobsProjection, JobsView
from projections.read_model import ReadModelView
from projections.skips import MARK_APPLIED, RETRY_REQUESTS_DDL, SKIPS_DDL, RetryRequest, Skip
from projections.skips import retry_requests as read_retry_requests
from projections.skips import skips as read_skips
from projections.snapshot_policies import SnapshotPoliciesProjection, SnapshotPoliciesView
from projections.snapshots import SnapshotsProjection, SnapshotsView
from projections.status import BlockingEvent, ProjectionReport, ProjectionState
from projections.storable_text import make_storable
from projections.usage import UsageProjection, UsageView
from projections.virtual_machines import VirtualMachinesProjection, VirtualMachinesView
from projections.vm_snapshots import VmSnapshotsProjection, VmSnapshotsView
from projections.volumes import VolumesProjection, VolumesView

log = logging.getLogger(__name__)

#: A projection class (which may read `cloud_env`) and the view holding its tables.
ProjectionClass = type[Projection[Any]]

PROJECTIONS: tuple[tuple[ProjectionClass, type[ReadModelView]], ...] = (
    (VirtualMachinesProjection, VirtualMachinesView),
    (VolumesProjection, VolumesView),
    (JobsProjection, JobsView),
    (HostCapacityProjection, HostCapacityView),
    (InventoryProjection, InventoryView),
    (UsageProjection, UsageView),
    (EventLogProjection, EventLogView),
    (VmSnapshotsProjection, VmSnapshotsView),
    (SnapshotsProjection, SnapshotsView),
    (SnapshotPoliciesProjection, SnapshotPoliciesView),
)

#: Indexes the event store by topic, so a projection's last event is one index lookup away.
EVENT_TOPIC_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {status.EVENTS_TABLE}_topic_notification_idx "
    f"ON {status.EVENTS_TABLE} (topic, notification_id)"
)


# -- one projection, guarded ------------------------------------------------------------------
@dataclass(frozen=True)
class FailedEvent:
    """The event a projection was processing when it failed. `own` says the failure is that
    event's alone; a projection that writes a batch of events per transaction cannot say
    which event of the batch failed, and is replayed one event per transaction to find out."""

    event: BlockingEvent
    own: bool


class SkipApplied(Exception):
    """A batching projection skipped an event: its in-memory state no longer matches the
    recorded position, so the projector restarts it from there."""

    def __init__(self, notification_id: int) -> None:
        super().__init__(f"skipped event {notification_id}")
        self.notification_id = notification_id


class ReplayOneByOne(Exception):
    """A batching projection must reach `notification_id` with nothing uncommitted (to skip
    it): the projector restarts it from its recorded position, one event per transaction."""

    def __init__(self, notification_id: int) -> None:
        super().__init__(f"replay one event per transaction through {notification_id}")
        self.notification_id = notification_id


class GuardedProjection:
    """What the projector adds to every projection (mixed in by `bind`).

    - Text PostgreSQL cannot store is made storable before the projection sees the event.
    - A failure remembers the event it happened on, for the log and `/healthz`.
    - An event the operator skipped is tracked without being written, in one transaction with
      the skip's `applied_at`.
    - A projection that batches events (a `BATCH_SIZE` above 1, as the usage projection does)
      writes one event per transaction up to `careful_through`: after a failure inside a
      batch, that names the event that fails; before a skip, it leaves nothing uncommitted.
    """

    skipped: ClassVar[Mapping[int, Skip]] = {}
    careful_through: ClassVar[int] = 0
    name: ClassVar[str]
    view: Any

    def __init__(self, view: Any) -> None:
        super().__init__(view)  # type: ignore[call-arg]
        self.failed_event: FailedEvent | None = None
        self.last_processed: int | None = None
        #: Whether everything this projection processed so far is committed.
        self._committed = True

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        n = tracking.notification_id
        if n in self.skipped:
            self._skip(domain_event, tracking)
            return
        own = self._pace(n)
        make_storable(domain_event)
        try:
            super().process_event(domain_event, tracking)  # type: ignore[misc]
        except BaseException:
            self.failed_event = FailedEvent(_blocking_event(domain_event, n), own)
            raise
        self.last_processed = n

    def _batching(self) -> bool:
        return int(getattr(type(self), "BATCH_SIZE", 1)) > 1

    def _pace(self, n: int) -> bool:
        """Batch or not at event `n`; whether a failure at `n` would be `n`'s own."""
        if not self._batching():
            return True
        careful = n <= self.careful_through
        if careful:
            vars(self)["BATCH_SIZE"] = 1  # the instance's own, shadowing the class's
        else:
            vars(self).pop("BATCH_SIZE", None)
        own = careful and self._committed
        self._committed = careful
        return own

    def _skip(self, domain_event: Any, tracking: Tracking) -> None:
        n = tracking.notification_id
        if self._batching() and not self._committed:
            raise ReplayOneByOne(n)
        with self.view.datastore.transaction(commit=True) as cursor:
            cursor.execute(MARK_APPLIED, (self.name, n))
            self.view._insert_tracking(cursor, tracking)
        skip = self.skipped[n]
        log.warning(
            "projection %s skipped event %s (topic %s, originator %s), as %s recorded at %s: %s",
            self.name,
            n,
            get_topic(type(domain_event)),
            domain_event.originator_id,
            skip.skipped_by,
            skip.skipped_at.isoformat(),
            skip.reason,
        )
        self.last_processed = n
        if self._batching():
            raise SkipApplied(n)


def _blocking_event(domain_event: Any, notification_id: int) -> BlockingEvent:
    originator = getattr(domain_event, "originator_id", None)
    return BlockingEvent(
        notification_id,
        get_topic(type(domain_event)),
        None if originator is None else str(originator),
    )


def bind(
    projection_class: ProjectionClass,
    env: Mapping[str, str],
    *,
    skips: Mapping[int, Skip] | None = None,
    careful_through: int = 0,
) -> ProjectionClass:
    """The projection class with the event store's settings and the projector's guard,
    keeping its name (and tables)."""
    return cast(
        ProjectionClass,
        type(
            projection_class.__name__,
            (GuardedProjection, projection_class),
            {
                "name": projection_class.name,
                "cloud_env": {**env, "CREATE_TABLE": "false"},
                "skipped": dict(skips or {}),
                "careful_through": careful_through,
            },
        ),
    )


# -- races between projectors -----------------------------------------------------------------
T = TypeVar("T")


def retrying_ddl_races(create: Callable[[], T], attempts: int = 5) -> T:
    """Run something that creates tables, again if another process created them at the same
    moment: PostgreSQL's IF NOT EXISTS does not guard its catalog against concurrent DDL, and
    two processes creating a table and its indexes at once can deadlock on the catalog."""
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except (IntegrityError, InternalError, OperationalError) as error:
            if attempt == attempts or not lost_a_race(error):
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


def lost_a_race(error: BaseException) -> bool:
    """Whether another projector process got there first, and trying again will do: it
    recorded the same tracking position (an IntegrityError from the tracking logic itself, or
    a duplicate key in a tracking table), created the same table at the same moment (a
    duplicate key in the catalog, `pg_type`) or changed the catalog at the same moment
    (InternalError: "tuple concurrently updated"), or its DDL and our writes deadlocked
    (PostgreSQL rolled our transaction back whole). A row that breaks a read model's own
    constraint (NOT NULL, CHECK, a unique index) is no race: it fails the same way every
    time. Nor is a lost connection."""
    if isinstance(error, IntegrityError):
        cause = error.__cause__
        if not isinstance(cause, psycopg.Error):
            return True
        if not isinstance(cause, psycopg.errors.UniqueViolation):
            return False
        table = cause.diag.table_name or ""
        constraint = cause.diag.constraint_name or ""
        # Two processes creating the same table or type at once collide in the catalog.
        return (
            table.endswith("_tracking") or table.startswith("pg_") or constraint.startswith("pg_")
        )
    if isinstance(error, InternalError):
        return True
    return isinstance(error, OperationalError) and isinstance(
        error.__cause__, psycopg.errors.DeadlockDetected
    )


def ensure_event_store(env: Mapping[str, str]) -> None:
    """Create the event store's tables and functions once, before any runner starts."""
    retrying_ddl_races(lambda: Cloud(env=dict(env))).close()


# -- the projector ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """How long a blocked projection waits before its next attempt: doubling, capped."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`; the exponent is bounded so that a projection
        blocked for weeks cannot overflow it."""
        return float(min(self.cap, self.first * self.factor ** min(max(0, attempt - 1), 64)))


@dataclass(frozen=True)
class ProjectionFailure:
    """One failed attempt, as logged (attempt 0: a batch failed, its event not yet known)."""

    projection: str
    event: BlockingEvent | None
    error: str
    attempt: int


@dataclass
class Blockage:
    """Why a projection is not moving, and when it is tried again."""

    event: BlockingEvent | None
    error: str
    attempts: int
    since: datetime
    next_attempt: float
    next_attempt_at: datetime


@dataclass
class Lane:
    """One projection as the projector runs it: its runner (None between attempts), and when
    it is blocked, why and until when it waits."""

    name: str
    projection_class: ProjectionClass
    view_class: type[Any]
    runner: ProjectionRunner[Any, Any] | None = None
    blockage: Blockage | None = None
    careful_through: int = 0
    skips_at_start: frozenset[int] = frozenset()
    #: Start again without waiting for the backoff (a lost race, a skip applied, a replay).
    restart_now: bool = False
    #: Where the last lost race happened (None: not in an event), while nothing else failed.
    last_race: tuple[int | None] | None = None
    retry_honoured: datetime | None = None
    position: int | None = None
    head: int | None = None
    #: Heads seen and when (monotonic), oldest first, that the position has not reached yet.
    unseen: deque[tuple[int, float]] = field(default_factory=deque)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self.projection_class.topics)


@dataclass(frozen=True)
class Mends:
    """The operator's skips and retry requests, as last read."""

    skips: dict[str, dict[int, Skip]]
    retries: dict[str, RetryRequest]


class Projector:
    """Runs the projections, each in its own ProjectionRunner, and keeps each one going.

    Several projector processes may follow the same event store. Two that process the same
    event both write its rows and then its tracking position in one transaction; the second
    insert of the position fails (IntegrityError) and rolls back that whole transaction, so
    the rows are written exactly once. The losing runner stops on that error (or on a deadlock
    between one projector's writes and another's start-up DDL, rolled back just as whole), and
    `check` starts it again at once from the position now recorded.

    Any other error stops that projection alone: `check` logs it with the event, tries again
    after `backoff`, and publishes the projection as retrying; it never raises for it. Each
    `check` (call it about once a second) also applies the operator's skips and retry
    requests, and upserts this projector's heartbeat rows in `projection_status`.
    """

    #: Rows of projectors silent this long are deleted at start: they died long ago.
    FORGET_AFTER = timedelta(days=1)
    #: Heads remembered per projection for its lag in seconds.
    MAX_UNSEEN = 1000

    def __init__(
        self,
        env: Mapping[str, str],
        projections: tuple[tuple[type[Any], type[ReadModelView]], ...] = PROJECTIONS,
        *,
        backoff: Backoff = Backoff(),
        heartbeat_every: float = 1.0,
    ) -> None:
        ensure_event_store(env)
        # The event store exists now: the runners' own applications must not issue its DDL
        # again (concurrent CREATE OR REPLACE FUNCTION fails: "tuple concurrently updated").
        self.env = {**env, "CLOUD_CREATE_TABLE": "false"}
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.backoff = backoff
        self.heartbeat_every = heartbeat_every
        self.lanes = {
            projection.name: Lane(projection.name, projection, view)
            for projection, view in projections
        }
        self.restarts = 0
        #: Every failed attempt this projector saw (the most recent ones).
        self.failures: deque[ProjectionFailure] = deque(maxlen=1000)
        self._lock = threading.Lock()
        self._stopped = False
        self._reported_at = 0.0
        self._changed = True
        self._reporting_failed = False
        self.pool: ConnectionPool[Any] = ConnectionPool(
            _conninfo(env),
            min_size=1,
            max_size=1,
            kwargs={"autocommit": True},
            timeout=10,
            name=f"projector-{self.id}",
            open=True,
        )
        with self.pool.connection() as conn:
            status.create_tables(
                conn, status.STATUS_DDL, SKIPS_DDL, RETRY_REQUESTS_DDL, EVENT_TOPIC_INDEX
            )
            status.forget_dead_projectors(conn, self.FORGET_AFTER)
        mends = self._read_mends()
        for lane in self.lanes.values():
            known = mends.retries.get(lane.name) if mends else None
            lane.retry_honoured = known.requested_at if known else None
            self._start(lane, mends)
        self._report()

    # -- the supervision loop -------------------------------------------------------------
    def check(self) -> None:
        """Supervise every projection once: restart one that lost a race, retry a blocked one
        when its backoff is over (at once when the operator skipped its event or asked for a
        retry), and publish the heartbeat. Never raises for a projection's failure."""
        with self._lock:
            if self._stopped:
                return
            mends = self._read_mends()
            for lane in self.lanes.values():
                self._supervise(lane, mends)
            self._report()

    def _supervise(self, lane: Lane, mends: Mends | None) -> None:
        runner = lane.runner
        if runner is not None and runner.is_interrupted.is_set():
            self._collect(lane, runner)
        request = mends.retries.get(lane.name) if mends is not None else None
        if request is not None and (
            lane.retry_honoured is None or request.requested_at > lane.retry_honoured
        ):
            lane.retry_honoured = request.requested_at
            self._retry_now(lane, request)
        skips = set(mends.skips.get(lane.name, {})) if mends is not None else set()
        if lane.runner is not None and mends is not None and skips - lane.skips_at_start:
            # A skip recorded while it runs: start again so that the runner knows of it.
            self._close_quietly(lane.runner)
            lane.runner = None
        if lane.runner is None and self._due(lane, skips):
            self._start(lane, mends)

    def _retry_now(self, lane: Lane, request: RetryRequest) -> None:
        if lane.blockage is None:
            log.warning(
                "projection %s: %s asked for a retry; it is running, nothing to retry",
                lane.name,
                request.requested_by,
            )
            return
        log.warning(
            "projection %s: %s asked for a retry; trying again now", lane.name, request.requested_by
        )
        lane.blockage.next_attempt = time.monotonic()

    def _due(self, lane: Lane, skips: set[int]) -> bool:
        blockage = lane.blockage
        if lane.restart_now or blockage is None or time.monotonic() >= blockage.next_attempt:
            return True
        event = blockage.event
        return event is not None and event.notification_id in skips - lane.skips_at_start

    def _start(self, lane: Lane, mends: Mends | None) -> None:
        skips = mends.skips.get(lane.name, {}) if mends is not None else {}
        projection_class = bind(
            lane.projection_class, self.env, skips=skips, careful_through=lane.careful_through
        )
        try:
            runner: ProjectionRunner[Any, Any] = retrying_ddl_races(
                lambda: ProjectionRunner(
                    application_class=Cloud,
                    projection_class=projection_class,
                    view_class=lane.view_class,
                    env=self.env,
                )
            )
            lane.runner = runner.__enter__()
        except Exception as error:
            self._blocked(lane, None, error)
            return
        lane.skips_at_start = frozenset(skips)
        lane.restart_now = False
        if lane.blockage is not None and lane.blockage.event is None:
            log.warning(
                "projection %s runs again after %d failed attempts",
                lane.name,
                lane.blockage.attempts,
            )
            lane.blockage = None
            self._changed = True

    def _collect(self, lane: Lane, runner: ProjectionRunner[Any, Any]) -> None:
        """The runner stopped: restart at once, or record why it cannot go on."""
        lane.runner = None
        lane.restart_now = True
        try:
            self._close(runner)
            return
        except Exception as caught:
            error = caught
        projection = cast(GuardedProjection, runner.projection)
        failed = projection.failed_event
        if isinstance(error, SkipApplied):
            self._resolve(lane, error.notification_id)
            return
        if isinstance(error, ReplayOneByOne):
            lane.careful_through = max(lane.careful_through, error.notification_id)
            return
        # A second "race" in the same place without progress is no race: it fails every time.
        at = (failed.event.notification_id if failed else None,)
        if lost_a_race(error) and lane.last_race != at:
            lane.last_race = at
            self.restarts += 1
            return
        lane.last_race = None
        event = failed.event if failed else self._event_after(lane, projection.last_processed)
        if failed is not None and not failed.own:
            lane.careful_through = max(lane.careful_through, failed.event.notification_id)
            self.failures.append(ProjectionFailure(lane.name, failed.event, describe(error), 0))
            log.warning(
                "projection %s failed in a batch of events ending at %s (%s); replaying them "
                "one per transaction to find the one it cannot write",
                lane.name,
                failed.event.notification_id,
                describe(error),
            )
            return
        if event is not None:
            lane.careful_through = max(lane.careful_through, event.notification_id)
        lane.restart_now = False
        self._blocked(lane, event, error)

    def _blocked(self, lane: Lane, event: BlockingEvent | None, error: BaseException) -> None:
        previous = lane.blockage
        same = previous is not None and previous.event == event
        attempts = previous.attempts + 1 if previous is not None and same else 1
        delay = self.backoff.delay(attempts)
        now = datetime.now(UTC)
        text = describe(error)
        lane.blockage = Blockage(
            event=event,
            error=text,
            attempts=attempts,
            since=previous.since if previous is not None and same else now,
            next_attempt=time.monotonic() + delay,
            next_attempt_at=now + timedelta(seconds=delay),
        )
        self.failures.append(ProjectionFailure(lane.name, event, text, attempts))
        self._changed = True
        if event is None:
            log.error(
                "projection %s cannot run: %s; attempt %d, next in %.1f s",
                lane.name,
                text,
                attempts,
                delay,
            )
            return
        log.error(
            "projection %s cannot write event %s (topic %s, originator %s): %s; "
            "attempt %d, next in %.1f s",
            lane.name,
            event.notification_id,
            event.topic,
            event.originator_id,
            text,
            attempts,
            delay,
        )

    def _event_after(self, lane: Lane, processed: int | None) -> BlockingEvent | None:
        """The event a runner that failed outside the projection's code (decoding the event)
        could not get past: the first of its topics after the last one it processed."""
        try:
            with self.pool.connection() as conn:
                after = processed if processed is not None else status.position_of(conn, lane.name)
                return status.event_after(conn, after, lane.topics)
        except psycopg.Error:
            return None

    def _read_mends(self) -> Mends | None:
        try:
            with self.pool.connection() as conn:
                recorded: dict[str, dict[int, Skip]] = {}
                for skip in read_skips(conn):
                    recorded.setdefault(skip.projection, {})[skip.notification_id] = skip
                return Mends(recorded, read_retry_requests(conn))
        except psycopg.Error as error:
            self._reporting_trouble(error)
            return None

    # -- the heartbeat ----------------------------------------------------------------------
    def _report(self) -> None:
        now = time.monotonic()
        if not self._changed and now - self._reported_at < self.heartbeat_every:
            return
        try:
            with self.pool.connection() as conn:
                for lane in self.lanes.values():
                    lane.position = status.position_of(conn, lane.name)
                    lane.head = status.head_of(conn, lane.topics)
                    self._note_progress(lane, now)
                status.publish(
                    conn, self.id, [self._report_of(lane, now) for lane in self.lanes.values()]
                )
        except psycopg.Error as error:
            self._reporting_trouble(error)
            return
        if self._reporting_failed:
            log.warning("projector %s reports its projections' status again", self.id)
            self._reporting_failed = False
        self._reported_at = now
        self._changed = False

    def _reporting_trouble(self, error: BaseException) -> None:
        if not self._reporting_failed:
            log.warning("projector %s cannot reach its status tables: %s", self.id, describe(error))
            self._reporting_failed = True

    def _resolve(self, lane: Lane, position: int) -> None:
        """Clear the blockage of a projection that got past its blocking event."""
        blockage = lane.blockage
        if blockage is None or blockage.event is None:
            return
        if position >= blockage.event.notification_id:
            log.warning(
                "projection %s is past event %s after %d failed attempts; running again",
                lane.name,
                blockage.event.notification_id,
                blockage.attempts,
            )
            lane.blockage = None
            self._changed = True

    def _note_progress(self, lane: Lane, now: float) -> None:
        position = lane.position or 0
        self._resolve(lane, position)
        newest = lane.unseen[-1][0] if lane.unseen else position
        if lane.head is not None and lane.head > newest and len(lane.unseen) < self.MAX_UNSEEN:
            lane.unseen.append((lane.head, now))
        while lane.unseen and lane.unseen[0][0] <= position:
            lane.unseen.popleft()

    @staticmethod
    def _report_of(lane: Lane, now: float) -> ProjectionReport:
        blockage = lane.blockage
        return ProjectionReport(
            projection=lane.name,
            state=ProjectionState.RUNNING if blockage is None else ProjectionState.RETRYING,
            position=lane.position,
            head=lane.head,
            seconds_behind=round(now - lane.unseen[0][1], 3) if lane.unseen else 0.0,
            blocking_event=blockage.event if blockage else None,
            error=blockage.error if blockage else None,
            attempts=blockage.attempts if blockage else 0,
            failing_since=blockage.since if blockage else None,
            next_attempt_at=blockage.next_attempt_at if blockage else None,
        )

    # -- waiting and stopping -----------------------------------------------------------------
    def wait(self, position: int, timeout: float = 10.0) -> None:
        """Block until every running projection has processed the event at `position`."""
        deadline = time.monotonic() + timeout
        for lane in list(self.lanes.values()):
            if lane.runner is not None:
                lane.runner.wait(position, timeout=max(0.01, deadline - time.monotonic()))

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            for lane in self.lanes.values():
                if lane.runner is not None:
                    self._close_quietly(lane.runner)
                    lane.runner = None
            with contextlib.suppress(psycopg.Error), self.pool.connection() as conn:
                status.withdraw(conn, self.id)
            self.pool.close()

    def _close_quietly(self, runner: ProjectionRunner[Any, Any]) -> None:
        with contextlib.suppress(Exception):
            self._close(runner)

    @staticmethod
    def _close(runner: ProjectionRunner[Any, Any]) -> None:
        """Stop a runner and give back its connections: the runner closes its application's
        pool but not its view's, which a restarted runner would otherwise leak."""
        try:
            runner.__exit__(None, None, None)
        finally:
            runner.view.datastore.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe(error: BaseException) -> str:
    """An error on one line, with the database's own error class when it has one."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    cause = error.__cause__
    if isinstance(cause, psycopg.Error) and type(cause).__name__ != type(error).__name__:
        text += f" ({type(cause).__name__})"
    return text[:2000]


def _conninfo(env: Mapping[str, str]) -> str:
    return make_conninfo(
        dbname=env["POSTGRES_DBNAME"],
        host=env.get("POSTGRES_HOST", "127.0.0.1"),
        port=env.get("POSTGRES_PORT", "5432"),
        user=env.get("POSTGRES_USER", "postgres"),
        password=env.get("POSTGRES_PASSWORD", ""),
        connect_timeout=env.get("POSTGRES_CONNECT_TIMEOUT", "10"),
    )
