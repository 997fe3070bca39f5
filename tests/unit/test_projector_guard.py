"""What the projector adds to every projection (`GuardedProjection`), without a database:
the event a failure happened on, storable text, skips, and one event per transaction for a
projection that batches its writes wherever a failure or a skip needs it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import DataError, Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from projections.runner import GuardedProjection, ReplayOneByOne, SkipApplied, bind
from projections.skips import MARK_APPLIED, Skip

POISON = "poison"


@dataclass(frozen=True)
class NameGiven:
    """An event as a projection receives it: decoded, frozen, with an originator."""

    originator_id: UUID
    name: str
    labels: dict[str, str] = field(default_factory=dict)


class FakeCursor:
    def __init__(self, view: FakeView) -> None:
        self.view = view

    def execute(self, statement: str, params: Any) -> None:
        self.view.statements.append((statement, params))


class FakeDatastore:
    def __init__(self, view: FakeView) -> None:
        self.view = view

    @contextlib.contextmanager
    def transaction(self, *, commit: bool) -> Iterator[FakeCursor]:
        assert commit
        yield FakeCursor(self.view)
        self.view.commits += 1


class FakeView:
    """Rows and tracking positions as a PostgreSQL view would commit them."""

    def __init__(self) -> None:
        self.rows: dict[UUID, str] = {}
        self.position: int | None = None
        self.statements: list[tuple[str, Any]] = []
        self.commits = 0
        self.datastore = FakeDatastore(self)

    def record(self, rows: dict[UUID, str], tracking: Tracking) -> None:
        if any(POISON in name for name in rows.values()):
            raise DataError("value out of range")
        self.rows.update(rows)
        self.position = tracking.notification_id
        self.commits += 1

    def _insert_tracking(self, cursor: FakeCursor, tracking: Tracking) -> None:
        self.position = tracking.notification_id


class Names(Projection[Any]):
    """Writes each event's row at once, as the aggregate-state projections do."""

    name = "names"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.record({domain_event.originator_id: domain_event.name}, tracking)


class BatchedNames(Projection[Any]):
    """Commits every BATCH_SIZE events, as the usage projection does while catching up."""

    name = "batched_names"
    BATCH_SIZE = 3

    def __init__(self, view: Any) -> None:
        super().__init__(view)
        self.pending: dict[UUID, str] = {}
        self.count = 0

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.pending[domain_event.originator_id] = domain_event.name
        self.count += 1
        if self.count >= self.BATCH_SIZE:
            self.view.record(self.pending, tracking)
            self.pending, self.count = {}, 0


def guarded(projection: type[Projection[Any]], **kwargs: Any) -> Any:
    cls = bind(projection, {}, **kwargs)
    return cls(FakeView())


def event(name: str = "web") -> NameGiven:
    return NameGiven(uuid.uuid4(), name)


def skip_of(projection: str, notification_id: int) -> Skip:
    return Skip(
        projection=projection,
        notification_id=notification_id,
        event_topic=None,
        event_originator_id=None,
        error="DataError: value out of range",
        reason="a test volume that never existed",
        skipped_by_account_id=None,
        skipped_by="test-admin",
        skipped_at=datetime.now(UTC),
        applied_at=None,
    )


def test_a_failure_names_the_event_its_topic_and_originator() -> None:
    projection = guarded(Names)
    poisoned = event(POISON)
    with pytest.raises(DataError):
        projection.process_event(poisoned, Tracking("Cloud", 7))
    failed = projection.failed_event
    assert failed.event.notification_id == 7
    assert failed.event.topic == get_topic(NameGiven)
    assert failed.event.originator_id == str(poisoned.originator_id)
    assert failed.own


def test_text_postgresql_cannot_store_reaches_the_projection_as_replacement_characters() -> None:
    projection = guarded(Names)
    holding_nul = NameGiven(uuid.uuid4(), "a\x00b", {"k\x00": "\ud800"})
    projection.process_event(holding_nul, Tracking("Cloud", 1))
    assert projection.view.rows[holding_nul.originator_id] == "a\ufffdb"
    assert holding_nul.labels == {"k\ufffd": "\ufffd"}


def test_a_skipped_event_is_tracked_and_marked_applied_without_being_written() -> None:
    poisoned = event(POISON)
    projection = guarded(Names, skips={2: skip_of("names", 2)})
    projection.process_event(event(), Tracking("Cloud", 1))
    projection.process_event(poisoned, Tracking("Cloud", 2))
    assert projection.view.position == 2
    assert poisoned.originator_id not in projection.view.rows
    assert (MARK_APPLIED, ("names", 2)) in projection.view.statements
    later = event()
    projection.process_event(later, Tracking("Cloud", 3))
    assert later.originator_id in projection.view.rows


def test_a_failure_inside_a_batch_is_not_pinned_on_the_event_that_committed_it() -> None:
    projection = guarded(BatchedNames)
    projection.process_event(event(POISON), Tracking("Cloud", 1))
    projection.process_event(event(), Tracking("Cloud", 2))
    with pytest.raises(DataError):
        projection.process_event(event(), Tracking("Cloud", 3))
    assert projection.failed_event.event.notification_id == 3
    assert not projection.failed_event.own


def test_replayed_one_event_per_transaction_a_batching_projection_names_the_event() -> None:
    projection = guarded(BatchedNames, careful_through=3)
    with pytest.raises(DataError):
        projection.process_event(event(POISON), Tracking("Cloud", 1))
    assert projection.failed_event.event.notification_id == 1
    assert projection.failed_event.own


def test_past_the_careful_stretch_a_batching_projection_batches_again() -> None:
    projection = guarded(BatchedNames, careful_through=1)
    projection.process_event(event(), Tracking("Cloud", 1))
    commits = projection.view.commits
    projection.process_event(event(), Tracking("Cloud", 2))
    projection.process_event(event(), Tracking("Cloud", 3))
    assert projection.view.commits == commits  # two events pending: a batch is three
    projection.process_event(event(), Tracking("Cloud", 4))
    assert projection.view.commits == commits + 1


def test_a_batching_projection_with_uncommitted_events_replays_before_it_skips() -> None:
    projection = guarded(BatchedNames, skips={2: skip_of("batched_names", 2)})
    projection.process_event(event(), Tracking("Cloud", 1))
    with pytest.raises(ReplayOneByOne) as replay:
        projection.process_event(event(POISON), Tracking("Cloud", 2))
    assert replay.value.notification_id == 2
    assert projection.view.position is None  # nothing lost: event 1 was never committed


def test_a_batching_projection_with_everything_committed_skips_then_restarts() -> None:
    projection = guarded(BatchedNames, skips={2: skip_of("batched_names", 2)}, careful_through=2)
    projection.process_event(event(), Tracking("Cloud", 1))
    with pytest.raises(SkipApplied):
        projection.process_event(event(POISON), Tracking("Cloud", 2))
    assert projection.view.position == 2
    assert isinstance(projection, GuardedProjection)
