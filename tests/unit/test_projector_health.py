"""How a blocked projection is retried and how every projector's reports become one verdict per
projection (what `/healthz` and `stratus projections status` say), and which text a read model
can store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from projections.runner import Backoff
from projections.status import ProjectionState, summarize
from projections.storable_text import REPLACEMENT, storable, storable_text

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def report(projection: str, projector: str, age: float, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "projection": projection,
        "projector": projector,
        "state": "running",
        "position": 10,
        "head": 10,
        "seconds_behind": 0.0,
        "event_notification_id": None,
        "event_topic": None,
        "event_originator_id": None,
        "error": None,
        "attempts": 0,
        "failing_since": None,
        "next_attempt_at": None,
        "heartbeat_at": NOW - timedelta(seconds=age),
        "age": timedelta(seconds=age),
    }
    row.update(fields)
    return row


BLOCKED = {
    "state": "retrying",
    "position": 41,
    "head": 50,
    "event_notification_id": 42,
    "event_topic": "domain.volume:Volume.Allocated",
    "event_originator_id": "6f1c",
    "error": "DataError: bigint out of range",
    "attempts": 3,
}


def test_backoff_doubles_from_the_first_delay_up_to_its_cap() -> None:
    backoff = Backoff(first=1.0, factor=2.0, cap=60.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_stays_at_its_cap_however_long_a_projection_is_blocked() -> None:
    assert Backoff(cap=60.0).delay(1_000_000) == 60.0


def test_a_projection_no_projector_reports_is_stopped() -> None:
    (health,) = summarize(["volumes_projection"], [])
    assert health.state is ProjectionState.STOPPED
    assert "no projector" in health.detail


def test_one_projector_blocked_on_an_event_makes_the_projection_retrying() -> None:
    rows = [
        report("volumes_projection", "a", age=1),
        report("volumes_projection", "b", age=2, **BLOCKED),
    ]
    (health,) = summarize(["volumes_projection"], rows)
    assert health.state is ProjectionState.RETRYING
    assert health.blocking_event is not None
    assert health.blocking_event.notification_id == 42
    assert health.blocking_event.topic == "domain.volume:Volume.Allocated"
    assert health.error == "DataError: bigint out of range"
    assert health.behind == 9
    assert "cannot write event 42" in health.detail and health.projector == "b"


def test_a_projection_whose_projectors_all_went_silent_is_stopped_with_their_last_word() -> None:
    rows = [report("volumes_projection", "a", age=120, **BLOCKED)]
    (health,) = summarize(["volumes_projection"], rows, stale_after=timedelta(seconds=30))
    assert health.state is ProjectionState.STOPPED
    assert health.blocking_event is not None and health.blocking_event.notification_id == 42
    assert "no heartbeat from projector a for 120 s" in health.detail


def test_a_silent_projector_does_not_hide_a_live_one() -> None:
    rows = [
        report("jobs_projection", "dead", age=600, **BLOCKED),
        report("jobs_projection", "alive", age=1, position=60, head=64),
    ]
    (health,) = summarize(["jobs_projection"], rows)
    assert health.state is ProjectionState.RUNNING
    assert health.behind == 4
    assert health.detail == "catching up: 4 notification ids behind"


def test_nul_and_lone_surrogates_become_replacement_characters() -> None:
    assert storable_text("a\x00b\ud800c") == f"a{REPLACEMENT}b{REPLACEMENT}c"
    assert storable_text("zürich 🌩") == "zürich 🌩"


def test_storable_reaches_into_json_documents_keys_included() -> None:
    document = {"name\x00": ["x\x00", {"deep": "\udc00"}], "size": 3}
    assert storable(document) == {
        f"name{REPLACEMENT}": [f"x{REPLACEMENT}", {"deep": REPLACEMENT}],
        "size": 3,
    }


def test_storable_text_leaves_the_same_object_when_there_is_nothing_to_replace() -> None:
    document = {"name": ["web-1", {"zone": "z"}], "size": 3}
    assert storable(document) is document
