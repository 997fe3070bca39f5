"""/v1/events: the event log (listEvents) — who asked for what, when, and how it ended.

Users read their own account's log; admins read every account's, or the one they name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api.auth import CurrentCaller
from api.dependencies import (
    Consistent,
    Cursor,
    Filter,
    IsoDateTime,
    Limit,
    PageNumber,
    Services,
)
from api.errors import ApiError
from api.models import EventPublic, Listing
from api.reads import account_scope, consistent_read, domains_of
from domain.errors import ErrorCode
from projections.events import EVENT_LOG, EventLevel, EventState, page_event_log
from projections.store import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/events", tags=["events"])
TABLE = EVENT_LOG.name

Instant = Annotated[
    IsoDateTime | None,
    Query(description="ISO 8601; without a UTC offset it is taken as UTC"),
]


@router.get("", response_model=Listing[EventPublic], summary="List events (listEvents)")
def list_events(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    start: Instant = None,
    end: Instant = None,
    type: Annotated[Filter, Query(description="e.g. VM.START")] = None,
    level: EventLevel | None = None,
    state: EventState | None = None,
    resource_id: UUID | None = None,
    job_id: UUID | None = None,
    account_id: UUID | None = None,
    domain_id: Annotated[
        UUID | None, Query(description="the accounts of this domain's subtree (admins)")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[EventPublic]:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end <= start:
        raise ApiError(
            422,
            "end must be after start",
            code=ErrorCode.PARAM_ERROR,
            loc=("query", "end"),
            kind="value_error",
        )
    filters: dict[str, Any] = {
        "type": type.upper() if type else None,
        "level": level.value if level else None,
        "state": state.value if state else None,
        "resource_id": resource_id,
        "job_id": job_id,
        "account_id": account_scope(services, caller, account_id, domain_id),
    }
    after = decode_cursor(cursor) if cursor else None
    consistent_read(services, TABLE, consistent, response)
    found = page_event_log(
        services.reads.pool,
        filters,
        start=start,
        end=end,
        limit=limit,
        after=after,
        page=page,
    )
    domains = domains_of(services, (row["account_id"] for row in found.rows))
    return Listing[EventPublic](
        data=[
            EventPublic(
                **row,
                domain_id=domains.get(str(row["account_id"]), (None, None))[0],
                domain=domains.get(str(row["account_id"]), (None, None))[1],
            )
            for row in found.rows
        ],
        count=found.count,
        next_cursor=encode_cursor(*found.last) if found.last else None,
    )


def _utc(instant: datetime | None) -> datetime | None:
    """A time without an offset is read as UTC, so the answer never depends on the server's
    time zone."""
    if instant is None or instant.tzinfo is not None:
        return instant
    return instant.replace(tzinfo=UTC)
