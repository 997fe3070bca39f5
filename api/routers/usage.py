"""/v1/usage-records, /v1/usage-types, /v1/usage-corrections: metering and billing exports
(listUsageRecords, listUsageTypes).

Records are cut from the usage projection's intervals per aggregation window
(`STRATUS_USAGE_WINDOW`, `STRATUS_USAGE_TIMEZONE`); a user sees its own account's records, an
admin anyone's. Listings and summaries include the open window's usage so far as provisional
records (`provisional: true`); exports hold final records only, and stream from a server-side
cursor, so their size is bounded by nothing but the period. A served final window changes only
through a correction (`/v1/usage-corrections`), see `projections.usage_served`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.auth import CurrentCaller
from api.dependencies import Consistent, Cursor, FirstPage, Limit, Services
from api.errors import ApiError
from api.reads import account_scope, consistent_read, domains_of
from domain.errors import ErrorCode
from projections.tariff import Tariff
from projections.usage_records import (
    ExportFormat,
    InvalidUsageCursor,
    RecordQuery,
    UsageRecords,
    export_chunks,
    usage_type_listing,
)
from projections.usage_settings import UsageSettings
from projections.usage_types import USAGE_CATALOG, UsageType

router = APIRouter(tags=["usage"])
TABLE = "usage_intervals"

Start = Annotated[
    datetime,
    Query(description="period start, ISO 8601; without an offset, in the usage timezone"),
]
End = Annotated[datetime, Query(description="period end (exclusive), ISO 8601")]
AccountFilter = Annotated[
    UUID | None, Query(alias="account", description="account id (admins: any account)")
]
TypeFilter = Annotated[
    str | None, Query(alias="type", description="usage type id or name (RUNNING_VM or 1)")
]
ZoneFilter = Annotated[UUID | None, Query(alias="zone", description="zone id")]
DomainFilter = Annotated[
    UUID | None,
    Query(alias="domain", description="domain id: the accounts of its subtree (admins)"),
]
#: The periods usage can be asked for: no usage predates the epoch, and windows are computed a
#: day beyond a period's end, which must stay within the calendar's range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class UsageRecordPublic(BaseModel):
    id: UUID = Field(description="stable record id: the same after a rebuild")
    account_id: UUID
    account_name: str | None
    domain: str | None
    domain_id: UUID | None = Field(default=None, description="the account's domain")
    zone_id: UUID | None
    usage_type: int
    usage_type_name: str
    description: str
    raw_usage: float = Field(description="hours, exact to the millisecond")
    raw_usage_ms: int
    usage: str = Field(description='hours as CloudStack shows them: "1.5 Hrs"')
    start_date: datetime
    end_date: datetime
    resource_id: UUID
    resource_name: str | None
    offering_id: UUID | None
    template_id: UUID | None
    size_bytes: int | None
    corrections: int = Field(description="late events that changed this window's usage")
    provisional: bool = Field(
        description="the window is open or just closed: usage so far, not yet final, never "
        "exported; it becomes final with the same id"
    )


class UsageRecordListing(BaseModel):
    data: list[UsageRecordPublic]
    count: int
    provisional_count: int = Field(description="how many of the `count` records are provisional")
    final_until: datetime | None = Field(
        description="records of windows ending at or before this instant are final (null: "
        "none, while the usage records are being rebuilt)"
    )
    next_cursor: str | None = None


class UsageTypePublic(BaseModel):
    id: int
    name: str
    description: str
    metered: bool = Field(description="whether Stratus meters this type yet")


class UsageTypeSummary(BaseModel):
    usage_type: int
    usage_type_name: str
    records: int
    raw_usage: float
    raw_usage_ms: int
    usage: str
    gib_hours: float = Field(description="size × time, for size-metered types")
    cost: str | None = Field(description="decimal, in the tariff's currency; null: no tariff")
    provisional_records: int = Field(description="records of the totals not final yet")
    provisional_raw_usage_ms: int = Field(description="usage of the totals not final yet")
    provisional_cost: str | None = Field(description="cost of the totals not final yet")


class AccountUsageSummary(BaseModel):
    account_id: UUID
    account_name: str | None
    domain: str | None
    start: datetime
    end: datetime
    final_until: datetime | None = Field(
        description="usage of windows ending after this is provisional (null: all of it, while "
        "the usage records are being rebuilt)"
    )
    provisional: bool = Field(description="whether the figures include provisional usage")
    currency: str | None
    total_cost: str | None
    usage: list[UsageTypeSummary]


class UsageCorrectionPublic(BaseModel):
    notification_id: int = Field(description="the event (its position in the event log)")
    record_id: UUID = Field(description="the record corrected: served usage + delta = now")
    resource_id: UUID
    resource_name: str | None
    usage_type: int
    usage_type_name: str
    account_id: UUID
    zone_id: UUID | None
    offering_id: UUID | None
    template_id: UUID | None
    size_bytes: int | None
    window_start: datetime
    window_end: datetime
    period_start: datetime = Field(description="the part of the window the event changed")
    period_end: datetime
    delta_ms: int
    delta_hours: float
    reason: str
    event_topic: str
    event_time: datetime
    watermark: datetime = Field(
        description="the end of the windows already served as final when the event arrived"
    )


class UsageCorrectionListing(BaseModel):
    data: list[UsageCorrectionPublic]
    count: int


def usage_settings(request: Request) -> UsageSettings:
    """The app's usage settings (set by the composition root), else the environment's."""
    settings = getattr(request.app.state, "usage_settings", None)
    if settings is None:
        settings = UsageSettings.from_env()
        request.app.state.usage_settings = settings
    return settings  # type: ignore[no-any-return]


def usage_records(request: Request, services: Any) -> UsageRecords:
    settings = usage_settings(request)
    return UsageRecords(services.reads.pool, settings.aggregation, grace=settings.grace)


def tariff_of(request: Request) -> Tariff | None:
    if hasattr(request.app.state, "usage_tariff"):
        cached: Tariff | None = request.app.state.usage_tariff
        return cached
    path = usage_settings(request).tariff
    tariff = Tariff.load(path) if path is not None else None
    request.app.state.usage_tariff = tariff
    return tariff


def _bad(field: str, message: str) -> ApiError:
    return ApiError(
        422, message, code=ErrorCode.PARAM_ERROR, loc=("query", field), kind="value_error"
    )


def record_query(
    request: Request,
    caller: Any,
    start: datetime,
    end: datetime,
    account: UUID | None,
    usage_type: str | None,
    zone: UUID | None,
    domain: UUID | None = None,
) -> RecordQuery:
    """Validated filters: a bounded, well-ordered period, a known type, an allowed account."""
    settings = usage_settings(request)
    zone_info = settings.aggregation.zone
    if start.tzinfo is None:
        start = start.replace(tzinfo=zone_info)
    if end.tzinfo is None:
        end = end.replace(tzinfo=zone_info)
    if start < EARLIEST:
        raise _bad("start", f"start must be on or after {EARLIEST.isoformat()}")
    if end > LATEST:
        raise _bad("end", f"end must be on or before {LATEST.isoformat()}")
    if end <= start:
        raise _bad("end", "end must be after start")
    if end - start > timedelta(days=settings.max_span_days):
        raise _bad("end", f"the period may span at most {settings.max_span_days} days")
    parsed_type = None
    if usage_type is not None:
        try:
            parsed_type = UsageType.parse(usage_type)
        except ValueError:
            raise _bad("type", f"unknown usage type {usage_type!r}") from None
    return RecordQuery(
        start=start,
        end=end,
        account_id=account_scope(request.app.state.services, caller, account, domain),
        usage_type=parsed_type,
        zone_id=zone,
    )


@router.get("/v1/usage-types", response_model=list[UsageTypePublic], summary="List usage types")
def list_usage_types(caller: CurrentCaller) -> list[UsageTypePublic]:
    return [UsageTypePublic(**row) for row in usage_type_listing(USAGE_CATALOG.metered_types())]


@router.get("/v1/usage-records", response_model=UsageRecordListing, summary="List usage records")
def list_usage_records(
    request: Request,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    start: Start,
    end: End,
    account: AccountFilter = None,
    type: TypeFilter = None,
    zone: ZoneFilter = None,
    domain: DomainFilter = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    consistent: Consistent = False,
) -> UsageRecordListing:
    query = record_query(request, caller, start, end, account, type, zone, domain)
    consistent_read(services, TABLE, consistent, response)
    try:
        found = usage_records(request, services).page(query, limit=limit, cursor=cursor)
    except InvalidUsageCursor as error:
        raise ApiError(
            422, str(error), code=ErrorCode.MALFORMED_PARAMETER, loc=("query", "cursor")
        ) from None
    domains = domains_of(services, (row["account_id"] for row in found.data))
    return UsageRecordListing(
        data=[
            UsageRecordPublic(**row, domain_id=domains.get(str(row["account_id"]), (None, ""))[0])
            for row in found.data
        ],
        count=found.count,
        provisional_count=found.provisional_count,
        final_until=found.final_until,
        next_cursor=found.next_cursor,
    )


@router.get(
    "/v1/usage-records/export",
    summary="Export final usage records (streamed; provisional windows are left out)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {media: {} for media in ExportFormat.MEDIA_TYPES.values()}},
        503: {"description": "the usage records are being rebuilt (errorcode 534)"},
    },
)
def export_usage_records(
    request: Request,
    caller: CurrentCaller,
    services: Services,
    start: Start,
    end: End,
    format: Annotated[Literal["csv", "json", "ndjson"], Query()] = "csv",
    account: AccountFilter = None,
    type: TypeFilter = None,
    zone: ZoneFilter = None,
    domain: DomainFilter = None,
) -> StreamingResponse:
    query = record_query(request, caller, start, end, account, type, zone, domain)
    usage = usage_records(request, services)
    if usage.rebuilding():
        message = "usage records are being rebuilt; nothing is final until they catch up"
        raise ApiError(503, message, code=ErrorCode.RESOURCE_UNAVAILABLE)
    records = usage.stream(query)
    filename = f"usage-{query.start:%Y%m%dT%H%M}-{query.end:%Y%m%dT%H%M}.{format}"
    return StreamingResponse(
        export_chunks(records, format),
        media_type=ExportFormat.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/v1/usage-records/summary",
    response_model=list[AccountUsageSummary],
    summary="Usage and cost per account and usage type over a period",
)
def summarize_usage(
    request: Request,
    caller: CurrentCaller,
    services: Services,
    start: Start,
    end: End,
    account: AccountFilter = None,
    type: TypeFilter = None,
    zone: ZoneFilter = None,
    domain: DomainFilter = None,
) -> list[AccountUsageSummary]:
    query = record_query(request, caller, start, end, account, type, zone, domain)
    rows = usage_records(request, services).summary(query, tariff_of(request))
    return [AccountUsageSummary(**row) for row in rows]


@router.get(
    "/v1/usage-corrections",
    response_model=UsageCorrectionListing,
    summary="Corrections of windows already served as final, made by late events (audit)",
)
def list_usage_corrections(
    request: Request,
    caller: CurrentCaller,
    services: Services,
    start: Start,
    end: End,
    account: AccountFilter = None,
    type: TypeFilter = None,
    domain: DomainFilter = None,
    limit: Limit = 100,
    page: FirstPage = 1,
) -> UsageCorrectionListing:
    query = record_query(request, caller, start, end, account, type, None, domain)
    rows, count = usage_records(request, services).corrections(
        query, limit=limit, offset=(page - 1) * limit
    )
    return UsageCorrectionListing(data=[UsageCorrectionPublic(**r) for r in rows], count=count)
